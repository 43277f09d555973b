"""A real SIP user agent (pjsua2, PJSIP 2.15) placing one call: run as its own process, in the caller's network
namespace (`ip netns exec NS python -m phonecall.ua PLAN.json`).

It dials with digest credentials, records everything the far end sends (WAV), waits for the greeting to end,
plays a request (WAV made by espeak-ng), waits for the answer, hangs up, and prints one JSON line: the SIP
outcome and what happened when, in seconds since the INVITE was sent (this process's monotonic clock).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

LEVEL_VOICED = 8  # pjmedia signal level 0..255: above this the far end is talking (its line is digital silence)
POLL_S = 0.01
DEBUG_LEVELS = bool(os.environ.get("PHONECALL_DEBUG_LEVELS"))


@dataclass(frozen=True)
class Plan:
    server: str  # "10.213.7.1:5060"
    number: str  # the called number, the Request-URI user
    bind_ip: str  # the source address of SIP and RTP
    record: str  # WAV path for what the far end sends
    username: str = ""
    password: str = ""
    say: str = ""  # WAV path of the request to play after the greeting ("" = play nothing)
    answer_timeout: float = 60.0  # INVITE → a final response (livekit-sip answers once the agent is in the room)
    greeting_timeout: float = 30.0  # 200 OK → first audio
    quiet_s: float = 0.9  # greeting/answer ended after this much silence
    reply_timeout: float = 30.0  # end of the request → first audio of the reply
    hold_s: float = 0.0  # stay on the line this long after the reply (or after the greeting when say is empty)


@dataclass
class Outcome:
    status: int = 0  # the final SIP status of the INVITE (200, 401, 404, ...); 0 when none came before we gave up
    reason: str = ""
    provisional: list[int] = field(default_factory=list)  # 1xx codes seen
    confirmed: float | None = None  # 200 OK + ACK
    media: float | None = None  # RTP running, recording started
    first_audio: float | None = None  # first voiced audio from the far end
    greeting_end: float | None = None
    said: list[float] = field(default_factory=list)  # [start, end] of the request played
    reply_start: float | None = None
    reply_end: float | None = None
    hangup: float | None = None  # we hung up
    disconnected: float | None = None
    remote_hangup: bool = False  # the far end ended the call (BYE) before we did
    codec: str = ""
    error: str = ""


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account, ua: Agent) -> None:
        super().__init__(account)
        self.ua = ua

    def onCallState(self, prm: Any) -> None:
        self.ua.on_state(self.getInfo())

    def onCallTsxState(self, prm: Any) -> None:
        self.ua.on_tsx(prm)

    def onCallMediaState(self, prm: Any) -> None:
        self.ua.on_media(self)


class Agent:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.out = Outcome()
        self.t0 = 0.0
        self.medium: pj.AudioMedia | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.state = "NULL"
        self.disconnected = False
        self.we_hung_up = False

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def on_state(self, info: Any) -> None:
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and self.out.confirmed is None:
            self.out.confirmed = self.now()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.out.disconnected = self.now()
            self.out.remote_hangup = not self.we_hung_up and self.out.confirmed is not None
            if self.out.status == 0 and info.lastStatusCode >= 200 and not self.we_hung_up:
                self.out.status, self.out.reason = int(info.lastStatusCode), str(info.lastReason)

    def on_tsx(self, prm: Any) -> None:
        tsx = prm.e.body.tsxState.tsx
        if tsx.method != "INVITE" or tsx.role != pj.PJSIP_ROLE_UAC:
            return
        code = int(tsx.statusCode)
        if 100 <= code < 200 and code not in self.out.provisional:
            self.out.provisional.append(code)
        elif 200 <= code < 300:
            self.out.status, self.out.reason = code, str(tsx.statusText)
        elif code >= 300 and tsx.state == pj.PJSIP_TSX_STATE_COMPLETED and self.open():
            # COMPLETED comes with the answer; TERMINATED follows up to 32 s later (timer D), when a challenged
            # first INVITE's 407 must not overwrite the second INVITE's 200
            self.out.status, self.out.reason = code, str(tsx.statusText)

    def open(self) -> bool:
        """No final outcome yet: not answered, not given up."""
        return not self.we_hung_up and self.out.confirmed is None and not 200 <= self.out.status < 300

    def on_media(self, call: Call) -> None:
        info = call.getInfo()
        for i, media in enumerate(info.media):
            active = media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
            if active and self.medium is None:
                self.medium = call.getAudioMedia(i)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(self.plan.record)
                self.medium.startTransmit(self.recorder)
                self.out.media = self.now()
                with contextlib.suppress(pj.Error):
                    self.out.codec = str(call.getStreamInfo(i).codecName)

    def level(self) -> int:
        if self.medium is None:
            return 0
        rx, tx = int(self.medium.getRxLevel()), int(self.medium.getTxLevel())
        if DEBUG_LEVELS:
            sys.stderr.write(f"LEVEL {self.now():.2f} rx={rx} tx={tx}\n")
        return tx  # pjsua2's "tx" of a call's port is what the far end sends into the bridge


def wav_seconds(path: str) -> float:
    with wave.open(path) as w:
        return float(w.getnframes()) / float(w.getframerate())


def run(plan: Plan) -> Outcome:
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "voicefleet-phonecall (pjsua2)"
    cfg.logConfig.level = 3
    cfg.logConfig.consoleLevel = 3
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = plan.bind_ip
    tcfg.publicAddress = plan.bind_ip
    tcfg.port = 0
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:caller@{plan.bind_ip}"
    acfg.mediaConfig.transportConfig.boundAddress = plan.bind_ip
    acfg.mediaConfig.transportConfig.publicAddress = plan.bind_ip
    if plan.username:
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", plan.username, 0, plan.password))
    account = pj.Account()
    account.create(acfg)

    ua = Agent(plan)
    call = Call(account, ua)
    out = ua.out
    player: pj.AudioMediaPlayer | None = None

    def pump(until: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            if ua.disconnected or time.monotonic() > deadline:
                return bool(until())
            ep.libHandleEvents(int(POLL_S * 1000))
        return True

    def wait_quiet(voiced_at: float, timeout: float) -> float:
        """Seconds-since-INVITE of the end of the far end's speech: `quiet_s` without a voiced level."""
        last = voiced_at
        deadline = time.monotonic() + timeout
        while not ua.disconnected and time.monotonic() < deadline:
            ep.libHandleEvents(int(POLL_S * 1000))
            if ua.level() > LEVEL_VOICED:
                last = ua.now()
            elif ua.now() - last >= plan.quiet_s:
                break
        return last

    try:
        ua.t0 = time.monotonic()
        call.makeCall(f"sip:{plan.number}@{plan.server}", pj.CallOpParam(True))
        if not pump(lambda: ua.out.confirmed is not None or ua.out.status >= 300, plan.answer_timeout):
            out.error = f"no final answer within {plan.answer_timeout:.0f}s"
        if out.confirmed is not None and pump(lambda: ua.level() > LEVEL_VOICED, plan.greeting_timeout):
            out.first_audio = ua.now()
            out.greeting_end = wait_quiet(out.first_audio, 60)
            hold_from = out.greeting_end
            if plan.say and not ua.disconnected:
                player = pj.AudioMediaPlayer()
                player.createPlayer(plan.say, pj.PJMEDIA_FILE_NO_LOOP)
                assert ua.medium is not None
                start = ua.now()
                player.startTransmit(ua.medium)
                length = wav_seconds(plan.say)
                pump(lambda: ua.now() - start >= length, length + 5)
                player.stopTransmit(ua.medium)
                out.said = [start, ua.now()]
                if pump(lambda: ua.level() > LEVEL_VOICED, plan.reply_timeout):
                    out.reply_start = ua.now()
                    out.reply_end = hold_from = wait_quiet(out.reply_start, 60)
            pump(lambda: ua.now() - hold_from >= plan.hold_s, plan.hold_s + 1)
        elif out.confirmed is not None and not ua.disconnected:
            out.error = f"no audio from the far end within {plan.greeting_timeout:.0f}s of the answer"
        if not ua.disconnected:
            ua.we_hung_up = True
            out.hangup = ua.now()
            call.hangup(pj.CallOpParam(True))  # BYE when answered, CANCEL while ringing
            pump(lambda: ua.disconnected, 10)
    except pj.Error as error:
        out.error = f"pjsua2: {error.info()}"
    finally:
        if ua.recorder is not None and ua.medium is not None:
            with contextlib.suppress(pj.Error):
                ua.medium.stopTransmit(ua.recorder)
        del player
        ua.recorder = None
        ua.medium = None
        ep.hangupAllCalls()
        del call  # before the library: its destructor calls into pjsua
        account.shutdown()
        ep.libDestroy()
    return out


def main(argv: list[str]) -> int:
    plan = Plan(**json.loads(Path(argv[1]).read_text()))
    outcome = run(plan)
    sys.stdout.write("PHONECALL " + json.dumps(asdict(outcome)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
