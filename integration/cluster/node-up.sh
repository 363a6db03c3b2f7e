#!/usr/bin/env bash
# `make cluster`: the control plane (up.sh) plus the release nodelet as its node, a daemon on
# this machine's name (lowercased) with that node's own credentials, kube-proxy's for the
# Service proxy, and its secure port trusting the cluster CA (Webhook authorization). Returns
# once the Node is Ready, printing `kubectl get nodes` and the admin KUBECONFIG line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
NODELET=$(realpath "${NODELET:-$TARGET_DIR/release/nodelet}")
[[ -x $NODELET ]] || die "$NODELET is missing: run 'make build' first"
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PIDFILE=$(pidfile_of nodelet)
LOGFILE=$(logfile_of nodelet)
ADMIN=$CLUSTER_DIR/admin.kubeconfig

"$(dirname "${BASH_SOURCE[0]}")/up.sh"
node_kubeconfig=$(node_kubeconfig "$NODE_NAME")
if pid=$(pid_from_file "$PIDFILE" "$NODELET"); then
    log "nodelet already running (pid $pid) as node $NODE_NAME"
else
    # A nodelet this script did not start (its pid file gone) would keep the node's ports and
    # stay the node, while the new one exits: say so rather than report the old one as started.
    for port in 10250 10255; do
        if holder=$(ss -Hltnp "sport = :$port" 2>/dev/null) && [[ -n $holder ]]; then
            die "port $port is already in use (${holder//$'\n'/; }): another nodelet? Stop it (by its pid) first"
        fi
    done
    log "starting nodelet as node $NODE_NAME (log: $LOGFILE)"
    # The apiserver reaches the node's ports at its InternalIP: loopback, like the rest.
    start_daemon "$PIDFILE" "$LOGFILE" env RUST_LOG="${RUST_LOG:-info}" "$NODELET" \
        --hostname-override "$NODE_NAME" --kubeconfig "$node_kubeconfig" \
        --proxy-kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" \
        --client-ca-file "$PKI/ca.crt" --authorization-mode Webhook --authentication-token-webhook=true \
        --node-ip 127.0.0.1 --address 127.0.0.1 --root-dir "$CLUSTER_DIR/nodelet" --pod-logs-dir "$CLUSTER_DIR/pod-logs"
fi
pid=$(<"$PIDFILE")
deadline=$((SECONDS + 120))
# Its own read-only port first: a Ready condition alone could be an earlier process's.
until curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:10255/healthz 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die_with_log "nodelet (pid $pid) exited" "$LOGFILE"
    ((SECONDS < deadline)) || die_with_log "nodelet (pid $pid) did not answer on 127.0.0.1:10255/healthz within 120 s" "$LOGFILE"
    sleep 0.5
done
until kubectl --kubeconfig "$ADMIN" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; do
    kill -0 "$pid" 2>/dev/null || die_with_log "nodelet (pid $pid) exited" "$LOGFILE"
    ((SECONDS < deadline)) || die_with_log "node $NODE_NAME not Ready within 120 s" "$LOGFILE"
    sleep 0.5
done
kubectl --kubeconfig "$ADMIN" get nodes -o wide
echo "KUBECONFIG=$ADMIN"
