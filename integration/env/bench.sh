#!/usr/bin/env bash
# `make bench`: builds release binaries and prints figures as `bench: <name> <value> <unit>`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
cd "$REPO_ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}

cargo build --release -p nodelet -p nodelet-cni -p nodelet-bench
bash "$REPO_ROOT/integration/cluster/up.sh"
log "pods: start-up latency (static, and through the local kube-apiserver) and memory"
"$TARGET_DIR/release/nodelet-bench"
if [[ -x $TARGET_DIR/release/nodelet-proxy-bench ]]; then
    log "service proxy: sync times at scale"
    "$TARGET_DIR/release/nodelet-proxy-bench"
fi
