"""Real-room voice harness: offline providers + tasks server + a real agent worker, and a Python caller."""

from .caller import AgentAudio, Caller, Transcript, Turn, Utterance
from .stack import (
    AGENT_NAME,
    LiveKitCredentials,
    Memory,
    OfflineUrls,
    VoiceStack,
    agent_config,
    tree_memory,
    wait_until,
)
from .tokenservice import Reply, TokenService

__all__ = [
    "AGENT_NAME",
    "AgentAudio",
    "Caller",
    "LiveKitCredentials",
    "Memory",
    "OfflineUrls",
    "Reply",
    "TokenService",
    "Transcript",
    "Turn",
    "Utterance",
    "VoiceStack",
    "agent_config",
    "tree_memory",
    "wait_until",
]
