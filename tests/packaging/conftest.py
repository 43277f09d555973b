"""tests/packaging: the charts, images, dashboards, alerts, Argo CD health checks and generated docs."""

import sys
from pathlib import Path

# The tests import their helpers (packaging_kit) as a top-level module; pytest runs in importlib mode.
sys.path.insert(0, str(Path(__file__).parent))
