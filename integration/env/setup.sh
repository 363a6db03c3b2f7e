#!/usr/bin/env bash
# Brings up everything nodelet's tests and demo need on this machine, from a
# fresh one or from one where it already runs: packages, the pause binary,
# the local registry, the test images, containerd.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

start=$SECONDS
"$ENV_DIR/install-packages.sh"
pause_bin=$("$ENV_DIR/build-pause.sh")
"$ENV_DIR/start-registry.sh"
NODELET_PAUSE_BIN=$pause_bin "$ENV_DIR/build-images.sh"
"$ENV_DIR/start-containerd.sh"

cat <<SUMMARY
[setup] ready in $((SECONDS - start)) s
  registry    http://127.0.0.1:5000 (pid $(cat "$NODELET_ENV_RUN_DIR/registry.pid" 2>/dev/null || echo '?'), log $NODELET_ENV_LOG_DIR/registry.log)
  containerd  /run/containerd/containerd.sock (pid $(cat "$NODELET_ENV_RUN_DIR/containerd.pid" 2>/dev/null || echo '?'), log $NODELET_ENV_LOG_DIR/containerd.log)
  images      $NODELET_REGISTRY/nodelet/pause:1 (sandbox image), $NODELET_REGISTRY/nodelet/busybox:1
  pause       $pause_bin
  stop with   integration/env/stop.sh
SUMMARY
