//! nodelet where operators run it: a Debian 12 guest under QEMU (systemd as PID 1, cgroup v2,
//! containerd with the systemd cgroup driver), the project's .deb installed with `dpkg -i` and
//! nodelet.service joining a control plane of the test's own on the host with a bootstrap
//! token. Then eight checks, each said as `vm-check: <name>: ok` or `FAILED: <why>`, all run
//! even when an earlier one failed (but the last: the purge ends the node).
//!
//! Run by `make vm-test` (integration/vm/vm-test.sh builds QEMU, the image and the .deb and
//! passes them in NODELET_VM_*); `cargo test` skips it (ignored).
//!
//! The guest reaches the host's registry and apiserver at 10.0.2.100 (QEMU's guestfwd, one
//! socat per connection); the apiserver reaches the node's secure port at 127.0.0.1:<port>
//! (hostfwd), the address the node reports (--node-ip 127.0.0.1). Commands run in the guest
//! through nodelet-vm-agent and the 9p share (integration/vm/guest/).

mod common;
mod e2e_support;

use e2e_support::kubectl::Kubectl;
use e2e_support::ControlPlane;
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the guest reaches host services (QEMU's guestfwd address).
const HOST_FROM_GUEST: &str = "10.0.2.100";
const REGISTRY_PORT: u16 = 5000;
const SANDBOX_IMAGE: &str = "localhost:5000/nodelet/pause:1";
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const POD_TIMEOUT: Duration = Duration::from_secs(240);
/// A container's main loop that ends on SIGTERM.
const SLEEP_FOREVER: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cgroup driver of the guest's containerd (SystemdCgroup) and nodelet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    /// Operators' setting and this test's default: SystemdCgroup = true, --cgroup-driver=systemd.
    Systemd,
    /// SystemdCgroup = false and nodelet's cgroupfs hierarchy (until nodelet has the systemd driver).
    Cgroupfs,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Systemd => "systemd",
            Driver::Cgroupfs => "cgroupfs",
        }
    }
}

struct Settings {
    image: PathBuf,
    deb: PathBuf,
    driver: Driver,
    accel: Option<String>,
}

impl Settings {
    fn from_env() -> Settings {
        let path = |name: &str| {
            let value = std::env::var_os(name).filter(|v| !v.is_empty()).unwrap_or_else(|| panic!("{name} is not set: run this test with `make vm-test`"));
            let path = PathBuf::from(value);
            assert!(path.exists(), "{name}={} does not exist", path.display());
            path
        };
        let driver = match std::env::var("NODELET_VM_CGROUP_DRIVER").as_deref() {
            Ok("systemd") | Ok("") | Err(_) => Driver::Systemd,
            Ok("cgroupfs") => Driver::Cgroupfs,
            Ok(other) => panic!("NODELET_VM_CGROUP_DRIVER={other}: systemd or cgroupfs"),
        };
        Settings {
            image: path("NODELET_VM_IMAGE"),
            deb: path("NODELET_VM_DEB"),
            driver,
            accel: std::env::var("NODELET_VM_ACCEL").ok().filter(|a| !a.is_empty()),
        }
    }
}

/// A guest under QEMU (integration/vm/boot.sh), stopped by its pid when dropped; its run folder
/// (the 9p share, the console log) goes with it; a failed test keeps the logs in
/// /var/log/nodelet-env/vm-<pid>/.
struct Guest {
    qemu: Child,
    /// boot.sh with its settings, to start QEMU again.
    command: Command,
    run: tempfile::TempDir,
    boots: Vec<String>,
    jobs: u32,
}

impl Guest {
    fn share(&self) -> PathBuf {
        self.run.path().join("share")
    }

    fn console(&self) -> PathBuf {
        self.run.path().join("console.log")
    }

