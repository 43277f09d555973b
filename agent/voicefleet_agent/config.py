"""Load the AgentConfig the operator rendered (path from ``VOICEFLEET_CONFIG``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from voicefleet_agent.contract import CONFIG_DIR, CONFIG_FILE, ENV_AGENT_NAME, ENV_CONFIG_PATH, AgentConfig

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """The agent cannot start with the config it was given."""


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ENV_CONFIG_PATH) or f"{CONFIG_DIR}/{CONFIG_FILE}")


def load_config(environ: Mapping[str, str] = os.environ) -> AgentConfig:
    """Read and validate the config file; the file's agent name wins over ``LIVEKIT_AGENT_NAME``."""
    path = config_path(environ)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the agent config at {path} (set {ENV_CONFIG_PATH}): {exc}") from exc
    try:
        config = AgentConfig.from_json(text)
    except ValueError as exc:
        raise ConfigError(f"invalid agent config at {path}: {exc}") from exc
    env_name = environ.get(ENV_AGENT_NAME)
    if env_name and env_name != config.agent_name:
        log.warning(
            "%s=%r differs from the config's agentName %r; dispatching on the config's",
            ENV_AGENT_NAME,
            env_name,
            config.agent_name,
        )
    return config
