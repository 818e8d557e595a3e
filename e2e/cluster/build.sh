#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from Go modules into a cache outside the checkout.
# A first build takes minutes (about 20 on 2 cores); later calls return at once.
#
# Usage: e2e/cluster/build.sh        prints the bin directory on stdout when done
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.34.4"   # keep in step with k8s/go.mod
ETCD_VERSION="v3.6.5"   # what Kubernetes 1.34 pairs with (build/dependencies.yaml)
KWOK_VERSION="v0.7.0"   # keep in step with kwok/go.mod
CACHE="${ARMOR_REFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-refresh}"
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "[build] $*" >&2; }

build() { # name module-dir package ldflags
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  if [[ -x "$BIN/$name" ]]; then return 0; fi
  log "building $name ($pkg) ..."
  local start=$SECONDS
  (cd "$HERE/$dir" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  log "built $name in $((SECONDS - start))s"
}

mkdir -p "$BIN"
if [[ ! -x "$BIN/kwok" || ! -x "$BIN/etcd" || ! -x "$BIN/kubectl" || ! -x "$BIN/kube-apiserver" ]]; then
  log "first build of the control plane into $BIN: this takes several minutes"
fi

# Stamp the versions so `kubectl version` and /version report the real release.
kv="k8s.io/component-base/version"
K8S_LDFLAGS="-s -w -X $kv.gitVersion=$K8S_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=34 -X $kv.gitTreeState=clean -X $kv.buildDate=1970-01-01T00:00:00Z"
K8S_LDFLAGS="$K8S_LDFLAGS -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=34"

build etcd k8s go.etcd.io/etcd/server/v3 "-s -w"
build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$K8S_LDFLAGS"
build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_LDFLAGS"
build kube-scheduler k8s k8s.io/kubernetes/cmd/kube-scheduler "$K8S_LDFLAGS"
build kubectl k8s k8s.io/kubernetes/cmd/kubectl "$K8S_LDFLAGS"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"

echo "$BIN"
