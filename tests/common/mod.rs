//! The harness of the integration tests: a real nodelet process against the real containerd,
//! with its own node name, manifest directory, log directory and port, so tests run in
//! parallel; dropping a `Node` stops nodelet and removes everything it made, even on failure.

#![allow(dead_code)]

pub mod image;
pub mod kubestream;

use nodelet::runtime::labels;
use nodelet::runtime::Cri;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUSYBOX: &str = "localhost:5000/nodelet/busybox:1";
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

pub fn nodelet_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodelet"))
}

/// The CNI plugin binary built beside nodelet (`make test` builds the workspace first).
pub fn cni_plugin_binary() -> PathBuf {
    let path = nodelet_binary().with_file_name("nodelet-cni");
    assert!(path.exists(), "{} is missing: build the workspace first (cargo build --workspace)", path.display());
    path
}

pub fn require_runtime() {
    assert!(Path::new(CONTAINERD_SOCKET).exists(), "containerd is not running at {CONTAINERD_SOCKET}: run `make setup` (integration/env/setup.sh) first");
}

/// A free TCP port on loopback for a nodelet's read-only server.
/// Never the same port twice in one test process: a port let go by one test's probe could
/// otherwise be handed to another test running beside it, and two nodelets would share it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// The node name a test's nodelet registers: its own per test, or the one a real cluster's node
/// credentials fix (make e2e NODE_NAME=...).
pub fn node_name(test: &str) -> String {
    std::env::var("NODELET_E2E_NODE_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("t-{test}-{}", std::process::id()).replace('_', "-"))
}

pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The secure port (10250 on a real node): a port of its own per test.
    pub secure_port: u16,
    /// The health endpoint (127.0.0.1:10248 on a real node): a port of its own per test.
    pub healthz_port: u16,
    pub args: Vec<String>,
    /// The CRI socket the node's nodelet talks to: its --container-runtime-endpoint, else the
    /// containerd of the env scripts.
    pub runtime_socket: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// Starts a nodelet named after the test; `args` are extra flags.
    pub fn start(test: &str, args: &[&str]) -> Node {
        Node::start_in(test, args, &std::env::temp_dir())
    }

    /// As `start`, with the node's directory (root dir, pod logs, manifests) made under `parent`,
    /// such as a small file system of the test's own.
    pub fn start_in(test: &str, args: &[&str], parent: &Path) -> Node {
        require_runtime();
        let name = node_name(test);
        let dir = tempfile::Builder::new().prefix(&format!("nodelet-{test}-")).tempdir_in(parent).unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        let endpoint = args.iter().position(|a| *a == "--container-runtime-endpoint").and_then(|i| args.get(i + 1));
        let runtime_socket = endpoint.map_or(PathBuf::from(CONTAINERD_SOCKET), |e| PathBuf::from(e.trim_start_matches("unix://")));
        let args = args.iter().map(|s| s.to_string()).collect();
        let mut node = Node { name, dir, port: free_port(), secure_port: free_port(), healthz_port: free_port(), args, runtime_socket, child: None, starts: 0 };
        node.spawn();
        node
    }

    /// Whether the test gave `flag`, as `flag value` or `flag=value`.
    fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag || a.strip_prefix(flag).is_some_and(|rest| rest.starts_with('=')))
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn pod_logs(&self) -> PathBuf {
        self.dir.path().join("pod-logs")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join(format!("nodelet-{}.log", self.starts))
    }

    pub fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_file()).unwrap();
        let child = Command::new(nodelet_binary())
            .args(["--hostname-override", &self.name])
            .args(["--pod-manifest-path", self.manifests().to_str().unwrap()])
            .args(["--read-only-port", &self.port.to_string(), "--port", &self.secure_port.to_string()])
            .args(if self.has_flag("--healthz-port") { vec![] } else { vec!["--healthz-port".to_string(), self.healthz_port.to_string()] })
            // Loopback unless the test says otherwise (a real cluster's apiserver must reach it).
            .args(if self.has_flag("--address") { vec![] } else { vec!["--address", "127.0.0.1"] })
            .args(["--root-dir", self.dir.path().join("root").to_str().unwrap()])
            .args(["--pod-logs-dir", self.pod_logs().to_str().unwrap()])
            .args(["--cni-plugin", cni_plugin_binary().to_str().unwrap()])
            // Tests share the host: only a test that names its own proxy table runs the proxy.
            .args(if self.has_flag("--proxy-table") { vec![] } else { vec!["--disable-proxy"] })
            // The host's disk (shared with other tests, nodes and whatever else runs there) must
            // not decide a test: its fill level would evict pods and remove images of the shared
            // containerd. A test of disk pressure gives its own thresholds on a disk of its own.
            .args(if self.has_flag("--eviction-hard") { vec![] } else { vec!["--eviction-hard=memory.available<100Mi"] })
            .args(if self.has_flag("--image-gc-high-threshold") { vec![] } else { vec!["--image-gc-high-threshold=100"] })
            .args(&self.args)
            .env("RUST_LOG", "info,nodelet=debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting nodelet");
        self.child = Some(child);
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(self.is_running(), "nodelet exited at start:\n{}", self.log());
            assert!(Instant::now() < deadline, "nodelet did not open its read-only port:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would; the pods stay with the runtime.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running nodelet's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("nodelet is not running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log(&self) -> String {
        (1..=self.starts).map(|i| std::fs::read_to_string(self.dir.path().join(format!("nodelet-{i}.log"))).unwrap_or_default()).collect()
    }

    pub fn write_manifest(&self, file: &str, text: &str) {
        // Write then rename, as a careful operator (or config management) does.
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    pub fn pod_name(&self, name: &str) -> String {
        format!("{name}-{}", self.name)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    pub fn pods(&self) -> Value {
        let (code, body) = self.get("/pods");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The pod named `name` (without the node suffix) from /pods.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let full = self.pod_name(name);
        self.pods()["items"].as_array().unwrap().iter().find(|p| p["metadata"]["name"] == full.as_str()).cloned()
    }

    /// Polls /pods until `check` returns Some, or fails with the last pod seen and nodelet's log.
    pub fn wait_pod<T>(&self, name: &str, what: &str, timeout: Duration, mut check: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Some(pod) = self.pod(name) {
                if let Some(found) = check(&pod) {
                    return found;
                }
                last = pod;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what} of pod {name}; last seen:\n{last:#}\nnodelet log:\n{}", self.log());
    }

    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "phase Running", Duration::from_secs(60), |p| {
            let running =
                p["status"]["phase"] == "Running" && p["status"]["containerStatuses"].as_array().is_some_and(|cs| cs.iter().all(|c| c["ready"] == true));
            running.then(|| p.clone())
        })
    }

    pub fn wait_phase(&self, name: &str, phase: &str) -> Value {
        self.wait_pod(name, &format!("phase {phase}"), Duration::from_secs(60), |p| (p["status"]["phase"] == phase).then(|| p.clone()))
    }

    pub fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pod(name).is_some() {
            assert!(Instant::now() < deadline, "pod {name} still present after {timeout:?}; nodelet log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the runtime holds for this node: (sandbox ids, container ids).
    pub fn runtime_objects(&self) -> (Vec<String>, Vec<String>) {
        let name = self.name.clone();
        on_runtime_at(&self.runtime_socket, move |cri| async move {
            let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), name)]);
            let sandboxes = cri.list_sandboxes(selector.clone()).await.unwrap().into_iter().map(|s| s.id).collect();
            let containers = cri.list_containers(selector).await.unwrap().into_iter().map(|c| c.id).collect();
            (sandboxes, containers)
        })
    }
}

