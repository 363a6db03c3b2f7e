#!/usr/bin/env bash
# Stops containerd and the registry that these scripts started (by the pids
# in their pid files only; anything started otherwise is left alone).
# Containers' shims (containerd-shim-runc-v2) keep running, as they would
# across a containerd restart.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

stop_daemon containerd "$NODELET_ENV_RUN_DIR/containerd.pid" /usr/bin/containerd
stop_daemon registry "$NODELET_ENV_RUN_DIR/registry.pid" /usr/bin/docker-registry