    /// Starts QEMU; `boot` waits for the guest.
    fn start(settings: &Settings, guestfwd: &[u16], hostfwd: &[u16]) -> Guest {
        let run = tempfile::Builder::new().prefix("nodelet-vm-").tempdir().unwrap();
        let share = run.path().join("share");
        std::fs::create_dir_all(share.join("jobs")).unwrap();
        std::fs::create_dir_all(share.join("out")).unwrap();
        let ports = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
        let mut command = Command::new("bash");
        command
            .arg(repo().join("integration/vm/boot.sh"))
            .env("VM_IMAGE", &settings.image)
            .env("VM_SHARE", &share)
            .env("VM_CONSOLE", run.path().join("console.log"))
            .env("VM_GUESTFWD", ports(guestfwd))
            .env("VM_HOSTFWD", ports(hostfwd))
            .stdin(Stdio::null());
        if let Some(accel) = &settings.accel {
            command.env("VM_ACCEL", accel);
        }
        let qemu = Guest::spawn(&mut command, run.path());
        Guest { qemu, command, run, boots: Vec::new(), jobs: 0 }
    }

    fn spawn(command: &mut Command, run: &Path) -> Child {
        let log = std::fs::File::options().create(true).append(true).open(run.join("qemu.log")).unwrap();
        command.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("starting integration/vm/boot.sh")
    }

    /// Waits for the first boot. Under emulation on a loaded host, a boot has hung once
    /// waiting for the root file system (QEMU idle, the guest waiting for its disk): a boot
    /// that has not reached its agent in half the time is given up and QEMU started again.
    fn boot(&mut self) -> Duration {
        let started = Instant::now();
        if let Err(why) = self.wait_boot(started, BOOT_TIMEOUT / 2) {
            println!("vm: the first boot hung; starting QEMU again. {why}");
            let _ = std::fs::rename(self.console(), self.run.path().join("console-hung.log"));
            self.stop();
            self.qemu = Guest::spawn(&mut self.command, self.run.path());
            if let Err(why) = self.wait_boot(Instant::now(), BOOT_TIMEOUT / 2) {
                panic!("{why}");
            }
        }
        started.elapsed()
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.qemu.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.qemu.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }

    /// The last lines of the serial console and of QEMU's own output.
    fn console_tail(&self) -> String {
        let tail = |p: PathBuf| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            format!("--- {} (last 40 lines)\n{}", p.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
        };
        format!("{}\n{}", tail(self.console()), tail(self.run.path().join("qemu.log")))
    }

