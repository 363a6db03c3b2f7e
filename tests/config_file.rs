//! The --config file as kubeadm writes it (/var/lib/kubelet/config.yaml): a node started with
//! it joins the real control plane, says once which of its fields nodelet ignores, and takes the
//! fields it implements (resolvConf here); a wrong value stops nodelet naming the field.

mod common;
mod e2e_support;

use common::*;
use e2e_support::*;
use std::process::Command;
use std::time::Duration;

const KUBEADM_CLUSTER: &str = include_str!("../src/config/testdata/kubeadm-cluster-config.yaml");
const KUBEADM_DRY_RUN: &str = include_str!("../src/config/testdata/kubeadm-dryrun-config.yaml");

/// kubeadm's file with what points at /etc/kubernetes moved into `dir`, a health port of the
/// test's own, and `edits` (`from`, `to`) applied.
fn kubeadm_file(dir: &std::path::Path, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut text = KUBEADM_CLUSTER
        .replace("/etc/kubernetes/manifests", manifests.to_str().unwrap())
        .replace("/etc/kubernetes/pki/ca.crt", "/var/lib/nodelet-cluster/pki/ca.crt")
        .replace("healthzPort: 10248", &format!("healthzPort: {}", free_port()));
    assert!(!text.contains("/etc/kubernetes"), "{text}");
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} is not in kubeadm's file");
        text = text.replace(from, to);
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kubeadms_config_file_joins_the_node_and_names_what_nodelet_ignores_once() {
    let dir = tempfile::Builder::new().prefix("nodelet-config-file-").tempdir().unwrap();
    // kubeadm's own file, plus three fields nodelet does not implement set to other than the
    // default (and failSwapOn as kind writes it, which nodelet takes as it is).
    let config = kubeadm_file(
        dir.path(),
        &[
            ("shutdownGracePeriod: 0s", "shutdownGracePeriod: 30s"),
            ("volumeStatsAggPeriod: 0s", "volumeStatsAggPeriod: 0s\ncpuManagerPolicy: static\npodPidsLimit: 4096\nfailSwapOn: false"),
        ],
    );
    let e2e = E2e::start("config-file", &["--config", config.to_str().unwrap()]);
    e2e.wait_node_ready();
    assert_eq!(http_get(e2e.node.port, "/healthz"), (200, "ok".to_string()));
    let log = e2e.node.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("does not implement")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN") && warnings[0].ends_with("(ignored): shutdownGracePeriod, cpuManagerPolicy"), "{}", warnings[0]);
    assert!(!log.contains("unknown field"), "{log}");
    let (code, body) = http_get(e2e.node.port, "/configz");
    assert_eq!(code, 200, "{body}");
    let configz: serde_json::Value = serde_json::from_str(&body).unwrap();
    let c = &configz["kubeletconfig"];
    assert_eq!(c["nodeletIgnored"], serde_json::json!(["shutdownGracePeriod", "cpuManagerPolicy"]));
    assert_eq!((&c["podPidsLimit"], &c["cgroupDriver"]), (&serde_json::json!(4096), &serde_json::json!("cgroupfs")));
    // kubeadm's zero values are the kubelet's defaults; its nested authorization is in force.
    assert_eq!((&c["syncFrequency"], &c["nodeStatusUpdateFrequency"]), (&serde_json::json!("10s"), &serde_json::json!("10s")));
    assert_eq!(c["authorization"], serde_json::json!({"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"}}));
    assert_eq!((&c["authentication"]["webhook"]["cacheTTL"], &c["clusterDNS"]), (&serde_json::json!("2m0s"), &serde_json::json!(["10.96.0.10"])));
}

#[test]
fn pods_inherit_the_configured_resolv_conf() {
    let dir = tempfile::Builder::new().prefix("nodelet-resolv-conf-").tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.99\nsearch nodelet.test\n").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nresolvConf: {}\n", resolv.display())).unwrap();
    let node = Node::start("resolv-conf", &["--config", config.to_str().unwrap()]);
    node.write_manifest("dns.yaml", &busybox_pod_with("dns", "cat /etc/resolv.conf; exec sleep 600", "  dnsPolicy: Default\n", ""));
    let pod = node.wait_running("dns");
    let (name, uid) = (pod["metadata"]["name"].as_str().unwrap(), pod["metadata"]["uid"].as_str().unwrap());
    let log = node.pod_logs().join(format!("default_{name}_{uid}/main/0.log"));
    eventually("the pod to print its resolv.conf", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("nameserver 127.0.0.99") && text.contains("search nodelet.test")
    });
}

#[test]
fn a_missing_resolv_conf_is_a_warning_not_a_stop() {
    let missing = "/nonexistent/nodelet-resolv.conf";
    let node = Node::start("resolv-missing", &["--resolv-conf", missing]);
    assert!(node.log().lines().any(|l| l.contains("WARN") && l.contains(missing)), "{}", node.log());
}

#[test]
fn a_wrong_value_stops_nodelet_naming_the_file_the_field_and_the_value() {
    let dir = tempfile::Builder::new().prefix("nodelet-config-wrong-").tempdir().unwrap();
    let run = |config: &std::path::Path| {
        let out = Command::new(nodelet_binary())
            .args(["--config", config.to_str().unwrap(), "--hostname-override", "config-wrong", "--cni-plugin", "/bin/true"])
            // never the machine's CNI files, should it get that far: other tests' pods use them
            .args(["--cni-bin-dir", dir.path().join("cni-bin").to_str().unwrap(), "--cni-conf-dir", dir.path().join("cni-conf").to_str().unwrap()])
            .args(["--healthz-port", "0", "--read-only-port", "0", "--port", "0"])
            .output()
            .expect("running nodelet");
        (out.status, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let config = kubeadm_file(dir.path(), &[("mode: Webhook", "mode: Sometimes")]);
    let (status, stderr) = run(&config);
    assert!(!status.success(), "{stderr}");
    let want = format!("--config {}: authorization.mode: \"Sometimes\" is not AlwaysAllow or Webhook", config.display());
    assert!(stderr.contains(&want), "{stderr}");

    // kubeadm's default, the systemd driver, on a machine without systemd: said at start.
    std::fs::write(&config, KUBEADM_DRY_RUN.replace("/etc/kubernetes/manifests", dir.path().join("manifests").to_str().unwrap())).unwrap();
    let (status, output) = run(&config);
    assert!(!status.success(), "{output}");
    assert!(output.contains("cgroupDriver") && output.contains("connecting to systemd"), "{output}");
}
