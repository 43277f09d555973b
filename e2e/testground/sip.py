"""livekit-sip on the test ground, and the caller's side of the wire: a network namespace joined by a veth pair.

A SIP user agent must dial a non-loopback address (livekit-sip's own tests say so, and the source address is what
a trunk's `allowedAddresses` checks). So the stack makes a private /24 of its own on a veth pair: the host end
(`.1`) is where livekit-sip listens for SIP and RTP, the other end lives in a network namespace with the caller's
address (`.2`) and a stranger's address (`.3`). Nothing else is routed there; `stop` removes the namespace, the
veth pair and the process. livekit-sip shares livekit-server's Redis and API key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testground import binaries
from testground.livekit import LiveKit
from testground.process import ComponentError, Stack, free_port, http_ok

# The /24s the stack picks from (10.213.0.0/16): private addresses that exist only on the veths it creates.
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
RTP_PORTS = 60  # per stack; a finished call's port drains for a while (disabled below) before it is reused
NAME_PREFIX = "vfsip"


@dataclass(frozen=True)
class SipGround:
    """A running livekit-sip and the namespace a caller dials it from."""

    host: str  # livekit-sip's SIP and RTP address (the host end of the veth)
    port: int  # SIP over UDP and TCP
    netns: str  # the caller's network namespace
    caller_ip: str  # the caller's address in it
    stranger_ip: str  # a second address in it, for calls from outside allowedAddresses
    subnet: str
    rtp_ports: tuple[int, int]
    prometheus_url: str
    health_url: str
    logs_dir: Path
    log: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def in_netns(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the caller's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port, "netns": self.netns, "caller_ip": self.caller_ip,
            "stranger_ip": self.stranger_ip, "subnet": self.subnet, "rtp_ports": list(self.rtp_ports),
            "prometheus_url": self.prometheus_url, "health_url": self.health_url, "logs_dir": str(self.logs_dir),
            "log": str(self.log),
        }  # fmt: skip


NETNS_DIR = "/run/netns"
# Present while /run/netns is mounted because a SipStack's `ip netns add` mounted it (not the machine's own): any
# stack, not only the one that mounted it, undoes the mount once no namespace is left, so two overlapping stacks
# (two test sessions at once) leave nothing mounted whichever of them stops last.
NETNS_MOUNT_MARK = Path("/run/lock/voicefleet-netns-mounted")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise ComponentError("sip-netns", f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    used: set[ipaddress.IPv4Network] = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines() + _ip("-4", "route", "show").stdout.splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(word, strict=False)
                if isinstance(net, ipaddress.IPv4Network) and net.prefixlen >= 8:
                    used.add(net)
    return used


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A /24 of the pool that no interface or route of this machine touches."""
    rng = rng or random.SystemRandom()
    used = _subnets_in_use()
    candidates: list[ipaddress.IPv4Network] = list(SUBNET_POOL.subnets(new_prefix=24))
    for subnet in rng.sample(candidates, len(candidates)):
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise ComponentError("sip-netns", f"no free /24 left in {SUBNET_POOL}")


def free_udp_range(size: int, low: int = 20000, high: int = 32000, attempts: int = 200) -> tuple[int, int]:
    """`size` consecutive UDP ports, free on every address now, below the kernel's ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        start = rng.randrange(low, high - size)
        socks: list[socket.socket] = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("0.0.0.0", port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ComponentError("livekit-sip", f"no {size} consecutive free UDP ports in {low}-{high}")


def sip_config(
    *, livekit: LiveKit, host: str, port: int, rtp: tuple[int, int], health_port: int, prometheus_port: int
) -> dict[str, Any]:
    """livekit-sip settings: listen and announce the veth address only, no STUN, livekit-server's key and Redis."""
    return {
        "api_key": livekit.api_key,
        "api_secret": livekit.api_secret,
        "ws_url": livekit.url,
        "redis": {"address": livekit.redis},
        "sip_port": port,
        "listen_ip": host,
        "nat_1_to_1_ip": host,  # the address put in Contact and SDP; no external IP lookup (nothing outside)
        "use_external_ip": False,
        "rtp_port": {"start": rtp[0], "end": rtp[1]},
        "rtp_draining_idle_timeout": "-1s",  # reuse a finished call's RTP port at once: sequential test calls
        # a shared 2-core box runs near 100 % CPU: livekit-sip would call itself "under load" (health 429)
        "max_cpu_utilization": 1.0,
        "health_port": health_port,
        "prometheus_port": prometheus_port,
        "logging": {"level": "debug"},
    }


