"""Every secret value a test session creates, and a scan of its log files (and status/Event dumps) for them.

Test-ground helpers remember what they put into Secrets (`Namespace.apply`), the LiveKit API secret and the
operator's install key; `scan` then reads every file and reports each one that holds any of them. Placeholder
values shorter than MIN_LENGTH (the examples' "devkey", "secret", "offline") are too common to be told from text
and are not counted as secrets, nor are the placeholders in NOT_SECRET.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_LENGTH = 8
# Values that go into Secrets but protect nothing: the offline provider stack's key, which it prints for `eval` and
# never checks (agent/voicefleet_offline).
NOT_SECRET = frozenset({"offline-key"})
# Keys whose values identify rather than protect: an API key id and a SIP username travel in clear (LiveKit logs
# the key id of each worker; livekit-sip logs the digest username of each INVITE).
IDENTIFIER_KEYS = frozenset({"apiKey", "username"})
SEEN: set[str] = set()


def remember(*values: str) -> None:
    SEEN.update(v for v in values if len(v) >= MIN_LENGTH and v not in NOT_SECRET)


def remember_docs(docs: Iterable[dict[str, Any]]) -> None:
    """The values of every Secret among `docs` (stringData as is, data decoded)."""
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        remember(*(str(v) for k, v in (doc.get("stringData") or {}).items() if k not in IDENTIFIER_KEYS))
        for key, value in (doc.get("data") or {}).items():
            if key in IDENTIFIER_KEYS:
                continue
            try:
                remember(base64.b64decode(str(value), validate=True).decode())
            except (binascii.Error, UnicodeDecodeError):
                continue


@dataclass(frozen=True)
class Hit:
    path: Path
    line: int
    secret: str  # the first characters only: the report must not repeat what it found

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: holds a secret value starting {self.secret[:3]!r}"


def scan(roots: Iterable[Path], values: Iterable[str]) -> tuple[int, list[Hit]]:
    """(files read, hits) over every regular file under `roots`."""
    wanted = sorted({v for v in values if len(v) >= MIN_LENGTH})
    files, hits = 0, []
    seen: set[Path] = set()
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path in seen or not path.is_file() or path.is_symlink():
                continue
            seen.add(path)
            files += 1
            try:
                text = path.read_bytes().decode(errors="replace")
            except OSError:
                continue
            for value in wanted:
                at = text.find(value)
                if at >= 0:
                    hits.append(Hit(path, text.count("\n", 0, at) + 1, value))
    return files, hits
