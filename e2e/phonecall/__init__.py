"""Phone calls into the fleet: a real SIP user agent (pjsua2, `phonecall.ua`) dialing livekit-sip from the test
ground's caller namespace, espeak-ng speech out, the far end's audio recorded and transcribed by Whisper."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testground.process import ComponentError
from testground.sip import SipGround

UA_MODULE = "phonecall.ua"
MARK = "PHONECALL "


@dataclass(frozen=True)
class CallResult:
    """What the caller saw; times are seconds since the INVITE went out (see `phonecall.ua.Outcome`)."""

    status: int
    reason: str
    provisional: tuple[int, ...]
    confirmed: float | None
    media: float | None
    first_audio: float | None
    greeting_end: float | None
    said: tuple[float, ...]
    reply_start: float | None
    reply_end: float | None
    hangup: float | None
    disconnected: float | None
    remote_hangup: bool
    codec: str
    error: str
    recording: Path | None
    log: Path
    started_at: float  # time.time() when the UA process started (for matching server-side logs)

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.confirmed is not None

    def describe(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v not in (None, "", (), False)}
        return json.dumps(fields, default=str)

    def segment(self, start: float | None, end: float | None) -> tuple[float, float]:
        """A span of the recording (which starts at `media`), in seconds of the recording."""
        if self.media is None or start is None or end is None:
            raise AssertionError(f"no such span in this call: {self.describe()}")
        return max(0.0, start - self.media), max(0.0, end - self.media)


def speech_wav(text: str, path: Path, rate: int = 16000) -> Path:
    """espeak-ng speech as a 16-bit mono WAV at `rate` (the format pjsua2's file player reads)."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox:
        raise ComponentError("espeak-ng/sox", "not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run([espeak, "-v", "en-us", "-w", str(raw), text], check=True, capture_output=True, timeout=60)
    subprocess.run([sox, str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    raw.unlink()
    return path


@dataclass
class Phone:
    """Places calls from the caller namespace of `sip` (its `caller_ip` unless told otherwise)."""

    sip: SipGround
    work: Path
    calls: list[CallResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)

    def call(
        self,
        number: str,
        *,
        username: str = "",
        password: str = "",
        say: str = "",
        from_ip: str | None = None,
        timeout: float = 120.0,
        **plan: Any,
    ) -> CallResult:
        """Dial `number`; when answered, wait for the greeting, speak `say`, wait for the reply, hang up."""
        name = f"call-{len(self.calls):03d}-{secrets.token_hex(2)}"
        say_wav = str(speech_wav(say, self.work / f"{name}-say.wav")) if say else ""
        record = self.work / f"{name}-heard.wav"
        body = {
            "server": self.sip.address, "number": number, "bind_ip": from_ip or self.sip.caller_ip,
            "record": str(record), "username": username, "password": password, "say": say_wav, **plan,
        }  # fmt: skip
        plan_file = self.work / f"{name}.json"
        plan_file.write_text(json.dumps(body))
        log = self.work / f"{name}.log"
        started = time.time()
        argv = self.sip.in_netns([sys.executable, "-m", UA_MODULE, str(plan_file)])
        with log.open("wb") as out:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=out, timeout=timeout, check=False)
        text = proc.stdout.decode(errors="replace")
        line = next((x for x in text.splitlines() if x.startswith(MARK)), None)
        if line is None:
            log.write_bytes(log.read_bytes() + proc.stdout)
            raise ComponentError("pjsua2 caller", f"exited {proc.returncode} without a result", log)
        data = json.loads(line[len(MARK) :])
        result = CallResult(
            **{**data, **{k: tuple(data[k]) for k in ("provisional", "said")}},
            recording=record if record.exists() else None,
            log=log,
            started_at=started,
        )
        self.calls.append(result)
        return result


def transcribe(recording: Path, span: tuple[float, float] | None = None) -> str:
    """Whisper (tiny.en, the offline stack's engine) on a recording, or on `span` seconds of it."""
    import asyncio

    from voicefleet_offline.audio import for_whisper, read_wav
    from voicefleet_offline.whisper import get_engine

    samples, rate = read_wav(recording.read_bytes())
    if span is not None:
        samples = samples[int(span[0] * rate) : int(span[1] * rate)]
    transcript = asyncio.run(get_engine().transcribe(for_whisper(samples, rate)))
    return transcript.text


def sip_outcomes(prometheus_url: str) -> dict[str, float]:
    """livekit-sip's own count of inbound calls by outcome, from its Prometheus endpoint: `accepted` (matched a
    trunk and passed auth) and `<result>/<reason>` of `livekit_sip_calls_terminated` (e.g. `client_error/flood`,
    `client_error/unauthorized`). livekit-sip v1.8.0 labels calls by its own host, not by trunk or number, so these
    are per livekit-sip instance, not per VoiceAgent."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(prometheus_url, timeout=5) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("dir") != "in":
                continue
            if s.name == "livekit_sip_invite_accepted_total":
                key = "accepted"
            elif s.name == "livekit_sip_calls_terminated_total":
                key = f"{s.labels.get('result', '')}/{s.labels.get('reason', '')}"
            else:
                continue
            counts[key] = counts.get(key, 0.0) + s.value
    return counts
