//! Pod start-up figures for `make bench`, printed as `bench: <name> <value> <unit>` lines:
//! - static pods: time from writing a manifest to its container running (observed through
//!   CRI), one pod and 20 written at once, and nodelet's memory at idle and with 20 pods;
//! - pods through the API (the local control plane, integration/cluster/up.sh): the Kubernetes SLO's start-up
//!   latency, pod created to all its containers started as a watch shows it, one pod and 30
//!   created at once, and nodelet's memory with 30 pods;
//! - kubectl through the local kube-apiserver: `kubectl exec POD -- true` latency (p50 of 20),
//!   `kubectl logs -f` throughput on a container writing as fast as it can, and nodelet's
//!   memory with 20 `kubectl logs -f` streams open.
//!
//! - the agent's footprint: nodelet with its Service proxy, 30 pods and 1,000 Services.
//! - runtime load: CRI calls per second nodelet makes with 30 idle static pods (from its
//!   `/metrics`), the figure the shared relist keeps low.
//!
//! Arguments name the parts to run (`static`, `api`, `agent`, `kubectl`, `idle`); none runs them all.
//! `NODELET_BIN` runs another nodelet binary (to compare with an older build).

mod agent;
mod api;
mod idle;
mod kubectl;

use nodelet::runtime::labels;
use nodelet::runtime::Cri;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const IMAGE: &str = "localhost:5000/nodelet/busybox:1";
pub const SOCKET: &str = "/run/containerd/containerd.sock";
const SINGLE_RUNS: usize = 7;
const BATCH: usize = 20;

/// A process this benchmark started, ended by its PID when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a process with its output in `log`.
pub fn spawn(cmd: &mut Command, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting a process (build with cargo build --release first)"),
    )
}

struct Nodelet {
    process: Process,
    name: String,
    dir: tempfile::TempDir,
}

pub fn binary(name: &str) -> PathBuf {
    match std::env::var_os("NODELET_BIN") {
        Some(path) if name == "nodelet" => PathBuf::from(path),
        _ => std::env::current_exe().unwrap().with_file_name(name),
    }
}

/// Flags every benched nodelet gets: the host disk's fill level (shared with whatever else runs
/// there) must not evict the benched pods or remove images of the shared containerd mid-run.
pub const HOST_DISK_INDEPENDENT: [&str; 2] = ["--eviction-hard=memory.available<100Mi", "--image-gc-high-threshold=100"];

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: {IMAGE}\n    command: [sleep, '3600']\n"
    )
}

pub fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS")
}

/// A memory figure of /proc/<pid>/status (VmRSS, RssAnon, RssFile), in MB.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{field}:");
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    kb / 1024.0
}

/// Resident memory by where it lives (the binary's own pages, shared libraries, heap, thread
/// stacks and other anonymous maps), from /proc/<pid>/smaps, in MB, largest first.
pub fn rss_by_mapping(pid: u32) -> Vec<(String, f64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let mut sums: HashMap<String, f64> = HashMap::new();
    let mut place = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            let (perms, path) = (fields.get(1).copied().unwrap_or(""), fields.get(5).copied().unwrap_or(""));
            place = match path {
                p if p == exe => format!("binary {perms}"),
                "" => "anonymous".into(),
                "[heap]" | "[stack]" => path.into(),
                p if p.starts_with('[') => "kernel".into(),
                _ => "libraries".into(),
            };
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            *sums.entry(place.clone()).or_default() += kb.trim().trim_end_matches(" kB").trim().parse::<f64>().unwrap_or(0.0) / 1024.0;
        }
    }
    let mut out: Vec<(String, f64)> = sums.into_iter().filter(|(_, mb)| *mb >= 0.05).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Names of the pods (without the node suffix) whose container runs now.
async fn running_pods(cri: &Cri, node: &str) -> HashSet<String> {
    let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node.to_string())]);
    let running = k8s_cri::v1::ContainerState::ContainerRunning as i32;
    cri.list_containers(selector)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.state == running)
        .filter_map(|c| c.labels.get(labels::POD_NAME).map(|n| n.trim_end_matches(&format!("-{node}")).to_string()))
        .collect()
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start_nodelet() -> Nodelet {
    start_nodelet_serving(0)
}

