#!/usr/bin/env bash
# Builds the operator's image without a container engine: the same static binary and
# layout as the Dockerfile's final stage (scratch, /armor-refresh, user 65532, OCI labels),
# packed by go-containerregistry into a tarball that `ctr images import` and `docker load` read.
#
# Usage: deploy/image/build.sh     prints the tarball's path on stdout
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
TRIPLE="$(uname -m)-unknown-linux-gnu"
OUT="target/image/armor-refresh-$VERSION.tar"

log() { echo "[image] $*" >&2; }

start=$SECONDS
# RUSTFLAGS for the target only (build scripts and proc macros stay dynamic).
env "CARGO_TARGET_$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TRIPLE" --bin armor-refresh >&2
bin="target/$TRIPLE/release/armor-refresh"
# No program interpreter: nothing for the dynamic loader to find on an empty base.
if readelf -lW "$bin" | grep -q INTERP; then
  log "error: $bin is dynamically linked (it asks for a program interpreter)"; exit 1
fi
mkdir -p target/image
# Symbols stripped (panic messages keep their file and line: those are strings).
strip -o target/image/armor-refresh "$bin"
tool="$(e2e/node/build.sh imagetool)/ociimage"
# Labels and user as the Dockerfile's final stage sets them (e2e/tests/node.rs compares).
"$tool" -o "$OUT" -tag "armor-refresh:$VERSION" -entrypoint /armor-refresh -user 65532:65532 \
  -file /armor-refresh=target/image/armor-refresh \
  -text "/etc/passwd=nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
" -text "/etc/group=nonroot:x:65532:
" \
  -label org.opencontainers.image.title=armor-refresh \
  -label "org.opencontainers.image.description=Rolls AppArmor/KubeArmor profiles out to running pods gradually and safely" \
  -label org.opencontainers.image.licenses=Apache-2.0 \
  -label "org.opencontainers.image.version=$VERSION" \
  -label "org.opencontainers.image.revision=$REVISION"
log "built $OUT in $((SECONDS - start))s: $(du -k "$OUT" | cut -f1) KiB (binary $(du -k target/image/armor-refresh | cut -f1) KiB)"
echo "$OUT"
