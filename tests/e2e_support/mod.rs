//! The end-to-end harness: a real cluster (by default the upstream control plane that
//! integration/cluster/up.sh runs on loopback, or one named by NODELET_E2E_KUBECONFIG), a
//! nodelet joined to it as a node of its own with its own credentials, an admin client and a
//! namespace per test. Dropping it stops nodelet and removes what it ran, the test's namespace
//! and its Node.

#![allow(dead_code)]

pub mod kubectl;

use super::common::{eventually, free_port, node_name, Node};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REAL_CLUSTER_ENV: &str = "NODELET_E2E_KUBECONFIG";
pub const REAL_NODE_CREDENTIALS_ENV: &str = "NODELET_E2E_NODE_KUBECONFIG";
/// kube-proxy's credentials on that cluster, for the tests that run the Service proxy.
pub const REAL_PROXY_CREDENTIALS_ENV: &str = "NODELET_E2E_PROXY_KUBECONFIG";
/// The local control plane's Service range (integration/cluster/lib.sh).
pub const LOCAL_SERVICE_CIDR: &str = "10.96.0.0/16";

/// A control plane run by integration/cluster/up.sh: the shared one (CLUSTER_DIR, default
/// /var/lib/nodelet-cluster, on the default ports) or a private one on ports of its own,
/// which a test may stop and start and which is removed (down.sh) when dropped.
pub struct ControlPlane {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    private: bool,
}

/// What `kubeadm join` needs to join a prepared control plane.
#[derive(Debug, Clone)]
pub struct KubeadmJoin {
    /// host:port of the apiserver.
    pub endpoint: String,
    pub token: String,
    /// sha256:<hex> of the cluster CA's public key.
    pub ca_hash: String,
}

impl ControlPlane {
    fn script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/cluster").join(name)
    }

    /// Runs one of the cluster scripts; fails the test with its output.
    fn run(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(Self::script(script))
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running bash");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "integration/cluster/{script} {args:?} failed ({}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// The shared control plane, brought up (if it is not running) once per test process.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = std::env::var_os("CLUSTER_DIR").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| "/var/lib/nodelet-cluster".into());
            let plane = ControlPlane { dir, env: Vec::new(), private: false };
            plane.run("up.sh", &[]);
            plane
        })
    }

    /// A control plane of the test's own, on free ports.
    pub fn private(test: &str) -> ControlPlane {
        ControlPlane::private_with(test, &[])
    }

    /// As `private`, with settings of up.sh (such as CLUSTER_SIGNING_DURATION).
    pub fn private_with(test: &str, settings: &[(&'static str, &str)]) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("nodelet-e2e-cluster-{test}-{}", std::process::id()));
        let mut env =
            ["APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT", "CONTROLLER_MANAGER_PORT", "SCHEDULER_PORT"].map(|k| (k, free_port().to_string())).to_vec();
        env.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        let plane = ControlPlane { dir, env, private: true };
        plane.run("up.sh", &[]);
        plane
    }

    /// Prepares it for `kubeadm join` with kubeadm's own phases (kubeadm-prepare.sh), handing
    /// joining kubelets `kubelet_config` (a KubeletConfiguration file) if given.
    pub fn prepare_for_kubeadm(&self, kubelet_config: Option<&Path>) -> KubeadmJoin {
        let mut plane = ControlPlane { dir: self.dir.clone(), env: self.env.clone(), private: false };
        if let Some(file) = kubelet_config {
            plane.env.push(("KUBELET_CONFIG", file.display().to_string()));
        }
        let out = plane.run("kubeadm-prepare.sh", &[]);
        let line = out.lines().last().unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        let after =
            |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).unwrap_or_else(|| panic!("{flag} in {line:?}")).to_string();
        KubeadmJoin {
            endpoint: words.get(2).unwrap_or_else(|| panic!("the endpoint in {line:?}")).to_string(),
            token: after("--token"),
            ca_hash: after("--discovery-token-ca-cert-hash"),
        }
    }

    /// A kubeconfig that authenticates with a bootstrap `token` (as kubeadm's
    /// bootstrap-kubelet.conf), written in `dir`.
    pub fn bootstrap_kubeconfig(&self, token: &str, dir: &Path) -> PathBuf {
        let admin = kube::config::Kubeconfig::read_from(self.admin_kubeconfig()).unwrap();
        let server = admin.clusters[0].cluster.as_ref().and_then(|c| c.server.clone()).unwrap();
        let ca = std::fs::read(self.ca_file()).unwrap();
        use base64::Engine;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {server}, certificate-authority-data: {}}}\ncontexts:\n- name: b\n  context: {{cluster: c, user: b}}\ncurrent-context: b\nusers:\n- name: b\n  user: {{token: {token}}}\n",
            base64::engine::general_purpose::STANDARD.encode(ca)
        );
        let path = dir.join("bootstrap-kubelet.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Where its processes log (kube-controller-manager's tells of CSRs it signs).
    pub fn log_file(&self, daemon: &str) -> PathBuf {
        let tag = self.dir.file_name().unwrap().to_string_lossy();
        PathBuf::from(format!("/var/log/nodelet-env/cluster-{tag}-{daemon}.log"))
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn proxy_kubeconfig(&self) -> PathBuf {
        self.dir.join("kube-proxy.kubeconfig")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// Mints the credentials of node `name` (system:node:<name>).
    pub fn node_kubeconfig(&self, name: &str) -> PathBuf {
        PathBuf::from(self.run("node-kubeconfig.sh", &[name]).trim())
    }

    fn apiserver_pid(&self) -> Option<i32> {
        let tag = self.dir.file_name().unwrap().to_string_lossy();
        std::fs::read_to_string(format!("/run/nodelet-env/cluster-{tag}-kube-apiserver.pid")).ok()?.trim().parse().ok()
    }

    /// Stops kube-apiserver; etcd keeps the objects. SIGTERM, then SIGKILL after 5 s: with its
    /// clients' watches open it can take a minute to finish on SIGTERM alone.
    pub fn stop_apiserver(&self) {
        assert!(self.private, "only a private control plane may be stopped");
        let pid = self.apiserver_pid().expect("the private kube-apiserver's pid file");
        let gone = || std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "));
        let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        let _ = signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = signal(nix::sys::signal::Signal::SIGKILL);
        eventually("kube-apiserver to exit", Duration::from_secs(10), gone);
    }

    /// Starts what is not running (so the stopped kube-apiserver) and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.run("up.sh", &[]);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.private {
            let _ = Command::new("bash").arg(Self::script("down.sh")).env("CLUSTER_DIR", &self.dir).output();
        }
    }
}

