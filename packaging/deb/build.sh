#!/usr/bin/env bash
# Builds nodelet's Debian packages with dpkg-deb from staged trees (no debhelper needed):
#   nodelet          nodelet as its own service (nodelet.service)
#   nodelet-kubelet  nodelet installed as the kubelet, for kubeadm (kubelet.service)
# The two conflict: a machine runs one node agent.
#
#   packaging/deb/build.sh            (make deb: after make build)
#
# Settings (environment):
#   BIN_DIR       the folder holding nodelet and nodelet-cni (default target/release)
#   OUT_DIR       where the .deb files go (default target/deb)
#   DEB_COMPRESS  dpkg-deb's compressor: xz (default), gzip, zstd or none
#   MAINTAINER    the Maintainer field
# The version is the workspace's (Cargo.toml); the binaries must report the same one.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
packaging=$repo/packaging
BIN_DIR=${BIN_DIR:-$repo/target/release}
OUT_DIR=${OUT_DIR:-$repo/target/deb}
DEB_COMPRESS=${DEB_COMPRESS:-xz}
MAINTAINER=${MAINTAINER:-nodelet maintainers <maintainers@users.noreply.b-seed-3e14a3f8.example>}

die() { echo "deb/build.sh: $*" >&2; exit 1; }
for bin in nodelet nodelet-cni; do
    [[ -x $BIN_DIR/$bin ]] || die "$BIN_DIR/$bin is missing: build it first (make build), or set BIN_DIR"
done
BIN_DIR=$(cd "$BIN_DIR" && pwd)

# [workspace.package] version in Cargo.toml
version=$(awk '/^\[/ { section = $0 } section == "[workspace.package]" && /^version *=/ { gsub(/.*= *"|".*/, ""); print; exit }' "$repo/Cargo.toml")
[[ -n $version ]] || die "no version in $repo/Cargo.toml's [workspace.package]"
raw=$("$BIN_DIR/nodelet" --version=raw) || die "$BIN_DIR/nodelet --version=raw failed"
built=$(sed -n 's/^nodelet: //p' <<<"$raw")
[[ $built == "$version" ]] || die "$BIN_DIR/nodelet is version '$built', Cargo.toml says $version: rebuild it"
# The Kubernetes release nodelet stands in for: the version nodelet-kubelet provides `kubelet` at.
kubernetes=$(sed -n 's/^kubernetes: v//p' <<<"$raw")
[[ -n $kubernetes ]] || die "$BIN_DIR/nodelet --version=raw names no kubernetes version"
arch=${DEB_ARCH:-$(dpkg --print-architecture)}

# The shared libraries the binaries link, as package dependencies: glibc at the newest symbol
# version used, and libgcc_s (Rust's unwinder). nodelet also loads libnftables.so.1 at run time.
binaries=("$BIN_DIR/nodelet" "$BIN_DIR/nodelet-cni")
needed=$(readelf -d "${binaries[@]}" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
versions=$(readelf -V "${binaries[@]}")
newest() { grep -o "$1[0-9][0-9.]*" <<<"$versions" | sed "s/$1//" | sort -uV | tail -n1 || true; }
libs="libc6 (>= $(newest GLIBC_))"
for lib in $needed; do
    case $lib in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux*) ;;
    libgcc_s.so.1) libs="$libs, libgcc-s1 (>= $(newest GCC_))" ;;
    *) die "$lib (linked by ${binaries[*]}) has no package mapping here: add it" ;;
    esac
done
[[ $libs != *"(>= )"* ]] || die "no GLIBC_/GCC_ symbol versions in ${binaries[*]}"

# containerd runs the pods (containerd.io is Docker's build of it; either brings runc);
# `loopback` for every pod's lo comes from containernetworking-plugins (the postinst links it
# into /opt/cni/bin) or kubernetes-cni; nodelet-cni runs nft, the proxy loads libnftables and
# runs conntrack to end stale flows.
runtime_depends="containerd | containerd.io, containernetworking-plugins | kubernetes-cni, nftables, libnftables1, conntrack"
depends="$libs, $runtime_depends"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT_DIR"

# package NAME FLAVOUR UNIT FIELDS DESCRIPTION: stages FLAVOUR's files, adds DEBIAN/ and builds.
package() {
    local name=$1 flavour=$2 unit=$3 fields=$4 description=$5
    local root=$work/$name
    DESTDIR=$root PREFIX=/usr UNITDIR=/lib/systemd/system BIN_DIR=$BIN_DIR bash "$packaging/install.sh" "$flavour" >/dev/null
    # as debhelper's dh_strip does; the debug binaries shrink from hundreds of MB to tens
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root"/usr/bin/* || die "strip failed on $root/usr/bin"
    install -D -m 0644 "$packaging/deb/copyright" "$root/usr/share/doc/$name/copyright"

    mkdir -p "$root/DEBIAN"
    # Every file under /etc is a conffile: dpkg keeps the admin's edits on upgrade.
    (cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    for script in postinst prerm postrm; do
        sed -e "s/#UNIT#/$unit/g" -e "s/#PACKAGE#/$name/g" "$packaging/deb/scripts/$script" >"$root/DEBIAN/$script"
        chmod 0755 "$root/DEBIAN/$script"
    done
    {
        echo "Package: $name"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: $MAINTAINER"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
        echo "Depends: $depends"
        # the systemd cgroup driver talks to systemd on the system bus
        echo "Recommends: dbus"
        printf '%s' "$fields"
        echo "Section: admin"
        echo "Priority: optional"
        echo "Description: $description"
    } >"$root/DEBIAN/control"
    chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
    dpkg-deb --root-owner-group -Z"$DEB_COMPRESS" --build "$root" "$OUT_DIR/${name}_${version}_${arch}.deb" >/dev/null
    echo "$OUT_DIR/${name}_${version}_${arch}.deb"
}

package nodelet nodelet nodelet.service \
    "Conflicts: nodelet-kubelet
Replaces: nodelet-kubelet
" \
    "Kubernetes node agent: kubelet, kube-proxy and a CNI plugin in one daemon
 nodelet runs a worker node's pods through containerd's CRI, programs Services
 in nftables and gives each pod its address with its own CNI plugin
 (nodelet-cni). It speaks the kubelet's API and flags.
 .
 This package runs it as its own service, nodelet.service, configured in
 /etc/nodelet/config.yaml and /etc/default/nodelet."

package nodelet-kubelet kubelet kubelet.service \
    "Provides: kubelet (= $kubernetes)
Conflicts: kubelet, nodelet
Replaces: kubelet, nodelet
" \
    "nodelet installed as the kubelet, for kubeadm join
 nodelet runs a worker node's pods through containerd's CRI, programs Services
 in nftables and gives each pod its address with its own CNI plugin
 (nodelet-cni). It speaks the kubelet's API and flags.
 .
 This package installs it in the kubelet's place: /usr/bin/kubelet,
 kubelet.service and kubeadm's drop-in, so that kubeadm join sets it up as it
 does the kubelet. It replaces the kubelet package."
