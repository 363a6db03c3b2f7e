#!/usr/bin/env bash
# Starts the project's image registry on 127.0.0.1:5000 (Debian's
# docker-registry, plain http, no auth) unless one already answers there.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

BIN=/usr/bin/docker-registry
CONFIG=$NODELET_ENV_STATE_DIR/registry.yml
STORAGE=$NODELET_ENV_STATE_DIR/registry
PIDFILE=$NODELET_ENV_RUN_DIR/registry.pid
LOGFILE=$NODELET_ENV_LOG_DIR/registry.log
URL=http://127.0.0.1:5000/v2/

answers() { curl -fsS --max-time 2 -o /dev/null "$URL" 2>/dev/null; }

if answers; then
    if pid=$(pid_from_file "$PIDFILE" "$BIN"); then
        log "registry already running (pid $pid) at $URL"
    else
        log "a registry already answers at $URL (not started by these scripts); using it"
    fi
    exit 0
fi
[[ -x $BIN ]] || die "$BIN not found: run integration/env/install-packages.sh"

mkdir -p "$STORAGE" "$NODELET_ENV_RUN_DIR" "$NODELET_ENV_LOG_DIR"
cat >"$CONFIG" <<YAML
# Written by integration/env/start-registry.sh
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STORAGE
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML

if pid=$(pid_from_file "$PIDFILE" "$BIN"); then
    # Ours but not answering: a hung or half-started registry.
    warn "registry pid $pid is alive but does not answer; restarting it"
    stop_daemon registry "$PIDFILE" "$BIN"
fi

log "starting $BIN serve $CONFIG (log: $LOGFILE)"
start_daemon "$PIDFILE" "$LOGFILE" "$BIN" serve "$CONFIG"
pid=$(<"$PIDFILE")

deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    answers && { log "registry up (pid $pid) at $URL"; exit 0; }
    kill -0 "$pid" 2>/dev/null || die_with_log "registry (pid $pid) exited while starting" "$LOGFILE"
    sleep 0.2
done
die_with_log "registry (pid $pid) did not answer at $URL within 30 s" "$LOGFILE"
