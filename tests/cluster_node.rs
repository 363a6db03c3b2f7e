//! What a real control plane does to a node that the project's own tests once could not see:
//! the pod CIDR kube-controller-manager assigns after registration, and a Service proxy whose
//! credentials may not list EndpointSlices. One test at a time: every nodelet on this machine
//! shares containerd's CNI config, which the pod CIDR test must own while it runs.

mod common;
mod e2e_support;

use common::*;
use e2e_support::*;
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
