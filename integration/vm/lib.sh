# shellcheck shell=bash disable=SC2034
# Shared by the guest scripts (integration/vm/); sourced, not run. Everything they keep lives
# under VM_DIR: QEMU unpacked (qemu/) and the cached guest images (images/<key>/).
# shellcheck source-path=SCRIPTDIR source=../env/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env/lib.sh"

# Messages go to stderr: qemu.sh and image.sh print their result on stdout for $(...).
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

VM_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VM_DIR=${VM_DIR:-/var/lib/nodelet-vm}
QEMU_ROOT=$VM_DIR/qemu/root
QEMU_BIN=$QEMU_ROOT/usr/bin/qemu-system-x86_64
# Its loadable modules (TCG is one in Debian's build): exported as QEMU_MODULE_DIR to QEMU.
QEMU_MODULE_DIR=$QEMU_ROOT/usr/lib/x86_64-linux-gnu/qemu
# Firmware and option ROMs of the unpacked packages (QEMU's -L, one folder each).
QEMU_DATA_DIRS=("$QEMU_ROOT/usr/share/qemu" "$QEMU_ROOT/usr/share/seabios" "$QEMU_ROOT/usr/lib/ipxe/qemu")

# Installs the named Debian packages that are missing (and only those: naming an installed
# library would upgrade it and whatever depends on it).
apt_install_missing() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold -y -q)
    apt-get "${opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get "${opts[@]}" update >/dev/null && apt-get "${opts[@]}" install --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
}
