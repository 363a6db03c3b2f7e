//! The real `kubeadm join` (../shared/kube's kubeadm) with nodelet as the worker's kubelet, on a
//! control plane of the test's own prepared with kubeadm's `init phase` commands. kubeadm writes
//! where it always does (/etc/kubernetes, /var/lib/kubelet): in a private mount namespace those
//! are folders of the test's own, so the host's are untouched. The test plays systemd: it starts
//! nodelet as kubelet.service with kubeadm's drop-in (packaging/systemd/09-nodelet-kubeadm.conf)
//! would, and starts it again when it exits.

mod common;
mod e2e_support;

use common::{eventually, free_port, node_name, BUSYBOX};
use e2e_support::ControlPlane;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The worker's kubeadm folders, private to a mount namespace held by a sleeping process.
struct WorkerFiles {
    /// Holds etc-kubernetes/, var-lib-kubelet/ and nodelet's root and logs; a shared mount, so
    /// the volumes nodelet mounts under it from inside the namespace are seen by containerd.
    root: tempfile::TempDir,
    holder: Child,
    /// Mount points this test made on the host (removed again, empty, at the end).
    made: Vec<PathBuf>,
}

const WORKER_DIRS: [(&str, &str); 2] = [("etc-kubernetes", "/etc/kubernetes"), ("var-lib-kubelet", "/var/lib/kubelet")];

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl WorkerFiles {
    fn new() -> WorkerFiles {
        let root = tempfile::Builder::new().prefix("nodelet-kubeadm-").tempdir().unwrap();
        for (dir, _) in WORKER_DIRS {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        // as the kubelet package makes it
        std::fs::create_dir_all(root.path().join("etc-kubernetes/manifests")).unwrap();
        let mut made = Vec::new();
        for (_, at) in WORKER_DIRS {
            if !Path::new(at).exists() {
                std::fs::create_dir_all(at).unwrap();
                made.push(PathBuf::from(at));
            }
        }
        let r = root.path().to_str().unwrap();
        run(Command::new("mount").args(["--bind", r, r]));
        run(Command::new("mount").args(["--make-shared", r]));
        let binds: Vec<String> = WORKER_DIRS.iter().map(|(dir, at)| format!("mount --bind {r}/{dir} {at}")).collect();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--", "sh", "-c"])
            .arg(format!("{} && echo ready && exec sleep 100000", binds.join(" && ")))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the worker's mount namespace");
        WorkerFiles { root, holder, made }
    }

    /// A command run inside the worker's mount namespace.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id())).arg("--").arg(program);
        cmd
    }

    /// A path as the worker sees it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.holder.id()))
    }
}

impl Drop for WorkerFiles {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if let Err(e) = nodelet::volumes::mounts::unmount_under(self.root.path()) {
            eprintln!("unmounting under {}: {e}", self.root.path().display());
        }
        let _ = Command::new("umount").arg(self.root.path()).status();
        for at in &self.made {
            let _ = std::fs::remove_dir(at);
        }
    }
}

/// The command systemd runs for kubelet.service with the drop-in: its last ExecStart, with
/// `$VAR`s from its Environment= lines and EnvironmentFile= files (read as the worker sees
/// them), split into words as systemd splits an unquoted `$VAR`.
fn unit_command(drop_in: &str, read: impl Fn(&str) -> Option<String>, environment: &[(&str, &str)]) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut assign = |line: &str| {
        if let Some((k, v)) = line.trim().split_once('=') {
            env.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    };
    let mut exec = String::new();
    for line in drop_in.lines() {
        if let Some(value) = line.strip_prefix("Environment=") {
            assign(value.trim_matches('"'));
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            let text = read(file.trim_start_matches('-'));
            assert!(text.is_some() || file.starts_with('-'), "{file} is required");
            text.unwrap_or_default().lines().filter(|l| !l.trim_start().starts_with('#')).for_each(&mut assign);
        } else if let Some(command) = line.strip_prefix("ExecStart=") {
            exec = command.to_string();
        }
    }
    for (k, v) in environment {
        env.insert(k.to_string(), v.to_string());
    }
    exec.split_whitespace()
        .flat_map(|word| match word.strip_prefix('$') {
            Some(name) => env.get(name).map(|v| v.split_whitespace().map(str::to_string).collect()).unwrap_or_default(),
            None => vec![word.to_string()],
        })
        .collect()
}

/// systemd's part: kubelet.service started once kubeadm wrote its files, and started again
/// (Restart=always) whenever it exits, until dropped.
struct KubeletUnit {
    running: Arc<Mutex<Option<Child>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    starts: Arc<std::sync::atomic::AtomicU32>,
    log_dir: PathBuf,
}

