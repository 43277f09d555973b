"""`python -m voicefleet_browser`: the token service and talk page, configured from the environment (contract.py)."""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from voicefleet_browser.server import make_app
from voicefleet_browser.tokens import Settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:
        print(f"voicefleet_browser: {exc}", file=sys.stderr)
        return 2
    web.run_app(make_app(settings), host="0.0.0.0", port=settings.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
