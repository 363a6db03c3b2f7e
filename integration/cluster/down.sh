#!/usr/bin/env bash
# Stops the control plane up.sh started for CLUSTER_DIR (by its pid files, checking each
# process runs the expected binary) and removes its state, pid files and logs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

# The binaries the pid files must run: the ones each process was started from.
exe_running() {
    local pid
    pid=$(cat "$(pidfile_of "$1")" 2>/dev/null) || return 0
    readlink "/proc/$pid/exe" 2>/dev/null || true
}
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    exe=$(exe_running "$name")
    case $exe in
        */$name | */etcdbin/etcd) stop_daemon "$name" "$(pidfile_of "$name")" "$exe" ;;
        *) rm -f "$(pidfile_of "$name")" ;;
    esac
    rm -f "$(logfile_of "$name")"
done
rm -f "$NODELET_ENV_RUN_DIR/$CLUSTER_TAG.lock"
if [[ -d $CLUSTER_DIR ]]; then
    log "removing $CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
fi
