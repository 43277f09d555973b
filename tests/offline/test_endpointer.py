"""The energy endpointer on synthetic audio: no Whisper, no sockets."""

from __future__ import annotations

import numpy as np

from voicefleet_offline.audio import (
    Endpointer,
    EndpointerConfig,
    Int16Array,
    Segment,
    SpeechStarted,
    UtteranceEnded,
    resample,
)

RATE = 16000


def tone(seconds: float, amplitude: float = 0.3) -> Int16Array:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * amplitude * 32767).astype(np.int16)


def silence(seconds: float, noise: float = 0.0) -> Int16Array:
    rng = np.random.default_rng(0)
    return (rng.normal(0, noise * 32767, int(RATE * seconds))).astype(np.int16)


def run(audio: Int16Array, config: EndpointerConfig, chunk: int = 800) -> list[object]:
    ep = Endpointer(config)
    events: list[object] = []
    for i in range(0, audio.size, chunk):
        events.extend(ep.feed(audio[i : i + chunk]))
    return events


def test_speech_then_silence_gives_start_and_one_speech_final() -> None:
    audio = np.concatenate([silence(0.5), tone(1.0), silence(0.6)])
    events = run(audio, EndpointerConfig(silence_ms=300, interim_interval_ms=0))

    assert isinstance(events[0], SpeechStarted)
    assert abs(events[0].at - 0.5) < 0.02
    finals = [e for e in events if isinstance(e, Segment) and e.is_final]
    assert len(finals) == 1
    seg = finals[0]
    assert seg.speech_final
    assert 1.79 <= seg.end <= 1.82  # 0.5 + 1.0 + 0.3 of silence
    assert seg.start == 0.0
    assert seg.audio_start == 0.25  # 250 ms pre-roll before the speech
    assert seg.audio.size == round((seg.end - seg.audio_start) * RATE)


def test_short_gaps_inside_speech_do_not_end_the_utterance() -> None:
    audio = np.concatenate([tone(0.4), silence(0.15), tone(0.4), silence(0.2), tone(0.4), silence(0.5)])
    events = run(audio, EndpointerConfig(silence_ms=300, interim_interval_ms=0))
    finals = [e for e in events if isinstance(e, Segment) and e.is_final]
    assert len(finals) == 1
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1


def test_eager_decode_at_start_of_silence() -> None:
    audio = np.concatenate([tone(0.5), silence(0.15), tone(0.5), silence(0.5)])
    events = [e for e in run(audio, EndpointerConfig(silence_ms=300, eager_ms=120)) if isinstance(e, Segment)]
    eager = [e for e in events if e.eager]
    final = next(e for e in events if e.is_final)
    assert len(eager) == 2  # one in the short gap, one at the real end
    assert abs(eager[0].end - 0.62) < 0.015 and eager[0].voiced_until == 0.5
    # the gap's speculative decode is stale (speech followed); the last one covers everything the final has
    assert final.voiced_until > eager[0].end
    assert final.voiced_until <= eager[1].end < final.end
    assert final.audio_start == eager[1].audio_start


def test_endpointing_disabled_gives_finals_without_speech_final() -> None:
    audio = np.concatenate([tone(0.5), silence(0.5)])
    events = run(audio, EndpointerConfig(endpointing=False, interim_interval_ms=0))
    finals = [e for e in events if isinstance(e, Segment) and e.is_final]
    assert len(finals) == 1 and not finals[0].speech_final


def test_interims_every_interval_while_speaking() -> None:
    audio = np.concatenate([tone(2.5), silence(0.5)])
    events = run(audio, EndpointerConfig(interim_interval_ms=1000))
    interims = [e for e in events if isinstance(e, Segment) and not e.is_final and not e.eager]
    assert len(interims) == 2
    assert all(i.end < 2.6 for i in interims)


def test_utterance_end_after_configured_silence() -> None:
    audio = np.concatenate([tone(0.5), silence(1.5)])
    events = run(audio, EndpointerConfig(utterance_end_ms=1000, interim_interval_ms=0))
    ends = [e for e in events if isinstance(e, UtteranceEnded)]
    assert len(ends) == 1
    assert abs(ends[0].last_word_end - 0.5) < 0.02
    assert events.index(ends[0]) > next(i for i, e in enumerate(events) if isinstance(e, Segment))


def test_background_noise_raises_the_threshold() -> None:
    noisy = np.concatenate([silence(1.0, noise=0.01), tone(0.5, amplitude=0.3) + silence(0.5, noise=0.01)])
    events = run(noisy.astype(np.int16), EndpointerConfig(interim_interval_ms=0))
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert len(starts) == 1 and abs(starts[0].at - 1.0) < 0.05


def test_finalize_flushes_open_speech() -> None:
    ep = Endpointer(EndpointerConfig(interim_interval_ms=0))
    ep.feed(tone(0.5))
    (seg,) = ep.finalize()
    assert isinstance(seg, Segment)
    assert seg.is_final and seg.from_finalize and not seg.speech_final
    assert seg.audio.size > 0.4 * RATE


def test_resample_keeps_duration_and_pitch_range() -> None:
    x = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000).astype(np.float32)
    y = resample(x, 48000, 16000)
    assert y.size == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1