/// The admin kubeconfig `E2e::start` uses: NODELET_E2E_KUBECONFIG's, else the shared local
/// control plane's.
pub fn admin_kubeconfig() -> PathBuf {
    match std::env::var_os(REAL_CLUSTER_ENV).filter(|v| !v.is_empty()) {
        Some(admin) => PathBuf::from(admin),
        None => ControlPlane::shared().admin_kubeconfig(),
    }
}

/// A Node an admin created before any nodelet ran (as an installer or a previous owner may
/// leave one), deleted when dropped (the E2e that takes it over deletes it too).
pub struct PrecreatedNode {
    name: String,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
}

impl PrecreatedNode {
    /// Creates Node `name` from `body` (its metadata.name is set here).
    pub fn create(name: &str, mut body: Value) -> PrecreatedNode {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(client_from(&admin_kubeconfig()));
        body["metadata"]["name"] = json!(name);
        let node: KubeNode = serde_json::from_value(body).unwrap();
        rt.block_on(Api::<KubeNode>::all(client.clone()).create(&PostParams::default(), &node)).unwrap_or_else(|e| panic!("creating Node {name}: {e}"));
        PrecreatedNode { name: name.to_string(), client, rt }
    }
}

impl Drop for PrecreatedNode {
    fn drop(&mut self) {
        let _ = self.rt.block_on(Api::<KubeNode>::all(self.client.clone()).delete(&self.name, &DeleteParams::default()));
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
    /// The node's minted credentials on the local control plane, removed at the end.
    node_kubeconfig: Option<PathBuf>,
    /// Whether the cluster is the local control plane (its Service range is known).
    local: bool,
    /// The test's own control plane, if it has one; dropped last.
    private: Option<ControlPlane>,
    /// Holds the cluster's CA file nodelet checks the apiserver's client certificate with.
    _ca_dir: tempfile::TempDir,
}

/// Writes the CA of the admin kubeconfig's cluster to `dir/ca.crt`: the CA that (in the local
/// control plane, and in kubeadm clusters) also signs the apiserver's kubelet-client certificate.
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
    /// nodelet joined to the shared local control plane (or to NODELET_E2E_KUBECONFIG's cluster).
    pub fn start(test: &str, args: &[&str]) -> E2e {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        match set(REAL_CLUSTER_ENV) {
            Some(admin) => {
                let node_credentials = set(REAL_NODE_CREDENTIALS_ENV).unwrap_or(admin.clone());
                let proxy = set(REAL_PROXY_CREDENTIALS_ENV).map(PathBuf::from);
                E2e::join(test, args, PathBuf::from(admin), PathBuf::from(node_credentials), proxy, None)
            }
            None => E2e::join_local(test, args, ControlPlane::shared(), true),
        }
    }