impl KubeletUnit {
    fn start(worker: &WorkerFiles, kubelet: PathBuf, extra_args: String) -> KubeletUnit {
        let drop_in = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/09-nodelet-kubeadm.conf")).unwrap();
        let unit = KubeletUnit { running: Arc::default(), stop: Arc::default(), starts: Arc::default(), log_dir: worker.root.path().join("unit-logs") };
        std::fs::create_dir_all(&unit.log_dir).unwrap();
        let (running, stop, starts, log_dir) = (unit.running.clone(), unit.stop.clone(), unit.starts.clone(), unit.log_dir.clone());
        let holder = worker.holder.id();
        let worker_path = move |inside: &str| PathBuf::from(format!("/proc/{holder}/root{inside}"));
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            while !stop.load(Ordering::SeqCst) {
                // Until `kubeadm join` wrote its files, the kubelet has nothing to run with.
                if !worker_path("/var/lib/kubelet/config.yaml").exists() {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let args = unit_command(&drop_in, |file| std::fs::read_to_string(worker_path(file)).ok(), &[("KUBELET_EXTRA_ARGS", &extra_args)]);
                let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
                let log = std::fs::File::create(log_dir.join(format!("kubelet-{n}.log"))).unwrap();
                let child = Command::new("nsenter")
                    .arg(format!("--mount=/proc/{holder}/ns/mnt"))
                    .arg("--")
                    .arg(&kubelet)
                    .args(&args[1..])
                    .env("RUST_LOG", "info")
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                *running.lock().unwrap() = Some(child);
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut guard = running.lock().unwrap();
                    let exited = guard.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
                    if exited || stop.load(Ordering::SeqCst) {
                        *guard = None;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_secs(1)); // RestartSec, shortened
            }
        });
        unit
    }

    fn kill(&self) {
        if let Some(child) = self.running.lock().unwrap().as_mut() {
            let _ = child.kill();
        }
    }

    fn starts(&self) -> u32 {
        self.starts.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn log(&self) -> String {
        (1..=self.starts()).map(|n| std::fs::read_to_string(self.log_dir.join(format!("kubelet-{n}.log"))).unwrap_or_default()).collect()
    }
}

impl Drop for KubeletUnit {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        loop {
            let mut guard = self.running.lock().unwrap();
            match guard.as_mut() {
                Some(child) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    *guard = None;
                }
                None => break,
            }
        }
    }
}

