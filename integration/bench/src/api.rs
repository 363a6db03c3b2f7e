//! Start-up latency of pods created through the API, as the Kubernetes SLO measures it.

use crate::{binary, percentile, print, rss_mb, spawn, wait_until, Process, IMAGE};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use nodelet::runtime::labels;
use nodelet::runtime::Cri;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SINGLE_RUNS: usize = 7;
const BATCH: usize = 30;

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                 "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}]}
    }))
    .unwrap()
}

fn all_started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())))
}

/// Creates pods and returns, per pod, the time from its creation call to the watch showing all
/// its containers started.
async fn create_and_time(api: &Api<Pod>, node: &str, names: &[String]) -> Vec<Duration> {
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // The watch must be established before the pods exist.
    loop {
        if let Some(Ok(watcher::Event::InitDone)) = events.next().await {
            break;
        }
    }
    let mut created: HashMap<String, Instant> = HashMap::new();
    for name in names {
        created.insert(name.clone(), Instant::now());
        api.create(&PostParams::default(), &pod(name, node)).await.expect("creating a pod");
    }
    let mut started: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while started.len() < names.len() {
        assert!(Instant::now() < deadline, "pods did not start in time");
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await else { continue };
        if let Ok(watcher::Event::Apply(p)) = event {
            let name = p.metadata.name.clone().unwrap_or_default();
            if all_started(&p) {
                if let Some(t) = created.get(&name) {
                    started.entry(name).or_insert_with(|| t.elapsed());
                }
            }
        }
    }
    let mut times: Vec<Duration> = started.into_values().collect();
    times.sort();
    times
}

async fn delete_all(api: &Api<Pod>, cri: &Cri, node: &str, names: &[String]) {
    for name in names {
        let _ = api.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    }
    let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node.to_string())]);
    wait_until("pods to be removed", Duration::from_secs(120), async || cri.list_sandboxes(selector.clone()).await.map(|s| s.is_empty()).unwrap_or(false))
        .await;
}

/// The local control plane (integration/cluster/up.sh, which bench.sh runs first) and a
/// nodelet joined to it the way the end-to-end suite joins one: a node of its own with its own
/// credentials, its InternalIP on loopback, its secure port trusting the cluster CA and asking
/// the apiserver SubjectAccessReviews, so that pods/log and pods/exec reach it through the
/// apiserver; and a namespace of its own. Dropping it removes the node, namespace and pods.
pub struct ApiCluster {
    /// nodelet's root and log directories.
    _dir: tempfile::TempDir,
    pub node: String,
    pub namespace: String,
    pub client: kube::Client,
    cluster_dir: PathBuf,
    node_kubeconfig: PathBuf,
    pub nodelet: Process,
}

impl ApiCluster {
    /// A node without the Service proxy.
    pub async fn start(prefix: &str) -> ApiCluster {
        // pods are measured here, not Services: no nftables table of the host's to leave behind
        Self::start_with(prefix, &["--disable-proxy"]).await
    }

