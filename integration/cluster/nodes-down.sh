#!/usr/bin/env bash
# Removes a multi-node cluster nodes-up.sh made (make cluster-down): per node its pods (nodelet
# stops them while the apiserver answers; what is left is killed through containerd), nodelet,
# containerd, their mounts, state and namespace; then the bridge's namespace, the host's veth,
# the guard table and the registry relay; then the control plane (down.sh) unless
# NODES_CONTROL_PLANE=keep. Finds the nodes by NODES_PREFIX (nodes-lib.sh), whatever NODES was.
#   NODE_ONLY=N      stop only node N's nodelet (STOP=nodelet) or all of node N (STOP=node),
#                    keeping the rest, as a node failure would
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=nodes-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nodes-lib.sh"
need_root

ADMIN=$CLUSTER_DIR/admin.kubeconfig
kubectl_admin() { kubectl --kubeconfig "$ADMIN" --request-timeout 10s "$@"; }
apiserver_answers() {
    [[ -s $ADMIN ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1
}

# The process of a pid file, if it runs the binary its name says.
stop_pidfile() {
    local name=$1 pidfile=$2 exe
    exe=$(readlink "/proc/$(cat "$pidfile" 2>/dev/null || echo 0)/exe" 2>/dev/null || true)
    case $exe in
        */"$name") stop_daemon "$name" "$pidfile" "$exe" ;;
        *) rm -f "$pidfile" ;;
    esac
}

# Unmounts every mount at or under DIR, the deepest first.
unmount_under() {
    local dir=$1 mount
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r mount; do
        umount -l "$mount" 2>/dev/null || true
    done
}

# The containers node i's containerd still has (CRI's namespace k8s.io).
containers_of() {
    timeout 10 ctr --address "$(node_socket "$1")" --connect-timeout 2s -n k8s.io containers ls -q 2>/dev/null || true
}

# Kills and removes whatever node i's containerd still runs, with the network namespaces of its
# sandboxes (containerd mounts them under /var/run/netns).
clear_runtime() {
    local i=$1 sock id netns
    sock=$(node_socket "$i")
    [[ -S $sock ]] || return 0
    local ctr_k8s=(timeout 20 ctr --address "$sock" --connect-timeout 2s -n k8s.io)
    for id in $(containers_of "$i"); do
        netns=$("${ctr_k8s[@]}" containers info "$id" 2>/dev/null | jq -r '.Spec.linux.namespaces[]? | select(.type == "network") | .path // empty' || true)
        "${ctr_k8s[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        "${ctr_k8s[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
        "${ctr_k8s[@]}" containers delete "$id" >/dev/null 2>&1 || true
        if [[ $netns == /var/run/netns/cni-* || $netns == /run/netns/cni-* ]]; then
            ip netns delete "$(basename "$netns")" 2>/dev/null || true
        fi
    done
}

# Node i's pods removed through the API while its nodelet runs (it stops them, the CNI plugin
# lets their addresses go); waits up to 60 s for its containerd to be empty.
remove_pods() {
    local i=$1 name deadline
    name=$(node_name "$i")
    apiserver_answers || return 0
    kubectl_admin cordon "$name" >/dev/null 2>&1 || true
    kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$name" --grace-period=1 --wait=false >/dev/null 2>&1 || true
    deadline=$((SECONDS + 60))
    while [[ -n $(containers_of "$i") ]]; do
        ((SECONDS < deadline)) || { warn "node $i: containers still there after 60 s; killing them"; break; }
        sleep 1
    done
}

node_down() {
    local i=$1 run dir
    run=$(node_run_dir "$i")
    dir=$(node_dir "$i")
    log "removing node $i ($(node_name "$i"), namespace $(node_ns "$i"))"
    if [[ -f $(node_pidfile "$i" nodelet) ]]; then
        remove_pods "$i"
    fi
    stop_pidfile nodelet "$(node_pidfile "$i" nodelet)"
    clear_runtime "$i"
    stop_pidfile containerd "$(node_pidfile "$i" containerd)"
    unmount_under "$run"
    unmount_under "$dir"
    if apiserver_answers; then
        kubectl_admin delete node "$(node_name "$i")" --wait=false >/dev/null 2>&1 || true
    fi
    ip netns delete "$(node_ns "$i")" 2>/dev/null || true
    rm -rf "$run" "$dir"
    if [[ ${NODES_KEEP_LOGS:-no} != yes ]]; then
        rm -f "$(node_log "$i" nodelet)" "$(node_log "$i" containerd)"
    fi
}

# The nodes there are: by namespace, state or run directory.
indices() {
    {
        for f in /run/netns/"$NODES_PREFIX"-n*; do [[ -e $f ]] && echo "${f##*/"$NODES_PREFIX"-n}"; done
        for f in "$NODES_DIR"/n* "$NODES_RUN_DIR"/n*; do [[ -e $f ]] && echo "${f##*/n}"; done
    } | grep -E '^[0-9]+$' | sort -un
}

if [[ -n ${NODE_ONLY:-} ]]; then
    case ${STOP:-nodelet} in
        nodelet) stop_pidfile nodelet "$(node_pidfile "$NODE_ONLY" nodelet)" ;;
        node) node_down "$NODE_ONLY" ;;
        *) die "STOP=$STOP: nodelet or node" ;;
    esac
    exit 0
fi

for i in $(indices); do
    node_down "$i"
done
stop_pidfile socat "$RELAY_PIDFILE"
nft delete table inet "$GUARD_TABLE" 2>/dev/null || true
ip netns delete "$SWITCH_NS" 2>/dev/null || true
ip link delete "$HOST_VETH" 2>/dev/null || true
rm -rf "$NODES_RUN_DIR" "$NODES_DIR"
rmdir "$(dirname "$NODES_RUN_DIR")" "$(dirname "$NODES_DIR")" 2>/dev/null || true
rm -f "$NODELET_ENV_LOG_DIR/nodes-$NODES_PREFIX-relay.log"
if [[ ${NODES_CONTROL_PLANE:-up} == up ]]; then
    "$(dirname "${BASH_SOURCE[0]}")/down.sh"
fi
log "the nodes of $NODES_PREFIX are gone"
