//! What a real control plane does to a node that the project's own tests once could not see:
//! the pod CIDR kube-controller-manager assigns after registration, a Service proxy whose
//! credentials may not list EndpointSlices, conditions other components set on the Node, and
//! spec.providerID. One test at a time: every nodelet on this machine shares containerd's CNI
//! config, which the pod CIDR test must own while it runs.

mod common;
mod e2e_support;

use common::*;
use e2e_support::*;
use kube::api::Patch;
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

static ALONE: Mutex<()> = Mutex::new(());

/// Deletes the proxy's table when the test ends, passed or not.
struct TableGuard(String);

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.0]).stderr(std::process::Stdio::null()).status();
    }
}

fn ipv4_in(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (ip, net): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ip.parse().unwrap(), net.parse().unwrap());
    let mask = u32::MAX.checked_shl(32 - len.parse::<u32>().unwrap()).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn pods_get_addresses_in_the_pod_cidr_the_cluster_assigns_after_registration() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let e2e = E2e::start("cidr", &[]);
    e2e.wait_node_ready();
    // kube-controller-manager assigns it a moment after the Node is created (--pod-cidr, the
    // default 10.88.0.0/16, is what nodelet started with).
    let mut cidr = String::new();
    eventually("the controller-manager to assign the node a pod CIDR", Duration::from_secs(30), || {
        cidr = e2e.get_node().and_then(|n| n["spec"]["podCIDR"].as_str().map(String::from)).unwrap_or_default();
        !cidr.is_empty()
    });
    assert!(!ipv4_in(cidr.split('/').next().unwrap(), "10.88.0.0/16"), "the cluster's range must differ from --pod-cidr: {cidr}");
    eventually("nodelet's log to say it uses the assigned pod CIDR", Duration::from_secs(30), || {
        e2e.node.log().contains("pod network ready") && e2e.node.log().contains(&cidr)
    });
    for name in ["first", "second"] {
        e2e.create_pod(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}
        }));
        let ip = e2e.wait_phase_running(name)["status"]["podIP"].as_str().unwrap().to_string();
        assert!(ipv4_in(&ip, &cidr), "pod {name} got {ip}, outside the node's pod CIDR {cidr}");
    }
    let conflist = std::fs::read_to_string("/etc/cni/net.d/10-nodelet.conflist").unwrap();
    assert!(conflist.contains(&format!("\"{cidr}\"")), "{conflist}");
}

#[test]
fn a_proxy_refused_endpointslices_says_which_permission_and_how_to_grant_it_once() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let table = format!("nodelet_refused_{}", std::process::id());
    let _table = TableGuard(table.clone());
    let e2e = E2e::start_with_node_identity_only("refused", &["--proxy-table", &table]);
    let node = e2e.wait_node_ready();
    assert!(
        node["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "the proxy's trouble does not make the node NotReady"
    );
    let mut health = String::new();
    eventually("/healthz?verbose to name the refused permission", Duration::from_secs(30), || {
        health = http_get(e2e.node.port, "/healthz?verbose").1;
        health.contains("[-]proxy failed") && health.contains("endpointslices.discovery.k8s.io")
    });
    assert!(
        health.contains(&format!("system:node:{}", e2e.node.name)) && health.contains("--proxy-kubeconfig") && health.contains("system:node-proxier"),
        "{health}"
    );
    // The watch retries with back-off; the log tells the refusal once, not per retry.
    std::thread::sleep(Duration::from_secs(8));
    let told = e2e.node.log().matches("the apiserver refuses the Service proxy to list and watch endpointslices").count();
    assert_eq!(told, 1, "told {told} times:\n{}", e2e.node.log());
}

/// The condition types nodelet sets (src/node/object.rs OWN_CONDITIONS).
const OWN_CONDITIONS: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

fn condition<'a>(node: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

