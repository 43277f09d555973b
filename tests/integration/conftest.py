"""tests/integration: the operator against the real control plane and livekit-server."""

import sys
from pathlib import Path

# The tests import their helpers (phone_kit) as a top-level module; pytest runs in importlib mode.
sys.path.insert(0, str(Path(__file__).parent))
