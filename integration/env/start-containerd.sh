#!/usr/bin/env bash
# Writes the project's containerd config and starts containerd as a plain
# background process, unless it already answers on its socket.
# NODELET_PAUSE_IMAGE overrides the sandbox (pause) image.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

BIN=/usr/bin/containerd
SOCK=/run/containerd/containerd.sock
CONFIG=/etc/containerd/config.toml
CERTS_DIR=/etc/containerd/certs.d
PIDFILE=$NODELET_ENV_RUN_DIR/containerd.pid
LOGFILE=$NODELET_ENV_LOG_DIR/containerd.log
SANDBOX_IMAGE=${NODELET_PAUSE_IMAGE:-$NODELET_REGISTRY/nodelet/pause:1}

[[ -x $BIN ]] || die "$BIN not found: run integration/env/install-packages.sh"
[[ $SANDBOX_IMAGE =~ ^[A-Za-z0-9._:/@-]+$ ]] || die "NODELET_PAUSE_IMAGE '$SANDBOX_IMAGE' is not an image reference"

answers() {
    [[ -S $SOCK ]] && timeout 10 ctr --address "$SOCK" --connect-timeout 2s version >/dev/null 2>&1
}

# --- config -----------------------------------------------------------------
mkdir -p /etc/containerd /opt/cni/bin /etc/cni/net.d "$NODELET_ENV_RUN_DIR" "$NODELET_ENV_LOG_DIR"
# containerd 1.6's CRI sets up every pod's lo with the reference "loopback" plugin, whatever
# network plugin the node uses; Debian ships it under /usr/lib/cni.
if [[ ! -e /opt/cni/bin/loopback ]]; then
    ln -s /usr/lib/cni/loopback /opt/cni/bin/loopback
    log "linked the loopback CNI plugin into /opt/cni/bin"
fi
new_config=$(sed "s|@SANDBOX_IMAGE@|$SANDBOX_IMAGE|" "$ENV_DIR/containerd-config.toml")
config_changed=false
if [[ "$(cat "$CONFIG" 2>/dev/null)" != "$new_config" ]]; then
    if [[ -f $CONFIG && ! -f $CONFIG.before-nodelet ]]; then
        cp "$CONFIG" "$CONFIG.before-nodelet"
        log "kept the previous $CONFIG as $CONFIG.before-nodelet"
    fi
    printf '%s\n' "$new_config" >"$CONFIG"
    config_changed=true
    log "wrote $CONFIG (sandbox_image $SANDBOX_IMAGE)"
fi

for host in localhost:5000 127.0.0.1:5000; do
    mkdir -p "$CERTS_DIR/$host"
    cat >"$CERTS_DIR/$host/hosts.toml" <<TOML
# Written by integration/env/start-containerd.sh: the project's registry, plain http.
server = "http://$host"

[host."http://$host"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
TOML
done

# --- process ----------------------------------------------------------------
if answers; then
    if pid=$(pid_from_file "$PIDFILE" "$BIN"); then
        if ! $config_changed; then
            log "containerd already running (pid $pid) on $SOCK"
            exit 0
        fi
        log "config changed: restarting containerd (pid $pid)"
        stop_daemon containerd "$PIDFILE" "$BIN"
    else
        $config_changed && warn "containerd on $SOCK was not started by these scripts;" \
            "restart it to load the new $CONFIG"
        log "containerd already answers on $SOCK (not started by these scripts); using it"
        exit 0
    fi
elif pid=$(pid_from_file "$PIDFILE" "$BIN"); then
    warn "containerd pid $pid is alive but does not answer; restarting it"
    stop_daemon containerd "$PIDFILE" "$BIN"
fi

log "starting $BIN --config $CONFIG (log: $LOGFILE)"
start_daemon "$PIDFILE" "$LOGFILE" "$BIN" --config "$CONFIG"
pid=$(<"$PIDFILE")

up=false
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    if answers; then up=true; break; fi
    kill -0 "$pid" 2>/dev/null || die_with_log "containerd (pid $pid) exited while starting" "$LOGFILE"
    sleep 0.2
done
$up || die_with_log "containerd (pid $pid) did not answer on $SOCK within 30 s" "$LOGFILE"

# The CRI plugin is what nodelet talks to: it must have loaded.
cri=$(ctr --address "$SOCK" plugins ls | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" {print $NF}')
[[ $cri == ok ]] || die_with_log "containerd is up but its CRI plugin is '${cri:-missing}', not ok" "$LOGFILE"
log "containerd up (pid $pid) on $SOCK, CRI plugin ok"