    /// A node with `args` added to its flags.
    pub async fn start_with(prefix: &str, args: &[&str]) -> ApiCluster {
        let cluster_dir = std::env::var_os("CLUSTER_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| "/var/lib/nodelet-cluster".into());
        assert!(cluster_dir.join("admin.kubeconfig").exists(), "no control plane in {}: run integration/cluster/up.sh first", cluster_dir.display());
        let dir = tempfile::Builder::new().prefix(&format!("nodelet-bench-{prefix}-")).tempdir().unwrap();
        let node = format!("bench-{prefix}-{}", std::process::id());
        let minted = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/node-kubeconfig.sh"))
            .arg(&node)
            .env("CLUSTER_DIR", &cluster_dir)
            .output()
            .unwrap();
        assert!(minted.status.success(), "minting the credentials of node {node}: {}", String::from_utf8_lossy(&minted.stderr));
        let node_kubeconfig = PathBuf::from(String::from_utf8_lossy(&minted.stdout).trim());
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster_dir.join("admin.kubeconfig")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let namespace = node.clone();
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        // Pods are refused until the controller-manager made the namespace's default ServiceAccount.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        wait_until("the namespace's default ServiceAccount", Duration::from_secs(30), async || accounts.get_opt("default").await.ok().flatten().is_some())
            .await;
        let secure_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
        let nodelet = spawn(
            Command::new(binary("nodelet"))
                .args(["--hostname-override", &node, "--read-only-port", "0", "--healthz-port", "0"])
                .args(["--kubeconfig", node_kubeconfig.to_str().unwrap()])
                .args(["--root-dir", dir.path().join("root").to_str().unwrap()])
                .args(["--pod-logs-dir", dir.path().join("logs").to_str().unwrap()])
                .args(["--address", "127.0.0.1", "--port", &secure_port, "--node-ip", "127.0.0.1"])
                .args(["--client-ca-file", cluster_dir.join("pki/ca.crt").to_str().unwrap(), "--authorization-mode", "Webhook"])
                .args(crate::HOST_DISK_INDEPENDENT)
                .args(args)
                .env("RUST_LOG", "warn"),
            &dir.path().join("nodelet.log"),
        );
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        wait_until("the node to register", Duration::from_secs(30), async || nodes.get_opt(&node).await.ok().flatten().is_some()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        ApiCluster { _dir: dir, node, namespace, client, cluster_dir, node_kubeconfig, nodelet }
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.cluster_dir.join("admin.kubeconfig")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a pod running `script` under sh and waits until its container runs.
    pub async fn run_pod(&self, name: &str, script: &str) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": self.node, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                     "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}]}
        }))
        .unwrap();
        let api = self.pods();
        api.create(&PostParams::default(), &pod).await.expect("creating a pod");
        wait_until("the pod to run", Duration::from_secs(60), async || api.get_opt(name).await.ok().flatten().is_some_and(|p| all_started(&p))).await;
    }

    pub async fn delete_pods(&self, cri: &Cri, names: &[String]) {
        delete_all(&self.pods(), cri, &self.node, names).await;
    }
}

impl Drop for ApiCluster {
    /// Also after a failed measurement: nodelet goes first, then what it ran on this machine.
    fn drop(&mut self) {
        let _ = self.nodelet.0.kill();
        let _ = self.nodelet.0.wait();
        let _ = std::fs::remove_file(&self.node_kubeconfig);
        let (node, namespace, client) = (self.node.clone(), self.namespace.clone(), self.client.clone());
        // A runtime of its own: this may run inside the benchmark's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
                let _ = Api::<Pod>::namespaced(client.clone(), &namespace).delete_collection(&now, &Default::default()).await;
                let _ = Api::<Namespace>::all(client.clone()).delete(&namespace, &DeleteParams::default()).await;
                let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client).delete(&node, &DeleteParams::default()).await;
                let cri = Cri::new(std::path::Path::new(crate::SOCKET));
                let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node)]);
                for sandbox in cri.list_sandboxes(selector).await.unwrap_or_default() {
                    let _ = cri.stop_sandbox(&sandbox.id).await;
                    let _ = cri.remove_sandbox(&sandbox.id).await;
                }
            });
        })
        .join();
    }
}

pub async fn run(cri: &Cri) {
    let cluster = ApiCluster::start("api").await;
    let (node, nodelet) = (&cluster.node, &cluster.nodelet);
    let api = cluster.pods();
    let mut singles = Vec::new();
    for i in 0..SINGLE_RUNS {
        let names = vec![format!("single{i}")];
        singles.extend(create_and_time(&api, node, &names).await);
        delete_all(&api, cri, node, &names).await;
    }
    singles.sort();
    print("api_pod_startup_1_p50", percentile(&singles, 50.0).as_secs_f64(), "s");
    print("api_pod_startup_1_p99", percentile(&singles, 99.0).as_secs_f64(), "s");

    let names: Vec<String> = (0..BATCH).map(|i| format!("batch{i}")).collect();
    let times = create_and_time(&api, node, &names).await;
    print("api_pod_startup_30_p50", percentile(&times, 50.0).as_secs_f64(), "s");
    print("api_pod_startup_30_p99", percentile(&times, 99.0).as_secs_f64(), "s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    print("api_pod_rss_30_pods", rss_mb(nodelet.0.id()), "MB");
    delete_all(&api, cri, node, &names).await;
}
