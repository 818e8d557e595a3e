#!/usr/bin/env bash
# Builds helm, luahealth (gopher-lua, the Lua VM of Argo CD health checks), promtool and
# promcheck (Prometheus's rule checker and exposition/PromQL parsers) and actionlint (the
# GitHub Actions workflows' checker) from Go modules into a cache outside the checkout. About
# 6 minutes the first time on 2 cores, instant after.
#
# Usage: e2e/tools/build.sh        prints the bin directory on stdout when done
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELM_VERSION="v3.22.0"   # keep in step with go.mod
LUA_VERSION="v1.1.2"     # gopher-lua, keep in step with go.mod
PROMETHEUS_VERSION="v0.316.0"  # keep in step with prometheus/go.mod
ACTIONLINT_VERSION="v1.7.12"   # keep in step with actionlint/go.mod
CACHE="${ARMOR_REFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-refresh}"
BIN="$CACHE/tools-helm-$HELM_VERSION-gopher-lua-$LUA_VERSION/bin"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

build() { # name module-dir package ldflags [own source file]
  local name="$1" dir="$HERE/$2" pkg="$3" ldflags="$4" src="${5:-}"
  if [[ -x "$BIN/$name" && "$BIN/$name" -nt "$dir/go.sum" && ( -z "$src" || "$BIN/$name" -nt "$dir/$src" ) ]]; then
    return 0
  fi
  echo "[build] building $name ($pkg) ..." >&2
  local start=$SECONDS
  (cd "$dir" && go build -trimpath -tags "${TAGS:-}" -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "[build] built $name in $((SECONDS - start))s" >&2
}

mkdir -p "$BIN"
build helm . helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build luahealth . ./luahealth "-s -w" luahealth/main.go
# Without Prometheus's service discovery plugins (cloud SDKs): promtool's rule checks and
# tests need none, and they were most of its build time.
TAGS=remove_all_sd build promtool prometheus github.com/prometheus/prometheus/cmd/promtool \
  "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
build promcheck prometheus ./promcheck "-s -w" promcheck/main.go
build actionlint actionlint github.com/rhysd/actionlint/cmd/actionlint \
  "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
echo "$BIN"