    /// As `start` on the local control plane, but the Service proxy (when `--proxy-table` asks
    /// for one) keeps the node's own credentials, which may not list EndpointSlices.
    pub fn start_with_node_identity_only(test: &str, args: &[&str]) -> E2e {
        E2e::join_local(test, args, ControlPlane::shared(), false)
    }

    /// nodelet joined to a control plane of the test's own, which it may stop and start; None
    /// on another cluster (NODELET_E2E_KUBECONFIG), whose apiserver the suite cannot stop.
    pub fn start_private(test: &str, args: &[&str]) -> Option<E2e> {
        E2e::start_private_in(test, args, &std::env::temp_dir())
    }

    /// As `start_private`, with the node's directory under `parent` (`Node::start_in`).
    pub fn start_private_in(test: &str, args: &[&str], parent: &Path) -> Option<E2e> {
        if std::env::var_os(REAL_CLUSTER_ENV).is_some_and(|v| !v.is_empty()) {
            return None;
        }
        let plane = ControlPlane::private(test);
        let (admin, proxy, credentials) = (plane.admin_kubeconfig(), plane.proxy_kubeconfig(), plane.node_kubeconfig(&node_name(test)));
        let mut e2e = E2e::join_in(test, args, admin, credentials, Some(proxy), Some(plane), parent);
        e2e.local = true;
        Some(e2e)
    }

    /// nodelet joined to `plane` (the test's own) with the node credentials `kubeconfig` names
    /// and `args` complete (--bootstrap-kubeconfig: the file need not exist yet).
    pub fn start_on(test: &str, args: &[&str], plane: ControlPlane, kubeconfig: &Path) -> E2e {
        let (admin, proxy) = (plane.admin_kubeconfig(), plane.proxy_kubeconfig());
        let mut e2e = E2e::join_in(test, args, admin, kubeconfig.to_path_buf(), Some(proxy), Some(plane), &std::env::temp_dir());
        e2e.local = true;
        e2e
    }

    /// An admin client of the test's cluster.
    pub fn admin_client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs `f` on the test's async runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The test's own control plane.
    pub fn plane(&self) -> &ControlPlane {
        self.private.as_ref().expect("a test's own control plane")
    }

    fn join_local(test: &str, args: &[&str], plane: &ControlPlane, proxy_identity: bool) -> E2e {
        let credentials = plane.node_kubeconfig(&node_name(test));
        let proxy = proxy_identity.then(|| plane.proxy_kubeconfig());
        let mut e2e = E2e::join(test, args, plane.admin_kubeconfig(), credentials.clone(), proxy, None);
        e2e.local = true;
        e2e.node_kubeconfig = Some(credentials);
        e2e
    }

    fn join(test: &str, args: &[&str], admin: PathBuf, node_credentials: PathBuf, proxy: Option<PathBuf>, private: Option<ControlPlane>) -> E2e {
        E2e::join_in(test, args, admin, node_credentials, proxy, private, &std::env::temp_dir())
    }

