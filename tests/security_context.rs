//! Security settings against the real containerd and runc: runAsNonRoot refused before a
//! container is created, seccomp profiles applied, and sysctl admission (the safe set, the
//! unsafe ones only when --allowed-unsafe-sysctls names them, rejected pods never created).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// A static pod of one busybox container running `script`, with `pod_sc` as its securityContext
/// and `container_sc` as the container's (YAML flow maps, "{}" for none).
fn pod(name: &str, pod_sc: &str, container_sc: &str, script: &str) -> String {
    common::busybox_pod_with(
        name,
        script,
        &format!("  terminationGracePeriodSeconds: 1\n  securityContext: {pod_sc}\n"),
        &format!("    securityContext: {container_sc}\n"),
    )
}

/// The log of a container's first run, once it has written `until`.
fn container_log(node: &Node, pod: &Value, container: &str, until: &str) -> String {
    let (name, uid) = (pod["metadata"]["name"].as_str().unwrap(), pod["metadata"]["uid"].as_str().unwrap());
    let path = node.pod_logs().join(format!("default_{name}_{uid}/{container}/0.log"));
    let mut text = String::new();
    eventually(&format!("{until:?} in the log of {name}/{container}"), Duration::from_secs(20), || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        text.contains(until)
    });
    text
}

#[test]
fn run_as_non_root_refuses_an_image_running_as_root_and_allows_run_as_user() {
    let node = Node::start("nonroot", &[]);
    node.write_manifest("root.yaml", &pod("root", "{runAsNonRoot: true}", "{}", "exec sleep 3600"));
    node.write_manifest("user.yaml", &pod("user", "{runAsNonRoot: true}", "{runAsUser: 1000}", "echo uid=$(id -u); exec sleep 3600"));

    let waiting = node.wait_pod("root", "CreateContainerConfigError", Duration::from_secs(30), |p| {
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "CreateContainerConfigError").then(|| (w.clone(), p["metadata"]["uid"].as_str().unwrap().to_string()))
    });
    let (waiting, uid) = waiting;
    let expected = format!("container has runAsNonRoot and image will run as root (pod: \"{}_default({uid})\", container: main)", node.pod_name("root"));
    assert_eq!(waiting["message"].as_str(), Some(expected.as_str()), "{waiting}");
    assert!(node.log().contains("Error: CreateContainerConfigError: container has runAsNonRoot"), "no Failed event in the log:\n{}", node.log());

    let running = node.wait_running("user");
    assert!(container_log(&node, &running, "main", "uid=").contains("uid=1000"));
    // The refused container was never created: only the other pod's container exists.
    assert_eq!(node.runtime_objects().1.len(), 1);
    assert_eq!(node.pod("root").unwrap()["status"]["phase"], "Pending");
}

#[test]
fn seccomp_runtime_default_confines_the_container_and_unset_leaves_it_unconfined() {
    let node = Node::start("seccomp", &[]);
    let script = "grep Seccomp: /proc/self/status; exec sleep 3600";
    node.write_manifest("confined.yaml", &pod("confined", "{}", "{seccompProfile: {type: RuntimeDefault}}", script));
    node.write_manifest("podlevel.yaml", &pod("podlevel", "{seccompProfile: {type: RuntimeDefault}}", "{}", script));
    node.write_manifest("plain.yaml", &pod("plain", "{}", "{}", script));
    for (name, mode) in [("confined", "2"), ("podlevel", "2"), ("plain", "0")] {
        let running = node.wait_running(name);
        let log = container_log(&node, &running, "main", "Seccomp:");
        assert!(log.contains(&format!("Seccomp:\t{mode}\n")), "{name}: expected Seccomp {mode}:\n{log}");
    }
}

#[test]
fn a_localhost_profile_comes_from_the_seccomp_dir_and_privileged_containers_run() {
    let node = Node::start("seccomplocal", &[]);
    let profiles = node.dir.path().join("root/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("allow.json"), r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#).unwrap();
    let script = "grep Seccomp: /proc/self/status; exec sleep 3600";
    node.write_manifest("local.yaml", &pod("local", "{}", "{seccompProfile: {type: Localhost, localhostProfile: profiles/allow.json}}", script));
    // containerd refuses a privileged container in a sandbox that is not privileged itself.
    node.write_manifest("priv.yaml", &pod("priv", "{}", "{privileged: true}", "echo started; exec sleep 3600"));
    let running = node.wait_running("local");
    let log = container_log(&node, &running, "main", "Seccomp:");
    assert!(log.contains("Seccomp:\t2\n"), "{log}");
    node.wait_running("priv");
}

#[test]
fn unsafe_sysctls_reject_the_pod_before_anything_is_created_and_safe_ones_apply() {
    let node = Node::start("sysctl", &[]);
    node.write_manifest(
        "safe.yaml",
        &pod(
            "safe",
            "{sysctls: [{name: net.ipv4.ip_local_port_range, value: '20000 30000'}]}",
            "{}",
            "cat /proc/sys/net/ipv4/ip_local_port_range; exec sleep 3600",
        ),
    );
    node.write_manifest("msg.yaml", &pod("msg", "{sysctls: [{name: kernel.msgmax, value: '12345'}]}", "{}", "exec sleep 3600"));

    let rejected = node.wait_phase("msg", "Failed");
    assert_eq!(rejected["status"]["reason"], "SysctlForbidden", "{rejected:#}");
    assert_eq!(rejected["status"]["message"], "Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted");
    assert!(node.log().contains("SysctlForbidden"), "no Warning event in the log:\n{}", node.log());

    let running = node.wait_running("safe");
    let log = container_log(&node, &running, "main", "20000");
    assert!(log.contains("20000\t30000"), "{log}");
    // Only the safe pod has a sandbox: the rejected one never reached the runtime.
    std::thread::sleep(Duration::from_secs(1));
    let (sandboxes, _) = node.runtime_objects();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let msg_uid = rejected["metadata"]["uid"].as_str().unwrap().to_string();
    let labelled = on_runtime(move |cri| async move {
        let selector = std::collections::HashMap::from([(nodelet::runtime::labels::POD_UID.to_string(), msg_uid)]);
        cri.list_sandboxes(selector).await.unwrap().len()
    });
    assert_eq!(labelled, 0);
    assert_eq!(node.pod("msg").unwrap()["status"]["phase"], "Failed");

    // Removing the manifest removes the rejected pod from /pods.
    node.remove_manifest("msg.yaml");
    node.wait_gone("msg", Duration::from_secs(10));
}

#[test]
fn allowed_unsafe_sysctls_run_when_the_flag_names_them() {
    let node = Node::start("unsafesysctl", &["--allowed-unsafe-sysctls=kernel.msg*"]);
    node.write_manifest("msg.yaml", &pod("msg", "{sysctls: [{name: kernel.msgmax, value: '12345'}]}", "{}", "cat /proc/sys/kernel/msgmax; exec sleep 3600"));
    let running = node.wait_running("msg");
    let log = container_log(&node, &running, "main", "12345");
    assert!(log.contains("12345"), "{log}");
}
