//! The end-to-end harness: a cluster (the test apiserver as a process of its own, or a real
//! one named by NODELET_E2E_KUBECONFIG), a nodelet joined to it as a node, an admin client and
//! a namespace per test. Dropping it stops nodelet, removes what it ran and the test's objects.

#![allow(dead_code)]

pub mod kubectl;

use super::common::{eventually, node_name, nodelet_binary, Node};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REAL_CLUSTER_ENV: &str = "NODELET_E2E_KUBECONFIG";
pub const REAL_NODE_CREDENTIALS_ENV: &str = "NODELET_E2E_NODE_KUBECONFIG";

/// The project's test apiserver, run as the binary built beside nodelet.
struct TestApiserver {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    node: String,
}

impl TestApiserver {
    fn start(node: &str) -> TestApiserver {
        let dir = tempfile::Builder::new().prefix("nodelet-e2e-apiserver-").tempdir().unwrap();
        let mut server = TestApiserver { child: None, dir, port: 0, node: node.to_string() };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = nodelet_binary().with_file_name("nodelet-test-apiserver");
        assert!(binary.exists(), "{} is missing: build the workspace first", binary.display());
        let _ = std::fs::remove_file(self.dir.path().join("port"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("apiserver.log")).unwrap();
        let child = Command::new(binary)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--dir", self.dir.path().to_str().unwrap(), "--node", &self.node])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the test apiserver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(port) = std::fs::read_to_string(self.dir.path().join("port")).ok().and_then(|p| p.trim().parse().ok()) {
                self.port = port;
                break;
            }
            assert!(Instant::now() < deadline, "the test apiserver did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, so it writes its state and a restart finds the same objects.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn node_kubeconfig(&self) -> PathBuf {
        self.dir.path().join(format!("node-{}.kubeconfig", self.node))
    }
}

impl Drop for TestApiserver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct E2e {
    // Dropped first: nodelet stops and the runtime is cleaned before the apiserver goes.
    pub node: Node,
    pub namespace: String,
    /// The admin kubeconfig, for kubectl.
    pub admin_kubeconfig: PathBuf,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
    apiserver: Option<TestApiserver>,
    /// Holds the cluster's CA file nodelet checks the apiserver's client certificate with.
    _ca_dir: tempfile::TempDir,
}

/// Writes the CA of the admin kubeconfig's cluster to `dir/ca.crt`: the CA that (in the test
/// apiserver, and in kubeadm clusters) also signs the apiserver's kubelet-client certificate.
fn write_cluster_ca(admin: &Path, dir: &Path) -> Option<PathBuf> {
    use base64::Engine;
    let kubeconfig = kube::config::Kubeconfig::read_from(admin).ok()?;
    let context = kubeconfig.current_context.as_deref();
    let context = kubeconfig.contexts.iter().find(|c| Some(c.name.as_str()) == context).and_then(|c| c.context.clone())?;
    let cluster = kubeconfig.clusters.iter().find(|c| c.name == context.cluster).and_then(|c| c.cluster.clone())?;
    let pem = match (cluster.certificate_authority_data, cluster.certificate_authority) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()?,
        (None, Some(path)) => std::fs::read(path).ok()?,
        (None, None) => return None,
    };
    let path = dir.join("ca.crt");
    std::fs::write(&path, pem).ok()?;
    Some(path)
}