#[test]
fn conditions_other_components_set_survive_nodelets_status_updates() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    // Patched every second: each pass is a report, so each one patches a new heartbeat.
    let e2e = E2e::start("foreign_conditions", &["--node-status-update-frequency", "1s", "--node-status-report-frequency", "1s"]);
    let ready = e2e.wait_node_ready();
    let ours = ready["status"]["addresses"].clone();
    // A CNI (or the route controller) and node-problem-detector set theirs as they do: a
    // strategic merge patch of the status, conditions merged by type.
    let foreign = json!([
        {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated", "message": "RouteController created a route",
         "lastHeartbeatTime": "2025-01-02T03:04:05Z", "lastTransitionTime": "2025-01-02T03:04:05Z"},
        {"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock", "message": "kernel has no deadlock",
         "lastHeartbeatTime": "2025-01-02T03:04:06Z", "lastTransitionTime": "2025-01-02T03:04:06Z"}
    ]);
    let patched = e2e.patch_node_status(&Patch::Strategic(json!({"status": {"conditions": foreign}})));
    for c in foreign.as_array().unwrap() {
        assert_eq!(condition(&patched, c["type"].as_str().unwrap()), Some(c), "the admin's patch took: {patched:#}");
    }
    // And an address nodelet does not report, of a type it does (two InternalIPs): nodelet's
    // next update puts its own addresses back, the extra one removed.
    let mut doubled = ours.as_array().unwrap_or_else(|| panic!("the Ready node has no addresses: {ready:#}")).clone();
    doubled.insert(1, json!({"type": "InternalIP", "address": "127.0.0.2"}));
    e2e.patch_node_status(&Patch::Merge(json!({"status": {"addresses": doubled}})));

    let heartbeat = |node: &serde_json::Value| condition(node, "Ready").map(|c| c["lastHeartbeatTime"].clone()).unwrap_or_default();
    let mut seen = vec![heartbeat(&patched)];
    let mut node = patched.clone();
    eventually("3 more heartbeats of nodelet's Ready condition", Duration::from_secs(30), || {
        node = e2e.get_node().unwrap();
        for c in foreign.as_array().unwrap() {
            let kind = c["type"].as_str().unwrap();
            assert_eq!(condition(&node, kind), Some(c), "{kind} changed or went after {} heartbeats: {node:#}", seen.len() - 1);
        }
        if *seen.last().unwrap() != heartbeat(&node) {
            seen.push(heartbeat(&node));
        }
        seen.len() > 3
    });
    let conditions = node["status"]["conditions"].as_array().unwrap();
    let mut types: Vec<&str> = conditions.iter().map(|c| c["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["DiskPressure", "KernelDeadlock", "MemoryPressure", "NetworkUnavailable", "PIDPressure", "Ready"], "{node:#}");
    for kind in OWN_CONDITIONS {
        let c = condition(&node, kind).unwrap();
        let (status, reason) = if kind == "Ready" { ("True", "KubeletReady") } else { ("False", "") };
        assert_eq!(c["status"], status, "{kind}: {c:#}");
        assert!(reason.is_empty() || c["reason"] == reason, "{kind}: {c:#}");
        assert_eq!(c["lastHeartbeatTime"], heartbeat(&node), "all of nodelet's conditions are patched together: {node:#}");
    }
    assert_eq!(node["status"]["addresses"], ours, "the InternalIP nodelet does not have is gone");
}

#[test]
fn the_node_is_registered_with_its_provider_id() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let id = format!("nodelet://{}", node_name("provider_id"));
    let e2e = E2e::start("provider_id", &["--provider-id", &id]);
    let node = e2e.wait_node_ready();
    assert_eq!(node["spec"]["providerID"], json!(id), "{node:#}");
}

#[test]
fn a_node_taken_over_gets_the_provider_id_it_lacks_and_keeps_the_one_it_has() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let name = node_name("provider_take_over");
    let _existing = PrecreatedNode::create(&name, json!({"metadata": {"labels": {"left": "by-installer"}}}));
    let (first, second) = (format!("nodelet://{name}"), format!("other://{name}"));
    let mut e2e = E2e::start("provider_take_over", &["--provider-id", &first]);
    let node = e2e.wait_node_ready();
    assert!(e2e.node.log().contains("took over the existing node"), "{}", e2e.node.log());
    assert_eq!(node["spec"]["providerID"], json!(first), "set where the Node had none: {node:#}");
    assert_eq!(node["metadata"]["labels"]["left"], "by-installer");

    // Restarted with another ID: spec.providerID cannot change once set; nodelet says so.
    e2e.node.kill9();
    let at = e2e.node.args.iter().position(|a| a == "--provider-id").unwrap();
    e2e.node.args[at + 1] = second.clone();
    e2e.node.spawn();
    eventually("nodelet to warn of the other providerID", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(e2e.node.log_file()).unwrap_or_default();
        log.contains("another spec.providerID than --provider-id") && log.contains("took over the existing node")
    });
    let node = e2e.wait_node_ready();
    assert_eq!(node["spec"]["providerID"], json!(first), "{node:#}");
}
