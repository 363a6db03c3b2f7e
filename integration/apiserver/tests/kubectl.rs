//! kubectl, a real client, against the server; and the binary's command line.
//! Skipped (with a note) where kubectl is not installed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use nodelet_test_apiserver::{start, Options};

fn have_kubectl() -> bool {
    let ok = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("kubectl not found: skipping");
    }
    ok
}

/// Runs kubectl with `kubeconfig`; returns (success, stdout + stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("running kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: ["sleep", "3600"]
"#;

const NODE: &str = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
 "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok",
   "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}],
   "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1",
     "containerRuntimeVersion": "containerd://1.6.20", "architecture": "amd64", "operatingSystem": "linux",
     "bootID": "", "machineID": "", "systemUUID": "", "kubeProxyVersion": ""}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_describe_delete() {
    if !have_kubectl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path())).await.unwrap();
    let kc = s.admin_kubeconfig();

    let (ok, out) = kubectl(&kc, &["get", "ns"]).await;
    assert!(ok, "{out}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "{out}");
    }
    let (ok, out) = kubectl(&kc, &["version"]).await;
    assert!(ok && out.contains("Server Version: v1.33.0"), "{out}");

    std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
    std::fs::write(dir.path().join("node.json"), NODE).unwrap();
    let (ok, out) = kubectl(
        &kc,
        &[
            "create",
            "-f",
            dir.path().join("pod.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && out.contains("pod/web created"), "{out}");
    let (ok, out) = kubectl(
        &kc,
        &[
            "create",
            "-f",
            dir.path().join("node.json").to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && out.contains("node/n1 created"), "{out}");
    let (ok, out) = kubectl(
        &kc,
        &[
            "create",
            "-f",
            dir.path().join("pod.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && out.contains("AlreadyExists"), "{out}");

    let (ok, out) = kubectl(&kc, &["get", "po"]).await;
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("web"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("0/1") && line.contains("Pending"), "{out}");
    let (ok, out) = kubectl(&kc, &["get", "no", "-o", "wide"]).await;
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("n1") && l.contains("Ready") && l.contains("v1.33.0")),
        "{out}"
    );
    let (ok, out) = kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].spec.serviceAccountName}",
        ],
    )
    .await;
    assert!(ok && out == "default", "{out}");
    let (ok, out) = kubectl(&kc, &["get", "pod", "web", "-o", "json"]).await;
    assert!(ok, "{out}");
    let pod: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");

    let (ok, out) = kubectl(&kc, &["describe", "pod", "web"]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("Service Account:  default") && out.contains("kube-api-access-"),
        "{out}"
    );
    let (ok, out) = kubectl(&kc, &["describe", "node", "n1"]).await;
    assert!(ok && out.contains("KubeletReady"), "{out}");

    let (ok, out) = kubectl(
        &kc,
        &["get", "pods", "--field-selector", "spec.nodeName=n1"],
    )
    .await;
    assert!(ok && out.contains("No resources found"), "{out}");

    // Typed-client commands send protobuf bodies.
    for args in [
        &["create", "namespace", "team"][..],
        &[
            "create",
            "configmap",
            "cm",
            "-n",
            "team",
            "--from-literal=a=b",
        ],
        &[
            "create",
            "secret",
            "generic",
            "sec",
            "-n",
            "team",
            "--from-literal=k=v",
        ],
        &["create", "serviceaccount", "bob", "-n", "team"],
    ] {
        let (ok, out) = kubectl(&kc, args).await;
        assert!(ok && out.contains("created"), "{args:?}: {out}");
    }
    let (ok, out) = kubectl(
        &kc,
        &[
            "get",
            "secret",
            "sec",
            "-n",
            "team",
            "-o",
            "jsonpath={.type} {.data.k}",
        ],
    )
    .await;
    assert!(ok && out == "Opaque dg==", "{out}");
    let (ok, out) = kubectl(
        &kc,
        &["create", "token", "bob", "-n", "team", "--duration=1h"],
    )
    .await;
    assert!(ok && out.trim().split('.').count() == 3, "{out}");
    let (ok, out) = kubectl(&kc, &["delete", "namespace", "team"]).await;
    assert!(ok, "{out}");

    let (ok, out) = kubectl(&kc, &["delete", "pod", "web"]).await;
    assert!(ok && out.contains("pod \"web\" deleted"), "{out}");
    let (ok, out) = kubectl(&kc, &["delete", "node", "n1"]).await;
    assert!(ok && out.contains("node \"n1\" deleted"), "{out}");
    let (ok, out) = kubectl(&kc, &["get", "pod", "web"]).await;
    assert!(!ok && out.contains("NotFound"), "{out}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_node_credentials_are_restricted() {
    if !have_kubectl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path()).node("n1")).await.unwrap();
    let kc = dir.path().join("node-n1.kubeconfig");
    let (ok, out) = kubectl(&kc, &["get", "nodes"]).await;
    assert!(ok, "{out}");
    std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
    let (ok, out) = kubectl(
        &kc,
        &[
            "create",
            "-f",
            dir.path().join("pod.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && out.contains("forbidden"), "{out}");
    let (ok, out) = kubectl(&kc, &["delete", "ns", "kube-public"]).await;
    assert!(!ok && out.contains("forbidden"), "{out}");
    s.stop().await.unwrap();
}

#[test]
fn binary_writes_credentials_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodelet-test-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .args(["--node", "n1", "--node", "n2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = nodelet_test_apiserver::read_port(dir.path()).unwrap();
    assert_eq!(
        first.trim(),
        format!("listening on https://127.0.0.1:{port}")
    );
    for f in [
        "ca.crt",
        "admin.kubeconfig",
        "node-n1.kubeconfig",
        "node-n2.kubeconfig",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let kc = std::fs::read_to_string(dir.path().join("node-n2.kubeconfig")).unwrap();
    assert!(kc.contains(&format!("server: https://127.0.0.1:{port}")));
    assert!(kc.contains("client-key-data:"));
    if have_kubectl() {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(dir.path().join("admin.kubeconfig"))
            .args(["get", "--raw", "/readyz"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
