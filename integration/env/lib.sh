# shellcheck shell=bash disable=SC2034
# Shared helpers for the environment scripts; sourced, not run.
# Everything the scripts start or write lives under these paths.

NODELET_ENV_LOG_DIR=/var/log/nodelet-env
NODELET_ENV_RUN_DIR=/run/nodelet-env
NODELET_ENV_STATE_DIR=/var/lib/nodelet-env
NODELET_REGISTRY=localhost:5000

ENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$ENV_DIR/../.." && pwd)"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

need_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (it starts daemons and writes under /etc, /run, /var)"
}

# The pid recorded in a pid file, if that process is alive and runs the given
# binary (guards against a stale file whose pid was reused).
pid_from_file() {
    local file=$1 exe=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || return 1
    echo "$pid"
}

# Starts a daemon detached from this shell (own session, stdin closed,
# output appended to a log) and records its pid.
start_daemon() {
    local pidfile=$1 logfile=$2
    shift 2
    mkdir -p "$NODELET_ENV_RUN_DIR" "$NODELET_ENV_LOG_DIR"
    printf '\n==== %s starting: %s\n' "$(date -Is)" "$*" >>"$logfile"
    # Not a process group leader here, so setsid execs in place: $! is the daemon.
    setsid nohup "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$pidfile"
}

# Stops the process in a pid file (TERM, then KILL after 15 s).
stop_daemon() {
    local name=$1 pidfile=$2 exe=$3 pid i
    if ! pid=$(pid_from_file "$pidfile" "$exe"); then
        log "$name: not running from $pidfile, nothing to stop"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name: pid $pid ignored SIGTERM for 15 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# Fails with the log's tail, for a daemon that did not come up.
die_with_log() {
    local msg=$1 logfile=$2
    {
        printf '[%s] ERROR: %s\n' "$(basename "$0" .sh)" "$msg"
        printf -- '--- last 30 lines of %s ---\n' "$logfile"
        tail -n 30 "$logfile" 2>/dev/null || true
    } >&2
    exit 1
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck disable=SC1091
        source "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup)"
}
