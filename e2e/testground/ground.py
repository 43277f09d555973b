"""A detached test ground (both stacks) whose state lives in a folder, so that another process can stop it."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from testground import host
from testground.kube import Cluster, KubeStack
from testground.livekit import LiveKit, LiveKitStack
from testground.metrics import Metrics, MetricsStack
from testground.node import RealNode, RealNodeStack, drain
from testground.process import ProcessRecord, http_ok, stop_group

STATE_FILE = "state.json"
T = TypeVar("T")


def default_dir() -> Path:
    return Path(os.environ.get("TESTGROUND_DIR") or Path.cwd() / ".testground")


@dataclass
class Ground:
    """What `up` started: the handles for clients, and the processes to stop."""

    root: Path
    cluster: Cluster | None = None
    livekit: LiveKit | None = None
    node: RealNode | None = None
    metrics: Metrics | None = None
    processes: list[ProcessRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster.to_json() if self.cluster else None,
            "livekit": self.livekit.to_json() if self.livekit else None,
            "node": self.node.to_json() if self.node else None,
            "metrics": self.metrics.to_json() if self.metrics else None,
            "processes": [p.to_json() for p in self.processes],
            "timings": self.timings,
        }

    def save(self) -> None:
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, root: Path) -> Ground | None:
        try:
            data = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            root=root,
            cluster=Cluster.from_json(data["cluster"]) if data.get("cluster") else None,
            livekit=LiveKit.from_json(data["livekit"]) if data.get("livekit") else None,
            node=RealNode.from_json(data["node"]) if data.get("node") else None,
            metrics=Metrics.from_json(data["metrics"]) if data.get("metrics") else None,
            processes=[ProcessRecord.from_json(p) for p in data.get("processes", [])],
            timings=data.get("timings", {}),
        )

    def dead(self) -> list[str]:
        return [p.name for p in self.processes if not p.alive()]

    def healthy(self) -> bool:
        """Every process alive and the two front doors answering."""
        if self.dead():
            return False
        if self.cluster:
            try:
                if self.cluster.api().get("/readyz") != "ok":
                    return False
            except Exception:
                return False
        return not (self.livekit and not http_ok(self.livekit.http_url + "/"))


def up(
    root: Path,
    *,
    kube: bool = True,
    livekit: bool = True,
    nodes: int = 3,
    real_node: bool = False,
    timeout: float = 120,
) -> Ground:
    """Start the stacks detached and record them in `root`; returns the running ground as it is if healthy.

    `real_node` first takes the machine for the pod network (host.claim), then adds a real kubelet node."""
    existing = Ground.load(root)
    if existing and existing.processes and existing.healthy() and (existing.node or not real_node):
        return existing
    down(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "logs", ignore_errors=True)
    ground = Ground(root)
    lock = threading.Lock()
    claim = host.claim(root) if real_node and kube else None

    def record(process: ProcessRecord) -> None:
        with lock:  # written at every spawn, so that `down` finds processes of an `up` that was killed midway
            ground.processes.append(process)
            ground.save()
        if claim is not None:  # the machine stays claimed while any of them runs
            claim.add(process)

    started = time.monotonic()
    kube_stack = KubeStack(
        root, node_count=nodes, detached=True, timeout=timeout, on_spawn=record, serve_pods=claim is not None
    )
    livekit_stack = LiveKitStack(
        root, detached=True, timeout=timeout, on_spawn=record, pod_address=host.POD_GATEWAY if claim else None
    )
    node_stack = RealNodeStack(root, detached=True, timeout=timeout, on_spawn=record)
    metrics_stack = MetricsStack(root, detached=True, timeout=timeout, on_spawn=record)

    def timed_start(name: str, start: Callable[[], T]) -> T:
        t0 = time.monotonic()
        result = start()
        ground.timings[name] = round(time.monotonic() - t0, 2)
        return result

    try:
        with ThreadPoolExecutor(2) as pool:
            cluster = pool.submit(timed_start, "kube", kube_stack.start) if kube else None
            lk = pool.submit(timed_start, "livekit", livekit_stack.start) if livekit else None
            # wait for both before raising, so that a failure of one doesn't leave the other starting
            pending: list[Future[Any]] = [f for f in (cluster, lk) if f is not None]
            wait(pending)
            ground.cluster = cluster.result() if cluster else None
            ground.livekit = lk.result() if lk else None
        if claim is not None:
            node_stack.cluster = ground.cluster
            node_stack.livekit = ground.livekit
            ground.node = timed_start("real node", node_stack.start)
            metrics_stack.cluster = ground.cluster  # Prometheus + prometheus-adapter: the pods' metrics to the HPAs
            ground.metrics = timed_start("metrics", metrics_stack.start)
    except BaseException:
        metrics_stack.stop()
        node_stack.stop()
        kube_stack.stop()
        livekit_stack.stop()
        down(root)
        raise
    if ground.livekit:
        env = "".join(f"{k}={v}\n" for k, v in ground.livekit.env().items())
        (root / "livekit.env").write_text(env)
        (root / "livekit.env").chmod(0o600)
    ground.timings.update({f"kube: {k}": v for k, v in kube_stack.timings.items()})
    ground.timings.update({f"real node: {k}": v for k, v in node_stack.timings.items()})
    ground.timings["total"] = round(time.monotonic() - started, 2)
    ground.save()
    return ground


def down(root: Path, *, purge: bool = False) -> list[str]:
    """Stop every process `up` recorded in `root` (those still running); idempotent. Returns what it stopped.

    A real node's pods go first, and the machine is put back as found (host.release); so is a machine that a
    crashed test session left claimed."""
    ground = Ground.load(root)
    stopped: list[str] = []
    kubelet = next((p for p in ground.processes if p.name == "kubelet"), None) if ground else None
    if ground and ground.node and ground.cluster and kubelet is not None:
        drain(ground.cluster, alive=kubelet.alive)
    if ground:
        for process in reversed(ground.processes):
            if process.alive():
                stopped.append(process.name)
            stop_group(process)
        (root / STATE_FILE).unlink(missing_ok=True)
    claim = host.current(root)
    if claim is not None:
        host.release(claim)
        stopped.append("real node (machine restored)")
    elif host.reap():
        stopped.append("a dead test ground's real node (machine restored)")
    for name in ("livekit.env", "kubeconfig"):
        (root / name).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(root, ignore_errors=True)
    return stopped