async fn client_from(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

impl E2e {
    pub fn start(test: &str, args: &[&str]) -> E2e {
        let node = node_name(test);
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let (apiserver, admin, node_credentials) = match set(REAL_CLUSTER_ENV) {
            Some(admin) => {
                let node_credentials = set(REAL_NODE_CREDENTIALS_ENV).unwrap_or(admin.clone());
                (None, PathBuf::from(admin), PathBuf::from(node_credentials))
            }
            None => {
                let server = TestApiserver::start(&node);
                let (admin, creds) = (server.admin_kubeconfig(), server.node_kubeconfig());
                (Some(server), admin, creds)
            }
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(client_from(&admin));
        let namespace = format!("e2e-{}-{}", test.replace('_', "-"), std::process::id());
        rt.block_on(async {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
            Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        });
        // The secure port trusts the apiserver's kubelet-client certificate (signed by the
        // cluster's CA) and asks the apiserver (SubjectAccessReview) what its callers may do.
        let ca_dir = tempfile::Builder::new().prefix("nodelet-e2e-ca-").tempdir().unwrap();
        let ca = write_cluster_ca(&admin, ca_dir.path()).map(|p| p.to_str().unwrap().to_string());
        let mut all_args: Vec<&str> = vec!["--kubeconfig", node_credentials.to_str().unwrap()];
        if let Some(ca) = &ca {
            all_args.extend(["--client-ca-file", ca, "--authorization-mode", "Webhook", "--authentication-token-webhook", "true"]);
        }
        // The test apiserver dials the node's InternalIP: keep that on loopback, the only
        // place tests may send traffic. A real cluster's apiserver needs the node's own address.
        all_args.extend(if apiserver.is_some() { ["--node-ip", "127.0.0.1"] } else { ["--address", "0.0.0.0"] });
        all_args.extend_from_slice(args);
        let node = Node::start(test, &all_args);
        E2e { node, namespace, admin_kubeconfig: admin, client, rt, apiserver, _ca_dir: ca_dir }
    }

    /// kubectl with the admin kubeconfig, in the test's namespace.
    pub fn kubectl(&self) -> kubectl::Kubectl {
        kubectl::Kubectl::new(&self.admin_kubeconfig, &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn can_stop_apiserver(&self) -> bool {
        self.apiserver.is_some()
    }

    pub fn stop_apiserver(&mut self) {
        self.apiserver.as_mut().expect("only the test apiserver can be stopped").stop();
    }

    pub fn start_apiserver(&mut self) {
        self.apiserver.as_mut().expect("only the test apiserver can be started").spawn();
    }

    fn get_node(&self) -> Option<Value> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        let node = self.rt.block_on(api.get_opt(&self.node.name)).ok().flatten()?;
        Some(serde_json::to_value(node).unwrap())
    }

    pub fn wait_node_ready(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = self.get_node();
            let ready = node.as_ref().and_then(|n| n["status"]["conditions"].as_array().cloned()).unwrap_or_default().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return node.unwrap();
            }
            assert!(Instant::now() < deadline, "node {} not Ready; last seen {node:#?}\nnodelet log:\n{}", self.node.name, self.node.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn lease_renew_time(&self) -> String {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = self.rt.block_on(api.get_opt(&self.node.name)).ok().flatten();
        lease.and_then(|l| l.spec?.renew_time).map(|t| format!("{:?}", t.0)).unwrap_or_default()
    }

    /// Creates a pod in the test's namespace, bound to this node (no scheduler needed).
    pub fn create_pod(&self, mut body: Value) {
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Pod");
        body["metadata"]["namespace"] = json!(self.namespace);
        body["spec"]["nodeName"] = json!(self.node.name);
        let pod: Pod = serde_json::from_value(body).unwrap();
        self.rt.block_on(self.pods().create(&PostParams::default(), &pod)).unwrap();
    }

    /// Creates a ConfigMap or Secret (or any namespaced core object) in the test's namespace.
    pub fn create_namespaced<K>(&self, mut body: Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        K::DynamicType: Default,
    {
        body["metadata"]["namespace"] = json!(self.namespace);
        let object: K = serde_json::from_value(body).unwrap();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        self.rt.block_on(api.create(&PostParams::default(), &object)).unwrap();
    }

    /// Reasons of the events recorded for a pod.
    pub fn event_reasons(&self, pod: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let events = self.rt.block_on(api.list(&Default::default())).map(|l| l.items).unwrap_or_default();
        events.into_iter().filter(|e| e.involved_object.name.as_deref() == Some(pod)).filter_map(|e| e.reason).collect()
    }

    /// Creates or replaces a cluster-scoped-in-namespace object from JSON (Service, EndpointSlice).
    pub fn apply_namespaced<K>(&self, mut body: Value)
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
        K::DynamicType: Default,
    {
        body["metadata"]["namespace"] = json!(self.namespace);
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        self.rt.block_on(async {
            match api.get_opt(&name).await.unwrap() {
                Some(existing) => {
                    let mut value = body.clone();
                    value["metadata"]["resourceVersion"] = serde_json::to_value(&existing).unwrap()["metadata"]["resourceVersion"].clone();
                    let object: K = serde_json::from_value(value).unwrap();
                    api.replace(&name, &PostParams::default(), &object).await.unwrap();
                }
                None => {
                    let object: K = serde_json::from_value(body).unwrap();
                    api.create(&PostParams::default(), &object).await.unwrap();
                }
            }
        });
    }

    /// Whether the cluster is the project's test apiserver (it lets tests pick ClusterIPs).
    pub fn is_test_apiserver(&self) -> bool {
        self.apiserver.is_some()
    }

    pub fn get_service(&self, name: &str) -> Value {
        let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(self.client.clone(), &self.namespace);
        serde_json::to_value(self.rt.block_on(api.get(name)).unwrap()).unwrap()
    }

    pub fn get_pod(&self, name: &str) -> Option<Value> {
        let pod = self.rt.block_on(self.pods().get_opt(name)).ok().flatten()?;
        Some(serde_json::to_value(pod).unwrap())
    }

    pub fn wait_pod(&self, name: &str, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            if let Some(pod) = self.get_pod(name) {
                if check(&pod) {
                    return pod;
                }
                last = Some(pod);
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} of pod {name}; last seen {last:#?}\nnodelet log:\n{}", self.node.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the pod's phase to be Running.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "Running", |p| p["status"]["phase"] == "Running")
    }

    pub fn delete_pod(&self, name: &str, grace: Option<i64>) {
        let params = DeleteParams { grace_period_seconds: grace.map(|g| g as u32), ..Default::default() };
        self.rt.block_on(self.pods().delete(name, &params)).unwrap();
    }

    pub fn wait_pod_gone(&self, name: &str, timeout: Duration) {
        eventually(&format!("pod {name} to be removed from the API"), timeout, || self.get_pod(name).is_none());
    }

    /// A container's output, from the CRI log file nodelet's runtime wrote on this machine.
    pub fn container_log(&self, pod: &Value, container: &str) -> String {
        let dir = self.node.pod_logs().join(format!(
            "{}_{}_{}",
            pod["metadata"]["namespace"].as_str().unwrap(),
            pod["metadata"]["name"].as_str().unwrap(),
            pod["metadata"]["uid"].as_str().unwrap()
        ));
        let path = dir.join(container).join("0.log");
        eventually("the container's log", Duration::from_secs(10), || std::fs::metadata(&path).is_ok_and(|m| m.len() > 0));
        std::fs::read_to_string(&path).unwrap().lines().filter_map(|l| l.splitn(4, ' ').nth(3)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        // On a real cluster, leave nothing behind: the test's namespace and this node.
        if self.apiserver.is_none() {
            let client = self.client.clone();
            let (ns, node) = (self.namespace.clone(), self.node.name.clone());
            self.rt.block_on(async move {
                let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
                let _ = Api::<KubeNode>::all(client).delete(&node, &DeleteParams::default()).await;
            });
        }
    }
}
