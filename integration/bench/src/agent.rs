//! The agent's own footprint in cluster mode: nodelet with its Service proxy on, 30 pods and
//! 1,000 Services of 10 endpoints each (selector-less Services with EndpointSlices made here,
//! the endpoints on other nodes), its memory once all is synced. The proxy writes a table of
//! its own (`nodelet_bench_<pid>`), removed at the end.

use crate::api::ApiCluster;
use crate::{print, rss_by_mapping, rss_mb, status_mb, wait_until};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use nodelet::runtime::Cri;
use std::process::Command;
use std::time::Duration;

const PODS: usize = 30;
const SERVICES: usize = 1000;
const ENDPOINTS: usize = 10;

fn service(i: usize) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}")},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap()
}

fn slice(i: usize) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
        .map(|e| {
            let n = i * ENDPOINTS + e;
            serde_json::json!({"addresses": [format!("10.{}.{}.{}", 200 + n / 65536, (n / 256) % 256, n % 256)],
                               "conditions": {"ready": true}, "nodeName": format!("other-{}", n % 50)})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}-bench"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

/// The proxy's table goes with the benchmark, whatever happens.
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        for family in ["ip", "ip6"] {
            let _ = Command::new("nft").args(["delete", "table", family, &self.0]).status();
        }
    }
}

/// Map elements in the proxy's table (their keys are concatenations, one per line in nft's
/// listing): how the benchmark knows the proxy has synced everything.
fn table_elements(table: &str) -> usize {
    let out = Command::new("nft").args(["list", "table", "ip", table]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().filter(|l| l.contains(" . ")).count()
}

pub async fn run(cri: &Cri) {
    let table = Table(format!("nodelet_bench_{}", std::process::id()));
    let admin = std::env::var("CLUSTER_DIR").unwrap_or_else(|_| "/var/lib/nodelet-cluster".into()) + "/admin.kubeconfig";
    let cluster = ApiCluster::start_with("agent", &["--proxy-table", &table.0, "--proxy-kubeconfig", &admin]).await;
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    for i in 0..SERVICES {
        services.create(&PostParams::default(), &service(i)).await.expect("creating a Service");
        slices.create(&PostParams::default(), &slice(i)).await.expect("creating an EndpointSlice");
    }
    let names: Vec<String> = (0..PODS).map(|i| format!("pod{i}")).collect();
    for name in &names {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": cluster.node, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                     "containers": [{"name": "main", "image": crate::IMAGE, "command": ["sleep", "3600"]}]}
        }))
        .unwrap();
        cluster.pods().create(&PostParams::default(), &pod).await.expect("creating a pod");
    }
    let pods = cluster.pods();
    wait_until("the pods to run", Duration::from_secs(180), async || {
        let list = pods.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        list.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count() == PODS
    })
    .await;
    // One element per endpoint at least: the proxy has everything.
    wait_until("the proxy to sync the Services", Duration::from_secs(120), async || table_elements(&table.0) >= SERVICES * ENDPOINTS).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = cluster.nodelet.0.id();
    print("agent_rss_30_pods_1000_services", rss_mb(pid), "MB");
    // Where it is: the heap and stacks, or the binary's own pages (code the process ran).
    eprintln!("agent_rss: anonymous {:.1} MB, file-backed {:.1} MB", status_mb(pid, "RssAnon"), status_mb(pid, "RssFile"));
    let places: Vec<String> = rss_by_mapping(pid).iter().map(|(place, mb)| format!("{place} {mb:.1}")).collect();
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_string()))
        .unwrap_or_default();
    eprintln!("agent_rss by mapping (MB): {}; {threads} threads", places.join(", "));
    cluster.delete_pods(cri, &names).await;
}
