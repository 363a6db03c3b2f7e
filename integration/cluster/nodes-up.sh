#!/usr/bin/env bash
# `make cluster NODES=3`: a cluster of NODES nodes on this machine (see nodes-lib.sh for the
# network): the control plane (up.sh, kube-apiserver on the nodes' bridge address), then per
# node a network namespace with its own containerd (root, state, socket, CNI directories and
# registry mapping of its own) and its own nodelet (root dir, node credentials, its ports inside
# the namespace), each joined to the one control plane; pods on one node reach pods on the
# others through nodelet's routes. Idempotent: makes and starts what is missing, then waits
# until every node is Ready. Remove it all with nodes-down.sh (make cluster-down).
#   NODELET        the nodelet binary (default the release build); nodelet-cni beside it
#   NODELET_ARGS   more nodelet flags for every node (words)
#   NODE_ONLY=N    make or start only node N (again, after it was stopped)
#   NODES_WAIT_READY  yes (default) waits until the nodes are Ready, no returns once started
#   NODES_CONTROL_PLANE  up (default: run up.sh, with APISERVER_ADDRESS the host's bridge
#                  address) or keep (one already runs there, for CLUSTER_DIR)
# and nodes-lib.sh's NODES, NODES_PREFIX, NODES_NET, ..., up.sh's CLUSTER_DIR and ports.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=nodes-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/nodes-lib.sh"
need_root

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
NODELET=$(realpath "${NODELET:-$TARGET_DIR/release/nodelet}")
CNI_PLUGIN=$(dirname "$NODELET")/nodelet-cni
[[ -x $NODELET ]] || die "$NODELET is missing: run 'make build' first"
[[ -x $CNI_PLUGIN ]] || die "$CNI_PLUGIN is missing: build the workspace (nodelet-cni) first"
command -v socat >/dev/null || die "socat is missing (the registry relay): run integration/env/install-packages.sh"
LOOPBACK_PLUGIN=/usr/lib/cni/loopback
[[ -x $LOOPBACK_PLUGIN ]] || LOOPBACK_PLUGIN=/opt/cni/bin/loopback
ADMIN=$CLUSTER_DIR/admin.kubeconfig

mkdir -p "$NODES_DIR" "$NODES_RUN_DIR" "$NODELET_ENV_LOG_DIR"
exec {lock}>"$NODES_RUN_DIR/lock"
flock "$lock"
start=$SECONDS

# --- the nodes' network: a bridge in a namespace of its own, the host on it by one veth ---
if [[ ! -e /run/netns/$SWITCH_NS ]]; then
    if other=$(ip -4 -o route show "$NODES_NET.0/24" 2>/dev/null) && [[ -n $other ]]; then
        die "$NODES_NET.0/24 is already routed on this host ($other): choose another NODES_NET"
    fi
    log "making the nodes' network $NODES_NET.0/24: bridge $BRIDGE in namespace $SWITCH_NS, the host on $HOST_VETH ($HOST_ADDRESS)"
    ip netns add "$SWITCH_NS"
    # No pod traffic through netfilter in the switch (a new namespace has no rules anyway).
    ip netns exec "$SWITCH_NS" sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
    ip -n "$SWITCH_NS" link set lo up
    ip -n "$SWITCH_NS" link add "$BRIDGE" type bridge
    ip -n "$SWITCH_NS" link set "$BRIDGE" up
fi
if ! ip link show "$HOST_VETH" >/dev/null 2>&1; then
    ip link add "$HOST_VETH" type veth peer name host netns "$SWITCH_NS"
    ip -n "$SWITCH_NS" link set host master "$BRIDGE" up
    ip addr add "$HOST_ADDRESS/24" dev "$HOST_VETH"
    ip link set "$HOST_VETH" up
fi
# Nothing is forwarded between the nodes' network and the host's others: pods' traffic to the
# outside ends at the host (no internet for them), and the host routes nothing into them.
nft delete table inet "$GUARD_TABLE" 2>/dev/null || true
nft -f - <<NFT
table inet $GUARD_TABLE {
    chain forward {
        type filter hook forward priority filter - 5; policy accept;
        iifname "$HOST_VETH" drop
        oifname "$HOST_VETH" drop
    }
}
NFT

# The registry (127.0.0.1:5000, which the namespaces cannot reach) relayed on the host's
# bridge address only; each node's containerd maps localhost:5000 there.
if ! pid_from_file "$RELAY_PIDFILE" "$(realpath "$(command -v socat)")" >/dev/null; then
    log "relaying the registry on $HOST_ADDRESS:5000 (socat)"
    start_daemon "$RELAY_PIDFILE" "$NODELET_ENV_LOG_DIR/nodes-$NODES_PREFIX-relay.log" \
        socat "TCP-LISTEN:5000,bind=$HOST_ADDRESS,reuseaddr,fork" TCP:127.0.0.1:5000 {lock}>&-
fi

# --- the control plane ---
if [[ ${NODES_CONTROL_PLANE:-up} == up ]]; then
    APISERVER_ADDRESS=$HOST_ADDRESS "$(dirname "${BASH_SOURCE[0]}")/up.sh" {lock}>&-
fi
[[ -s $ADMIN ]] || die "no control plane in $CLUSTER_DIR ($ADMIN is missing)"

