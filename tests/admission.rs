//! Admission, termination messages and activeDeadlineSeconds against the real runtime: a static
//! pod the node cannot take is Failed before anything is created for it; a container's
//! termination message reaches its status; a pod outliving its deadline is ended.

mod common;

use common::*;
use std::time::Duration;

fn pod_with(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn pods_over_allocatable_or_max_pods_are_rejected_and_never_created() {
    let node = Node::start("admit", &["--max-pods=2"]);
    // A thousand cores: more than any test machine has.
    node.write_manifest(
        "big.yaml",
        &pod_with(
            "big",
            &format!("  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n    resources: {{requests: {{cpu: '1000'}}}}\n"),
        ),
    );
    let big = node.wait_phase("big", "Failed");
    assert_eq!(big["status"]["reason"], "OutOfcpu", "{big:#}");
    let message = big["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0, capacity: "), "{message}");
    assert!(node.log().contains("OutOfcpu"), "no Warning event in the log:\n{}", node.log());

    node.write_manifest("a.yaml", &busybox_pod("a", "Always", 1, "exec sleep 3600"));
    node.write_manifest("b.yaml", &busybox_pod("b", "Always", 1, "exec sleep 3600"));
    node.wait_running("a");
    node.wait_running("b");
    node.write_manifest("c.yaml", &busybox_pod("c", "Always", 1, "exec sleep 3600"));
    let c = node.wait_phase("c", "Failed");
    assert_eq!(c["status"]["reason"], "OutOfpods", "{c:#}");
    assert_eq!(c["status"]["message"], "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2");
    // Only the two admitted pods reached the runtime.
    std::thread::sleep(Duration::from_secs(1));
    let (sandboxes, _) = node.runtime_objects();
    assert_eq!(sandboxes.len(), 2, "{sandboxes:?}");
}

#[test]
fn termination_messages_come_from_the_file_or_the_log_on_failure() {
    let node = Node::start("termmsg", &[]);
    let spec = format!(
        "  restartPolicy: Never\n  containers:\n  - name: file\n    image: {BUSYBOX}\n    command: [sh, -c, 'printf DONE > /dev/termination-log']\n  - name: nonroot\n    image: {BUSYBOX}\n    securityContext: {{runAsUser: 1000}}\n    terminationMessagePath: /dev/custom-log\n    command: [sh, -c, 'printf OK-1000 > /dev/custom-log']\n  - name: fallback\n    image: {BUSYBOX}\n    terminationMessagePolicy: FallbackToLogsOnError\n    command: [sh, -c, 'echo first; echo from-the-log; exit 3']\n"
    );
    node.write_manifest("msg.yaml", &pod_with("msg", &spec));
    let pod = node.wait_phase("msg", "Failed");
    let message = |name: &str| {
        let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
        let status = statuses.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no status of {name}: {pod:#}"));
        status["state"]["terminated"]["message"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(message("file"), "DONE", "{pod:#}");
    assert_eq!(message("nonroot"), "OK-1000", "{pod:#}");
    assert_eq!(message("fallback"), "first\nfrom-the-log\n", "{pod:#}");
}

#[test]
fn a_pod_past_its_active_deadline_ends_deadline_exceeded() {
    let node = Node::start("deadline", &[]);
    let spec = format!(
        "  activeDeadlineSeconds: 5\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n"
    );
    node.write_manifest("late.yaml", &pod_with("late", &spec));
    node.wait_running("late");
    let ended = node.wait_pod("late", "DeadlineExceeded", Duration::from_secs(30), |p| (p["status"]["reason"] == "DeadlineExceeded").then(|| p.clone()));
    assert_eq!(ended["status"]["phase"], "Failed", "{ended:#}");
    assert_eq!(ended["status"]["message"], "Pod was active on the node longer than the specified deadline");
    let main = &ended["status"]["containerStatuses"][0];
    assert!(main["state"]["terminated"].is_object(), "{ended:#}");
    assert!(node.log().contains("DeadlineExceeded"), "no event in the log:\n{}", node.log());
    // It stays ended: nothing is restarted on later syncs.
    std::thread::sleep(Duration::from_secs(3));
    let later = node.pod("late").unwrap();
    assert_eq!((later["status"]["phase"].as_str(), later["status"]["reason"].as_str()), (Some("Failed"), Some("DeadlineExceeded")), "{later:#}");
    assert!(later["status"]["containerStatuses"][0]["state"]["terminated"].is_object(), "{later:#}");
}