    fn join_in(
        test: &str,
        args: &[&str],
        admin: PathBuf,
        node_credentials: PathBuf,
        proxy: Option<PathBuf>,
        private: Option<ControlPlane>,
        parent: &Path,
    ) -> E2e {
        let local = private.is_some() || std::env::var_os(REAL_CLUSTER_ENV).is_none_or(|v| v.is_empty());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = rt.block_on(client_from(&admin));
        let namespace = format!("e2e-{}-{}", test.replace('_', "-"), std::process::id());
        rt.block_on(async {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
            Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
            // Pods are refused until the controller-manager made the namespace's default ServiceAccount.
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
            let deadline = Instant::now() + Duration::from_secs(30);
            while accounts.get_opt("default").await.ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "no default ServiceAccount in namespace {namespace} after 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        // The secure port trusts the apiserver's kubelet-client certificate (signed by the
        // cluster's CA) and asks the apiserver (SubjectAccessReview) what its callers may do.
        let ca_dir = tempfile::Builder::new().prefix("nodelet-e2e-ca-").tempdir().unwrap();
        let ca = write_cluster_ca(&admin, ca_dir.path()).map(|p| p.to_str().unwrap().to_string());
        let mut all_args: Vec<&str> = vec!["--kubeconfig", node_credentials.to_str().unwrap()];
        if let Some(ca) = &ca {
            all_args.extend(["--client-ca-file", ca, "--authorization-mode", "Webhook", "--authentication-token-webhook"]);
        }
        // The local apiserver dials the node's InternalIP: keep that on loopback, the only
        // place tests may send traffic. Another cluster's apiserver needs the node's own address.
        all_args.extend(if local { ["--node-ip", "127.0.0.1"] } else { ["--address", "0.0.0.0"] });
        // The Service proxy watches with kube-proxy's identity: a node's may not list EndpointSlices.
        if let (Some(proxy), true) = (&proxy, args.contains(&"--proxy-table")) {
            all_args.extend(["--proxy-kubeconfig", proxy.to_str().unwrap()]);
        }
        all_args.extend_from_slice(args);
        let node = Node::start_in(test, &all_args, parent);
        E2e { node, namespace, admin_kubeconfig: admin, client, rt, node_kubeconfig: None, local, private, _ca_dir: ca_dir }
    }

    /// kubectl with the admin kubeconfig, in the test's namespace.
    pub fn kubectl(&self) -> kubectl::Kubectl {
        kubectl::Kubectl::new(&self.admin_kubeconfig, &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn stop_apiserver(&self) {
        self.private.as_ref().expect("only a test's private control plane can be stopped").stop_apiserver();
    }

    pub fn start_apiserver(&self) {
        self.private.as_ref().expect("only a test's private control plane can be started").start_apiserver();
    }

    pub fn get_node(&self) -> Option<Value> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        let node = self.rt.block_on(api.get_opt(&self.node.name)).ok().flatten()?;
        Some(serde_json::to_value(node).unwrap())
    }

    /// Patches the Node's status subresource as an admin (or another component: a CNI, the
    /// node-problem-detector) would; answers the Node as patched.
    pub fn patch_node_status(&self, patch: &Patch<Value>) -> Value {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        let node = self
            .rt
            .block_on(api.patch_status(&self.node.name, &PatchParams::default(), patch))
            .unwrap_or_else(|e| panic!("patching the status of Node {}: {e}", self.node.name));
        serde_json::to_value(node).unwrap()
    }

    pub fn wait_node_ready(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = self.get_node();
            let ready = node
                .as_ref()
                .and_then(|n| n["status"]["conditions"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
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

    /// How many times each event happened in the test's namespace, by (object name, reason): the
    /// counts of the aggregated Events.
    pub fn event_counts(&self) -> std::collections::BTreeMap<(String, String), i64> {
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let events = self.rt.block_on(api.list(&Default::default())).map(|l| l.items).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for e in events {
            let key = (e.involved_object.name.clone().unwrap_or_default(), e.reason.clone().unwrap_or_default());
            *counts.entry(key).or_default() += e.count.unwrap_or(1) as i64;
        }
        counts
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

    /// Whether the cluster is the local control plane (its Service range is LOCAL_SERVICE_CIDR).
    pub fn is_local_cluster(&self) -> bool {
        self.local
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

    /// Waits for the pod's phase to be Running (its containers need not be ready: compare
    /// `common::Node::wait_running`, which waits for both).
    pub fn wait_phase_running(&self, name: &str) -> Value {
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
        // Leave nothing behind: nodelet first (so it cannot register the Node again), then the
        // test's pods (at once: their node is gone), namespace, Node and node credentials.
        self.node.kill9();
        let client = self.client.clone();
        let (ns, node) = (self.namespace.clone(), self.node.name.clone());
        self.rt.block_on(async move {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
            let _ = pods.delete_collection(&now, &ListParams::default()).await;
            let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::default()).await;
            let _ = Api::<KubeNode>::all(client).delete(&node, &DeleteParams::default()).await;
        });
        if let Some(path) = &self.node_kubeconfig {
            let _ = std::fs::remove_file(path);
        }
    }
}
