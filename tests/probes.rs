//! Probes and lifecycle hooks against the real containerd and runc: an exec liveness probe that
//! fails restarts the container, httpGet and tcpSocket readiness probes flip `ready`, a postStart
//! exec hook runs before the container's own work sees its file (and a failing one kills it), and
//! a preStop hook runs before the stop signal.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// A static pod of one busybox container running `script`; `extra` is YAML added to the
/// container (indented by four spaces), `pod_extra` to the pod's spec (two spaces).
fn pod(name: &str, script: &str, extra: &str, pod_extra: &str) -> String {
    common::busybox_pod_with(name, script, &format!("  terminationGracePeriodSeconds: 1\n{pod_extra}"), extra)
}

fn container(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn running(p: &Value) -> bool {
    container(p)["state"]["running"].is_object()
}

#[test]
fn a_failing_exec_liveness_probe_restarts_the_container() {
    let node = Node::start("probe-liveness", &[]);
    let probe = "    livenessProbe:\n      exec: {command: [cat, /tmp/health]}\n      periodSeconds: 1\n      failureThreshold: 2\n      terminationGracePeriodSeconds: 1\n";
    node.write_manifest("live.yaml", &pod("live", "touch /tmp/health; sleep 3; rm /tmp/health; exec sleep 600", probe, ""));
    node.wait_running("live");
    let restarted = node.wait_pod("live", "a restart by the liveness probe", Duration::from_secs(60), |p| {
        (container(p)["restartCount"].as_i64() >= Some(1)).then(|| p.clone())
    });
    assert_eq!(container(&restarted)["lastState"]["terminated"]["exitCode"], 137, "{restarted:#}");
    let log = node.log();
    assert!(log.contains("Liveness probe failed: cat: can't open '/tmp/health'"), "no Unhealthy event:\n{log}");
    assert!(log.contains("Container main failed liveness probe, will be restarted"), "no Killing event:\n{log}");
}

#[test]
fn http_and_tcp_readiness_probes_flip_ready() {
    let node = Node::start("probe-readiness", &[]);
    let http = "    ports: [{name: http, containerPort: 8080}]\n    readinessProbe:\n      httpGet: {path: /ready, port: http, httpHeaders: [{name: X-Test, value: probe}]}\n      periodSeconds: 1\n      failureThreshold: 1\n";
    let script = "mkdir -p /www; httpd -p 8080 -h /www; sleep 3; echo ok > /www/ready; sleep 4; rm /www/ready; exec sleep 600";
    node.write_manifest("web.yaml", &pod("web", script, http, ""));
    let tcp = "    readinessProbe:\n      tcpSocket: {port: 9000}\n      periodSeconds: 1\n";
    node.write_manifest("tcp.yaml", &pod("tcp", "mkdir -p /www; sleep 3; exec httpd -f -p 9000 -h /www", tcp, ""));

    // Both servers start 3 s after their container: seen running first, not ready.
    for name in ["web", "tcp"] {
        let p = node.wait_pod(name, "running, not ready", Duration::from_secs(60), |p| running(p).then(|| p.clone()));
        assert_eq!(container(&p)["ready"], false, "{name} is ready before its probe succeeded: {p:#}");
    }
    for name in ["web", "tcp"] {
        let ready = node.wait_pod(name, "ready", Duration::from_secs(30), |p| (container(p)["ready"] == true).then(|| p.clone()));
        let conditions = ready["status"]["conditions"].as_array().unwrap();
        assert!(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"), "{ready:#}");
    }
    // /ready is gone again: readiness goes back to false, without a restart.
    let unready = node.wait_pod("web", "not ready again", Duration::from_secs(30), |p| (container(p)["ready"] == false).then(|| p.clone()));
    assert_eq!(container(&unready)["restartCount"], 0);
    assert!(unready["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "ContainersReady" && c["status"] == "False"));
    assert!(node.log().contains("Readiness probe failed: HTTP probe failed with statuscode: 404"), "no Unhealthy event:\n{}", node.log());
}

#[test]
fn a_post_start_hook_runs_before_the_container_counts_as_running_and_its_failure_kills_it() {
    let node = Node::start("hook-poststart", &[]);
    let hook = "    lifecycle:\n      postStart:\n        exec: {command: [sh, -c, 'echo hooked > /tmp/poststart']}\n";
    let script = "for i in $(seq 100); do if [ -f /tmp/poststart ]; then echo seen $(cat /tmp/poststart); break; fi; sleep 0.1; done; exec sleep 600";
    node.write_manifest("hooked.yaml", &pod("hooked", script, hook, ""));
    let failing = "    lifecycle:\n      postStart:\n        exec: {command: [sh, -c, 'echo no >&2; exit 3']}\n";
    node.write_manifest("failing.yaml", &pod("failing", "exec sleep 600", failing, ""));

    let p = node.wait_running("hooked");
    let (name, uid) = (p["metadata"]["name"].as_str().unwrap(), p["metadata"]["uid"].as_str().unwrap());
    let path = node.pod_logs().join(format!("default_{name}_{uid}/main/0.log"));
    eventually("the hook's file seen by the container", Duration::from_secs(20), || std::fs::read_to_string(&path).unwrap_or_default().contains("seen hooked"));

    node.wait_pod("failing", "a restart after the failed hook", Duration::from_secs(60), |p| (container(p)["restartCount"].as_i64() >= Some(1)).then_some(()));
    let log = node.log();
    assert!(log.contains("FailedPostStartHook"), "no FailedPostStartHook event:\n{log}");
    assert!(
        log.contains("Exec lifecycle hook ([\\\"sh\\\", \\\"-c\\\", \\\"echo no >&2; exit 3\\\"])")
            || log.contains("Exec lifecycle hook ([\"sh\", \"-c\", \"echo no >&2; exit 3\"])"),
        "the event does not name the hook:\n{log}"
    );
}

#[test]
fn a_pre_stop_hook_runs_before_the_stop_signal() {
    let node = Node::start("hook-prestop", &[]);
    let out = node.dir.path().join("prestop-out");
    std::fs::create_dir_all(&out).unwrap();
    let hook =
        "    lifecycle:\n      preStop:\n        exec: {command: [sh, -c, 'echo prestop >> /out/order']}\n    volumeMounts: [{name: out, mountPath: /out}]\n";
    let volumes = format!("  terminationGracePeriodSeconds: 10\n  volumes: [{{name: out, hostPath: {{path: {}}}}}]\n", out.display());
    let script = "trap 'echo term >> /out/order; exit 0' TERM; echo started >> /out/order; while true; do sleep 0.1; done";
    let manifest = pod("stopper", script, hook, &volumes).replace("  terminationGracePeriodSeconds: 1\n", "");
    node.write_manifest("stopper.yaml", &manifest);
    node.wait_running("stopper");
    node.remove_manifest("stopper.yaml");
    node.wait_gone("stopper", Duration::from_secs(30));
    let order = std::fs::read_to_string(out.join("order")).unwrap_or_default();
    assert_eq!(order, "started\nprestop\nterm\n", "nodelet log:\n{}", node.log());
}
