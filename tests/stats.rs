//! Stats, metrics and configz against the real runtime: a standalone nodelet runs a busybox pod
//! that burns a little CPU, holds some memory and fills a volume; /stats/summary,
//! /metrics/resource, /metrics and /configz show them on the read-only port and, over TLS, on
//! the secure port (anonymous requests let in, AlwaysAllow).

mod common;

use common::*;
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Holds about 4 MB in a shell variable, writes 2 MB into an emptyDir and 1 MB into its own
/// writable layer, then counts in a loop with short pauses.
fn burner_pod(name: &str) -> String {
    let script = "x=$(yes | head -c 4000000); head -c 2000000 /dev/zero > /scratch/fill; head -c 1000000 /dev/zero > /tmp/fill; \
                  echo ready; while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.1; done";
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: scratch\n    emptyDir: {{}}\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sh, -c, {script:?}]\n    volumeMounts:\n    - name: scratch\n      mountPath: /scratch\n"
    )
}

/// A GET over TLS to the secure port, trusting the serving certificate nodelet made for itself.
fn https_get(port: u16, ca: &Path, path: &str) -> (u16, String) {
    let ca = CertificateDer::from_pem_file(ca).unwrap_or_else(|e| panic!("reading {}: {e}", ca.display()));
    let path = path.to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path).header("host", "127.0.0.1").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

fn json(code_body: (u16, String), what: &str) -> Value {
    let (code, body) = code_body;
    assert_eq!(code, 200, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"))
}

fn positive(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n > 0)
}

/// The value of the sample line starting with `prefix` (name and labels), if any.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

fn check_summary(summary: &Value, pod_name: &str) {
    let node = &summary["node"];
    assert!(positive(&node["cpu"]["usageCoreNanoSeconds"]), "node cpu: {node:#}");
    assert!(positive(&node["memory"]["workingSetBytes"]) && positive(&node["memory"]["availableBytes"]), "node memory: {node:#}");
    assert!(positive(&node["fs"]["capacityBytes"]), "node fs: {node:#}");
    assert!(node["network"]["interfaces"].as_array().is_some_and(|i| !i.is_empty()), "node network: {node:#}");
    assert!(positive(&node["runtime"]["imageFs"]["usedBytes"]), "image fs: {node:#}");
    let pod = summary["pods"].as_array().unwrap().iter().find(|p| p["podRef"]["name"] == pod_name).unwrap_or_else(|| panic!("no {pod_name} in {summary:#}"));
    let container = &pod["containers"][0];
    assert_eq!(container["name"], "main");
    assert!(positive(&container["cpu"]["usageCoreNanoSeconds"]), "container cpu: {pod:#}");
    assert!(container["memory"]["workingSetBytes"].as_u64().unwrap_or(0) >= 4_000_000, "container memory: {pod:#}");
    assert!(container["rootfs"]["usedBytes"].as_u64().unwrap_or(0) >= 1_000_000, "container rootfs: {pod:#}");
    assert!(positive(&container["logs"]["usedBytes"]), "container logs: {pod:#}");
    assert!(positive(&pod["cpu"]["usageCoreNanoSeconds"]) && positive(&pod["memory"]["workingSetBytes"]), "pod cpu and memory: {pod:#}");
    assert_eq!(pod["network"]["name"], "eth0", "pod network: {pod:#}");
    assert!(pod["network"]["rxBytes"].is_u64() && pod["network"]["txBytes"].is_u64(), "pod network: {pod:#}");
    let volume = pod["volume"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "scratch").cloned()).unwrap_or_default();
    assert!(volume["usedBytes"].as_u64().unwrap_or(0) >= 2_000_000, "scratch volume: {pod:#}");
    assert!(pod["ephemeral-storage"]["usedBytes"].as_u64().unwrap_or(0) >= 3_000_000, "ephemeral storage: {pod:#}");
}

fn check_metrics(metrics: &str) {
    let started = sample(metrics, "kubelet_pod_start_duration_seconds_count").unwrap_or(0.0);
    assert!(started >= 1.0, "pod start histogram: {metrics}");
    assert!(sample(metrics, "kubelet_runtime_operations_duration_seconds_count{operation_type=\"run_podsandbox\"}").is_some(), "{metrics}");
    assert!(sample(metrics, "kubelet_runtime_operations_duration_seconds_count{operation_type=\"list_container_stats\"}").is_some(), "{metrics}");
    assert_eq!(sample(metrics, "kubelet_running_pods"), Some(1.0), "{metrics}");
    assert!(sample(metrics, "kubelet_running_containers{container_state=\"running\"}").unwrap_or(0.0) >= 1.0, "{metrics}");
}

