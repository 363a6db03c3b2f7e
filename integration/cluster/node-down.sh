#!/usr/bin/env bash
# `make cluster-down`: removes the node's pods (nodelet stops them and the runtime lets them
# go), stops nodelet and its Service proxy table, then the control plane (down.sh).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
PIDFILE=$(pidfile_of nodelet)
ADMIN=$CLUSTER_DIR/admin.kubeconfig
kubectl_admin() { kubectl --kubeconfig "$ADMIN" --request-timeout 10s "$@"; }

exe=$(readlink "/proc/$(cat "$PIDFILE" 2>/dev/null || echo 0)/exe" 2>/dev/null || true)
if [[ $exe == */nodelet ]]; then
    if curl -fsS --max-time 2 -o /dev/null --cacert "$PKI/ca.crt" "https://$APISERVER_ADDRESS:$APISERVER_PORT/readyz" 2>/dev/null; then
        log "removing the pods of node $NODE_NAME"
        kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" --wait=false >/dev/null || true
        deadline=$((SECONDS + 60))
        while [[ -n $(kubectl_admin get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null) ]]; do
            ((SECONDS < deadline)) || { warn "pods of $NODE_NAME still present after 60 s"; break; }
            sleep 1
        done
    fi
    stop_daemon nodelet "$PIDFILE" "$exe"
    # The Service proxy's nftables table, if nodelet left it behind.
    for family in ip ip6; do
        nft delete table "$family" nodelet 2>/dev/null || true
    done
fi
rm -f "$PIDFILE" "$(logfile_of nodelet)"
"$(dirname "${BASH_SOURCE[0]}")/down.sh"
