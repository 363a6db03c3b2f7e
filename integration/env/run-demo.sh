#!/usr/bin/env bash
# `make run`: nodelet in standalone mode on an embedded demo (a busybox httpd static pod),
# in the foreground; prints how to reach it with curl. Ctrl-C stops nodelet (the pod keeps
# running with containerd, as with the kubelet; run again to adopt it, or remove the manifest).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
NODELET=$TARGET_DIR/release/nodelet
DEMO_DIR=${NODELET_DEMO_DIR:-/var/lib/nodelet-demo}
PORT=${NODELET_DEMO_PORT:-10255}
[[ -x $NODELET ]] || die "$NODELET is missing: run 'make build' first"

mkdir -p "$DEMO_DIR/manifests"
cat >"$DEMO_DIR/manifests/hello.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: hello
  labels: {app: hello}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: httpd
    image: localhost:5000/nodelet/busybox:1
    command: [sh, -c]
    args:
    - mkdir -p /www && echo "hello from nodelet pod $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www
    ports: [{containerPort: 8080}]
    resources: {limits: {cpu: 100m, memory: 32Mi}}
YAML

log "starting nodelet: static pods from $DEMO_DIR/manifests, read-only port $PORT (log: $DEMO_DIR/nodelet.log)"
"$NODELET" --pod-manifest-path "$DEMO_DIR/manifests" --read-only-port "$PORT" --root-dir "$DEMO_DIR/root" \
    >>"$DEMO_DIR/nodelet.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; echo; log "nodelet stopped (the demo pod keeps running; rm $DEMO_DIR/manifests/hello.yaml with nodelet running to remove it)"' EXIT
trap 'exit 0' INT TERM

ip=""
for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$DEMO_DIR/nodelet.log" >&2; die "nodelet exited"; }
    ip=$(curl -sf "http://127.0.0.1:$PORT/pods" | jq -r '.items[] | select(.status.phase == "Running") | .status.podIP // empty' 2>/dev/null | head -1) || true
    [[ -n $ip ]] && break
    sleep 0.2
done
[[ -n $ip ]] || { tail -20 "$DEMO_DIR/nodelet.log" >&2; die "the demo pod did not reach Running in 60 s"; }

cat <<TEXT

nodelet is running (pid $pid) with the demo pod at $ip. Try:
  curl http://127.0.0.1:$PORT/healthz
  curl -s http://127.0.0.1:$PORT/pods | jq '.items[] | {name: .metadata.name, phase: .status.phase, podIP: .status.podIP}'
  curl -s http://127.0.0.1:$PORT/spec | jq '{num_cores, memory_capacity, machine_id}'
  curl http://$ip:8080/
Add, edit or remove manifests in $DEMO_DIR/manifests to create, replace or remove pods.
Press Ctrl-C to stop nodelet.
TEXT
wait "$pid"