@dataclass
class SipStack(Stack[SipGround]):
    """Starts livekit-sip for `livekit` and the caller's namespace under `root`; `stop` removes all of it."""

    livekit: LiveKit | None = None
    netns: str = field(init=False, default="")
    veth: str = field(init=False, default="")
    made: list[str] = field(init=False, default_factory=list)  # every namespace and link it created, for checks

    def _start(self) -> SipGround:
        if self.livekit is None:
            raise ComponentError("livekit-sip", "needs a running livekit-server (SipStack(root, livekit=...))")
        binaries.ensure_built(binaries.SIP_BINARIES, self.logs_dir / "build.log")
        tag = secrets.token_hex(3)
        subnet = pick_subnet()
        hosts = list(subnet.hosts())
        host, caller, stranger = str(hosts[0]), str(hosts[1]), str(hosts[2])
        self._net_up(tag, subnet, host, caller, stranger)

        port = free_port()
        rtp = free_udp_range(RTP_PORTS)
        health_port, prometheus_port = free_port(), free_port()
        work = self.root / "sip"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "livekit-sip.yaml"
        config.write_text(yaml.safe_dump(sip_config(
            livekit=self.livekit, host=host, port=port, rtp=rtp, health_port=health_port,
            prometheus_port=prometheus_port,
        )))  # fmt: skip
        config.chmod(0o600)
        process = self.supervisor.spawn("livekit-sip", [binaries.binary("livekit-sip"), "--config", str(config)])
        health_url = f"http://127.0.0.1:{health_port}/"
        process.wait_ready(lambda: http_ok(health_url) and _udp_bound(host, port), self.timeout, "serving SIP")
        return SipGround(
            host=host, port=port, netns=self.netns, caller_ip=caller, stranger_ip=stranger, subnet=str(subnet),
            rtp_ports=rtp, prometheus_url=f"http://127.0.0.1:{prometheus_port}/metrics", health_url=health_url,
            logs_dir=self.logs_dir, log=process.log,
        )  # fmt: skip

    def _net_up(self, tag: str, subnet: ipaddress.IPv4Network, host: str, caller: str, stranger: str) -> None:
        remove_orphans()
        # the namespace's name carries our pid, so that a later stack removes it if we die with SIGKILL
        self.netns, self.veth = f"{NAME_PREFIX}-{tag}-p{os.getpid()}", f"{NAME_PREFIX}{tag}h"
        peer = f"{NAME_PREFIX}{tag}c"
        prefix = subnet.prefixlen
        self.made += [self.netns, self.veth]
        if not netns_dir_mounted():
            NETNS_MOUNT_MARK.parent.mkdir(parents=True, exist_ok=True)
            NETNS_MOUNT_MARK.touch()
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", peer, "netns", self.netns)
        _ip("addr", "add", f"{host}/{prefix}", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.netns, "addr", "add", f"{caller}/{prefix}", "dev", peer)
        _ip("-n", self.netns, "addr", "add", f"{stranger}/{prefix}", "dev", peer)
        _ip("-n", self.netns, "link", "set", peer, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def stop(self) -> None:
        super().stop()
        if self.veth:
            _ip("link", "del", self.veth, check=False)
        if self.netns:
            _ip("netns", "del", self.netns, check=False)
        if NETNS_MOUNT_MARK.exists():
            release_netns_dir()
        self.veth = self.netns = ""


def netns_dir_mounted() -> bool:
    """/run/netns is a mount point (a bind mount of itself on the same filesystem: os.path.ismount can't tell)."""
    return any(line.split()[4] == NETNS_DIR for line in Path("/proc/self/mountinfo").read_text().splitlines())


def release_netns_dir() -> None:
    """Undo the mount `ip netns add` makes of /run/netns, once no namespace is left in it."""
    while netns_dir_mounted() and not any(Path(NETNS_DIR).iterdir()):  # `ip` may have stacked two
        if subprocess.run(["umount", NETNS_DIR], capture_output=True, check=False).returncode:
            break
    if not netns_dir_mounted():
        with contextlib.suppress(OSError):
            Path(NETNS_DIR).rmdir()
        NETNS_MOUNT_MARK.unlink(missing_ok=True)


def remove_orphans() -> list[str]:
    """Delete the namespaces of SipStacks whose process is gone (killed before `stop`); their veth pairs go with them
    (deleting one end of a veth deletes the other). Returns the names removed."""
    removed = []
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        owner = name.rsplit("-p", 1)[-1] if name.startswith(NAME_PREFIX + "-") and "-p" in name else ""
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _udp_bound(host: str, port: int) -> bool:
    """Something holds UDP `host:port` (binding it ourselves fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False
