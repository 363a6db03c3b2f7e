//! The eviction manager against the real runtime: a threshold every machine crosses
//! (memory.available<1000Ti) evicts the pods one per pass, in the kubelet's order, Failed with
//! reason Evicted and the kubelet's message, and nothing of them runs again, also after nodelet
//! restarts.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn evicted(pod: &Value) -> bool {
    pod["status"]["phase"] == "Failed" && pod["status"]["reason"] == "Evicted"
}

/// Whether any container of this node runs in the runtime.
fn running_containers(node: &Node) -> usize {
    let name = node.name.clone();
    on_runtime(move |cri| async move {
        let selector = std::collections::HashMap::from([(nodelet::runtime::labels::MANAGED_BY_NODE.to_string(), name)]);
        let running = k8s_cri::v1::ContainerState::ContainerRunning as i32;
        cri.list_containers(selector).await.unwrap().into_iter().filter(|c| c.state == running).count()
    })
}

#[test]
fn pods_over_their_requests_are_evicted_first_one_per_pass_and_stay_failed() {
    let mut node = Node::start("evict", &["--eviction-hard=memory.available<1000Ti"]);
    // a requests more memory than it uses; b (BestEffort) uses more than its request of nothing,
    // so b goes first although a sorts first by name.
    let resources = "    resources: {requests: {memory: 64Mi}}\n";
    node.write_manifest("a.yaml", &busybox_pod_with("a-burstable", "sleep 3600", "  terminationGracePeriodSeconds: 30\n", resources));
    node.write_manifest("b.yaml", &busybox_pod_with("b-besteffort", "sleep 3600", "  terminationGracePeriodSeconds: 30\n", ""));
    node.wait_running("a-burstable");
    node.wait_running("b-besteffort");

    let b = node.wait_pod("b-besteffort", "eviction", Duration::from_secs(40), |p| evicted(p).then(|| p.clone()));
    let b_evicted = Instant::now();
    let a = node.pod("a-burstable").unwrap();
    assert_eq!(a["status"]["phase"], "Running", "a is evicted in a later pass:\n{a:#}");
    let message = b["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("The node was low on resource: memory. Threshold quantity: 1000Ti, available: "), "{message}");
    assert!(message.contains("Container main was using ") && message.ends_with(", request is 0, has larger consumption of memory. "), "{message}");
    let target = b["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget").cloned().unwrap_or_default();
    assert_eq!((&target["status"], &target["reason"]), (&Value::from("True"), &Value::from("TerminationByKubelet")), "{b:#}");

    let a = node.wait_pod("a-burstable", "eviction", Duration::from_secs(40), |p| evicted(p).then(|| p.clone()));
    assert!(b_evicted.elapsed() >= Duration::from_secs(5), "one pod per pass: a followed b after {:?}", b_evicted.elapsed());
    let message = a["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("The node was low on resource: memory. Threshold quantity: 1000Ti"), "{message}");
    assert!(!message.contains("Container main was using"), "a stayed within its request: {message}");

    // Nothing restarts, and the node itself is fine.
    eventually("no container of the node running", Duration::from_secs(20), || running_containers(&node) == 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_containers(&node), 0, "{}", node.log());
    for name in ["a-burstable", "b-besteffort"] {
        let pod = node.pod(name).unwrap();
        assert!(evicted(&pod), "{pod:#}");
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "{pod:#}");
    }
    assert_eq!(node.get("/healthz"), (200, "ok".to_string()));
    assert!(node.log().contains("evicting pod"), "{}", node.log());

    // A restarted nodelet keeps them ended (static pods have no status to say so: their directory does).
    node.kill9();
    node.spawn();
    for name in ["a-burstable", "b-besteffort"] {
        node.wait_pod(name, "Evicted after the restart", Duration::from_secs(30), |p| evicted(p).then_some(()));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_containers(&node), 0, "{}", node.log());
}

/// Local-storage limits, the kubelet's localStorageEviction: with no node threshold near, a pod
/// writing past its container's ephemeral-storage limit and one filling an emptyDir past its
/// sizeLimit are evicted with the kubelet's messages; a pod within its limit runs on.
#[test]
fn pods_over_their_local_storage_limits_are_evicted_without_node_pressure() {
    let node = Node::start("evictlimits", &[]);
    let limit = |size: &str| format!("    resources: {{limits: {{ephemeral-storage: {size}}}}}\n");
    let grace = "  terminationGracePeriodSeconds: 1\n";
    // 4 MiB into its writable layer against a limit of 1 MiB.
    node.write_manifest("layer.yaml", &busybox_pod_with("layer", "head -c 4194304 /dev/zero > /tmp/f; exec sleep 3600", grace, &limit("1Mi")));
    let scratch = format!("{grace}  volumes: [{{name: scratch, emptyDir: {{sizeLimit: 1Mi}}}}]\n");
    let mount = "    volumeMounts: [{name: scratch, mountPath: /scratch}]\n";
    node.write_manifest("dir.yaml", &busybox_pod_with("dir", "head -c 3145728 /dev/zero > /scratch/f; exec sleep 3600", &scratch, mount));
    node.write_manifest("within.yaml", &busybox_pod_with("within", "echo small > /tmp/f; exec sleep 3600", grace, &limit("64Mi")));
    node.wait_running("within");

    let layer = node.wait_pod("layer", "eviction", Duration::from_secs(60), |p| evicted(p).then(|| p.clone()));
    assert_eq!(layer["status"]["message"], "Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ", "{layer:#}");
    let dir = node.wait_pod("dir", "eviction", Duration::from_secs(60), |p| evicted(p).then(|| p.clone()));
    assert_eq!(dir["status"]["message"], "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ", "{dir:#}");
    let within = node.pod("within").unwrap();
    assert_eq!(
        (&within["status"]["phase"], &within["status"]["containerStatuses"][0]["restartCount"]),
        (&Value::from("Running"), &Value::from(0)),
        "{within:#}"
    );
    assert!(node.log().contains("evicting a pod over its local storage limits"), "{}", node.log());
}
