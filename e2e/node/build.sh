#!/usr/bin/env bash
# Builds a real Kubernetes node from Go modules into a cache outside the checkout: containerd
# (with its runc shim and ctr), runc, the CNI plugins (bridge, host-local, loopback, portmap),
# kubelet and kube-proxy v1.34, and the image tool (go-containerregistry) that packs the
# operator's and the sandbox's images. About 15 minutes the first time on 2 cores.
#
# Needs gcc and libseccomp's headers (runc is built with seccomp, which Pod Security's
# `restricted` profile requires: seccompProfile RuntimeDefault).
#
# Usage: e2e/node/build.sh             prints the bin directory on stdout when done
#        e2e/node/build.sh imagetool   builds only the image tool; prints its directory
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONTAINERD_VERSION="v2.2.9"
RUNC_VERSION="v1.3.7"        # cgroup v1 still supported, as this machine's kernel mounts it
CNI_VERSION="v1.7.1"
K8S_VERSION="v1.34.4"        # keep in step with ../cluster/build.sh
CACHE="${ARMOR_REFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-refresh}"
BIN="$CACHE/node-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-cni-$CNI_VERSION-k8s-$K8S_VERSION/bin"

export GOFLAGS=-buildvcs=false

log() { echo "[build] $*" >&2; }

# install NAME... -- [go install args]: modules built at the versions their own go.mod pins
install() {
  local names=() n missing=false
  while [[ "$1" != -- ]]; do names+=("$1"); shift; done
  shift
  for n in "${names[@]}"; do [[ -x "$BIN/$n" ]] || missing=true; done
  $missing || return 0
  log "building ${names[*]} ..."
  local start=$SECONDS tmp="$BIN/.tmp-$$"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath "$@"
  for n in "${names[@]}"; do mv "$tmp/$n" "$BIN/$n"; done
  rm -rf "$tmp"
  log "built ${names[*]} in $((SECONDS - start))s"
}

# The image tool alone (for `make image`, which needs no node): its own cache directory.
if [[ "${1:-}" == imagetool ]]; then
  TOOL_BIN="$CACHE/imagetool-go-containerregistry-v0.20.6/bin"   # keep in step with imagetool/go.mod
  mkdir -p "$TOOL_BIN"
  if [[ ! -x "$TOOL_BIN/ociimage" || "$HERE/imagetool/main.go" -nt "$TOOL_BIN/ociimage" || "$HERE/imagetool/go.sum" -nt "$TOOL_BIN/ociimage" ]]; then
    log "building ociimage (go-containerregistry) ..."
    (cd "$HERE/imagetool" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$TOOL_BIN/ociimage.tmp" .)
    mv "$TOOL_BIN/ociimage.tmp" "$TOOL_BIN/ociimage"
  fi
  echo "$TOOL_BIN"
  exit 0
fi

mkdir -p "$BIN"
command -v gcc >/dev/null || { log "gcc is required (runc's nsenter is C)"; exit 1; }
[[ -e /usr/include/seccomp.h ]] || { log "libseccomp's headers are required (apt-get install libseccomp-dev)"; exit 1; }

CGO_ENABLED=1 install runc -- -tags seccomp \
  -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
cd_ver="github.com/containerd/containerd/v2/version"
CGO_ENABLED=0 install containerd containerd-shim-runc-v2 ctr -- -tags "no_btrfs no_devmapper no_zfs" \
  -ldflags "-s -w -X $cd_ver.Version=$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
cni="github.com/containernetworking/plugins/plugins"
CGO_ENABLED=0 install bridge host-local loopback portmap -- -ldflags "-s -w" \
  "$cni/main/bridge@$CNI_VERSION" "$cni/ipam/host-local@$CNI_VERSION" \
  "$cni/main/loopback@$CNI_VERSION" "$cni/meta/portmap@$CNI_VERSION"

# kubelet and kube-proxy come from the control plane's module, at its exact versions.
kv="k8s.io/component-base/version"
K8S_LDFLAGS="-s -w -X $kv.gitVersion=$K8S_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=34 -X $kv.gitTreeState=clean -X $kv.buildDate=1970-01-01T00:00:00Z"
for c in kubelet kube-proxy; do
  if [[ ! -x "$BIN/$c" ]]; then
    log "building $c ..."
    start=$SECONDS
    (cd "$HERE/../cluster/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$BIN/$c.tmp" "$BIN/$c"
    log "built $c in $((SECONDS - start))s"
  fi
done

echo "$BIN"
