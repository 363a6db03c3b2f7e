#!/usr/bin/env bash
# Lays out nodelet's files: the one list both `make install` and the Debian packages
# (packaging/deb/build.sh) install.
#
#   packaging/install.sh nodelet|kubelet
#
# nodelet: nodelet as its own service (nodelet.service, /etc/nodelet/config.yaml).
# kubelet: nodelet installed as the kubelet, for kubeadm (kubelet.service and kubeadm's drop-in).
#
# Settings (environment):
#   BIN_DIR  the folder holding the built nodelet and nodelet-cni (default target/release)
#   DESTDIR  staging root prefixed to every path (default none: the live system)
#   PREFIX   where the binaries go, PREFIX/bin (default /usr/local)
#   UNITDIR  where the systemd units go (default PREFIX/lib/systemd/system)
# Files under /etc that already exist are kept, never overwritten.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
flavour=${1:-}
BIN_DIR=${BIN_DIR:-target/release}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}

die() { echo "install.sh: $*" >&2; exit 1; }
[[ $flavour == nodelet || $flavour == kubelet ]] || die "usage: $0 nodelet|kubelet"
[[ $PREFIX == /* && $UNITDIR == /* ]] || die "PREFIX ($PREFIX) and UNITDIR ($UNITDIR) must be absolute paths"
for bin in nodelet nodelet-cni; do
    [[ -x $BIN_DIR/$bin ]] || die "$BIN_DIR/$bin is missing: build it first (make build), or set BIN_DIR"
done

bindir=$PREFIX/bin
# The packaged files name binaries at /usr/bin; a PREFIX moves them.
at_prefix() { sed "s|/usr/bin/|$bindir/|g" "$1"; }

# copy: copies a file (mode $1) from $2 to $3 (a path on the target system).
copy() { install -D -m "$1" "$2" "$DESTDIR$3"; }
# generated: writes stdin to $2 (a path on the target system) with mode $1.
generated() { mkdir -p "$(dirname "$DESTDIR$2")"; cat >"$DESTDIR$2"; chmod "$1" "$DESTDIR$2"; }
# config: installs a file under /etc unless the system already has one (the admin's edits stay).
config() {
    if [[ -e $DESTDIR$2 ]]; then
        echo "install.sh: kept the existing $DESTDIR$2"
    else
        install -D -m 0644 "$1" "$DESTDIR$2"
    fi
}
dirs() { for d in "$@"; do install -d -m 0755 "$DESTDIR$d"; done; }
# link: a symlink $2 -> $1, replacing what is at $2 in one rename.
link() {
    mkdir -p "$(dirname "$DESTDIR$2")"
    ln -sfn "$1" "$DESTDIR$2.tmp-$$"
    mv -Tf "$DESTDIR$2.tmp-$$" "$DESTDIR$2"
}

# The daemon, and its CNI plugin beside it: nodelet's default --cni-plugin is the nodelet-cni
# next to its executable, which it installs into --cni-bin-dir (/opt/cni/bin) at start. The
# link there makes that install a no-op (same content) and lets the package own the path.
agent=nodelet
[[ $flavour == kubelet ]] && agent=kubelet
copy 0755 "$BIN_DIR/nodelet" "$bindir/$agent"
copy 0755 "$BIN_DIR/nodelet-cni" "$bindir/nodelet-cni"
link "$bindir/nodelet-cni" /opt/cni/bin/nodelet-cni
dirs /etc/cni/net.d /var/log/pods

case $flavour in
nodelet)
    at_prefix "$here/systemd/nodelet.service" | generated 0644 "$UNITDIR/nodelet.service"
    config "$here/default/nodelet" /etc/default/nodelet
    config "$here/config.yaml" /etc/nodelet/config.yaml
    dirs /var/lib/nodelet
    ;;
kubelet)
    at_prefix "$here/systemd/kubelet.service" | generated 0644 "$UNITDIR/kubelet.service"
    at_prefix "$here/systemd/09-nodelet-kubeadm.conf" | generated 0644 "$UNITDIR/kubelet.service.d/09-nodelet-kubeadm.conf"
    config "$here/default/kubelet" /etc/default/kubelet
    dirs /var/lib/kubelet /etc/kubernetes/manifests
    ;;
esac

# containerd's CRI runs the reference `loopback` plugin for every pod from its CNI bin dir; the
# packages link Debian's (containernetworking-plugins) there, a plain install only says so.
if [[ -z $DESTDIR && ! -e /opt/cni/bin/loopback ]]; then
    echo "install.sh: containerd needs the loopback CNI plugin in /opt/cni/bin: install containernetworking-plugins" \
        "and run: ln -s /usr/lib/cni/loopback /opt/cni/bin/loopback"
fi
