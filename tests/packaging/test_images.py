"""The Dockerfiles, as far as they can be checked without a Docker engine: lint, and the build context suffices."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging_kit import ROOT, run, tool

from voicefleet_agent import contract
from voicefleet_agent.contract import AgentConfig, McpServerConfig, ProviderConfig

DOCKERFILES = ("Dockerfile.operator", "Dockerfile.agent", "Dockerfile.offline")
# What each image runs, and the extra of pyproject.toml it installs. (The agent's main module reads its config file
# at import; tests/images starts that image for real.)
ENTRYPOINTS = {
    "Dockerfile.operator": ("voicefleet_operator.__main__", "operator"),
    "Dockerfile.offline": ("voicefleet_offline.__main__", "offline"),
    "Dockerfile.offline:tasks": ("voicefleet_tasks.server", "offline"),
    "Dockerfile.agent:browser": ("voicefleet_browser.__main__", "agent"),  # the token service (channels.browser)
}
SOURCE_ROOT = "opt/voicefleet"  # where the images COPY the packages (PYTHONPATH)
# Imported when installed, skipped (try/except ImportError) when not: not requirements of the image.
OPTIONAL_IMPORTS = {
    "cryptography": "PyJWT (under livekit-api) loads it for RSA/EC keys if present; LiveKit tokens are HS256",
    "cffi": "loaded by cryptography",
    "sniffio": "anyio (under mcp) asks it for the running async library if present",
    "watchfiles": "uvicorn (under mcp) loads its --reload supervisor if present",
}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    result = run(tool("hadolint"), "--no-color", str(ROOT / name), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = run(tool("hadolint"), "--no-color", str(bad), check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout  # `latest` tag


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_multi_stage_pinned_and_non_root(name: str) -> None:
    text = (ROOT / name).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in re.findall(r"^FROM (\S+)", text, re.M)]
    assert len(bases) >= 2, "multi-stage"
    assert all(re.search(r":\d+\.\d+\.\d+", b) or "@sha256:" in b for b in bases), bases
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "--no-cache-dir" in text


def _build_context(dockerfile: str, into: Path) -> None:
    """Copy what the Dockerfile COPYs from the context, with Docker's rules: a directory's contents go into dest;
    with several sources or a dest ending in /, files go into the dest directory. Absolute dests land under `into`."""
    for line in re.findall(r"^COPY (?!--from)(.+)$", (ROOT / dockerfile).read_text(), re.M):
        *sources, dest = line.split()
        dest = dest.lstrip("/")
        into_dir = len(sources) > 1 or dest.endswith("/")
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, into / dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                continue
            target = into / dest / src.name if into_dir else into / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _requirements(extra: str) -> set[str]:
    """Distributions `pip install .[extra]` brings in: the closure of its requirements over the installed metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"][extra])]
    found: set[str] = set()
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        for text in metadata.requires(req.name) or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                pending.append(sub)
    return found


def _owners() -> dict[str, str]:
    """Installed file path → the distribution that installed it."""
    owners: dict[str, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            owners[str(Path(str(dist.locate_file(file))).resolve())] = canonicalize_name(dist.metadata["Name"])
    return owners


@pytest.mark.parametrize("name", list(ENTRYPOINTS))
def test_build_context_holds_everything_the_entrypoint_imports(name: str, tmp_path: Path) -> None:
    """Import the image's entrypoint from a copy of only what the Dockerfile COPYs, and check that every third-party
    module it loads comes from a distribution its pyproject extra installs."""
    module, extra = ENTRYPOINTS[name]
    _build_context(name.split(":")[0], tmp_path)
    roots = [str(tmp_path / SOURCE_ROOT)]
    probe = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"  # what site startup loaded (.pth hooks) is not the entrypoint's doing
        f"importlib.import_module({module!r})\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items() if n not in before}))\n"
    )
    env = {"PYTHONPATH": ":".join(roots), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, str | None] = json.loads(result.stdout.strip().splitlines()[-1])
    ours = {n: f for n, f in loaded.items() if n.startswith("voicefleet")}
    assert ours and all(f is None or f.startswith(str(tmp_path)) for f in ours.values()), ours
    owners = _owners()
    site = [str(Path(f).resolve()) for f in loaded.values() if f and "site-packages" in f]
    unowned = [f for f in site if f not in owners]
    assert not unowned, f"modules no installed distribution owns: {unowned[:5]}"
    missing = {owners[f] for f in site} - _requirements(extra) - set(OPTIONAL_IMPORTS)
    assert not missing, f"{name}: imports from {sorted(missing)}, which .[{extra}] does not install"


def _pruned_modules(dockerfile: str) -> set[str]:
    """Module names of the site-packages paths a Dockerfile removes after installing (`rm -rf "$sp"/...`)."""
    text = (ROOT / dockerfile).read_text()
    paths = re.findall(r'"\$sp"/(\S+)', text)
    return {p.replace("/", ".") for p in paths if not re.search(r"\.dist-info$|\.libs$|\.so\b|\*", p)}


def test_agent_image_prunes_nothing_the_agent_imports(tmp_path: Path) -> None:
    """Dockerfile.agent deletes packages the dependency closure brings but the agent never imports. Import every
    module of the agent (and the plugins and runtimes its sessions load) from the image's build context and check
    that none of them loads a pruned module. (tests/images and tests/e2e then run the built image for real.)"""
    pruned = _pruned_modules("Dockerfile.agent")
    assert {"grpc", "PIL", "onnxruntime.transformers"} <= pruned, pruned
    _build_context("Dockerfile.agent", tmp_path)
    dead = "http://127.0.0.1:1"  # the main module reads its config at import; nothing connects anywhere
    config = AgentConfig(
        agent_name="prune-check",
        instructions="You manage tasks.",
        stt=(ProviderConfig(name="deepgram", provider="deepgram", model="nova-3", base_url=dead),),
        llm=(ProviderConfig(name="openai", provider="openai", model="gpt-4o-mini", base_url=dead + "/v1"),),
        tts=(ProviderConfig(name="cartesia", provider="cartesia", model="sonic-3", base_url=dead),),
        mcp_servers=(McpServerConfig(name="tasks", url=dead + "/mcp"),),
    )
    (tmp_path / "agent.json").write_text(config.to_json())
    probe = (
        "import importlib, json, pkgutil, sys\n"
        "import voicefleet_agent\n"
        "for m in pkgutil.walk_packages(voicefleet_agent.__path__, 'voicefleet_agent.'):\n"
        "    if m.name != 'voicefleet_agent.__main__':\n"  # starts the worker
        "        importlib.import_module(m.name)\n"
        "for name in ('voicefleet_browser.__main__', 'livekit.plugins.silero', 'livekit.plugins.openai',\n"
        "             'livekit.plugins.deepgram', 'livekit.plugins.cartesia', 'livekit.agents.telemetry',\n"
        "             'livekit.agents.inference', 'onnxruntime'):\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {
        "PYTHONPATH": str(tmp_path / SOURCE_ROOT),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        contract.ENV_CONFIG_PATH: str(tmp_path / "agent.json"),
    }
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    hits = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in pruned)]
    assert not hits, f"the agent imports what Dockerfile.agent deletes: {hits}"
