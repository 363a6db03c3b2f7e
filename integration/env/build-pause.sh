#!/usr/bin/env bash
# Builds the static pause binary (integration/pause) and prints its path.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_cargo

target=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
bin=$target_dir/$target/release/nodelet-pause

log "building nodelet-pause (static, $target)" >&2
# The explicit --target keeps RUSTFLAGS off build scripts and proc-macros.
(cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
    cargo build --release -p nodelet-pause --target "$target" >&2)

file -b "$bin" | grep -q 'static' || die "$bin is not statically linked: $(file -b "$bin")"
echo "$bin"
