"""Offline stand-ins for the paid voice providers, speaking their real wire protocols on loopback.

The real LiveKit plugins run against them unchanged (only ``base_url`` and a dummy key differ):

* `DeepgramServer` — ``/v1/listen`` streaming + prerecorded STT on Whisper tiny.en;
* `OpenAIServer` — ``/v1/chat/completions`` (a deterministic task-manager model with tool calls) and
  ``/v1/audio/transcriptions`` on Whisper;
* `CartesiaServer` — ``/tts/websocket`` and ``/tts/bytes`` on espeak-ng.

Every server injects faults (`Mode`) set at construction, with `OfflineServer.set_fault`, or over HTTP at
``/_control``. `OfflineStack` runs all three; ``python -m voicefleet_offline`` does the same from a shell.
"""

from .cartesia_server import CartesiaServer
from .deepgram_server import DeepgramServer
from .faults import FaultConfig, Mode
from .openai_server import OpenAIServer
from .server import OfflineServer
from .stack import OFFLINE_API_KEY, OfflineStack, stack_env
from .whisper import WhisperEngine, get_engine

__all__ = [
    "OFFLINE_API_KEY",
    "CartesiaServer",
    "DeepgramServer",
    "FaultConfig",
    "Mode",
    "OfflineServer",
    "OfflineStack",
    "OpenAIServer",
    "WhisperEngine",
    "get_engine",
    "stack_env",
]
