#!/usr/bin/env bash
# Boots the Debian 12 guest of image.sh under the QEMU of qemu.sh (exec: this process becomes
# QEMU, so its pid is the guest's). The image is opened with snapshot=on: writes go to a
# temporary overlay that lives as long as this QEMU process (a reboot inside the guest keeps
# them, the next QEMU starts clean), so several guests share one image.
#   VM_IMAGE     the image folder (default: image.sh's, built if missing)
#   VM_SHARE     a host folder mounted in the guest at /mnt/nodelet-vm (9p; default none)
#   VM_CONSOLE   a file for the serial console (default: this terminal; Ctrl-A X quits)
#   VM_ACCEL     QEMU's -accel (default tcg,thread=multi: this machine's /dev/kvm cannot run a
#                stock kernel; on one with VT-x, kvm and VM_CPU=host are much faster)
#   VM_CPU VM_SMP VM_MEM   -cpu, -smp, -m (default max, 2, 2048)
#   VM_GUESTFWD  host ports the guest reaches at 10.0.2.100:<port> (one socat per connection)
#   VM_HOSTFWD   ports forwarded from 127.0.0.1:<port> on the host to the same port in the guest
#   VM_NO_REBOOT 1: a reboot in the guest ends QEMU, as a poweroff does (default 0)
#   VM_APPEND    more kernel command-line words
# The network is QEMU's user mode with restrict=on: the guest reaches nothing but what
# VM_GUESTFWD names; the host reaches it only through VM_HOSTFWD.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -x $QEMU_BIN ]] || QEMU_BIN=$("$VM_SCRIPTS/qemu.sh")
VM_IMAGE=${VM_IMAGE:-$("$VM_SCRIPTS/image.sh")}
for f in rootfs.img vmlinuz initrd.img; do
    [[ -f $VM_IMAGE/$f ]] || die "$VM_IMAGE/$f is missing: build the image with integration/vm/image.sh"
done

net=user,id=net0,restrict=on
for port in ${VM_GUESTFWD:-}; do
    net+=",guestfwd=tcp:10.0.2.100:$port-cmd:socat - TCP:127.0.0.1:$port"
done
for port in ${VM_HOSTFWD:-}; do
    net+=",hostfwd=tcp:127.0.0.1:$port-:$port"
done

args=()
for dir in "${QEMU_DATA_DIRS[@]}"; do args+=(-L "$dir"); done
# shellcheck disable=SC2054 # commas separate QEMU's sub-options
args+=(
    -name nodelet-vm -accel "${VM_ACCEL:-tcg,thread=multi}" -cpu "${VM_CPU:-max}"
    -smp "${VM_SMP:-2}" -m "${VM_MEM:-2048}"
    -kernel "$VM_IMAGE/vmlinuz" -initrd "$VM_IMAGE/initrd.img"
    -append "root=/dev/vda rw console=ttyS0 ${VM_APPEND:-}"
    -drive "file=$VM_IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on"
    -netdev "$net" -device virtio-net-pci,netdev=net0,romfile=
    -device virtio-rng-pci
)
if [[ -n ${VM_SHARE:-} ]]; then
    args+=(-virtfs "local,path=$VM_SHARE,mount_tag=nodelet-vm,security_model=none,id=share")
fi
if [[ -n ${VM_CONSOLE:-} ]]; then
    args+=(-display none -monitor none -serial "file:$VM_CONSOLE")
else
    args+=(-nographic)
fi
[[ ${VM_NO_REBOOT:-0} == 1 ]] && args+=(-no-reboot)
export QEMU_MODULE_DIR
exec "$QEMU_BIN" "${args[@]}"
