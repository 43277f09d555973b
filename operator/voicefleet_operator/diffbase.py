"""kopf's diff base as a hash: the bookkeeping annotation never grows with the spec.

kopf's AnnotationsDiffBaseStorage keeps the whole last-handled spec in an annotation. A valid spec with large text
(instructions, many options, long env values) then exceeds the 256 KiB annotation limit, every patch kopf makes is
refused, and its finalizer can never be removed: the object cannot be deleted. The handlers never read the diff
(every trigger runs the same level-triggered reconcile), so a digest of the last handled essence is enough to tell
"changed" from "unchanged".
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import kopf

# Stands in for the previous essence when only its digest is known: it differs from any real spec, so kopf sees
# a change of `spec` and runs the update handlers.
CHANGED: dict[str, Any] = {"spec": {"voicefleet.io/previous": "known only by digest"}}


def digest(essence: Any) -> str:
    return hashlib.sha256(json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class HashedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Stores {"sha256": digest} of the handled essence instead of the essence itself."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = super().fetch(body=body)
        if stored is None:
            return None
        known = cast(dict[str, Any], stored).get("sha256")
        if not isinstance(known, str):
            return stored  # written by an earlier version as the full essence
        current = self.build(body=body)
        return current if digest(current) == known else cast(kopf.BodyEssence, CHANGED)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        super().store(body=body, patch=patch, essence=cast(kopf.BodyEssence, {"sha256": digest(essence)}))
