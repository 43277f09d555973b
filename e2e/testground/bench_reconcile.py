"""`make bench-reconcile`: time from `kubectl apply` of examples/ to VoiceAgent Ready, and from an edit to Ready.

Runs on a private test ground (real control plane, kwok nodes). Prints a table; the last line is one JSON object,
also written to bench-results/reconcile.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from testground.ground import down, up
from testground.operator import Namespace, OperatorProcess, load_examples, wait_for

ROOT = Path(__file__).resolve().parents[2]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(runs: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="voicefleet-bench-"))
    started = time.monotonic()
    ground = up(root, livekit=False)
    ground_s = time.monotonic() - started
    assert ground.cluster is not None
    cluster = ground.cluster
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    operator = OperatorProcess(cluster.kubeconfig, cluster.logs_dir)
    operator.start()
    docs = load_examples(ROOT / "examples")
    to_ready: list[float] = []
    edit_to_ready: list[float] = []
    try:
        for i in range(runs):
            ns = Namespace(cluster, f"bench-{i}")
            cluster.kubectl("create", "namespace", ns.name)
            t0 = time.monotonic()
            assert ns.apply(*docs).returncode == 0
            ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=180s")
            to_ready.append(time.monotonic() - t0)
            generation = (ns.get("voiceagent", "tasks") or {})["metadata"]["generation"]
            t1 = time.monotonic()
            ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p",
                       json.dumps({"spec": {"pipeline": {"instructions": f"Run {i}."}}}))  # fmt: skip

            def ready_again(gen: int = generation + 1, ns: Namespace = ns) -> bool:
                cond = ns.condition("voiceagent", "tasks", "Ready") or {}
                return cond.get("status") == "True" and cond.get("observedGeneration") == gen

            wait_for("Ready after the edit", ready_again, timeout=180, every=0.05)
            edit_to_ready.append(time.monotonic() - t1)
            cluster.kubectl("delete", "namespace", ns.name, "--wait=false")
    finally:
        operator.stop()
        down(root, purge=True)
    return {
        "runs": runs,
        "ground_start_s": round(ground_s, 2),
        "apply_to_ready_p50_s": round(statistics.median(to_ready), 2),
        "apply_to_ready_max_s": round(max(to_ready), 2),
        "edit_to_ready_p50_s": round(statistics.median(edit_to_ready), 2),
        "edit_to_ready_p95_s": round(percentile(edit_to_ready, 0.95), 2),
        "apply_to_ready_s": [round(v, 2) for v in to_ready],
        "edit_to_ready_s": [round(v, 2) for v in edit_to_ready],
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "reconcile.json")
    args = parser.parse_args()
    result = run(args.runs)
    print(f"{'measure':<28}{'p50':>8}{'max/p95':>10}")
    print(f"{'kubectl apply -> Ready (s)':<28}{result['apply_to_ready_p50_s']:>8}{result['apply_to_ready_max_s']:>10}")
    print(f"{'edit -> Ready (s)':<28}{result['edit_to_ready_p50_s']:>8}{result['edit_to_ready_p95_s']:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
