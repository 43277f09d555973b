"""worker_options.py: AgentServer options and environment from the config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from agent_testkit import make_config

from voicefleet_agent import contract
from voicefleet_agent.worker_options import preload_local_inference, server_options, session_load


def test_defaults_follow_the_contract() -> None:
    options = server_options(make_config(drain_timeout_seconds=900), {contract.ENV_PROMETHEUS_MULTIPROC_DIR: "/m"})

    assert options == {
        "drain_timeout": 900,
        "port": contract.WORKER_PORT,
        "prometheus_port": contract.METRICS_PORT,
        "prometheus_multiproc_dir": "/m",
    }


def test_session_capacity_replaces_cpu_load() -> None:
    options = server_options(make_config(max_sessions=4, idle_processes=1), {})

    assert options["num_idle_processes"] == 1
    assert options["load_threshold"] == 1.0
    load = options["load_fnc"]
    assert [load(SimpleNamespace(active_jobs=[object()] * n)) for n in (0, 1, 3, 4, 5)] == [0, 0.25, 0.75, 1.0, 1.0]


def test_session_load_is_full_exactly_at_the_limit() -> None:
    load = session_load(2)
    assert load(SimpleNamespace(active_jobs=[1])) < 1.0 <= load(SimpleNamespace(active_jobs=[1, 2]))


@pytest.mark.parametrize(("mode", "expected"), [("semantic", None), ("vad", "0"), ("stt", "0")])
def test_the_turn_model_is_preloaded_only_when_used(mode: str, expected: str | None) -> None:
    environ: dict[str, str] = {}
    preload_local_inference(make_config(turn_detection=mode), environ)
    assert environ.get(contract.ENV_PRELOAD_LOCAL_INFERENCE) == expected


def test_an_explicit_preload_setting_wins() -> None:
    environ = {contract.ENV_PRELOAD_LOCAL_INFERENCE: "1"}
    preload_local_inference(make_config(turn_detection="vad"), environ)
    assert environ[contract.ENV_PRELOAD_LOCAL_INFERENCE] == "1"


def test_unset_knobs_stay_out_of_the_rendered_file() -> None:
    assert "maxSessions" not in make_config().to_json()
    rendered = make_config(max_sessions=3, max_endpointing_delay_ms=900).to_json()
    assert '"maxSessions": 3' in rendered and '"maxEndpointingDelayMs": 900' in rendered
    assert contract.AgentConfig.from_json(rendered) == make_config(max_sessions=3, max_endpointing_delay_ms=900)
