#!/usr/bin/env bash
# Starts a real Kubernetes control plane on loopback: etcd, kube-apiserver (Node+RBAC
# authorization, NodeRestriction), kube-controller-manager (pod CIDRs from 10.244.0.0/16,
# service-account tokens, the cluster signer) and kube-scheduler, from the upstream binaries in
# KUBE_BIN. Idempotent: starts only what is not running, then waits until all of it is ready.
#   CLUSTER_DIR   state: pki/, kubeconfigs, etcd data (default /var/lib/nodelet-cluster)
#   APISERVER_PORT ETCD_PORT ETCD_PEER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT
#                 (6443 2379 2380 10257 10259): other ones for a second, private control plane
#   CLUSTER_SIGNING_DURATION  life of the certificates the controller-manager signs (nodes'
#                 client and serving certificates; default 8760h): short to test their renewal
#   APISERVER_ADDRESS  where kube-apiserver listens and the kubeconfigs point (default
#                 127.0.0.1): a multi-node cluster (nodes-up.sh) gives its bridge's address, which
#                 the serving certificate then names too; a control plane of CLUSTER_DIR running on
#                 another address is restarted on this one
#   NODE_MONITOR_GRACE_PERIOD  kube-controller-manager's --node-monitor-grace-period (its
#                 default when unset): how long a silent node stays Ready
#   APISERVER_EXTRA_SANS  more subject alternative names of the apiserver's serving certificate
#                 (kubeadm's --apiserver-cert-extra-sans), as IP:a.b.c.d or DNS:name, comma-separated:
#                 an address nodes reach it at other than 127.0.0.1 (the VM tests' 10.0.2.100).
#                 Taken when the certificate is made, so with a new CLUSTER_DIR
#   KUBE_BIN      folder of kube-apiserver, kube-controller-manager, kube-scheduler (default:
#                 ../shared/kube/bin/*.xz beside the repo, unpacked into /var/lib/nodelet-kube-bin)
# Writes $CLUSTER_DIR/admin.kubeconfig (system:masters) and kube-proxy.kubeconfig
# (system:kube-proxy); node-kubeconfig.sh NAME mints a node's. Stop with down.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

mkdir -p "$CLUSTER_DIR" "$NODELET_ENV_RUN_DIR" "$NODELET_ENV_LOG_DIR"
# Parallel callers (tests) wait for the first one to finish.
exec {lock}>"$NODELET_ENV_RUN_DIR/$CLUSTER_TAG.lock"
flock "$lock"

start=$SECONDS
resolve_kube_bin
ensure_etcd
ETCD=$(etcd_binary)

# --- certificates and kubeconfigs (kept across restarts) ---
mkdir -p "$PKI"
chmod 0700 "$CLUSTER_DIR" "$PKI"
if [[ ! -s $PKI/ca.crt || ! -s $PKI/ca.key ]]; then
    log "creating the cluster CA and certificates in $PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=nodelet-cluster-ca" -days 3650 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "$PKI/ca.crt" 2>/dev/null
fi
apiserver_sans="IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
[[ $APISERVER_ADDRESS == 127.0.0.1 ]] || apiserver_sans+=",IP:$APISERVER_ADDRESS"
apiserver_sans+=${APISERVER_EXTRA_SANS:+,$APISERVER_EXTRA_SANS}
# A certificate made for other addresses is made again (and the running apiserver restarted below).
if [[ -s $PKI/apiserver.crt && "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$apiserver_sans" ]]; then
    log "the apiserver's serving certificate does not name $APISERVER_ADDRESS: making it again"
    rm -f "$PKI/apiserver.crt" "$PKI/apiserver.key"
