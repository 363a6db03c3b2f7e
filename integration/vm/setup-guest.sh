#!/bin/bash
# Runs in the guest (a job of nodelet-vm-agent, from the 9p share): sets the node up as an
# operator would. containerd's own default config with the chosen cgroup driver, the sandbox
# image and the host's registry; the nodelet package with dpkg -i (its postinst enables and
# starts nodelet.service); then /etc/default/nodelet with the join flags and a restart.
#   NODE_NAME NODE_PORT  the node's name and secure port (forwarded from the host's loopback)
#   CGROUP_DRIVER        systemd (operators' setting: SystemdCgroup = true, nodelet
#                        --cgroup-driver=systemd) or cgroupfs (SystemdCgroup = false)
#   REGISTRY             the host's registry as the guest reaches it (10.0.2.100:5000); pod
#                        specs keep localhost:5000/..., containerd maps it (hosts.toml)
#   SANDBOX_IMAGE        containerd's sandbox_image and nodelet's --pod-infra-container-image
#   DEB                  the package, in the share
#   EXTRA_ARGS           more nodelet flags
set -euo pipefail
share=/mnt/nodelet-vm
: "${NODE_NAME:?}" "${NODE_PORT:?}" "${CGROUP_DRIVER:?}" "${REGISTRY:?}" "${SANDBOX_IMAGE:?}" "${DEB:?}"
case $CGROUP_DRIVER in
systemd) systemd_cgroup=true ;;
cgroupfs) systemd_cgroup=false ;;
*) echo "CGROUP_DRIVER=$CGROUP_DRIVER: systemd or cgroupfs" >&2; exit 2 ;;
esac

echo "== guest: $(uname -r), $(systemctl --version | head -n1), cgroup $(stat -fc %T /sys/fs/cgroup), containerd $(containerd --version | awk '{print $3}')"

# containerd: its defaults, with the settings an operator changes for a kubelet.
containerd config default >/etc/containerd/config.toml.new
sed -i -e "s|SystemdCgroup = .*|SystemdCgroup = $systemd_cgroup|" \
    -e "s|sandbox_image = .*|sandbox_image = \"$SANDBOX_IMAGE\"|" \
    -e '/\[plugins."io.containerd.grpc.v1.cri".registry\]/,/^ *\[/ s|config_path = .*|config_path = "/etc/containerd/certs.d"|' \
    /etc/containerd/config.toml.new
grep -q "SystemdCgroup = $systemd_cgroup" /etc/containerd/config.toml.new
grep -q 'config_path = "/etc/containerd/certs.d"' /etc/containerd/config.toml.new
mv /etc/containerd/config.toml.new /etc/containerd/config.toml
mkdir -p /etc/containerd/certs.d/localhost:5000
cat >/etc/containerd/certs.d/localhost:5000/hosts.toml <<TOML
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
systemctl restart containerd
grep -E 'SystemdCgroup|sandbox_image|restrict_oom_score_adj|config_path' /etc/containerd/config.toml | sed 's/^ */containerd: /'

# The package, as an operator installs it: dpkg starts nodelet.service (standalone until
# configured).
size=$(stat -c %s "$share/$DEB")
t0=$(date +%s%N)
dpkg -i "$share/$DEB"
echo "== dpkg -i $DEB ($((size / 1024 / 1024)) MiB) took $((($(date +%s%N) - t0) / 1000000)) ms"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' nodelet
systemctl is-enabled nodelet

# The join: a bootstrap token's kubeconfig, the node's own written by nodelet after its CSR;
# the Service proxy as kube-proxy (a node may not list EndpointSlices); the secure port
# authenticates the apiserver's client certificate against the cluster CA and asks the
# apiserver whether a caller may (as kubeadm's KubeletConfiguration sets it up).
install -m 0600 "$share/bootstrap-kubelet.conf" /etc/nodelet/bootstrap-kubelet.conf
install -m 0600 "$share/kube-proxy.conf" /etc/nodelet/kube-proxy.conf
install -D -m 0644 "$share/ca.crt" /etc/nodelet/pki/ca.crt
args="--bootstrap-kubeconfig=/etc/nodelet/bootstrap-kubelet.conf --kubeconfig=/etc/nodelet/kubelet.conf"
args+=" --proxy-kubeconfig=/etc/nodelet/kube-proxy.conf"
args+=" --client-ca-file=/etc/nodelet/pki/ca.crt --authentication-token-webhook --authorization-mode=Webhook"
args+=" --hostname-override=$NODE_NAME --node-ip=127.0.0.1 --port=$NODE_PORT"
args+=" --pod-infra-container-image=$SANDBOX_IMAGE"
[[ $CGROUP_DRIVER == systemd ]] && args+=" --cgroup-driver=systemd"
args+=" ${EXTRA_ARGS:-}"
sed -i "s|^NODELET_ARGS=.*|NODELET_ARGS=\"$args\"|" /etc/default/nodelet
grep '^NODELET_ARGS=' /etc/default/nodelet
systemctl restart nodelet
sleep 3
echo "== nodelet.service: $(systemctl is-active nodelet)"
