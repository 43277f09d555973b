"""The session's secret scan finds a planted value and only that."""

from __future__ import annotations

import base64
from pathlib import Path

from testground import secret_scan


def test_a_secret_in_any_log_is_found_with_its_line_and_not_repeated(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "operator.log").write_text("started\nreconciled tasks\n")
    (tmp_path / "livekit.log").write_text("line one\nkey=planted-for-the-scan-only in the open\n")
    files, hits = secret_scan.scan([tmp_path], {"planted-for-the-scan-only", "short"})
    assert files == 2
    assert [(h.path.name, h.line) for h in hits] == [("livekit.log", 2)]
    assert "planted-for-the-scan-only" not in str(hits[0])


def test_secret_documents_are_remembered_decoded_and_placeholders_are_not() -> None:
    before = set(secret_scan.SEEN)
    encoded = base64.b64encode(b"from-data-field-1").decode()
    secret_scan.remember_docs([
        {"kind": "Secret", "stringData": {"apiKey": "APIidentifier", "password": "string-data-value"}},
        {"kind": "Secret", "stringData": {"username": "sip-user-name", "secret": "devkey"}},
        {"kind": "Secret", "data": {"k": encoded}},
        {"kind": "ConfigMap", "data": {"x": "not-a-secret-value"}},
    ])  # fmt: skip
    added = secret_scan.SEEN - before
    assert added == {"string-data-value", "from-data-field-1"}
    secret_scan.SEEN.difference_update(added)
