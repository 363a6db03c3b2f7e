#!/usr/bin/env bash
# Mints the credentials of node NAME (system:node:NAME in group system:nodes, signed by the
# cluster CA of CLUSTER_DIR) as a kubeconfig and prints its path. Needs up.sh to have run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# == 1)) || die "usage: node-kubeconfig.sh NODE-NAME"
[[ -s $PKI/ca.key ]] || die "no cluster CA in $PKI: run integration/cluster/up.sh first"
node_kubeconfig "$1"
