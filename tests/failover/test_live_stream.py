"""Live STT streams (the real Deepgram and Whisper plugins on the offline servers, inside the agent's
``SwitchingSTT``) follow the real operator through a flip: Deepgram hangs mid-call, the fleet moves to Whisper,
the same streams' next utterances are transcribed by Whisper, and on recovery they move back. No stream fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.harness import POLICY, OfflineProcess, join_fleet, keys_doc, policy_doc
from failover.live import through_flip
from testground.operator import Namespace, OperatorProcess

pytestmark = pytest.mark.integration


async def test_live_streams_move_to_whisper_at_the_next_utterance_and_back(
    fns: Namespace, offline: OfflineProcess, failover_operator: OperatorProcess, tmp_path: Path
) -> None:
    assert fns.apply(keys_doc(), policy_doc(offline.deepgram_url, offline.openai_url, hold_s=2)).returncode == 0
    fleet_pass = join_fleet(fns, tmp_path / "fleet-token")
    result = await through_flip(
        failover_operator.fleet_url, fns.name, POLICY, offline.env, lambda mode: offline.fault("deepgram", mode), 2,
        fleet_pass,
    )  # fmt: skip
    assert result["dropped"] == 0, result
    assert all(switches >= 2 for switches in result["switches"]), result
    for transcripts in result["transcripts"]:
        assert any(t.startswith("whisper:") and "milk" in t.lower() for t in transcripts), transcripts
        assert transcripts[-1].startswith("deepgram:"), transcripts
