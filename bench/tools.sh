# shellcheck shell=bash
# Sourced by the bench scripts (from the repository's root): builds the release operator,
# the scale scenario and the control plane's binaries, and exports where they are.
cargo build -q --release --bin armor-refresh
cargo build -q --release -p armor-refresh-e2e --bin scale
e2e/cluster/build.sh >/dev/null
export ARMOR_REFRESH_TOOLS; ARMOR_REFRESH_TOOLS="$(e2e/tools/build.sh)"
export ARMOR_REFRESH_BIN="$PWD/target/release/armor-refresh"