/// Stops and removes every sandbox nodelet made for node `node` on the runtime at `socket`
/// (with their pod cgroups): what a test's node leaves when it is stopped, even on failure.
pub fn remove_sandboxes_of(socket: &Path, node: &str) {
    let name = node.to_string();
    on_runtime_at(socket, move |cri| async move {
        let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), name.clone())]);
        // A runtime busy with parallel tests can time a call out: each step is tried again
        // before the test gives up on it (and says so).
        for attempt in 1..=3 {
            let sandboxes = match cri.list_sandboxes(selector.clone()).await {
                Ok(sandboxes) if sandboxes.is_empty() => return,
                Ok(sandboxes) => sandboxes,
                Err(e) if attempt == 3 => return eprintln!("node {name}: listing its sandboxes to remove them: {e}"),
                Err(_) => continue,
            };
            for sandbox in sandboxes {
                let _ = cri.stop_sandbox(&sandbox.id).await;
                match cri.remove_sandbox(&sandbox.id).await {
                    Ok(()) => {
                        if let Some(uid) = sandbox.labels.get(labels::POD_UID) {
                            remove_pod_cgroup(uid);
                        }
                    }
                    Err(e) if attempt == 3 => eprintln!("node {name}: removing sandbox {}: {e}", sandbox.id),
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if let Some(i) = self.args.iter().position(|a| a == "--proxy-table") {
            let table = self.args[i + 1].clone();
            for family in ["ip", "ip6"] {
                let _ = Command::new("nft").args(["delete", "table", family, &table]).stderr(Stdio::null()).status();
            }
        }
        remove_sandboxes_of(&self.runtime_socket, &self.name);
        // Logs and volumes of the test's pods live under its directory, removed with it, once
        // what nodelet mounted there (tmpfs volumes, subPath binds) is unmounted.
        if let Err(e) = nodelet::volumes::mounts::unmount_under(self.dir.path()) {
            eprintln!("unmounting under {}: {e}", self.dir.path().display());
        }
    }
}

/// The host's cgroups as test nodes lay them out: the cgroupfs driver under the root "/".
pub fn host_cgroups() -> nodelet::cgroups::fs::Cgroupfs {
    let mount = PathBuf::from(nodelet::cgroups::MOUNT);
    let version = nodelet::cgroups::detect_version(&mount);
    nodelet::cgroups::fs::Cgroupfs { mount, version, layout: nodelet::cgroups::Layout::new(nodelet::cgroups::Driver::Cgroupfs, "/") }
}

/// Removes pod `uid`'s (empty) cgroup, whatever its QoS level.
pub fn remove_pod_cgroup(uid: &str) {
    let cgroups = host_cgroups();
    for qos in nodelet::cgroups::Qos::ALL {
        let _ = cgroups.remove(&cgroups.layout.pod(qos, uid));
    }
}

/// The directory of pod `uid`'s cgroup in `controller`'s hierarchy (cgroup v1), whatever its QoS
/// level; None when it has none.
pub fn pod_cgroup_dir(controller: &str, uid: &str) -> Option<PathBuf> {
    let cgroups = host_cgroups();
    nodelet::cgroups::Qos::ALL
        .iter()
        .map(|qos| cgroups.mount.join(controller).join(cgroups.layout.path(&cgroups.layout.pod(*qos, uid)).trim_start_matches('/')))
        .find(|dir| dir.is_dir())
}

/// Runs CRI calls on a runtime of their own: usable from tests and from Drop alike.
pub fn on_runtime<F, Fut, T>(f: F) -> T
where
    F: FnOnce(Cri) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    on_runtime_at(Path::new(CONTAINERD_SOCKET), f)
}

/// As `on_runtime`, with the CRI at `socket` (a test's own containerd).
pub fn on_runtime_at<F, Fut, T>(socket: &Path, f: F) -> T
where
    F: FnOnce(Cri) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move { f(Cri::new(&socket)).await })
    })
    .join()
    .expect("runtime thread panicked")
}

/// A name part no other test or run has: the process ID and the time, shaped as a UUID.
pub fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// A minimal HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path)
}

pub fn http_request(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `f` is true or fails with `what`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pod manifest with one busybox container running `script` under sh.
pub fn busybox_pod(name: &str, restart: &str, grace: u32, script: &str) -> String {
    busybox_pod_with(name, script, &format!("  restartPolicy: {restart}\n  terminationGracePeriodSeconds: {grace}\n"), "")
}

/// The one pod builder of the tests: a busybox container `main` running `script` under sh, with
/// `pod_extra` added to the pod's spec (YAML two spaces in) and `container_extra` to the
/// container (four spaces in).
pub fn busybox_pod_with(name: &str, script: &str, pod_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{pod_extra}  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sh, -c, {script:?}]\n{container_extra}"
    )
}