/// A standalone nodelet; `read_only_port` 0 serves no read-only port.
fn start_nodelet_serving(read_only_port: u16) -> Nodelet {
    let dir = tempfile::Builder::new().prefix("nodelet-bench-").tempdir().unwrap();
    let name = format!("bench-{}", std::process::id());
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    let process = spawn(
        Command::new(binary("nodelet"))
            .args(["--hostname-override", &name, "--read-only-port", &read_only_port.to_string(), "--healthz-port", "0"])
            // A port of its own, so a nodelet already serving 10250 on this machine does not stop it.
            .args(["--port", &idle::free_port().to_string()])
            .args(["--pod-manifest-path", dir.path().join("manifests").to_str().unwrap()])
            .args(["--root-dir", dir.path().join("root").to_str().unwrap()])
            .args(["--pod-logs-dir", dir.path().join("logs").to_str().unwrap()])
            .args(HOST_DISK_INDEPENDENT)
            .env("RUST_LOG", "warn"),
        &dir.path().join("nodelet.log"),
    );
    Nodelet { process, name, dir }
}

async fn write_and_time(cri: &Cri, node: &Nodelet, names: &[String]) -> Vec<Duration> {
    let manifests = node.dir.path().join("manifests");
    let start = Instant::now();
    for name in names {
        std::fs::write(manifests.join(format!("{name}.yaml")), manifest(name)).unwrap();
    }
    let mut started: HashMap<String, Duration> = HashMap::new();
    wait_until("pods to run", Duration::from_secs(120), async || {
        for pod in running_pods(cri, &node.name).await {
            started.entry(pod).or_insert_with(|| start.elapsed());
        }
        names.iter().all(|n| started.contains_key(n))
    })
    .await;
    let mut times: Vec<Duration> = names.iter().map(|n| started[n]).collect();
    times.sort();
    times
}

async fn remove_all(cri: &Cri, node: &Nodelet, names: &[String]) {
    for name in names {
        let _ = std::fs::remove_file(node.dir.path().join("manifests").join(format!("{name}.yaml")));
    }
    let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node.name.clone())]);
    wait_until("pods to be removed", Duration::from_secs(120), async || cri.list_sandboxes(selector.clone()).await.map(|s| s.is_empty()).unwrap_or(false))
        .await;
}

pub fn print(name: &str, value: f64, unit: &str) {
    println!("bench: {name} {value:.3} {unit}");
}

#[tokio::main]
async fn main() {
    assert!(Path::new(SOCKET).exists(), "containerd is not running: run `make setup` first");
    let cri = Cri::new(Path::new(SOCKET));
    cri.pull_image(IMAGE, None, None).await.expect("pulling the busybox image (make setup pushes it)");
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("static") {
        static_pods(&cri).await;
    }
    if wanted("api") {
        api::run(&cri).await;
    }
    if wanted("agent") {
        agent::run(&cri).await;
    }
    if wanted("kubectl") {
        kubectl::run(&cri).await;
    }
    if wanted("idle") {
        idle::run(&cri).await;
    }
}

async fn static_pods(cri: &Cri) {
    let cri = cri.clone();
    let node = start_nodelet();
    // Let nodelet pull the sandbox image and settle before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    print("static_pod_rss_idle", rss_mb(node.process.0.id()), "MB");

    let mut singles = Vec::new();
    for i in 0..SINGLE_RUNS {
        let names = vec![format!("single{i}")];
        singles.extend(write_and_time(&cri, &node, &names).await);
        remove_all(&cri, &node, &names).await;
    }
    singles.sort();
    print("static_pod_start_1_p50", percentile(&singles, 50.0).as_secs_f64(), "s");
    print("static_pod_start_1_p99", percentile(&singles, 99.0).as_secs_f64(), "s");

    let names: Vec<String> = (0..BATCH).map(|i| format!("batch{i}")).collect();
    let times = write_and_time(&cri, &node, &names).await;
    print("static_pod_start_20_p50", percentile(&times, 50.0).as_secs_f64(), "s");
    print("static_pod_start_20_p99", percentile(&times, 99.0).as_secs_f64(), "s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    print("static_pod_rss_20_pods", rss_mb(node.process.0.id()), "MB");
    remove_all(&cri, &node, &names).await;
}
