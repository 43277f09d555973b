"""What a real node changes on this machine, made on purpose and put back: one machine-wide claim at a time.

A kubelet is machine-wide (its /kubepods cgroups, global sysctls, iptables chains), so one real node runs per
machine. `claim` takes the machine under a lock file, records what will change (sysctls, iptables chains, run
folders) and creates the two bridges pods and services meet on:

- `vfpods0` 10.247.0.1/24: the pods' bridge (the bridge CNI plugin attaches pods to it); services that pods must reach
  (livekit-server, the operator's fleet channel) also listen on its gateway address.
- `vfsvc0`, no address, no port: the host's route for the Service CIDR (10.96.0.0/16, source 10.247.0.1). kube-proxy
  (clusternet.py) rewrites what the host sends to a ClusterIP in OUTPUT; whatever it does not rewrite dies on this
  bridge instead of taking the default route off the machine. (This kernel has no `dummy` link type.) The apiserver
  listens on the pod bridge's gateway, 10.247.0.1:6443, the `kubernetes` Service's endpoint.

`release` puts everything back; the next `claim` does so too when the previous owner died without releasing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testground.process import ComponentError, ProcessRecord, process_start_time

POD_BRIDGE = "vfpods0"
POD_SUBNET = "10.247.0.0/24"
POD_GATEWAY = "10.247.0.1"
SERVICE_BRIDGE = "vfsvc0"
SERVICE_CIDR = "10.96.0.0/16"  # the apiserver's --service-cluster-ip-range
API_SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service's ClusterIP
API_SERVICE_PORT = 443
API_PORT = 6443  # where the apiserver listens on POD_GATEWAY: the `kubernetes` Service's endpoint
# machine-wide, like the node: the claim, and a lock file where lock files live
CLAIM_FILE = Path(os.environ.get("TESTGROUND_HOST_CLAIM", "/run/voicefleet-node.json"))
LOCK_FILE = Path("/run/lock/voicefleet-node.lock")
# The kubelet rewrites these at every start (setupKernelTunables); the bridge plugin turns on forwarding. The rest
# are what kube-proxy may tune (route_localnet for localhost NodePorts, conntrack sizes and timeouts; clusternet.py
# configures it to leave them) and what Services on a bridge depend on (br_netfilter): recorded and put back too.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"  # the kubelet's cgroupRoot "/" + cgroupsPerQOS: /kubepods in every hierarchy
# the node's containerd socket: under the ground folder its path could pass the 104-byte limit of unix sockets
RUN_DIR = Path("/run/voicefleet-node")
CONTAINERD_SOCKET = RUN_DIR / "containerd.sock"
SHIM_SOCKETS = Path("/run/containerd")  # containerd 1.6 shims put sockets in /run/containerd/s whatever `state` says
IPTABLES = ("iptables", "ip6tables")
# the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and kube-proxy's (KUBE-SERVICES, KUBE-SVC-*,
# KUBE-SEP-*, KUBE-MARK-MASQ, KUBE-POSTROUTING, KUBE-NODEPORTS, KUBE-PROXY-*, ...), in every table of both families
OUR_CHAIN_PREFIX = "KUBE-"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode:
        raise ComponentError("host", f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    """The values of SYSCTLS this kernel has (net.bridge.* only with br_netfilter, net.netfilter.* with conntrack)."""
    return {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS if _sysctl_path(name).exists()}


def iptables_chains() -> dict[str, list[str]]:
    """User chains per "family/table", from iptables-save and ip6tables-save."""
    chains: dict[str, list[str]] = {}
    for family in IPTABLES:
        table = ""
        for line in _run(f"{family}-save").stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                chains.setdefault(f"{family}/{table}", [])
            elif line.startswith(":"):
                chains[f"{family}/{table}"].append(line[1:].split()[0])
    return chains


def _iptables_tables() -> dict[str, tuple[bool, list[str]]]:
    """Per "family/table": whether it has rules, and its user chains (built-in chains have a policy, user ones "-")."""
    tables: dict[str, tuple[bool, list[str]]] = {}
    for family in IPTABLES:
        table = ""
        for line in _run(f"{family}-save").stdout.splitlines():
            if line.startswith("*"):
                table = f"{family}/{line[1:]}"
                tables[table] = (False, [])
            elif line.startswith(":") and line.split()[1] == "-":
                tables[table][1].append(line[1:].split()[0])
            elif line.startswith("-A "):
                tables[table] = (True, tables[table][1])
    return tables


def _remove_new_empty_tables(before: dict[str, list[str]]) -> None:
    """iptables-nft leaves the tables it created (with empty base chains) after their chains are gone: delete those
    that were absent before and are empty now (nft, Debian nftables)."""
    for name, (has_rules, user_chains) in _iptables_tables().items():
        if name not in before and not has_rules and not user_chains:
            family, table = name.split("/")
            _run("nft", "delete", "table", "ip" if family == "iptables" else "ip6", table)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


@dataclass
class Claim:
    """The machine-wide record of one real node: who holds it, and what to put back."""

    ground_root: str
    node_root: str
    owner: ProcessRecord
    sysctls: dict[str, str]
    chains: dict[str, list[str]]
    absent_run_dirs: list[str]
    processes: list[ProcessRecord] = field(default_factory=list)

    def save(self) -> None:
        data = {
            "ground_root": self.ground_root,
            "node_root": self.node_root,
            "owner": self.owner.to_json(),
            "sysctls": self.sysctls,
            "chains": self.chains,
            "absent_run_dirs": self.absent_run_dirs,
            "processes": [p.to_json() for p in self.processes],
        }
        tmp = CLAIM_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(CLAIM_FILE)

    @classmethod
    def load(cls) -> Claim | None:
        try:
            data: dict[str, Any] = json.loads(CLAIM_FILE.read_text())
        except (OSError, ValueError):
            return None
        return cls(
            ground_root=data["ground_root"],
            node_root=data["node_root"],
            owner=ProcessRecord.from_json(data["owner"]),
            sysctls=data["sysctls"],
            chains=data["chains"],
            absent_run_dirs=data["absent_run_dirs"],
            processes=[ProcessRecord.from_json(p) for p in data["processes"]],
        )

    def alive(self) -> bool:
        """True while its owner or any process it started runs."""
        return self.owner.alive() or any(p.alive() for p in self.processes)

    def add(self, process: ProcessRecord) -> None:
        """List `process` in the claim on record (re-read under the lock: several stacks add to it)."""
        with _locked():
            on_record = Claim.load()
            if on_record is None or on_record.ground_root != self.ground_root:
                return
            if process.pid not in {p.pid for p in on_record.processes}:
                on_record.processes.append(process)
                on_record.save()
            self.processes = on_record.processes


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _owner() -> ProcessRecord:
    pid = os.getpid()
    return ProcessRecord("owner", pid, process_start_time(pid) or -1, "")


def claim(ground_root: Path, *, wait: float = 900.0) -> Claim:
    """Take the machine for a real node of the ground in `ground_root` and create the bridges.

    Waits (polling) while another live ground holds it; cleans up after a holder that died.
    """
    node_root = ground_root / "node"
    deadline = time.monotonic() + wait
    while True:
        with _locked():
            held = Claim.load()
            if held is not None and not held.alive():
                restore(held)
                held = None
            if held is None:
                for name in (POD_BRIDGE, SERVICE_BRIDGE):
                    if _link_exists(name):
                        raise ComponentError(
                            "host",
                            f"{name} exists but no test ground claims it; check and delete it: ip link del {name}",
                        )
                made = Claim(
                    ground_root=str(ground_root),
                    node_root=str(node_root),
                    owner=_owner(),
                    sysctls=read_sysctls(),
                    chains=iptables_chains(),
                    absent_run_dirs=[str(d) for d in (SHIM_SOCKETS,) if not d.exists()],
                )
                made.save()
                try:
                    _create_bridges()
                except BaseException:
                    restore(made)
                    raise
                return made
        if time.monotonic() > deadline:
            raise ComponentError(
                "host",
                f"another test ground's real node holds this machine (ground {held.ground_root}, pid {held.owner.pid});"
                f" only one can run at a time. Stale? `python -m testground down --dir {held.ground_root}`",
            )
        time.sleep(2)


def _create_bridges() -> None:
    _run("ip", "link", "add", POD_BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{POD_GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", POD_BRIDGE)
    _run("ip", "link", "set", POD_BRIDGE, "up")
    _run("ip", "link", "add", SERVICE_BRIDGE, "type", "bridge")
    _run("ip", "link", "set", SERVICE_BRIDGE, "up")
    _run("ip", "route", "add", SERVICE_CIDR, "dev", SERVICE_BRIDGE, "src", POD_GATEWAY)


def current(ground_root: Path) -> Claim | None:
    """The claim of the ground in `ground_root`, if it holds the machine."""
    held = Claim.load()
    return held if held is not None and Path(held.ground_root) == ground_root else None


def release(held: Claim) -> None:
    """Put the machine back as the claim found it, if the claim is still the one on record."""
    with _locked():
        on_record = Claim.load()
        if on_record is not None and on_record.ground_root == held.ground_root:
            restore(on_record)


def restore(held: Claim) -> None:
    """Undo everything a real node and its bridges changed; idempotent. Called under the lock."""
    clean_node(Path(held.node_root), held.chains)
    _remove_new_empty_tables(held.chains)
    for name in (POD_BRIDGE, SERVICE_BRIDGE):
        if _link_exists(name):
            _run("ip", "link", "del", name)
    for name, value in held.sysctls.items():
        path = _sysctl_path(name)
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value + "\n")
    # ours alone: the node's socket and runc state, and the shims' sockets if nothing else had made the folder
    for directory in [RUN_DIR, *map(Path, held.absent_run_dirs)]:
        shutil.rmtree(directory, ignore_errors=True)
    CLAIM_FILE.unlink(missing_ok=True)


def clean_node(node_root: Path, chains_before: dict[str, list[str]]) -> None:
    """What a kubelet and containerd leave behind when stopped or killed: processes, mounts, cgroups, chains."""
    kill_leftovers()
    _unmount_under(node_root)
    _remove_cgroups()
    _remove_chains(chains_before)


def kill_leftovers() -> None:
    """SIGKILL the containers (every process in /kubepods) and the shims of our containerd (they outlive it)."""
    socket = str(CONTAINERD_SOCKET)
    victims: set[int] = set()
    for hierarchy in _kubepods_dirs():
        for procs in hierarchy.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                victims.update(int(pid) for pid in procs.read_text().split())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
                    victims.add(int(entry.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(process_start_time(pid) is not None for pid in victims) and time.monotonic() < deadline:
        time.sleep(0.05)


def _unmount_under(root: Path) -> None:
    """Unmount every mount point at or below `root`, deepest first (the kubelet bind-mounts its root dir on itself)."""
    prefix = str(root.resolve())
    for _ in range(5):  # a mount may hide another at the same point
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            _run("umount", "--lazy", point, check=False)


def _kubepods_dirs() -> list[Path]:
    return [d for d in CGROUP_ROOT.glob(f"*/{KUBEPODS}") if d.is_dir()]


def _remove_cgroups() -> None:
    for top in _kubepods_dirs():
        deadline = time.monotonic() + 10
        while top.exists():
            for directory in sorted(
                (d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            try:
                top.rmdir()
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ComponentError("host", f"cannot remove cgroup {top}: {e}") from e
                time.sleep(0.1)


def _remove_chains(before: dict[str, list[str]]) -> None:
    """Delete the KUBE-* chains that were not there before, and every rule jumping to them."""
    for family in IPTABLES:
        table = ""
        rules: dict[str, list[str]] = {}
        chains: dict[str, list[str]] = {}
        for line in _run(f"{family}-save").stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.setdefault(table, []).append(line[1:].split()[0])
            elif line.startswith("-A "):
                rules.setdefault(table, []).append(line)
        for table, names in chains.items():
            known = set(before.get(f"{family}/{table}", []))
            ours = [c for c in names if c.startswith(OUR_CHAIN_PREFIX) and c not in known]
            if not ours:
                continue
            for rule in rules.get(table, []):
                args = shlex.split(rule)
                if args[1] not in ours and any(
                    args[i + 1] in ours for i, a in enumerate(args[:-1]) if a in ("-j", "-g")
                ):
                    _run(family, "-t", table, "-D", *args[1:])
            for chain in ours:
                _run(family, "-t", table, "-F", chain)
            for chain in ours:
                _run(family, "-t", table, "-X", chain)


def reap() -> bool:
    """Put the machine back if the ground that claimed it is gone (a crashed test session); True if it did."""
    if not CLAIM_FILE.exists():
        return False
    with _locked():
        held = Claim.load()
        if held is None or held.alive():
            return False
        restore(held)
        return True


def footprint(node_root: Path) -> dict[str, Any]:
    """What a real node can leave on this machine, in a form to compare before and after (tests, `down`)."""
    prefix = str(node_root.resolve())
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
    ]
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if prefix.encode() in cmdline or str(CONTAINERD_SOCKET).encode() in cmdline:
                    processes.append(int(entry.name))
    chains = {
        table: kube
        for table, names in iptables_chains().items()
        if (kube := [c for c in names if c.startswith("KUBE-")])
    }
    return {
        "sysctls": read_sysctls(),
        "bridges": [name for name in (POD_BRIDGE, SERVICE_BRIDGE) if _link_exists(name)],
        "kubepods cgroups": [str(d) for d in _kubepods_dirs()],
        "kubelet chains": chains,
        "iptables tables": sorted(_iptables_tables()),
        "nft tables": _run("nft", "list", "tables").stdout.splitlines(),
        "service routes": _run("ip", "route", "show", SERVICE_CIDR).stdout.splitlines(),
        "mounts": mounts,
        "processes": processes,
        "run dirs": [str(d) for d in (SHIM_SOCKETS, RUN_DIR) if d.exists()],
    }