fi
cert "$PKI/apiserver" kube-apiserver "" "$apiserver_sans" serverAuth
echo "$apiserver_sans" >"$PKI/apiserver.sans"
cert "$PKI/apiserver-kubelet-client" kube-apiserver-kubelet-client system:masters
cert "$PKI/admin" admin system:masters
cert "$PKI/controller-manager" system:kube-controller-manager
cert "$PKI/scheduler" system:kube-scheduler
cert "$PKI/kube-proxy" system:kube-proxy
if [[ ! -s $PKI/sa.key ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key.tmp" 2>/dev/null
    openssl pkey -in "$PKI/sa.key.tmp" -pubout -out "$PKI/sa.pub" 2>/dev/null
    mv -f "$PKI/sa.key.tmp" "$PKI/sa.key"
fi
kubeconfig "$CLUSTER_DIR/admin.kubeconfig" "$PKI/admin" admin
kubeconfig "$CLUSTER_DIR/kube-proxy.kubeconfig" "$PKI/kube-proxy" system:kube-proxy
kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" "$PKI/controller-manager" system:kube-controller-manager
kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" "$PKI/scheduler" system:kube-scheduler

# --- the daemons ---

# A control plane started for another apiserver address: its apiserver, and the controller-manager
# and scheduler whose kubeconfigs named it, start again on this one.
address_file=$CLUSTER_DIR/apiserver-address
if [[ -s $address_file && "$(<"$address_file")" != "$APISERVER_ADDRESS" ]]; then
    log "the control plane ran with its apiserver on $(<"$address_file"): restarting it on $APISERVER_ADDRESS"
    for name in kube-scheduler kube-controller-manager kube-apiserver; do
        stop_daemon "$name" "$(pidfile_of "$name")" "$(exe_of "$name")" {lock}>&-
    done
fi
echo "$APISERVER_ADDRESS" >"$address_file"

# Starts NAME unless its pid file names a live process of that binary.
ensure_running() {
    local name=$1 exe=$2 pid
    shift 2
    if pid=$(pid_from_file "$(pidfile_of "$name")" "$(realpath "$exe")"); then
        log "$name already running (pid $pid)"
        return 0
    fi
    log "starting $name (log: $(logfile_of "$name"))"
    # Without the lock's descriptor: a daemon holding it would block every later up.sh.
    start_daemon "$(pidfile_of "$name")" "$(logfile_of "$name")" "$exe" "$@" {lock}>&-
}

# Waits until URL answers 200 (curl args after it), or fails with NAME's log.
wait_ok() {
    local name=$1 url=$2 pid deadline=$((SECONDS + 90))
    shift 2
    pid=$(<"$(pidfile_of "$name")")
    until curl -fsS --max-time 2 -o /dev/null "$@" "$url" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || die_with_log "$name (pid $pid) exited while starting" "$(logfile_of "$name")"
        ((SECONDS < deadline)) || die_with_log "$name (pid $pid) not ready at $url within 90 s" "$(logfile_of "$name")"
        sleep 0.2
    done
}

ensure_running etcd "$ETCD" \
    --name default --data-dir "$CLUSTER_DIR/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT"
wait_ok etcd "http://127.0.0.1:$ETCD_PORT/health"

# On loopback the apiserver cannot be the kubernetes Service's endpoint (Endpoints refuse
# 127.0.0.0/8): no reconciler, so the Service has no endpoints rather than an error every 10 s.
ensure_running kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$APISERVER_ADDRESS" --advertise-address "$APISERVER_ADDRESS" --secure-port "$APISERVER_PORT" --cert-dir "$PKI" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --enable-bootstrap-token-auth \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --endpoint-reconciler-type none
wait_ok kube-apiserver "https://$APISERVER_ADDRESS:$APISERVER_PORT/readyz" --cacert "$PKI/ca.crt"

ensure_running kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" --authorization-kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --cert-dir "$PKI/controller-manager-serving" \
    --leader-elect=false --controllers '*,bootstrapsigner,tokencleaner' \
    --allocate-node-cidrs --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 --service-cluster-ip-range "$SERVICE_CIDR" \
    --use-service-account-credentials --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --cluster-signing-duration "${CLUSTER_SIGNING_DURATION:-8760h}" \
    ${NODE_MONITOR_GRACE_PERIOD:+--node-monitor-grace-period "$NODE_MONITOR_GRACE_PERIOD"}
ensure_running kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" --authorization-kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$PKI/scheduler-serving" --leader-elect=false
wait_ok kube-controller-manager "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz" -k
wait_ok kube-scheduler "https://127.0.0.1:$SCHEDULER_PORT/healthz" -k

log "control plane ready in $((SECONDS - start)) s: https://$APISERVER_ADDRESS:$APISERVER_PORT, KUBECONFIG=$CLUSTER_DIR/admin.kubeconfig"
