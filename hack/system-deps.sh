#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run for real, if any is missing.
set -euo pipefail
need=()
# the images (make images): podman builds them, mmdebstrap makes the Debian base without a registry
command -v podman >/dev/null || need+=(podman)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v redis-server >/dev/null || need+=(redis-server)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v openssl >/dev/null || need+=(openssl)
# promtool checks the alerts (tests/packaging); the test ground's metrics loop (e2e/testground/metrics.py) runs
# Debian's Prometheus (built without kubernetes_sd: the ground discovers the agent pods itself)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need+=(prometheus)
# livekit-sip is built with cgo against these (e2e/testground/build.sh sip)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
pkg-config --exists opusfile 2>/dev/null || need+=(libopusfile-dev)
pkg-config --exists soxr 2>/dev/null || need+=(libsoxr-dev)
# The test ground's real node (e2e/testground/node.py): containerd + runc as its CRI, the bridge CNI plugin, iptables
# (the kubelet and kube-proxy write their chains with it; kube-proxy clears conntrack entries over netlink, no
# conntrack tool), ip (the pod bridge), gcc + libc headers for the pause binary, and a
# static busybox for the tests' tiny image.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v nft >/dev/null || need+=(nftables)   # to delete the empty tables iptables-nft leaves at teardown
command -v ip >/dev/null || need+=(iproute2)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
# The browser channel: npm + node bundle the talk page (make page); the talk page test drives Debian's chromium
# through Playwright (never Playwright's own browser downloads).
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "[system-deps] installing ${need[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
