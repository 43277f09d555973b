"""The per-install key: it keys every value the operator derives from a secret and shows elsewhere (the SIP
credential fingerprint in LiveKit metadata) and the fleet channel's per-VoiceAgent tokens.

The chart generates it once into a Secret and passes it as VOICEFLEET_INSTALL_KEY. Without it (a developer's
`make run`) the operator makes one for its lifetime and says so: after a restart, trunks are updated once and agent
pods get new fleet tokens through their Secret volume.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping

ENV_INSTALL_KEY = "VOICEFLEET_INSTALL_KEY"

log = logging.getLogger(__name__)
_process_key: bytes | None = None


def load(environ: Mapping[str, str] = os.environ) -> bytes:
    global _process_key
    if value := environ.get(ENV_INSTALL_KEY):
        return value.encode()
    if _process_key is None:
        log.warning("%s is not set: using a key for this process only", ENV_INSTALL_KEY)
        _process_key = secrets.token_bytes(32)
    return _process_key


def mac(key: bytes, *parts: str) -> str:
    """A keyed digest of `parts` (NUL-separated), hex."""
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def fleet_token(key: bytes, namespace: str, voiceagent: str, uid: str) -> str:
    """A VoiceAgent's token on the fleet channel: bound to its uid, so a re-created namesake gets a new one."""
    return mac(key, "fleet", namespace, voiceagent, uid)[:48]