#[test]
fn kubeadm_join_makes_nodelet_the_worker_s_kubelet() {
    common::require_runtime();
    let plane = ControlPlane::private("kubeadm-join");
    let (port, read_only_port, healthz_port) = (free_port(), free_port(), free_port());
    // What every kubelet that joins gets (kubeadm's defaults around it): ports of the test's own,
    // cgroupfs (these machines have no systemd), thresholds that the shared host disk cannot trip.
    let files = tempfile::tempdir().unwrap();
    let kubelet_config = files.path().join("kubelet-config.yaml");
    std::fs::write(
        &kubelet_config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\nfailCgroupV1: false\n\
             address: 127.0.0.1\nport: {port}\nreadOnlyPort: {read_only_port}\nhealthzPort: {healthz_port}\n\
             evictionHard: {{memory.available: 100Mi}}\nimageGCHighThresholdPercent: 100\n"
        ),
    )
    .unwrap();
    let join = plane.prepare_for_kubeadm(Some(&kubelet_config));
    let worker = WorkerFiles::new();
    let node = node_name("kubeadm-join");

    // `kubelet` on the PATH is nodelet (kubeadm's preflight asks it for its version).
    let bin = worker.root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(common::nodelet_binary(), bin.join("kubelet")).unwrap();
    let root = worker.root.path();
    let extra_args = format!(
        "--root-dir={} --pod-logs-dir={} --node-ip=127.0.0.1 --disable-proxy --cni-plugin={}",
        root.join("nodelet").display(),
        root.join("pod-logs").display(),
        common::cni_plugin_binary().display()
    );
    let cleanup = Cleanup { unit: Some(KubeletUnit::start(&worker, bin.join("kubelet"), extra_args)), node: node.clone(), admin: plane.admin_kubeconfig() };
    let unit = cleanup.unit.as_ref().unwrap();

    let kubeadm = PathBuf::from("/var/lib/nodelet-kube-bin/kubeadm");
    let started = Instant::now();
    let out = worker
        .command(&kubeadm)
        .args(["join", &join.endpoint, "--token", &join.token, "--discovery-token-ca-cert-hash", &join.ca_hash, "--node-name", &node])
        // no systemd (Service-Kubelet), a node name no resolver knows (Hostname), ip_forward
        // left to the CNI plugin, 10250 possibly taken by another node on this host
        .args(["--ignore-preflight-errors=Service-Kubelet,Hostname,FileContent--proc-sys-net-ipv4-ip_forward,Port-10250"])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubeadm join failed after {took:?}:\n{text}\nnodelet:\n{}", unit.log());
    assert!(text.contains("This node has joined the cluster"), "{text}");
    assert!(!text.contains("[WARNING KubeletVersion]"), "kubeadm reads nodelet's version:\n{text}");
    println!("kubeadm join took {:.1} s:\n{text}", took.as_secs_f64());

    // kubeadm's files, the kubeconfig nodelet wrote after its bootstrap (kubeadm removed the
    // bootstrap one), and a certificate the cluster issued.
    assert!(worker.path("/var/lib/kubelet/config.yaml").exists());
    assert!(worker.path("/etc/kubernetes/kubelet.conf").exists());
    assert!(!worker.path("/etc/kubernetes/bootstrap-kubelet.conf").exists());
    assert!(!Path::new("/etc/kubernetes/kubelet.conf").exists(), "the host's /etc/kubernetes is untouched");
    let cert = root.join("nodelet/pki/kubelet-client-current.pem");
    let verified = Command::new("openssl").args(["verify", "-CAfile"]).arg(plane.ca_file()).arg(&cert).output().unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
    let pem = std::fs::read(&cert).unwrap();
    let leaf = nodelet::credentials::certificate::Pair::from_pem(&pem, &pem).unwrap().leaf;
    assert_eq!(leaf.common_name, format!("system:node:{node}"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(plane.admin_kubeconfig()).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap()).unwrap()
    });
    let nodes: Api<Node> = Api::all(admin.clone());
    let ready = |rt: &tokio::runtime::Runtime| {
        rt.block_on(nodes.get_opt(&node))
            .ok()
            .flatten()
            .and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True")
    };
    eventually("the node Ready", Duration::from_secs(60), || ready(&rt));
    let info = rt.block_on(nodes.get(&node)).unwrap().status.unwrap().node_info.unwrap();
    assert!(info.kubelet_version.starts_with("v1.35."), "{}", info.kubelet_version);

    // A pod the scheduler places on it runs.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("on-{node}")},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]},
    }))
    .unwrap();
    rt.block_on(pods.create(&PostParams::default(), &pod)).unwrap();
    let pod_name = pod.metadata.name.clone().unwrap();
    let container_id = |rt: &tokio::runtime::Runtime| {
        let pod = rt.block_on(pods.get(&pod_name)).ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Running")).then(|| status.container_statuses?.first()?.container_id.clone()).flatten()
    };
    let mut first = None;
    eventually("the pod Running on the node", Duration::from_secs(60), || {
        first = container_id(&rt);
        first.is_some()
    });

    // systemd restarts the kubelet (an upgrade, a crash): kubeadm's flags still name the removed
    // bootstrap file; nodelet starts with its own kubeconfig and adopts the pod.
    unit.kill();
    eventually("the unit started again", Duration::from_secs(20), || unit.starts() >= 2);
    eventually("the node Ready after the restart", Duration::from_secs(60), || unit.log().matches("registered the node").count() >= 2 && ready(&rt));
    assert_eq!(container_id(&rt), first, "the running container is adopted, not made again");
    rt.block_on(pods.delete(&pod_name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })).unwrap();
}

/// What the test leaves, removed even when it fails: nodelet stopped (the unit), the node's
/// sandboxes, its Node. Dropped before the worker's folders are unmounted.
struct Cleanup {
    unit: Option<KubeletUnit>,
    node: String,
    admin: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(self.unit.take());
        common::remove_sandboxes_of(Path::new(common::CONTAINERD_SOCKET), &self.node);
        let _ = Command::new(e2e_support::kubectl::kubectl_binary())
            .args(["--kubeconfig", self.admin.to_str().unwrap(), "delete", "node", &self.node, "--wait=false"])
            .output();
    }
}

#[test]
fn the_unit_command_is_the_drop_in_s_exec_start_with_its_variables() {
    let drop_in = "[Service]\nEnvironment=\"A=--a=1 --b\"\nEnvironmentFile=-/f\nEnvironmentFile=-/missing\nExecStart=\nExecStart=/usr/bin/kubelet $A $B $C\n";
    let files = |f: &str| (f == "/f").then(|| "B=\"--c=2\"\n# comment\n".to_string());
    assert_eq!(unit_command(drop_in, files, &[("C", "--d")]), ["/usr/bin/kubelet", "--a=1", "--b", "--c=2", "--d"]);
}
