#!/usr/bin/env bash
# Builds the project's test images from local files only (no outside
# registry) and pushes them to the local registry:
#   localhost:5000/nodelet/pause:1    the static pause binary as /pause
#   localhost:5000/nodelet/busybox:1  busybox-static with its applets, cmd ["sh"]
# An image whose inputs are unchanged (their hash is kept as the image label
# org.nodelet.inputs) is not rebuilt or pushed again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

PAUSE_REF=$NODELET_REGISTRY/nodelet/pause:1
BUSYBOX_REF=$NODELET_REGISTRY/nodelet/busybox:1
BUSYBOX_BIN=/bin/busybox
LABEL=org.nodelet.inputs
# Applets the tests rely on; the image links every applet busybox has.
REQUIRED_APPLETS=(sh sleep httpd nc wget cat echo ls env true false id hostname ps kill
    mkdir touch date grep head tail seq yes ip ifconfig)

curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:5000/v2/" ||
    die "no registry at 127.0.0.1:5000: run integration/env/start-registry.sh"
for tool in umoci skopeo jq; do
    command -v "$tool" >/dev/null || die "$tool not found: run integration/env/install-packages.sh"
done
if [[ ! -x $BUSYBOX_BIN ]] || ! file -b "$BUSYBOX_BIN" | grep -q static; then
    die "$BUSYBOX_BIN is missing or not static: install busybox-static"
fi

PAUSE_BIN=${NODELET_PAUSE_BIN:-}
if [[ -z $PAUSE_BIN ]]; then
    PAUSE_BIN=$("$ENV_DIR/build-pause.sh")
fi
[[ -x $PAUSE_BIN ]] || die "pause binary $PAUSE_BIN not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodelet-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
umoci init --layout "$WORK/oci"

# The label stored in the registry for ref, or nothing.
pushed_inputs() {
    skopeo inspect --tls-verify=false "docker://$1" 2>/dev/null |
        jq -r --arg l "$LABEL" '.Labels[$l] // empty' 2>/dev/null || true
}

# build_image NAME REF INPUTS_HASH FILL_FN UMOCI_CONFIG_ARGS...
# FILL_FN gets the rootfs directory and populates it.
build_image() {
    local name=$1 ref=$2 inputs=$3 fill=$4
    shift 4
    if [[ "$(pushed_inputs "$ref")" == "$inputs" ]]; then
        log "$ref is up to date (inputs $inputs), not rebuilt"
        return 0
    fi
    log "building $ref"
    local image="$WORK/oci:$name" bundle="$WORK/bundle-$name"
    umoci new --image "$image"
    umoci unpack --image "$image" "$bundle" >/dev/null
    "$fill" "$bundle/rootfs"
    umoci repack --image "$image" "$bundle"
    umoci config --image "$image" --os linux --architecture amd64 \
        --config.label "$LABEL=$inputs" "$@"
    log "pushing $ref"
    skopeo --insecure-policy copy -q --dest-tls-verify=false \
        "oci:$WORK/oci:$name" "docker://$ref"
    [[ "$(pushed_inputs "$ref")" == "$inputs" ]] ||
        die "pushed $ref but the registry does not show it (skopeo inspect --tls-verify=false docker://$ref)"
    log "pushed $ref"
}

fill_pause() {
    install -m 0755 "$PAUSE_BIN" "$1/pause"
}

fill_busybox() {
    local root=$1 applet dir
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,var/www,home}
    install -d -m 1777 "$root/tmp"
    install -m 0755 "$BUSYBOX_BIN" "$root/bin/busybox"
    # --list-full prints paths such as usr/bin/wget; link them all to /bin/busybox.
    while read -r applet; do
        [[ $applet == bin/busybox ]] && continue
        dir=$(dirname "$applet")
        mkdir -p "$root/$dir"
        ln -sf /bin/busybox "$root/$applet"
    done < <("$BUSYBOX_BIN" --list-full)
    for applet in "${REQUIRED_APPLETS[@]}"; do
        compgen -G "$root/*bin/$applet" >/dev/null || compgen -G "$root/usr/*bin/$applet" >/dev/null ||
            die "busybox ($BUSYBOX_BIN) has no applet '$applet'"
    done
    cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$root/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
}

# Inputs: the files copied in, plus this script (it defines the layout).
self_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)
pause_inputs=$(cat <(sha256sum <"$PAUSE_BIN") <(echo "$self_hash") | sha256sum | cut -c1-16)
busybox_inputs=$(cat <(sha256sum <"$BUSYBOX_BIN") <(echo "$self_hash") | sha256sum | cut -c1-16)

build_image pause "$PAUSE_REF" "$pause_inputs" fill_pause \
    --config.entrypoint /pause
build_image busybox "$BUSYBOX_REF" "$busybox_inputs" fill_busybox \
    --config.cmd sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin

for ref in "$PAUSE_REF" "$BUSYBOX_REF"; do
    skopeo inspect --tls-verify=false "docker://$ref" |
        jq -r --arg r "$ref" '"\($r): \(.Os)/\(.Architecture) \(.Digest)"' |
        while read -r line; do log "$line"; done
done
