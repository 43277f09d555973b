"""Word error rate and latency of the offline STT (Whisper tiny.en) against a streaming recogniser whose weights ship
inside its PyPI package (pocketsphinx 5.1.1: en-us acoustic model, 3-gram LM and dictionary in the wheel), on the
same espeak-ng corpus.

    .venv/bin/pip install pocketsphinx==5.1.1   # not a dependency of the project: only this comparison uses it
    .venv/bin/python hack/asr_compare.py

Per utterance (16 kHz): pocketsphinx is fed 20 ms chunks as they would stream and timed from the last chunk to its
final hypothesis; Whisper decodes the whole utterance as the offline Deepgram does for a final. CPU is process time
per second of audio. Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import re
import time

from voicefleet_offline import espeak
from voicefleet_offline.audio import for_whisper, pcm16_from_bytes
from voicefleet_offline.whisper import get_engine

RATE = 16000
CHUNK = RATE // 50 * 2  # 20 ms of 16-bit samples
CORPUS = (
    "Add buy milk to my tasks",
    "Show me my list",
    "What's on my list?",
    "Thank you",
    "Hello",
    "Add call the dentist to my tasks for tomorrow morning",
    "Mark call the dentist as done",
    "Delete book flights",
    "Yes, delete it",
    "No, keep it",
    "Rename call mom to call dad",
    "Clear all my tasks",
    "Wait, stop please",
    "What is on my list for tomorrow?",
    "Add pay the rent to my tasks for next Monday",
    "Goodbye",
)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()


def errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance (substitutions + deletions + insertions)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


async def main() -> None:
    from pocketsphinx import Decoder  # type: ignore[import-not-found]

    decoder = Decoder(samprate=RATE)
    engine = get_engine()
    await engine.warm_up()
    totals = {"pocketsphinx": 0, "whisper": 0}
    latency: dict[str, list[float]] = {"pocketsphinx": [], "whisper": []}
    cpu = {"pocketsphinx": 0.0, "whisper": 0.0}
    n_words, seconds = 0, 0.0
    for text in CORPUS:
        pcm = await espeak.synthesize(text, sample_rate=RATE)
        seconds += len(pcm) / (2 * RATE)
        n_words += len(words(text))

        c0 = time.process_time()
        decoder.start_utt()
        for i in range(0, len(pcm), CHUNK):
            decoder.process_raw(pcm[i : i + CHUNK], False, False)
        t0 = time.perf_counter()
        decoder.end_utt()
        hyp = decoder.hyp()
        heard_ps = hyp.hypstr if hyp is not None else ""
        latency["pocketsphinx"].append(time.perf_counter() - t0)
        cpu["pocketsphinx"] += time.process_time() - c0

        c0, t0 = time.process_time(), time.perf_counter()
        heard_wh = (await engine.transcribe(for_whisper(pcm16_from_bytes(pcm), RATE))).text
        latency["whisper"].append(time.perf_counter() - t0)
        cpu["whisper"] += time.process_time() - c0

        totals["pocketsphinx"] += errors(text, heard_ps)
        totals["whisper"] += errors(text, heard_wh)
        print(f"{text!r}: pocketsphinx {heard_ps!r}, whisper {heard_wh.strip()!r}", flush=True)

    print(f"\n{len(CORPUS)} utterances, {n_words} words, {seconds:.1f} s of espeak-ng speech\n")
    print("| recogniser | WER % | final after the audio, median / max ms | CPU s per audio s |")
    print("|---|---:|---:|---:|")
    for name, label in (
        ("whisper", "Whisper tiny.en (int8, whole utterance)"),
        ("pocketsphinx", "pocketsphinx 5.1.1 (streaming)"),
    ):
        ms = sorted(1000 * v for v in latency[name])
        print(f"| {label} | {100 * totals[name] / n_words:.1f} | {ms[len(ms) // 2]:.0f} / {ms[-1]:.0f} "
              f"| {cpu[name] / seconds:.2f} |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
