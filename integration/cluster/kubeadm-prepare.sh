#!/usr/bin/env bash
# Prepares a running control plane of up.sh (CLUSTER_DIR, APISERVER_PORT) for `kubeadm join`,
# with kubeadm's own `init phase` commands rather than `kubeadm init`: the kubeadm-config and
# kubelet-config ConfigMaps (the KubeletConfiguration every joining kubelet gets), the RBAC that
# lets bootstrap tokens file node CSRs and has the controller-manager approve them (and nodes'
# renewals), the signed cluster-info ConfigMap, and a bootstrap token. Prints the join command
# as its last line.
#   KUBELET_CONFIG  a file with the KubeletConfiguration to hand out (default: kubeadm's defaults
#                   with the cgroupfs driver and cgroup v1 allowed, as these machines need)
#   KUBEADM         the kubeadm binary (default: ../shared/kube/bin/kubeadm.xz unpacked)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

ADMIN=$CLUSTER_DIR/admin.kubeconfig
resolve_kube_bin
[[ -s $ADMIN ]] || die "no control plane in $CLUSTER_DIR: run integration/cluster/up.sh first"
if [[ -z ${KUBEADM:-} ]]; then
    unpack_shared kubeadm
    KUBEADM=$KUBE_BIN_CACHE/kubeadm
fi
[[ -x $KUBEADM ]] || die "KUBEADM=$KUBEADM is not an executable kubeadm"

config=$(mktemp)
trap 'rm -f "$config"' EXIT
{
    cat <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $("$KUBE_BIN/kube-apiserver" --version | awk '{print $2}')
controlPlaneEndpoint: 127.0.0.1:$APISERVER_PORT
networking:
  serviceSubnet: $SERVICE_CIDR
  podSubnet: $CLUSTER_CIDR
---
YAML
    if [[ -n ${KUBELET_CONFIG:-} ]]; then
        cat "$KUBELET_CONFIG"
    else
        cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
YAML
    fi
} >"$config"

for phase in "upload-config kubeadm" "upload-config kubelet" "bootstrap-token"; do
    # shellcheck disable=SC2086
    "$KUBEADM" init phase $phase --config "$config" --kubeconfig "$ADMIN" >&2 || die "kubeadm init phase $phase failed"
done
token=$("$KUBEADM" token create --kubeconfig "$ADMIN") || die "kubeadm token create failed"
hash=$(openssl x509 -pubkey -in "$PKI/ca.crt" | openssl pkey -pubin -outform der 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "kubeadm join 127.0.0.1:$APISERVER_PORT --token $token --discovery-token-ca-cert-hash sha256:$hash"
