"""What the agent tells the page about the screen share it receives (voicefleet_agent.screenshare)."""

from __future__ import annotations

import json

from voicefleet_agent.screenshare import FrameCounter


def test_the_first_frame_is_reported_at_once_then_at_most_every_period_and_the_end_with_the_total() -> None:
    counter = FrameCounter(every=2.0)
    first = counter.frame(1280, 720, now=10.0)
    assert first is not None and json.loads(first) == {"frames": 1, "width": 1280, "height": 720, "ended": False}
    assert [counter.frame(1280, 720, now=10.0 + i * 0.2) for i in range(1, 10)] == [None] * 9
    later = counter.frame(640, 360, now=12.0)
    assert later is not None and json.loads(later)["frames"] == 11 and json.loads(later)["width"] == 640
    assert json.loads(counter.report(ended=True)) == {"frames": 11, "width": 640, "height": 360, "ended": True}
