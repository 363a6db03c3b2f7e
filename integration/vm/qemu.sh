#!/usr/bin/env bash
# QEMU's PC emulator from Debian 12's packages, unpacked beside the host's own packages rather
# than installed: qemu-system-x86 7.2 conflicts with the qemu-utils 10.0 (bookworm-backports)
# some of these machines have. `apt-get download` + `dpkg -x` of qemu-system-x86,
# qemu-system-common (its modules: Debian builds TCG as one, accel-tcg-x86_64.so, loaded from
# QEMU_MODULE_DIR), qemu-system-data, seabios and ipxe-qemu into $VM_DIR/qemu/root; only the
# shared libraries the binary needs are installed (those missing), and socat, which carries the
# guest's connections to host services (QEMU's guestfwd runs one per connection). Idempotent;
# prints the binary.
#   VM_DIR  (default /var/lib/nodelet-vm)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu)
apt_install_missing socat

mkdir -p "$VM_DIR"
exec {lock}>"$VM_DIR/qemu.lock"
flock "$lock"

works() {
    [[ -f $VM_DIR/qemu/.done && -f $QEMU_MODULE_DIR/accel-tcg-x86_64.so ]] && "$QEMU_BIN" --version 2>/dev/null | grep -q '^QEMU emulator version'
}
if works; then
    echo "$QEMU_BIN"
    exit 0
fi

start=$SECONDS
tmp=$VM_DIR/qemu.tmp
rm -rf "$tmp" "$VM_DIR/qemu"
mkdir -p "$tmp/debs" "$tmp/root"
log "downloading ${PACKAGES[*]} (unpacked into $VM_DIR/qemu, not installed)"
# As root, apt's _apt sandbox user could not write into this folder: download unsandboxed.
(cd "$tmp/debs" && apt-get -q -o APT::Sandbox::User=root download "${PACKAGES[@]}" >/dev/null) \
    || { apt-get -q update >/dev/null && (cd "$tmp/debs" && apt-get -q -o APT::Sandbox::User=root download "${PACKAGES[@]}" >/dev/null); } \
    || die "apt-get download ${PACKAGES[*]} failed"
for deb in "$tmp"/debs/*.deb; do
    dpkg -x "$deb" "$tmp/root"
done

# The emulator's shared libraries: the lib* packages qemu-system-x86 depends on (first
# alternative, versions dropped). qemu-system-common's other modules (spice, OpenGL, audio)
# need more, but are never loaded here.
libs=$(dpkg-deb -f "$tmp"/debs/qemu-system-x86_*.deb Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/ //g' | grep -E '^(lib|zlib)')
# shellcheck disable=SC2086
apt_install_missing $libs

bin=$tmp/root/usr/bin/qemu-system-x86_64
tcg=$tmp/root${QEMU_MODULE_DIR#"$QEMU_ROOT"}/accel-tcg-x86_64.so
unresolved=$(ldd "$bin" "$tcg" | grep 'not found' || true)
[[ -z $unresolved ]] || die "$bin or $tcg still misses libraries:"$'\n'"$unresolved"
version=$("$bin" --version | head -n1)
{
    echo "$version"
    for deb in "$tmp"/debs/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd' '; done
} >"$tmp/.done"
rm -rf "$tmp/debs"
mv "$tmp" "$VM_DIR/qemu"
log "$version unpacked in $((SECONDS - start)) s: $QEMU_BIN"
echo "$QEMU_BIN"
