"""PCM helpers and the energy-based endpointer behind the Deepgram-compatible stream."""

from __future__ import annotations

import io
import math
import wave
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

WHISPER_RATE = 16000


def pcm16_from_bytes(data: bytes, channels: int = 1) -> Int16Array:
    """Little-endian linear16 bytes to a mono int16 array (extra channels are averaged)."""
    usable = len(data) - len(data) % (2 * channels)
    samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples


def to_float(samples: Int16Array) -> Float32Array:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def resample(samples: Float32Array, src_rate: int, dst_rate: int) -> Float32Array:
    """Resample mono float audio; a box filter before decimation keeps aliasing tolerable for ASR."""
    if src_rate == dst_rate or samples.size == 0:
        return samples.astype(np.float32)
    if src_rate > dst_rate:
        width = max(1, round(src_rate / dst_rate))
        if width > 1:
            kernel = np.ones(width, dtype=np.float32) / width
            samples = np.convolve(samples, kernel, mode="same").astype(np.float32)
    n_out = max(1, round(samples.size * dst_rate / src_rate))
    x_old = np.arange(samples.size, dtype=np.float64) / src_rate
    x_new = np.arange(n_out, dtype=np.float64) / dst_rate
    return np.interp(x_new, x_old, samples).astype(np.float32)


def for_whisper(samples: Int16Array, sample_rate: int) -> Float32Array:
    return resample(to_float(samples), sample_rate, WHISPER_RATE)


