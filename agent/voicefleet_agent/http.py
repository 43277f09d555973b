"""HTTP clients that cost the session's event loop nothing to create.

An ``httpx2.AsyncClient`` builds a fresh SSL context (loading the CA bundle) each time it is created: 70 to 600 ms of
synchronous work, and the OpenAI plugins and the MCP clients each create one per session, on the agent's loop. The
context is built once per process instead (``prewarm``) and every client reuses it, as do the OpenAI clients, which
are shared by all sessions of the process.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore2
import httpx2
import openai

_ssl_context: ssl.SSLContext | None = None
_openai_clients: dict[tuple[str | None, str | None], openai.AsyncClient] = {}

# the OpenAI plugins' own defaults (livekit-plugins-openai 1.8.9)
OPENAI_TIMEOUT = httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0)
OPENAI_LIMITS = httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120)


def ssl_context() -> ssl.SSLContext:
    """The process's one client SSL context (what httpx2 would build by default)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpcore2.default_ssl_context(_trust_env=True)
    return _ssl_context


def http_client(**kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` on the shared SSL context."""
    return httpx2.AsyncClient(verify=ssl_context(), **kwargs)


def openai_client(*, base_url: str | None, api_key: str | None) -> openai.AsyncClient:
    """One OpenAI client per endpoint and key for the whole process (the plugins leave a passed client open)."""
    key = (base_url, api_key)
    client = _openai_clients.get(key)
    if client is None:
        client = openai.AsyncClient(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=http_client(timeout=OPENAI_TIMEOUT, follow_redirects=True, limits=OPENAI_LIMITS),
        )
        _openai_clients[key] = client
    return client
