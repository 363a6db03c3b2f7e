#!/usr/bin/env bash
# make vm-test: nodelet installed from its .deb on a Debian 12 guest (systemd, cgroup v2) that
# joins a control plane of the test's own on this machine, then the checks of tests/vm.rs.
# Builds what it needs once: QEMU unpacked (qemu.sh) and the guest image (image.sh), both cached
# under VM_DIR; the .deb of this tree on every run (packaging/deb/build.sh). The test stops
# QEMU and the control plane even when it fails; a failed run's guest logs stay in
# /var/log/nodelet-env/vm-<pid>/.
#   VM_PROFILE        debug (default: quick to build) or release (make deb's binaries: slow)
#   VM_CGROUP_DRIVER  systemd (default: operators' setting, SystemdCgroup = true and nodelet
#                     --cgroup-driver=systemd) or cgroupfs (SystemdCgroup = false, no flag)
#   VM_ACCEL          QEMU's -accel (default tcg,thread=multi; kvm where it works)
#   VM_DIR            the cache (default /var/lib/nodelet-vm; make vm-clean removes it)
# Needs the registry and images of `make setup` (the guest pulls from it through QEMU).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
ensure_cargo

start=$SECONDS
profile=${VM_PROFILE:-debug}
case $profile in
debug) cargo_profile=() ;;
release) cargo_profile=(--release) ;;
*) die "VM_PROFILE=$profile: debug or release" ;;
esac
curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:5000/v2/" || die "no registry on 127.0.0.1:5000: run make setup first"

"$VM_SCRIPTS/qemu.sh" >/dev/null
t=$SECONDS
image=$("$VM_SCRIPTS/image.sh")
image_time=$((SECONDS - t))

cd "$REPO_ROOT"
target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
t=$SECONDS
log "building nodelet and nodelet-cni ($profile)"
cargo build "${cargo_profile[@]}" -p nodelet -p nodelet-cni
rm -rf "$target/vm-deb"
# gzip: the guest unpacks it under emulation, where xz costs more than the smaller file saves.
deb=$(BIN_DIR="$target/$profile" OUT_DIR="$target/vm-deb" DEB_COMPRESS=${VM_DEB_COMPRESS:-gzip} bash packaging/deb/build.sh | grep '/nodelet_[^/]*\.deb$')
build_time=$((SECONDS - t))
log "$deb ($(du -h "$deb" | cut -f1)) in $build_time s; Depends: $(dpkg-deb -f "$deb" Depends)"

t=$SECONDS
status=0
NODELET_VM_IMAGE=$image NODELET_VM_DEB=$deb NODELET_VM_CGROUP_DRIVER=${VM_CGROUP_DRIVER:-systemd} NODELET_VM_ACCEL=${VM_ACCEL:-} \
    cargo test --test vm -- --ignored --nocapture --test-threads=1 || status=$?
log "image $image_time s (cached unless changed), build and package $build_time s, test $((SECONDS - t)) s, whole run $((SECONDS - start)) s"
exit "$status"
