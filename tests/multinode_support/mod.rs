//! A multi-node cluster on this machine for a test: integration/cluster/nodes-up.sh with a
//! control plane of the test's own (kube-apiserver on the nodes' bridge address, free ports) and
//! names of its own (NODES_PREFIX, a /24 of its own), so tests run beside each other and beside
//! other people's; dropped, nodes-down.sh removes every namespace, process, mount, table and
//! directory it made, and the control plane.

#![allow(dead_code)]

use super::common::{eventually, free_port, nodelet_binary};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct Cluster {
    /// The names of everything made: namespaces <prefix>-n<i>, the node names <prefix>-node<i>.
    pub prefix: String,
    /// The nodes' /24, as its first three octets.
    pub net: String,
    pub nodes: usize,
    plane_dir: PathBuf,
    env: Vec<(&'static str, String)>,
    down: bool,
}

/// The settings of a test's cluster.
pub struct Settings<'a> {
    pub nodes: usize,
    /// More nodelet flags for every node.
    pub nodelet_args: &'a [&'a str],
    /// kube-controller-manager's --node-monitor-grace-period.
    pub node_monitor_grace_period: Option<&'a str>,
    /// Whether nodes-up.sh waits until the nodes are Ready.
    pub wait_ready: bool,
}

impl Default for Settings<'_> {
    fn default() -> Self {
        Settings { nodes: 3, nodelet_args: &[], node_monitor_grace_period: None, wait_ready: true }
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/cluster").join(name)
}