# --- the nodes ---
containerd_config() {
    local i=$1 dir run
    dir=$(node_dir "$i")
    run=$(node_run_dir "$i")
    sed -e "s|^root = \"/var/lib/containerd\"|root = \"$dir/containerd\"|" \
        -e "s|^state = \"/run/containerd\"|state = \"$run/state\"|" \
        -e "s|^  address = \"/run/containerd/containerd.sock\"|  address = \"$run/containerd.sock\"\n[ttrpc]\n  address = \"$run/containerd.sock.ttrpc\"|" \
        -e "s|@SANDBOX_IMAGE@|$NODELET_REGISTRY/nodelet/pause:1|" \
        -e "s|bin_dir = \"/opt/cni/bin\"|bin_dir = \"$dir/cni/bin\"|" \
        -e "s|conf_dir = \"/etc/cni/net.d\"|conf_dir = \"$dir/cni/net.d\"|" \
        -e "s|config_path = \"/etc/containerd/certs.d\"|config_path = \"$dir/certs.d\"|" \
        "$ENV_DIR/containerd-config.toml"
}

node_network() {
    local i=$1 ns veth
    ns=$(node_ns "$i")
    veth=$NODES_PREFIX-v$i
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        ip -n "$SWITCH_NS" link del "$veth" 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" netns "$SWITCH_NS"
        ip -n "$SWITCH_NS" link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$ns" route add default via "$HOST_ADDRESS"
    fi
    in_node "$i" sysctl -qw net.ipv4.ip_forward=1
}

start_containerd() {
    local i=$1 dir run pidfile deadline
    dir=$(node_dir "$i")
    run=$(node_run_dir "$i")
    pidfile=$(node_pidfile "$i" containerd)
    mkdir -p "$dir/containerd" "$dir/cni/net.d" "$dir/cni/bin" "$dir/certs.d/$NODELET_REGISTRY" "$run"
    ln -sfn "$LOOPBACK_PLUGIN" "$dir/cni/bin/loopback"
    cat >"$dir/certs.d/$NODELET_REGISTRY/hosts.toml" <<TOML
# Written by integration/cluster/nodes-up.sh: the project's registry, relayed on the host's bridge address.
server = "http://$HOST_ADDRESS:5000"

[host."http://$HOST_ADDRESS:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
TOML
    containerd_config "$i" >"$run/config.toml"
    if pid_from_file "$pidfile" /usr/bin/containerd >/dev/null; then
        return 0
    fi
    log "node $i: starting containerd in namespace $(node_ns "$i") (log: $(node_log "$i" containerd))"
    start_daemon "$pidfile" "$(node_log "$i" containerd)" nsenter --net="/run/netns/$(node_ns "$i")" -- \
        /usr/bin/containerd --config "$run/config.toml" {lock}>&-
    deadline=$((SECONDS + 30))
    until timeout 5 ctr --address "$(node_socket "$i")" --connect-timeout 2s version >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die_with_log "node $i: containerd did not answer within 30 s" "$(node_log "$i" containerd)"
        sleep 0.2
    done
}

start_nodelet() {
    local i=$1 dir pidfile kubeconfig
    dir=$(node_dir "$i")
    pidfile=$(node_pidfile "$i" nodelet)
    if pid_from_file "$pidfile" "$NODELET" >/dev/null; then
        return 0
    fi
    kubeconfig=$(node_kubeconfig "$(node_name "$i")")
    log "node $i: starting nodelet as $(node_name "$i") on $(node_ip "$i") (log: $(node_log "$i" nodelet))"
    # shellcheck disable=SC2086 # NODELET_ARGS are words
    start_daemon "$pidfile" "$(node_log "$i" nodelet)" env RUST_LOG="${RUST_LOG:-info}" \
        nsenter --net="/run/netns/$(node_ns "$i")" -- "$NODELET" \
        --hostname-override "$(node_name "$i")" --kubeconfig "$kubeconfig" \
        --proxy-kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" \
        --client-ca-file "$PKI/ca.crt" --authorization-mode Webhook --authentication-token-webhook=true \
        --node-ip "$(node_ip "$i")" --cluster-cidr "$CLUSTER_CIDR" \
        --root-dir "$dir/nodelet" --pod-logs-dir "$dir/pod-logs" \
        --container-runtime-endpoint "unix://$(node_socket "$i")" \
        --cni-conf-dir "$dir/cni/net.d" --cni-bin-dir "$dir/cni/bin" --cni-plugin "$CNI_PLUGIN" --cni-data-dir "$dir/cni/claims" \
        ${NODELET_ARGS:-} {lock}>&-
}

# Only node N (NODE_ONLY=N): start (again) that one node, as after a failure.
first=1
last=$NODES
if [[ -n ${NODE_ONLY:-} ]]; then
    first=$NODE_ONLY
    last=$NODE_ONLY
fi
for ((i = first; i <= last; i++)); do
    node_network "$i"
    start_containerd "$i"
    start_nodelet "$i"
done

# NODES_WAIT_READY=no: return once started (a node whose pod network is not up yet).
[[ ${NODES_WAIT_READY:-yes} == no ]] && exit 0
deadline=$((SECONDS + 120))
for ((i = first; i <= last; i++)); do
    until kubectl --kubeconfig "$ADMIN" get node "$(node_name "$i")" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; do
        pid=$(cat "$(node_pidfile "$i" nodelet)")
        kill -0 "$pid" 2>/dev/null || die_with_log "node $i: nodelet (pid $pid) exited" "$(node_log "$i" nodelet)"
        ((SECONDS < deadline)) || die_with_log "node $(node_name "$i") not Ready within 120 s" "$(node_log "$i" nodelet)"
        sleep 0.5
    done
done
log "nodes $first to $last Ready in $((SECONDS - start)) s"
kubectl --kubeconfig "$ADMIN" get nodes -o wide
echo "KUBECONFIG=$ADMIN"
