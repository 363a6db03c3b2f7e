#!/usr/bin/env bash
# The Debian 12 guest nodelet's VM tests boot: built from Debian's packages with debootstrap
# (minbase, bookworm, from the host's configured Debian mirror) and cached under
# $VM_DIR/images/<key>, the key a hash of this script, guest/ and the package list; built again
# only when one of them changes. Prints the image folder: rootfs.img (ext4, 4 GB sparse),
# vmlinuz and initrd.img (booted directly: -kernel/-initrd, root=/dev/vda).
# The guest: systemd as PID 1 (cgroup v2), networkd with DHCP, containerd and runc, what the
# nodelet package depends on (so `dpkg -i` needs no network), the 9p share at /mnt/nodelet-vm
# and nodelet-vm-agent.service running the host's jobs from it (guest/). No nodelet: each run
# installs its own .deb. Root has no password (serial console).
#   VM_DIR     (default /var/lib/nodelet-vm)
#   VM_MIRROR  the Debian mirror (default: the host's apt source for bookworm main)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

SUITE=bookworm
IMAGE_SIZE=4G
GUEST_PACKAGES=(
    systemd systemd-sysv udev dbus kmod init-system-helpers # the init system operators run
    linux-image-amd64 initramfs-tools                        # the kernel, booted directly
    iproute2 procps curl                                     # the network, ps/pgrep, checks
    containerd runc                                          # the runtime (containerd 1.6)
    nftables libnftables1 conntrack containernetworking-plugins # the nodelet package's Depends
)

# The host's mirror of the suite: the apt source that serves bookworm's main component.
host_mirror() {
    # shellcheck disable=SC2016 # apt's own $(...) placeholders
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null \
        | awk -v s="$SUITE" '$2 == s && $3 == "main" { print $1; exit }'
}
MIRROR=${VM_MIRROR:-$(host_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian/}

key=$({
    cat "${BASH_SOURCE[0]}"
    find "$VM_SCRIPTS/guest" -type f | sort | xargs cat
    echo "$SUITE ${GUEST_PACKAGES[*]} $MIRROR"
} | sha256sum | cut -c1-16)
image=$VM_DIR/images/$key

mkdir -p "$VM_DIR/images"
exec {lock}>"$VM_DIR/image.lock"
flock "$lock"
if [[ -f $image/.done ]]; then
    echo "$image"
    exit 0
fi

apt_install_missing debootstrap e2fsprogs
start=$SECONDS
work=$VM_DIR/build.tmp
# A build killed midway may have left debootstrap's mounts in its root.
unmount_below() {
    local mnt
    awk -v root="$1" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
}
cleanup() { unmount_below "$work/rootfs"; rm -rf "$work"; }
trap cleanup EXIT
cleanup
mkdir -p "$work"
rootfs=$work/rootfs

log "debootstrap $SUITE (minbase + ${#GUEST_PACKAGES[@]} packages) from $MIRROR: a few minutes"
include=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
debootstrap --variant=minbase --components=main --include="$include" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || die_with_log "debootstrap failed" "$work/debootstrap.log"

# --- configuration ---
g=$VM_SCRIPTS/guest
echo nodelet-vm >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nodelet-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
install -m 0644 "$g/fstab" "$rootfs/etc/fstab"
mkdir -p "$rootfs/mnt/nodelet-vm"
install -D -m 0644 "$g/10-dhcp.network" "$rootfs/etc/systemd/network/10-dhcp.network"
# QEMU's user network's DNS (restrict=on: it answers nothing outside).
echo "nameserver 10.0.2.3" >"$rootfs/etc/resolv.conf"
install -D -m 0755 "$g/nodelet-vm-agent" "$rootfs/usr/local/sbin/nodelet-vm-agent"
install -D -m 0644 "$g/nodelet-vm-agent.service" "$rootfs/etc/systemd/system/nodelet-vm-agent.service"
# A machine id made at each boot (several guests share this image).
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
chroot "$rootfs" /bin/sh -ec '
    systemctl enable systemd-networkd nodelet-vm-agent >/dev/null 2>&1
    passwd -d root >/dev/null
    apt-get clean
' || die "configuring the guest in $rootfs failed"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
unmount_below "$rootfs"

# --- the image ---
mkdir -p "$work/out"
kernel=$(find "$rootfs/boot" -name 'vmlinuz-*' | sort -V | tail -n1)
initrd=$(find "$rootfs/boot" -name 'initrd.img-*' | sort -V | tail -n1)
[[ -f $kernel && -f $initrd ]] || die "no kernel or initrd in $rootfs/boot"
cp "$kernel" "$work/out/vmlinuz"
cp "$initrd" "$work/out/initrd.img"
truncate -s "$IMAGE_SIZE" "$work/out/rootfs.img"
mkfs.ext4 -q -F -L nodelet-vm -d "$rootfs" "$work/out/rootfs.img" || die "mkfs.ext4 -d $rootfs failed"
{
    echo "built $(date -Is) in $((SECONDS - start)) s from $MIRROR"
    echo "kernel $(basename "$kernel")"
    # shellcheck disable=SC2016 # dpkg-query's own ${...} fields
    chroot "$rootfs" dpkg-query -W -f='${Package} ${Version}\n' "${GUEST_PACKAGES[@]}"
} >"$work/out/.done.tmp"
rm -rf "$image"
mv "$work/out" "$image"
mv "$image/.done.tmp" "$image/.done"
# Older images (another key) go; a guest still running from one keeps its open file.
find "$VM_DIR/images" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
log "image built in $((SECONDS - start)) s: $image ($(du -sh --apparent-size "$image/rootfs.img" | cut -f1) sparse, $(du -sh "$image/rootfs.img" | cut -f1) used)"
echo "$image"