fn check_resource_metrics(text: &str, pod_name: &str) {
    assert!(sample(text, "node_cpu_usage_seconds_total").unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(text, "node_memory_working_set_bytes").unwrap_or(0.0) > 0.0, "{text}");
    let labels = format!("{{container=\"main\",namespace=\"default\",pod=\"{pod_name}\"}}");
    assert!(sample(text, &format!("container_cpu_usage_seconds_total{labels}")).unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(text, &format!("container_memory_working_set_bytes{labels}")).unwrap_or(0.0) > 0.0, "{text}");
    assert!(sample(text, &format!("pod_memory_working_set_bytes{{namespace=\"default\",pod=\"{pod_name}\"}}")).is_some(), "{text}");
    assert_eq!(sample(text, "scrape_error"), Some(0.0), "{text}");
}

#[test]
fn stats_metrics_and_configz_on_both_ports() {
    let node = Node::start("stats", &["--anonymous-auth"]);
    node.write_manifest("burn.yaml", &burner_pod("burn"));
    let pod = node.wait_running("burn");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let pod_name = node.pod_name("burn");
    let log = node.pod_logs().join(format!("default_{pod_name}_{uid}/main/0.log"));
    eventually("the pod to fill its memory and disk", Duration::from_secs(20), || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready")));

    // The rate needs a second sample of the same cgroup; containerd refreshes writable layer
    // usage in the background (every 10 s), nodelet volume and log usage (every 60 s).
    let mut summary = Value::Null;
    eventually("a cpu rate and the writable layer's use of the burning container", Duration::from_secs(40), || {
        std::thread::sleep(Duration::from_millis(300));
        summary = json(node.get("/stats/summary"), "/stats/summary");
        let pod = summary["pods"].as_array().unwrap().iter().find(|p| p["podRef"]["name"] == pod_name.as_str()).cloned().unwrap_or_default();
        let container = &pod["containers"][0];
        // volume and log figures come from a background walk the first request starts
        let volume_measured = pod["volume"].as_array().is_some_and(|v| v.iter().any(|v| v["name"] == "scratch"));
        positive(&container["cpu"]["usageNanoCores"])
            && positive(&summary["node"]["cpu"]["usageNanoCores"])
            && container["rootfs"]["usedBytes"].as_u64().unwrap_or(0) >= 1_000_000
            && volume_measured
            && positive(&container["logs"]["usedBytes"])
    });
    check_summary(&summary, &pod_name);

    let (code, resource) = node.get("/metrics/resource");
    assert_eq!(code, 200, "{resource}");
    check_resource_metrics(&resource, &pod_name);
    let (code, metrics) = node.get("/metrics");
    assert_eq!(code, 200, "{metrics}");
    check_metrics(&metrics);
    let configz = json(node.get("/configz"), "/configz");
    assert_eq!(configz["kubeletconfig"]["readOnlyPort"], node.port, "{configz:#}");
    assert_eq!(configz["kubeletconfig"]["staticPodPath"], node.manifests().to_str().unwrap(), "{configz:#}");

    let ca = node.dir.path().join("root/pki/nodelet.crt");
    let secure = |path: &str| https_get(node.secure_port, &ca, path);
    check_summary(&json(secure("/stats/summary"), "secure /stats/summary"), &pod_name);
    let (code, resource) = secure("/metrics/resource");
    assert_eq!(code, 200, "{resource}");
    check_resource_metrics(&resource, &pod_name);
    let (code, metrics) = secure("/metrics");
    assert_eq!(code, 200, "{metrics}");
    check_metrics(&metrics);
    let configz = json(secure("/configz"), "secure /configz");
    assert_eq!(configz["kubeletconfig"]["port"], node.secure_port, "{configz:#}");
    assert_eq!(configz["kubeletconfig"]["authentication"]["anonymous"]["enabled"], true, "{configz:#}");

    // A burst of scrapes shares collections (one at a time, each served for a second): every
    // request answers, from a handful of collections rather than one each.
    let port = node.port;
    let burst: Vec<_> = (0..16).map(|_| std::thread::spawn(move || http_get(port, "/stats/summary"))).collect();
    let times: std::collections::BTreeSet<String> = burst
        .into_iter()
        .map(|t| json(t.join().unwrap(), "/stats/summary in a burst")["node"]["memory"]["time"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(times.len() <= 4, "16 concurrent requests made {} collections: {times:?}", times.len());
}