impl Cluster {
    /// Starts the cluster; `k` (0-9) keeps a test binary's clusters apart.
    pub fn start(k: u8, settings: Settings) -> Cluster {
        let pid = std::process::id();
        let prefix = format!("nm{}{k}", pid % 100_000);
        let net = format!("10.254.{}", 20 + (pid % 100) * 2 + u32::from(k % 2));
        let plane_dir = std::env::temp_dir().join(format!("nodelet-multinode-{prefix}"));
        // The shared disk must not decide a test (see tests/common): thresholds of their own.
        let mut args = vec!["--eviction-hard=memory.available<100Mi", "--image-gc-high-threshold=100"];
        args.extend_from_slice(settings.nodelet_args);
        let mut env: Vec<(&'static str, String)> = vec![
            ("NODES", settings.nodes.to_string()),
            ("NODES_PREFIX", prefix.clone()),
            ("NODES_NET", net.clone()),
            ("NODELET", nodelet_binary().display().to_string()),
            ("NODELET_ARGS", args.join(" ")),
            ("CLUSTER_DIR", plane_dir.display().to_string()),
            ("NODES_WAIT_READY", if settings.wait_ready { "yes" } else { "no" }.to_string()),
            ("RUST_LOG", "info,nodelet=debug".to_string()),
        ];
        for port in ["APISERVER_PORT", "ETCD_PORT", "ETCD_PEER_PORT", "CONTROLLER_MANAGER_PORT", "SCHEDULER_PORT"] {
            env.push((port, free_port().to_string()));
        }
        if let Some(grace) = settings.node_monitor_grace_period {
            env.push(("NODE_MONITOR_GRACE_PERIOD", grace.to_string()));
        }
        let mut cluster = Cluster { prefix, net, nodes: settings.nodes, plane_dir, env, down: false };
        // Dropped on failure: what the script made so far is removed.
        let out = cluster.run("nodes-up.sh", &[]);
        if !out.status.success() {
            let logs: String = (1..=cluster.nodes).map(|i| format!("--- node {i} nodelet log (tail) ---\n{}\n", cluster.log_tail(i, 40))).collect();
            cluster.remove();
            panic!("nodes-up.sh failed ({}):\n{}{}\n{logs}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        // Pods are refused until the controller-manager made the default ServiceAccount.
        wait_for("the default ServiceAccount", Duration::from_secs(30), || cluster.kubectl(&["get", "serviceaccount", "default"]).status.success());
        cluster
    }

    fn run(&self, name: &str, extra: &[(&str, &str)]) -> Output {
        Command::new("bash")
            .arg(script(name))
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NODES_KEEP_LOGS", "no")
            .envs(extra.iter().copied())
            .output()
            .expect("running bash")
    }

    fn run_ok(&self, name: &str, extra: &[(&str, &str)]) {
        let out = self.run(name, extra);
        assert!(
            out.status.success(),
            "{name} {extra:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.plane_dir.join("admin.kubeconfig")
    }

    pub fn node_name(&self, i: usize) -> String {
        format!("{}-node{i}", self.prefix)
    }

    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("{}.{}", self.net, 10 + i)
    }

    /// The node's state directory (containerd's root, nodelet's, its CNI directories).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/var/lib/nodelet-nodes/{}/n{i}", self.prefix))
    }

    pub fn runtime_socket(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/run/nodelet-nodes/{}/n{i}/containerd.sock", self.prefix))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(format!("/var/log/nodelet-env/nodes-{}-n{i}-nodelet.log", self.prefix)).unwrap_or_default()
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let log = self.log(i);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `ip -n <node i's namespace> args...`, its output.
    pub fn ip(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("ip").arg("-n").arg(self.node_ns(i)).args(args).output().unwrap();
        assert!(out.status.success(), "ip -n {} {args:?}: {}", self.node_ns(i), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// nodelet's routes in node i's namespace, as `<dst> via <gateway>` lines, sorted.
    pub fn node_routes(&self, i: usize) -> Vec<String> {
        let mut routes: Vec<String> = self
            .ip(i, &["-4", "route", "show", "proto", "110"])
            .lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect();
        routes.sort();
        routes
    }

    /// kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(super::e2e_support::kubectl::kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, manifest: &Value) {
        let out = Command::new(super::e2e_support::kubectl::kubectl_binary())
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(manifest.to_string().as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// An object as JSON (None when it does not exist).
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn pods(&self, selector: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"]);
        serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().cloned().unwrap_or_default()
    }

    /// Node i's Ready condition status ("True", "False", "Unknown").
    pub fn ready(&self, i: usize) -> String {
        let node = self.get("node", &self.node_name(i)).unwrap_or_default();
        let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.iter().find(|c| c["type"] == "Ready").map(|c| c["status"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
    }

    /// Waits for a pod to be Running with its containers ready; returns it.
    pub fn wait_running(&self, pod: &str) -> Value {
        let mut last = Value::Null;
        let found = eventually_value(&format!("pod {pod} Running"), Duration::from_secs(90), || {
            last = self.get("pod", pod).unwrap_or_default();
            let ready = last["status"]["containerStatuses"].as_array().is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true));
            (last["status"]["phase"] == "Running" && ready).then(|| last.clone())
        });
        found.unwrap_or_else(|| panic!("pod {pod} not Running in 90 s; last seen {last:#}\n{}", self.logs()))
    }

    /// The tails of every node's nodelet log, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.nodes).map(|i| format!("--- node {i} nodelet log (tail) ---\n{}\n", self.log_tail(i, 30))).collect()
    }

    /// Stops node i's nodelet (SIGTERM, as a crash of the agent alone): containerd and the
    /// pods go on.
    pub fn stop_nodelet(&self, i: usize) {
        self.run_ok("nodes-down.sh", &[("NODE_ONLY", &i.to_string()), ("STOP", "nodelet")]);
    }

    /// Removes node i entirely (its pods, processes, namespace and Node object).
    pub fn remove_node(&self, i: usize) {
        self.run_ok("nodes-down.sh", &[("NODE_ONLY", &i.to_string()), ("STOP", "node")]);
    }

    /// Starts node i's nodelet again (and whatever else of it is missing); waits until Ready.
    pub fn start_node(&self, i: usize) {
        self.run_ok("nodes-up.sh", &[("NODE_ONLY", &i.to_string()), ("NODES_CONTROL_PLANE", "keep")]);
    }

    /// Removes it all (nodes-down.sh); returns what is left of it: namespaces, the host's veth,
    /// the guard table, directories (empty when all went).
    pub fn remove(&mut self) -> Vec<String> {
        self.down = true;
        let out = self.run("nodes-down.sh", &[]);
        if !out.status.success() {
            eprintln!("nodes-down.sh failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        let mut left = Vec::new();
        let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&netns.stdout).lines() {
            if line.starts_with(&format!("{}-", self.prefix)) {
                left.push(format!("netns {line}"));
            }
        }
        if Command::new("ip").args(["link", "show", &format!("{}-h0", self.prefix)]).output().unwrap().status.success() {
            left.push(format!("link {}-h0", self.prefix));
        }
        if Command::new("nft").args(["list", "table", "inet", &format!("{}-guard", self.prefix)]).output().unwrap().status.success() {
            left.push(format!("nft table inet {}-guard", self.prefix));
        }
        for dir in [format!("/var/lib/nodelet-nodes/{}", self.prefix), format!("/run/nodelet-nodes/{}", self.prefix), self.plane_dir.display().to_string()] {
            if Path::new(&dir).exists() {
                left.push(dir);
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        left.extend(mounts.lines().filter(|l| l.contains(&format!("nodelet-nodes/{}/", self.prefix))).map(|l| format!("mount {l}")));
        left
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.down {
            let left = self.remove();
            if !left.is_empty() {
                eprintln!("left after nodes-down.sh: {left:?}");
            }
        }
    }
}

/// Polls `f` until it gives a value or `timeout` passes.
pub fn eventually_value<T>(_what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Asserts `f` becomes true within `timeout` (the common helper, re-exported for the tests).
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    eventually(what, timeout, f);
}