    /// Waits for the agent of a boot not seen before (a boot-<id> file in the share); answers
    /// how long it took since `since`.
    fn wait_boot(&mut self, since: Instant, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.qemu.try_wait() {
                return Err(format!("QEMU exited ({status}):\n{}", self.console_tail()));
            }
            let new = std::fs::read_dir(self.share().join("out"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("boot-")).map(String::from))
                .find(|id| !self.boots.contains(id));
            if let Some(id) = new {
                self.boots.push(id);
                return Ok(since.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!("the guest did not boot to its agent within {timeout:?}:\n{}", self.console_tail()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs a bash script in the guest; answers its exit code and output (stdout and stderr).
    fn run(&mut self, script: &str, timeout: Duration) -> (i32, String) {
        match self.try_run(script, timeout) {
            Ok(done) => done,
            Err(why) => panic!("{why}"),
        }
    }

    /// As `run`, saying why when QEMU ended or the job did not finish in time.
    fn try_run(&mut self, script: &str, timeout: Duration) -> Result<(i32, String), String> {
        self.jobs += 1;
        let name = format!("j{}", self.jobs);
        let share = self.share();
        let tmp = share.join(format!("jobs/.{name}.tmp"));
        std::fs::write(&tmp, script).unwrap();
        std::fs::rename(&tmp, share.join(format!("jobs/{name}.sh"))).unwrap();
        let rc = share.join(format!("out/{name}.rc"));
        let deadline = Instant::now() + timeout;
        while !rc.exists() {
            if let Ok(Some(status)) = self.qemu.try_wait() {
                return Err(format!("QEMU exited ({status}) while the guest ran:\n{script}\n{}", self.console_tail()));
            }
            if Instant::now() > deadline {
                let out = std::fs::read_to_string(share.join(format!("out/{name}.out"))).unwrap_or_default();
                return Err(format!("the guest job did not finish within {timeout:?}:\n{script}\n--- output so far\n{out}\n{}", self.console_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let code = std::fs::read_to_string(&rc).unwrap_or_default().trim().parse().unwrap_or(-1);
        Ok((code, std::fs::read_to_string(share.join(format!("out/{name}.out"))).unwrap_or_default()))
    }

    /// Runs a script that must succeed; answers its output.
    fn sh(&mut self, script: &str) -> String {
        let (code, out) = self.run(script, Duration::from_secs(120));
        assert_eq!(code, 0, "in the guest, exit code {code}:\n{script}\n--- output\n{out}");
        out
    }

    fn journal(&mut self, unit: &str) -> String {
        self.run(&format!("journalctl -u {unit} --no-pager -n 60"), Duration::from_secs(60)).1
    }

    fn keep_logs(&mut self, why: &str) {
        let dir = PathBuf::from(format!("/var/log/nodelet-env/vm-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(self.console(), dir.join("console.log"));
        let _ = std::fs::copy(self.run.path().join("console-hung.log"), dir.join("console-hung.log"));
        let _ = std::fs::copy(self.run.path().join("qemu.log"), dir.join("qemu.log"));
        if let Ok((_, journal)) = self.try_run("journalctl -b --no-pager -u nodelet -u containerd", Duration::from_secs(60)) {
            let _ = std::fs::write(dir.join("journal.log"), journal);
        }
        eprintln!("vm: {why}; the guest's console and journal are in {}", dir.display());
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs("the test failed");
        }
        self.stop();
    }
}

/// The checks' outcomes, each printed as it ends.
#[derive(Default)]
struct Checks {
    results: Vec<(&'static str, Result<(), String>)>,
    /// Why the checks that need a Ready node are not run (each would wait out its timeout).
    blocked: Option<String>,
}

impl Checks {
    /// Runs one check that needs a Ready node; failed without running when there is none.
    fn run(&mut self, name: &'static str, check: impl FnOnce() -> Result<(), String>) -> bool {
        if let Some(why) = &self.blocked {
            println!("vm-check: {name}: NOT RUN: {why}");
            self.results.push((name, Err(format!("not run: {why}"))));
            return false;
        }
        self.run_always(name, check)
    }

    /// Runs one check; a panic inside (a helper's assertion) is its failure.
    fn run_always(&mut self, name: &'static str, check: impl FnOnce() -> Result<(), String>) -> bool {
        let start = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(check)) {
            Ok(r) => r,
            Err(panic) => Err(panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()),
        };
        match &result {
            Ok(()) => println!("vm-check: {name}: ok ({} s)", start.elapsed().as_secs()),
            Err(why) => println!("vm-check: {name}: FAILED ({} s): {why}", start.elapsed().as_secs()),
        }
        let ok = result.is_ok();
        self.results.push((name, result));
        ok
    }

    fn assert_all_passed(&self) {
        let failed: Vec<&str> = self.results.iter().filter(|(_, r)| r.is_err()).map(|(n, _)| *n).collect();
        let passed = self.results.len() - failed.len();
        println!("vm: {passed} passed, {} failed", failed.len());
        assert!(failed.is_empty(), "vm checks failed: {}", failed.join(", "));
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// Polls `f` until it answers Ok or `timeout` passes; the last error is the failure.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(format!("after {timeout:?}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// The host side: kubectl as the cluster's admin, in the default namespace of the private plane.
struct Cluster {
    kubectl: Kubectl,
    node: String,
}

impl Cluster {
    fn get(&self, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl.run(&args, b"");
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn node(&self) -> Option<Value> {
        self.get(&["node", &self.node])
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.get(&["pod", name])
    }

    fn condition(object: &Value, type_: &str) -> Option<String> {
        object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).and_then(|c| c["status"].as_str().map(String::from))
    }

    fn node_ready(&self) -> Result<Value, String> {
        let node = self.node().ok_or_else(|| format!("no Node {}", self.node))?;
        let ready = Cluster::condition(&node, "Ready");
        ensure(ready.as_deref() == Some("True"), || format!("Node {} Ready is {ready:?}: {}", self.node, node["status"]["conditions"]))?;
        Ok(node)
    }

    /// A pod bound to the node (no scheduler in the way), busybox running `script`.
    fn create_pod(&self, name: &str, script: &str, resources: Value) {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "nodeName": self.node, "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": common::BUSYBOX, "command": ["sh", "-c", script], "resources": resources}],
            },
        });
        let out = self.kubectl.run(&["create", "-f", "-"], pod.to_string().as_bytes());
        assert!(out.status.success(), "creating pod {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The pod once Running with its container ready.
    fn running(&self, name: &str, timeout: Duration) -> Result<Value, String> {
        wait_for(timeout, || {
            let pod = self.pod(name).ok_or_else(|| format!("no pod {name}"))?;
            let ready = pod["status"]["containerStatuses"][0]["ready"] == true;
            ensure(pod["status"]["phase"] == "Running" && ready, || format!("pod {name} is not Running and ready: {}", pod["status"]))?;
            Ok(pod)
        })
    }
}

fn container_id(pod: &Value) -> String {
    let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or_default();
    id.strip_prefix("containerd://").unwrap_or(id).to_string()
}

fn restart_count(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1)
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

/// key=value lines (a guest script's report) as a lookup.
fn report(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

#[test]
#[ignore = "boots a Debian guest under QEMU: run with `make vm-test`"]
fn nodelet_as_a_debian_package_on_a_systemd_cgroup_v2_guest() {
    let started = Instant::now();
    let settings = Settings::from_env();
    let node = format!("vm-{}", std::process::id());

    // A control plane of the test's own whose certificate also names the address the guest
    // dials, ready for bootstrap tokens (kubeadm's init phases: RBAC, CSR auto-approval).
    let plane = ControlPlane::private_with("vm", &[("APISERVER_EXTRA_SANS", &format!("IP:{HOST_FROM_GUEST}"))]);
    let join = plane.prepare_for_kubeadm(None);
    let apiserver_port: u16 = join.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the apiserver's port in the join command");
    let node_port = common::free_port();
    let cluster = Cluster { kubectl: Kubectl::new(&plane.admin_kubeconfig(), "default"), node: node.clone() };
    println!(
        "vm: node {node}, {} driver, apiserver 127.0.0.1:{apiserver_port} (the guest: {HOST_FROM_GUEST}:{apiserver_port}), node port {node_port}",
        settings.driver.name()
    );

    let mut guest = Guest::start(&settings, &[REGISTRY_PORT, apiserver_port], &[node_port]);
    let share = guest.share();
    let bootstrap = plane.bootstrap_kubeconfig(&join.token, &share);
    let text = std::fs::read_to_string(&bootstrap).unwrap().replace("https://127.0.0.1:", &format!("https://{HOST_FROM_GUEST}:"));
    std::fs::write(&bootstrap, text).unwrap();
    // The Service proxy's identity, kube-proxy's (the node's may not list EndpointSlices), and
    // the cluster CA the secure port checks the apiserver's client certificate against.
    let proxy = std::fs::read_to_string(plane.proxy_kubeconfig()).unwrap().replace("https://127.0.0.1:", &format!("https://{HOST_FROM_GUEST}:"));
    std::fs::write(share.join("kube-proxy.conf"), proxy).unwrap();
    std::fs::copy(plane.ca_file(), share.join("ca.crt")).unwrap();
    let deb = settings.deb.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(&settings.deb, share.join(&deb)).unwrap();
    std::fs::copy(repo().join("integration/vm/setup-guest.sh"), share.join("setup-guest.sh")).unwrap();

    let boot_time = guest.boot();
    println!("vm: booted to the agent in {:.1} s", boot_time.as_secs_f64());
    let setup = guest.sh(&format!(
        "NODE_NAME={node} NODE_PORT={node_port} CGROUP_DRIVER={} REGISTRY={HOST_FROM_GUEST}:{REGISTRY_PORT} SANDBOX_IMAGE={SANDBOX_IMAGE} DEB={deb} bash /mnt/nodelet-vm/setup-guest.sh",
        settings.driver.name()
    ));
    print!(
        "{}",
        setup
            .lines()
            .filter(|l| l.starts_with("==") || l.starts_with("containerd:") || l.starts_with("NODELET_ARGS"))
            .map(|l| format!("vm: {l}\n"))
            .collect::<String>()
    );

    let mut checks = Checks::default();
    let journal_on_failure = |guest: &mut Guest, r: Result<(), String>| r.map_err(|e| format!("{e}\n--- nodelet's journal\n{}", guest.journal("nodelet")));

    // 1. The node joins (bootstrap token, CSR approved by the controller-manager) and is Ready.
    let ready = checks.run("node Ready, kubeletVersion v1.35", || {
        let started = setup.contains("== nodelet.service: active");
        let r = ensure(started, || "nodelet.service is not active 3 s after its restart with the join flags".into());
        let r = r.and_then(|()| wait_for(POD_TIMEOUT, || cluster.node_ready())).and_then(|node| {
            let version = node["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or_default().to_string();
            ensure(version.starts_with("v1.35"), || format!("kubeletVersion is {version:?}"))
        });
        journal_on_failure(&mut guest, r)
    });
    if ready {
        let sa = wait_for(Duration::from_secs(60), || cluster.get(&["serviceaccount", "default"]).ok_or("no ServiceAccount default yet".to_string()));
        assert!(sa.is_ok(), "the default ServiceAccount: {sa:?}");
        // They end on SIGTERM: a shell as a container's PID 1 ignores it otherwise, and the
        // guest's shutdown would wait 90 s for them before its SIGKILL.
        cluster.create_pod("plain", &format!("echo hello from the vm; {SLEEP_FOREVER}"), json!({}));
        cluster.create_pod(
            "burstable",
            &format!("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo counted; {SLEEP_FOREVER}"),
            json!({"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}),
        );
        cluster.create_pod("oom", "echo filling; tail /dev/zero", json!({"requests": {"memory": "32Mi"}, "limits": {"memory": "32Mi"}}));
    } else {
        checks.blocked = Some(format!("node {node} is not Ready"));
    }

    // 2. The Burstable pod's cgroups where the kubelet's systemd driver puts them, limits set.
    checks.run("Burstable pod in kubepods-burstable-pod<uid>.slice with memory.max and cpu.max", || {
        let pod = cluster.running("burstable", POD_TIMEOUT)?;
        let slice = format!("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid(&pod).replace('-', "_"));
        let id = container_id(&pod);
        let out = guest.sh(&format!(
            r#"pid=$(ctr -n k8s.io task ls | awk '$1 == "{id}" {{ print $2 }}')
cgroup=$(cat /proc/$pid/cgroup 2>&1)
echo "cgroup=$cgroup"
echo "its memory.max=$(cat /sys/fs/cgroup${{cgroup#0::}}/memory.max 2>/dev/null || echo missing)"
echo "its cpu.max=$(cat /sys/fs/cgroup${{cgroup#0::}}/cpu.max 2>/dev/null || echo missing)"
for f in memory.max cpu.max; do
    echo "pod.$f=$(cat {slice}/$f 2>/dev/null || echo missing)"
    echo "container.$f=$(cat {slice}/cri-containerd-{id}.scope/$f 2>/dev/null || echo missing)"
done"#
        ));
        let r = report(&out);
        let want_cgroup = format!("0::{}/cri-containerd-{id}.scope", slice.trim_start_matches("/sys/fs/cgroup"));
        let want = [
            ("cgroup", want_cgroup.as_str()),
            ("container.memory.max", "67108864"),
            ("container.cpu.max", "20000 100000"),
            ("pod.memory.max", "67108864"),
            ("pod.cpu.max", "20000 100000"),
        ];
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| r.get(*k).map(String::as_str) != Some(*v))
            .map(|(k, v)| format!("{k} is {:?}, want {v:?}", r.get(*k).map(String::as_str).unwrap_or("missing")))
            .collect();
        ensure(wrong.is_empty(), || format!("{}\n--- the guest said (under {slice})\n{out}", wrong.join("; ")))
    });

    // 3. A container over its memory limit is OOM-killed and restarted.
    checks.run("a container over its memory limit is OOMKilled and restarted", || {
        wait_for(POD_TIMEOUT, || {
            let pod = cluster.pod("oom").ok_or("no pod oom")?;
            let status = &pod["status"]["containerStatuses"][0];
            let reason = status["lastState"]["terminated"]["reason"].as_str().unwrap_or_default();
            ensure(reason == "OOMKilled" && restart_count(&pod) >= 1, || format!("container status: {status}"))
        })
    });

    // 4. /stats/summary: the pod's figures from cgroup v2. Asked of the node's secure port as
    // the apiserver asks it (its kubelet-client certificate, the node's authentication and
    // Webhook authorization): the apiserver's node proxy (`kubectl get --raw
    // /api/v1/nodes/<node>/proxy/...`) refuses a node whose address is loopback ("address not
    // allowed"), and 127.0.0.1 is the only address this machine may reach the guest at.
    let pki = plane.ca_file().parent().unwrap().to_path_buf();
    checks.run("stats/summary shows the pod's memory working set and CPU usage", || {
        cluster.running("burstable", POD_TIMEOUT)?;
        wait_for(Duration::from_secs(90), || {
            let raw = Command::new("curl")
                .args(["-sSk", "--max-time", "20", "--fail-with-body", "--cert"])
                .arg(pki.join("apiserver-kubelet-client.crt"))
                .arg("--key")
                .arg(pki.join("apiserver-kubelet-client.key"))
                .arg(format!("https://127.0.0.1:{node_port}/stats/summary"))
                .output()
                .expect("running curl");
            ensure(raw.status.success(), || format!("stats/summary: {} {}", String::from_utf8_lossy(&raw.stdout), String::from_utf8_lossy(&raw.stderr)))?;
            let summary: Value = serde_json::from_slice(&raw.stdout).map_err(|e| e.to_string())?;
            let pod =
                summary["pods"].as_array().and_then(|p| p.iter().find(|p| p["podRef"]["name"] == "burstable")).ok_or("no pod burstable in stats/summary")?;
            let container = pod["containers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "main")).ok_or("no container main")?;
            let memory = container["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
            let cpu = container["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0);
            ensure(memory > 0 && cpu > 0, || format!("container main: memory {}, cpu {}", container["memory"], container["cpu"]))
        })
    });

    // 5. Logs and exec through the apiserver and the node's secure port.
    checks.run("kubectl logs and kubectl exec", || {
        cluster.running("plain", POD_TIMEOUT)?;
        let logs = cluster.kubectl.run(&["logs", "plain"], b"");
        let text = String::from_utf8_lossy(&logs.stdout);
        ensure(text.contains("hello from the vm"), || format!("kubectl logs plain: {text:?} {}", String::from_utf8_lossy(&logs.stderr)))?;
        let exec = cluster.kubectl.run(&["exec", "plain", "--", "sh", "-c", "echo exec-$((40+2))"], b"");
        let text = String::from_utf8_lossy(&exec.stdout);
        ensure(text.trim() == "exec-42", || format!("kubectl exec plain: {text:?} {}", String::from_utf8_lossy(&exec.stderr)))
    });

    // 6. A restart of the service leaves the pods running: same containers, no restart.
    let running_pods = ["plain", "burstable"];
    checks.run("systemctl restart nodelet keeps the pods running", || {
        let before: Vec<Value> = running_pods.iter().map(|p| cluster.running(p, POD_TIMEOUT)).collect::<Result<_, _>>()?;
        let pid = |g: &mut Guest| g.sh("systemctl show -p MainPID --value nodelet").trim().to_string();
        let old_pid = pid(&mut guest);
        let lease = || cluster.get(&["lease", "-n", "kube-node-lease", &node]).map(|l| l["spec"]["renewTime"].clone());
        let old_lease = lease();
        guest.sh("systemctl restart nodelet");
        let r = wait_for(Duration::from_secs(120), || {
            let new_pid = pid(&mut guest);
            ensure(new_pid != old_pid && new_pid != "0", || format!("nodelet's MainPID is {new_pid} (was {old_pid})"))?;
            ensure(lease() != old_lease, || "the node's Lease is not renewed since the restart".into())?;
            cluster.node_ready().map(|_| ())
        });
        journal_on_failure(&mut guest, r)?;
        std::thread::sleep(Duration::from_secs(15));
        for (name, old) in running_pods.iter().zip(&before) {
            let now = cluster.running(name, Duration::from_secs(30))?;
            ensure(container_id(&now) == container_id(old) && restart_count(&now) == restart_count(old), || {
                format!(
                    "pod {name}: container {} restarts {} before, {} restarts {} after",
                    container_id(old),
                    restart_count(old),
                    container_id(&now),
                    restart_count(&now)
                )
            })?;
        }
        let tasks = guest.sh("ctr -n k8s.io task ls");
        for old in &before {
            let id = container_id(old);
            ensure(tasks.lines().any(|l| l.starts_with(&id) && l.contains("RUNNING")), || format!("container {id} is not RUNNING in containerd:\n{tasks}"))?;
        }
        Ok(())
    });

    // 7. A reboot of the guest: the node comes back Ready (a new boot ID) and runs the same pods
    // (same UIDs) again, in containers made after the reboot.
    checks.run("the node comes back Ready after a guest reboot, the same pods Running", || {
        let before: Vec<Value> = running_pods.iter().map(|p| cluster.running(p, POD_TIMEOUT)).collect::<Result<_, _>>()?;
        let boot_id = cluster.node().map(|n| n["status"]["nodeInfo"]["bootID"].clone()).unwrap_or_default();
        let asked = Instant::now();
        // Detached: the agent's own job would be cut off by the shutdown before it reports.
        guest.sh("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &");
        let took = guest.wait_boot(asked, BOOT_TIMEOUT)?;
        println!("vm: rebooted to the agent in {:.1} s", took.as_secs_f64());
        let r = wait_for(POD_TIMEOUT, || {
            let node = cluster.node_ready()?;
            ensure(node["status"]["nodeInfo"]["bootID"] != boot_id, || format!("the Node's bootID is still {boot_id}"))
        });
        let kept = guest.sh("dpkg-query -W -f='${Status}' nodelet; echo; grep '^NODELET_ARGS' /etc/default/nodelet || true");
        let r = r.map_err(|e| format!("{e}\n--- after the reboot (the snapshot overlay keeps the session's writes): {kept}"));
        journal_on_failure(&mut guest, r)?;
        // The pods' status in the apiserver is the one from before the reboot until nodelet
        // has made their containers again.
        for (name, old) in running_pods.iter().zip(&before) {
            wait_for(POD_TIMEOUT, || {
                let now = cluster.running(name, Duration::ZERO)?;
                ensure(uid(&now) == uid(old), || format!("pod {name} has uid {} now, {} before", uid(&now), uid(old)))?;
                ensure(container_id(&now) != container_id(old), || format!("pod {name} still reports container {} from before the reboot", container_id(old)))
            })?;
        }
        Ok(())
    });

    // 8. Stop and purge: nothing of nodelet stays but what is documented.
    let uids: Vec<String> = ["plain", "burstable", "oom"].iter().filter_map(|p| cluster.pod(p)).map(|p| uid(&p)).collect();
    checks.run_always("systemctl stop and dpkg --purge leave no unit, binary or pod cgroup", || {
        let mut problems = Vec::new();
        cluster.kubectl.ok(&["delete", "pods", "--all", "--wait=false"]);
        wait_for(Duration::from_secs(120), || {
            let pods = cluster.get(&["pods"]).ok_or("kubectl get pods failed")?;
            let left = pods["items"].as_array().map_or(0, Vec::len);
            ensure(left == 0, || format!("{left} pods not yet gone: {}", pods["items"]))
        })?;
        // Any cgroup named after one of the pods, whatever the driver's layout.
        let patterns: Vec<String> = uids.iter().flat_map(|u| [format!("-o -name '*{u}*'"), format!("-o -name '*{}*'", u.replace('-', "_"))]).collect();
        let find_pods = format!("find /sys/fs/cgroup -type d \\( -false {} \\)", patterns.join(" "));
        if let Err(e) = wait_for(Duration::from_secs(60), || {
            let left = guest.sh(&find_pods);
            ensure(left.trim().is_empty(), || format!("pod cgroups left after the pods were deleted (nodelet running):\n{left}"))
        }) {
            problems.push(e);
        }
        guest.sh("systemctl stop nodelet && dpkg --purge nodelet");
        let out = guest.sh(&format!(
            r#"for f in /lib/systemd/system/nodelet.service /etc/systemd/system/multi-user.target.wants/nodelet.service /usr/bin/nodelet /usr/bin/nodelet-cni /opt/cni/bin/nodelet-cni /etc/default/nodelet /etc/nodelet/config.yaml /sys/fs/cgroup/system.slice/nodelet.service; do
    [ -e "$f" ] || [ -L "$f" ] && echo "left=$f"
done
echo "load=$(systemctl show -p LoadState --value nodelet)"
pgrep -x nodelet >/dev/null && echo "left=a nodelet process: $(pgrep -ax nodelet)"
for d in $({find_pods}); do echo "left=pod cgroup $d"; done
for p in $(find /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/nodelet -name cgroup.procs 2>/dev/null); do [ -s "$p" ] && echo "left=processes in $(dirname $p)"; done
for f in /var/lib/nodelet /etc/nodelet /etc/cni/net.d/10-nodelet.conflist /sys/fs/cgroup/kubepods.slice /sys/fs/cgroup/nodelet; do [ -e "$f" ] && echo "kept=$f"; done
nft list tables 2>/dev/null | grep -q 'table ip nodelet' && echo "kept=nft table ip nodelet"
true"#
        ));
        let kept: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("kept=")).collect();
        println!("vm: after the purge, still there (state and config nodelet wrote, as the kubelet leaves its own): {}", kept.join(", "));
        let left: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("left=")).collect();
        if !left.is_empty() {
            problems.push(format!("left after the purge: {}", left.join("; ")));
        }
        let load = report(&out).get("load").cloned().unwrap_or_default();
        if load != "not-found" {
            problems.push(format!("systemd still knows nodelet.service (LoadState {load})"));
        }
        ensure(problems.is_empty(), || problems.join("\n"))
    });

    println!("vm: boot {:.1} s, whole test {:.1} s", boot_time.as_secs_f64(), started.elapsed().as_secs_f64());
    let failed = checks.results.iter().any(|(_, r)| r.is_err());
    if failed {
        guest.keep_logs("a check failed");
    }
    checks.assert_all_passed();
}