def wav_bytes(samples: Int16Array, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[Int16Array, int]:
    """A 16-bit PCM WAV to (mono int16 samples, sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        frames = w.readframes(w.getnframes())
        return pcm16_from_bytes(frames, w.getnchannels()), w.getframerate()


def frame_db(samples: Int16Array) -> float:
    if samples.size == 0:
        return -100.0
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64))))) / 32768.0
    return max(-100.0, 20 * math.log10(rms + 1e-10))


# -- endpointing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointerConfig:
    """Energy VAD settings; times are audio time, not wall-clock time."""

    sample_rate: int = 16000
    endpointing: bool = True
    silence_ms: int = 300
    utterance_end_ms: int | None = None
    interim_interval_ms: int = 1000
    eager_ms: int = 120
    threshold_db: float = -45.0
    floor_margin_db: float = 12.0
    floor_window_ms: int = 3000
    floor_cap_db: float = -35.0
    start_ms: int = 60
    preroll_ms: int = 250
    max_segment_ms: int = 15000


@dataclass(frozen=True)
class SpeechStarted:
    at: float


@dataclass(frozen=True)
class Segment:
    """Audio to transcribe. `start`/`end` bound the stream time this result covers; `audio_start` is where
    `audio` begins (word times are relative to it)."""

    start: float
    end: float
    audio_start: float
    audio: Int16Array
    is_final: bool
    speech_final: bool
    from_finalize: bool = False
    eager: bool = False  # a speculative decode at the start of silence, not a result to send
    voiced_until: float = 0.0  # end of the last voiced frame in the stream so far


@dataclass(frozen=True)
class UtteranceEnded:
    last_word_end: float


Event = SpeechStarted | Segment | UtteranceEnded


class Endpointer:
    """Turns a stream of PCM into Deepgram-style events: speech start, interim/final segments, utterance end."""

    def __init__(self, config: EndpointerConfig) -> None:
        self.cfg = config
        sr = config.sample_rate
        self._frame = max(1, sr // 100)
        self._start_n = config.start_ms * sr // 1000
        self._silence_n = config.silence_ms * sr // 1000
        self._preroll_n = config.preroll_ms * sr // 1000
        self._interim_n = config.interim_interval_ms * sr // 1000
        self._eager_n = config.eager_ms * sr // 1000
        self._eager_sent = False
        self._utt_end_n = None if config.utterance_end_ms is None else config.utterance_end_ms * sr // 1000
        self._max_seg_n = config.max_segment_ms * sr // 1000
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)
        self._buf_base = 0  # absolute index of _buf[0]
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)
        self.total = 0  # samples fully processed
        self._cut = 0  # end of the last final result
        self._audio_start = 0
        self._in_speech = False
        self._has_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._last_voiced_end = 0
        self._last_interim = 0
        self._utterance_open = False
        # noise floor: the minimum frame level over a sliding window (minimum statistics), kept in a monotonic deque
        self._floor_frames = max(1, config.floor_window_ms // 10)
        self._levels: deque[tuple[int, float]] = deque()
        self._frame_no = 0

    @property
    def seconds(self) -> float:
        return self.total / self.cfg.sample_rate

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, samples: Int16Array) -> list[Event]:
        self._buf = np.concatenate([self._buf, samples])
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        events: list[Event] = []
        n_frames = data.size // self._frame
        for i in range(n_frames):
            events.extend(self._step(data[i * self._frame : (i + 1) * self._frame]))
        self._pending = data[n_frames * self._frame :].copy()
        self._trim()
        return events

    def finalize(self) -> list[Event]:
        """Close the current segment now (Deepgram ``Finalize``/``CloseStream``)."""
        end = self.total + self._pending.size
        self.total = end
        self._pending = np.zeros(0, dtype=np.int16)
        seg = self._segment(end, is_final=True, speech_final=False, from_finalize=True)
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._cut = end
        if self._has_speech:
            self._utterance_open = True
        self._has_speech = False
        self._trim()
        return [seg]

    def _step(self, frame: Int16Array) -> list[Event]:
        n = frame.size
        f1 = self.total + n
        self.total = f1
        db = frame_db(frame)
        voiced = db > max(self.cfg.threshold_db, self._noise_floor(db) + self.cfg.floor_margin_db)
        events: list[Event] = []
        if not self._in_speech:
            if voiced:
                self._voiced_run += n
                if self._voiced_run >= self._start_n:
                    begin = f1 - self._voiced_run
                    self._in_speech = True
                    self._silence_run = 0
                    self._last_voiced_end = f1
                    if not self._has_speech:
                        self._has_speech = True
                        self._audio_start = max(self._cut, begin - self._preroll_n, self._buf_base)
                        self._last_interim = f1
                        events.append(SpeechStarted(at=begin / self.cfg.sample_rate))
            else:
                self._voiced_run = 0
        elif voiced:
            self._silence_run = 0
            self._last_voiced_end = f1
            self._eager_sent = False
        else:
            self._silence_run += n
            if self._eager_n and not self._eager_sent and self._eager_n <= self._silence_run < self._silence_n:
                # likely the end of the utterance: decode now, so the final is ready when endpointing fires
                self._eager_sent = True
                events.append(self._segment(f1, is_final=False, speech_final=False, eager=True))
            if self._silence_run >= self._silence_n:
                events.append(self._segment(f1, is_final=True, speech_final=self.cfg.endpointing))
                self._eager_sent = False
                self._in_speech = False
                self._has_speech = False
                self._voiced_run = 0
                self._cut = f1
                self._utterance_open = True
        if self._in_speech and f1 - self._audio_start >= self._max_seg_n:
            events.append(self._segment(f1, is_final=True, speech_final=False))
            self._cut = f1
            self._audio_start = f1
            self._last_interim = f1
        if self._in_speech and self._interim_n and f1 - self._last_interim >= self._interim_n:
            events.append(self._segment(f1, is_final=False, speech_final=False))
            self._last_interim = f1
        if (
            self._utterance_open
            and self._utt_end_n is not None
            and not self._in_speech
            and f1 - self._last_voiced_end >= self._utt_end_n
        ):
            events.append(UtteranceEnded(last_word_end=self._last_voiced_end / self.cfg.sample_rate))
            self._utterance_open = False
        return events

    def _noise_floor(self, db: float) -> float:
        """Lowest level in the window, capped so a loud start (speech at t=0) can't hide itself."""
        self._frame_no += 1
        while self._levels and self._levels[-1][1] >= db:
            self._levels.pop()
        self._levels.append((self._frame_no, db))
        while self._levels[0][0] <= self._frame_no - self._floor_frames:
            self._levels.popleft()
        return min(self._levels[0][1], self.cfg.floor_cap_db)

    def _segment(
        self, end: int, *, is_final: bool, speech_final: bool, from_finalize: bool = False, eager: bool = False
    ) -> Segment:
        sr = self.cfg.sample_rate
        if self._has_speech:
            lo = max(self._audio_start, self._buf_base) - self._buf_base
            audio = self._buf[lo : end - self._buf_base].copy()
            audio_start = max(self._audio_start, self._buf_base)
        else:
            audio = np.zeros(0, dtype=np.int16)
            audio_start = end
        return Segment(
            start=self._cut / sr,
            end=end / sr,
            audio_start=audio_start / sr,
            audio=audio,
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            eager=eager,
            voiced_until=self._last_voiced_end / sr,
        )

    def _trim(self) -> None:
        keep_from = self._audio_start if self._has_speech else self.total - self._preroll_n - self._start_n
        keep_from = max(self._buf_base, keep_from)
        if keep_from > self._buf_base:
            self._buf = self._buf[keep_from - self._buf_base :]
            self._buf_base = keep_from
