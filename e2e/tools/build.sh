#!/usr/bin/env bash
# Builds helm and luahealth (gopher-lua, the Lua VM of Argo CD health checks) from Go modules
# into a cache outside the checkout. About 2 minutes the first time on 2 cores, instant after.
#
# Usage: e2e/tools/build.sh        prints the bin directory on stdout when done
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELM_VERSION="v3.22.0"   # keep in step with go.mod
LUA_VERSION="v1.1.2"     # gopher-lua, keep in step with go.mod
CACHE="${ARMOR_REFRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/armor-refresh}"
BIN="$CACHE/tools-helm-$HELM_VERSION-gopher-lua-$LUA_VERSION/bin"

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

build() { # name package ldflags
  local name="$1" pkg="$2" ldflags="$3"
  if [[ -x "$BIN/$name" && "$BIN/$name" -nt "$HERE/go.sum" && ( "$name" != luahealth || "$BIN/$name" -nt "$HERE/luahealth/main.go" ) ]]; then
    return 0
  fi
  echo "[build] building $name ($pkg) ..." >&2
  local start=$SECONDS
  (cd "$HERE" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "[build] built $name in $((SECONDS - start))s" >&2
}

mkdir -p "$BIN"
build helm helm.sh/helm/v3/cmd/helm "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build luahealth ./luahealth "-s -w"
echo "$BIN"
