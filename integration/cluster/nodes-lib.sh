# shellcheck shell=bash disable=SC2034
# A multi-node cluster on one machine (nodes-up.sh, nodes-down.sh); sourced, not run.
#
# Each node is a network namespace with its own containerd and nodelet; the namespaces are
# joined by a bridge that lives in a "switch" namespace of its own, and the host joins that
# bridge through one veth with the first address of the nodes' subnet, where kube-apiserver
# listens and a relay (socat) serves the image registry of 127.0.0.1:5000. The bridge is not in
# the host's namespace because the host bridges with br_netfilter: pod traffic between nodes
# would pass the host's nftables, where other nodelets' masquerade rules can match it.
#
#   NODES          how many nodes (default 3)
#   NODES_PREFIX   names of everything made (default nlc): namespaces <p>-sw and <p>-n<i>, the
#                  host's veth <p>-h0, the bridge <p>-br0 (in <p>-sw), the host's nft table
#                  inet <p>-guard; at most 8 characters (interface names are 15)
#   NODES_NET      the first three octets of the nodes' /24 (default 10.254.0): the host is .1,
#                  node i is .(10+i)
#   NODE_NAME_PREFIX  node i is named <prefix><i> (default <p>-node)
#   NODES_DIR      state (default /var/lib/nodelet-nodes/<p>); NODES_RUN_DIR sockets and pid
#                  files (default /run/nodelet-nodes/<p>)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=${NODES:-3}
NODES_PREFIX=${NODES_PREFIX:-nlc}
NODES_NET=${NODES_NET:-10.254.0}
NODE_NAME_PREFIX=${NODE_NAME_PREFIX:-$NODES_PREFIX-node}
NODES_DIR=${NODES_DIR:-/var/lib/nodelet-nodes/$NODES_PREFIX}
NODES_RUN_DIR=${NODES_RUN_DIR:-/run/nodelet-nodes/$NODES_PREFIX}
[[ $NODES_PREFIX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "NODES_PREFIX=$NODES_PREFIX: 1 to 8 lower-case letters and digits, starting with a letter"
[[ $NODES =~ ^[1-9][0-9]?$ ]] && ((NODES <= 50)) || die "NODES=$NODES: 1 to 50"
[[ $NODES_NET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "NODES_NET=$NODES_NET: three octets such as 10.254.0"

SWITCH_NS=$NODES_PREFIX-sw
BRIDGE=$NODES_PREFIX-br0
HOST_VETH=$NODES_PREFIX-h0
GUARD_TABLE=$NODES_PREFIX-guard
HOST_ADDRESS=$NODES_NET.1
# The nodes reach the apiserver there (up.sh makes it listen there, the kubeconfigs name it).
APISERVER_ADDRESS=$HOST_ADDRESS
RELAY_PIDFILE=$NODES_RUN_DIR/registry-relay.pid

node_ns() { echo "$NODES_PREFIX-n$1"; }
node_name() { echo "$NODE_NAME_PREFIX$1"; }
node_ip() { echo "$NODES_NET.$((10 + $1))"; }
node_dir() { echo "$NODES_DIR/n$1"; }
node_run_dir() { echo "$NODES_RUN_DIR/n$1"; }
node_socket() { echo "$(node_run_dir "$1")/containerd.sock"; }
node_log() { echo "$NODELET_ENV_LOG_DIR/nodes-$NODES_PREFIX-n$1-$2.log"; }
node_pidfile() { echo "$(node_run_dir "$1")/$2.pid"; }
# Runs a command in node i's network namespace only (not a mount namespace of its own, as
# `ip netns exec` would make: containerd must see the volumes nodelet mounts, and the host the
# mounts both make, which cluster-down removes).
in_node() {
    local i=$1
    shift
    nsenter --net="/run/netns/$(node_ns "$i")" -- "$@"
}
