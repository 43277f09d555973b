"""The demo's phone call: livekit-sip on the test ground, the operator's phone-channel service making the trunk and
dispatch rule for the demo's agent, and one real SIP call that says "Add buy milk to my tasks"."""

from __future__ import annotations

from pathlib import Path

from testground.livekit import LiveKit
from testground.sip import SipStack
from voiceroom import VoiceStack

from . import Phone, transcribe
from .bench import NUMBER, PASSWORD, USERNAME, configure_phone, voice_agent

REQUEST = "Add buy milk to my tasks"


def call_once(root: Path, livekit: LiveKit, stack: VoiceStack) -> None:
    """Print what a caller on the phone hears; needs root (network namespace + veth)."""
    sip_stack = SipStack(root / "sip", livekit=livekit)
    sip = sip_stack.start()
    try:
        print(f"livekit-sip v1.8.0 on {sip.address} (veth); the caller dials from {sip.caller_ip} "
              f"(network namespace {sip.netns})")  # fmt: skip
        print(configure_phone(livekit, voice_agent(livekit.url, sip.caller_ip, stack.agent_name)))
        call = Phone(sip, root / "calls").call(NUMBER, username=USERNAME, password=PASSWORD, say=REQUEST)
        print(f"SIP status:        {call.status} {call.reason} (codec {call.codec})")
        if not call.answered or call.recording is None or call.first_audio is None:
            raise RuntimeError(f"the phone call was not answered: {call.describe()}")
        greeting = transcribe(call.recording, call.segment(call.first_audio, call.greeting_end))
        print(f'caller heard:      "{greeting}" ({call.first_audio * 1000:.0f} ms after the INVITE; Whisper)')
        print(f'caller said:       "{REQUEST}" (espeak-ng, as RTP from pjsua2)')
        if call.reply_start is not None:
            reply = transcribe(call.recording, call.segment(call.reply_start, call.reply_end))
            print(f'agent answered:    "{reply}"')
        print(f"tasks in SQLite:   {stack.task_db.titles_by_owner()}")
    finally:
        sip_stack.stop()
