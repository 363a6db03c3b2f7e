//! Measures the service proxy at scale, inside a network namespace of its own (the host's
//! tables are never touched): full sync of 1,000 and 10,000 Services x 10 endpoints, one
//! endpoint change at 10,000, and the process's memory. Prints `bench: <name> <value> <unit>`.
//! The endpoints are spread over 100 nodes (this node is node-0), as in a real cluster.
//! Needs root (ip netns, nft).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet::proxy::apply::Netns;
use nodelet::proxy::{Proxier, ProxyConfig};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const ENDPOINTS: usize = 10;

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}")},
        "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .expect("static Service")
}

fn slice(i: usize, generation: usize) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
        .map(|e| {
            // a distinct address per endpoint; `generation` moves the first one
            let n = i * ENDPOINTS + e + if e == 0 { generation * 7 } else { 0 };
            json!({"addresses": [format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)],
                   "conditions": {"ready": true}, "nodeName": format!("node-{}", n % 100)})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": format!("svc-{i}-abcde"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .expect("static EndpointSlice")
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

fn proxier(ns: &str) -> Proxier {
    let mut config = ProxyConfig::new("node-0");
    config.table = "nodelet_bench".into();
    config.pod_cidr = Some("10.128.0.0/9".into());
    config.netns = Netns::named(ns);
    Proxier::new(config).expect("valid config")
}

async fn load(p: &Proxier, n: usize) -> Duration {
    for i in 0..n {
        p.upsert_service(&service(i));
        p.upsert_slice(&slice(i, 0));
    }
    let started = Instant::now();
    p.full_sync().await.expect("full sync");
    started.elapsed()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The allocator as nodelet sets it up, and its periodic trim, so the memory is nodelet's.
    nodelet::heap::configure();
    tokio::spawn(nodelet::heap::run());
    let ns = format!("nodelet-bench-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &ns]).status()?.success();
    anyhow::ensure!(ok, "ip netns add {ns} failed (root needed)");
    let _guard = NetnsGuard(ns.clone());

    let small = proxier(&ns);
    let took = load(&small, 1_000).await;
    println!("bench: proxy_full_sync_1000 {:.3} s", took.as_secs_f64());
    small.cleanup().await?;
    drop(small);

    let p = proxier(&ns);
    let took = load(&p, 10_000).await;
    let h = p.health();
    if let Ok(path) = std::env::var("PROXY_BENCH_DUMP") {
        // the full script, for timing nft on its own
        let (script, _) = nodelet::proxy::render::full(
            &nodelet::proxy::render::Context {
                table: "nodelet_bench".into(),
                family: nodelet::proxy::model::Family::V4,
                generation: 0,
                node_name: "node-0".into(),
                pod_cidr: Some("10.128.0.0/9".into()),
            },
            &p.model().await,
        );
        std::fs::write(&path, script)?;
    }
    println!("bench: proxy_full_sync_10000 {:.3} s", took.as_secs_f64());
    println!("bench: proxy_rules_10000 {} rules", h.rules);
    println!("bench: proxy_elements_10000 {} elements", h.elements);

    let mut times = Vec::new();
    for round in 1..=21 {
        let i = (round * 3571) % 10_000;
        p.upsert_slice(&slice(i, round));
        let started = Instant::now();
        p.sync().await?;
        times.push(started.elapsed());
    }
    times.sort();
    anyhow::ensure!(p.health().failed_syncs == 0, "a sync failed: {:?}", p.health().last_error);
    println!("bench: proxy_one_change_10000 {:.2} ms", times[times.len() / 2].as_secs_f64() * 1e3);
    // Settled: past a pass of the heap trim, as in nodelet between changes.
    tokio::time::sleep(nodelet::heap::PERIOD + Duration::from_secs(1)).await;
    println!("bench: proxy_rss_10000 {:.1} MB", rss_mb());
    // a second full sync replaces a populated table (what the periodic resync costs)
    let started = Instant::now();
    p.full_sync().await?;
    println!("bench: proxy_resync_10000 {:.3} s", started.elapsed().as_secs_f64());
    p.cleanup().await?;
    Ok(())
}
