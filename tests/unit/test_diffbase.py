"""kopf's bookkeeping stays small whatever the spec holds, and still tells a changed spec from an unchanged one."""

from __future__ import annotations

from typing import Any

import kopf

from voicefleet_operator.diffbase import CHANGED, HashedDiffBaseStorage

KEY = "voicefleet.io/last-handled-configuration"


def body(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> kopf.Body:
    return kopf.Body({"metadata": {"name": "va", "annotations": annotations or {}}, "spec": spec})


def stored(storage: HashedDiffBaseStorage, spec: dict[str, Any]) -> dict[str, str]:
    patch = kopf.Patch()
    storage.store(body=body(spec), patch=patch, essence=storage.build(body=body(spec)))
    return {k: v for k, v in patch["metadata"]["annotations"].items() if v is not None}


def test_a_large_spec_leaves_an_annotation_of_constant_size() -> None:
    storage = HashedDiffBaseStorage(prefix="voicefleet.io", key="last-handled-configuration")
    huge = {"pipeline": {"instructions": "\U0001f600" * 65536}, "env": [{"name": f"E{i}"} for i in range(64)]}
    annotations = stored(storage, huge)
    assert len(annotations[KEY]) < 100, annotations


def test_an_unchanged_spec_has_no_diff_and_a_changed_one_has() -> None:
    storage = HashedDiffBaseStorage(prefix="voicefleet.io", key="last-handled-configuration")
    spec = {"image": "agent:1", "scaling": {"minReplicas": 2}}
    annotations = stored(storage, spec)
    same = storage.fetch(body=body(spec, annotations))
    assert same == storage.build(body=body(spec, annotations))
    edited = storage.fetch(body=body({**spec, "image": "agent:2"}, annotations))
    assert edited == CHANGED
    assert storage.fetch(body=body(spec)) is None  # never handled: kopf runs the creation handlers


def test_a_full_essence_written_by_an_earlier_version_is_still_read() -> None:
    storage = HashedDiffBaseStorage(prefix="voicefleet.io", key="last-handled-configuration")
    legacy = '{"spec":{"image":"agent:1"}}\n'
    assert storage.fetch(body=body({"image": "agent:1"}, {KEY: legacy})) == {"spec": {"image": "agent:1"}}
