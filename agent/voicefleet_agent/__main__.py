"""``python -m voicefleet_agent start``: the worker, with process-wide defaults set before anything imports LiveKit.

prometheus-client picks multiprocess mode when it is first imported, so PROMETHEUS_MULTIPROC_DIR must be in the
environment before that; the operator sets it in the pod, this only fills it in for local runs.
"""

import os
import sys
import tempfile

from voicefleet_agent.contract import ENV_PROMETHEUS_MULTIPROC_DIR


def _set_defaults() -> None:
    os.environ.setdefault(ENV_PROMETHEUS_MULTIPROC_DIR, os.path.join(tempfile.gettempdir(), "voicefleet-prometheus"))


if __name__ == "__main__":
    _set_defaults()
    from voicefleet_agent.main import cli

    sys.exit(cli(sys.argv[1:]))
