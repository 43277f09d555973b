"""python -m testground {up,down,status,env,build}: a real control plane and livekit-server on loopback."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from testground import binaries
from testground.ground import Ground, default_dir, down, up
from testground.process import ComponentError


def _usage(ground: Ground) -> str:
    root = ground.root.resolve()
    lines = [f"test ground in {root}, ready {ground.timings.get('total', '?')} s after `up`"]
    if ground.cluster:
        lines.append(f"  kubernetes  {ground.cluster.server}  nodes: {', '.join(ground.cluster.nodes)}")
        lines.append(f"  kubeconfig  {ground.cluster.kubeconfig}")
    if ground.node:
        lines.append(f"  real node   {ground.node.name}  containerd {ground.node.containerd_socket}")
        lines.append(f"  for pods    apiserver {ground.node.api_service_url}, services at {ground.node.pod_gateway}")
        lines.append(f"              cluster DNS {ground.node.cluster_dns}, livekit {ground.node.livekit_service_url}")
    if ground.livekit:
        lines.append(f"  livekit     {ground.livekit.url}  (redis {ground.livekit.redis})")
        lines.append(f"  env file    {root / 'livekit.env'}")
    lines.append(f"  logs        {root / 'logs'}/")
    lines.append("use it:")
    lines.append('  eval "$(python -m testground env)"   # KUBECONFIG, PATH (kubectl 1.34, helm), LIVEKIT_*')
    lines.append("  kubectl get nodes")
    lines.append("stop it:  python -m testground down")
    return "\n".join(lines)


def _env(ground: Ground) -> str:
    exports = {"PATH": f"{binaries.bin_dir()}:$PATH"}
    if ground.cluster:
        exports["KUBECONFIG"] = str(ground.cluster.kubeconfig)
    if ground.livekit:
        exports.update(ground.livekit.env())
    return "".join(f"export {k}={v if k == 'PATH' else shlex.quote(v)}\n" for k, v in exports.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testground", description=__doc__)
    parser.add_argument(
        "--dir", type=Path, default=None, help="state folder (default: $TESTGROUND_DIR or ./.testground)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start everything detached; a no-op when it already runs")
    p_up.add_argument("--no-kube", action="store_true", help="only redis + livekit-server")
    p_up.add_argument("--no-livekit", action="store_true", help="only the Kubernetes control plane")
    p_up.add_argument("--nodes", type=int, default=3, help="kwok nodes (default 3)")
    p_up.add_argument(
        "--real-node", action="store_true", help="add a real kubelet node (containerd, pod bridge); one per machine"
    )
    p_up.add_argument("--timeout", type=float, default=120, help="seconds each component may take to be ready")
    p_down = sub.add_parser("down", help="stop everything `up` started; idempotent")
    p_down.add_argument("--purge", action="store_true", help="also delete the state folder and logs")
    sub.add_parser("status", help="what runs; exit 1 unless all of it is healthy")
    sub.add_parser("env", help='print export lines: eval "$(python -m testground env)"')
    p_build = sub.add_parser("build", help="build the pinned binaries into the cache (build.sh)")
    p_build.add_argument("components", nargs="*", help="k8s, kubelet, kwok, livekit, helm (default: all)")
    args = parser.parse_args(argv)
    root: Path = (args.dir or default_dir()).absolute()

    try:
        if args.command == "build":
            binaries.build(args.components)
            print(f"binaries in {binaries.bin_dir()}")
        elif args.command == "up":
            needed = (
                (binaries.K8S_BINARIES if not args.no_kube else ())
                + (binaries.LIVEKIT_BINARIES if not args.no_livekit else ())
                + (binaries.NODE_BINARIES if args.real_node else ())
            )
            if absent := binaries.missing(needed):
                components = sorted({binaries.BUILD_COMPONENTS[n] for n in absent})
                print(f"building {', '.join(absent)} (cold: ~10 min) ...", flush=True)
                binaries.build(components)
            ground = up(root, kube=not args.no_kube, livekit=not args.no_livekit, nodes=args.nodes,
                        real_node=args.real_node, timeout=args.timeout)  # fmt: skip
            print(_usage(ground))
            print("seconds until ready: " + ", ".join(f"{k} {v}" for k, v in ground.timings.items()))
        elif args.command == "down":
            stopped = down(root, purge=args.purge)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "status":
            loaded = Ground.load(root)
            if loaded is None:
                print(f"no test ground in {root}")
                return 1
            dead = loaded.dead()
            for p in loaded.processes:
                print(f"  {p.name:24} pid {p.pid:<8} {'dead' if p.name in dead else 'running'}  {p.log}")
            healthy = loaded.healthy()
            print("healthy" if healthy else "NOT healthy")
            return 0 if healthy else 1
        elif args.command == "env":
            loaded = Ground.load(root)
            if loaded is None:
                print(f"no test ground in {root}; run: python -m testground up", file=sys.stderr)
                return 1
            print(_env(loaded), end="")
    except ComponentError as e:
        print(f"testground: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
