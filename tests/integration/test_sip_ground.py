"""livekit-sip on the test ground: its own veth pair and caller namespace, made and removed by the stack."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from testground.livekit import LiveKit
from testground.operator import wait_for
from testground.process import ComponentError
from testground.sip import (
    NAME_PREFIX,
    SipStack,
    netns_dir_mounted,
    pick_subnet,
    release_netns_dir,
    remove_orphans,
)

pytestmark = pytest.mark.integration


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def ours() -> tuple[list[str], list[str]]:
    """Network namespaces and links of any SipStack on this machine (other sessions' included)."""
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines() if line.startswith(NAME_PREFIX)]
    links = [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()
             if NAME_PREFIX in line]  # fmt: skip
    return namespaces, links


def test_sip_stack_listens_on_its_own_veth_and_stop_removes_namespace_veth_and_process(
    livekit: LiveKit, tmp_path: Path
) -> None:
    stack = SipStack(tmp_path, livekit=livekit)
    sip = stack.start()
    try:
        namespaces, links = ours()
        assert sip.netns in namespaces
        veth = stack.veth
        assert veth in links
        assert f"inet {sip.host}/24" in ip("-o", "-4", "addr", "show", "dev", veth)
        inside = ip("-n", sip.netns, "-o", "-4", "addr", "show")
        assert f"inet {sip.caller_ip}/24" in inside and f"inet {sip.stranger_ip}/24" in inside
        # the caller's side reaches livekit-sip over the veth, not loopback: its route is the veth's subnet
        route = subprocess.run(sip.in_netns(["ip", "-4", "route", "get", sip.host]), capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
        assert "dev " + NAME_PREFIX in route and "lo" not in route.split()
        process = stack.supervisor.processes[-1]
        assert process.exited() is None
    finally:
        stack.stop()
    namespaces, links = ours()
    assert sip.netns not in namespaces and veth not in links
    assert process.exited() is not None


def test_livekit_sip_that_cannot_start_fails_loudly_and_leaves_no_namespace(livekit: LiveKit, tmp_path: Path) -> None:
    no_redis = dataclasses.replace(livekit, redis="127.0.0.1:9")
    stack = SipStack(tmp_path, livekit=no_redis, timeout=30)
    with pytest.raises(ComponentError) as failure:
        stack.start()
    assert failure.value.component == "livekit-sip"
    assert failure.value.log is not None and failure.value.log.name == "livekit-sip.log"
    namespaces, links = ours()
    assert len(stack.made) == 2 and not set(stack.made) & (set(namespaces) | set(links))


def test_namespace_of_a_killed_session_is_removed_by_the_next_stack() -> None:
    mounted_before = netns_dir_mounted()
    gone = subprocess.Popen(["true"])
    gone.wait()
    name, veth = f"{NAME_PREFIX}-dead00-p{gone.pid}", f"{NAME_PREFIX}dead00h"
    ip("netns", "add", name)
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", f"{NAME_PREFIX}dead00c", "netns", name)
        assert name in remove_orphans()
        assert name not in ours()[0]
        # the host end goes with the namespace, once the kernel has finished tearing it down (asynchronously)
        wait_for("the host end of the veth gone", lambda: veth not in ours()[1], timeout=15)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        if not mounted_before:
            release_netns_dir()


def test_two_overlapping_stacks_leave_run_netns_as_they_found_it_whichever_stops_last(tmp_path: Path) -> None:
    """`ip netns add` mounts /run/netns; the stack that mounted it may stop while another still has a namespace
    there (two test sessions at once): the last one out undoes the mount, not only the one that made it."""
    mounted_before = netns_dir_mounted()
    first, second = SipStack(tmp_path / "first"), SipStack(tmp_path / "second")
    try:
        for tag, stack in (("ovl0a", first), ("ovl0b", second)):
            subnet = pick_subnet()
            host, caller, stranger = (str(h) for h in list(subnet.hosts())[:3])
            stack._net_up(tag, subnet, host, caller, stranger)
        assert netns_dir_mounted()
        first.stop()  # the one that mounted it (unless the machine had it mounted) goes first
        assert second.netns in ours()[0] and netns_dir_mounted()
        second.stop()
    finally:
        first.stop()
        second.stop()
    assert netns_dir_mounted() == mounted_before
    namespaces, links = ours()
    assert not set(first.made + second.made) & (set(namespaces) | set(links))
