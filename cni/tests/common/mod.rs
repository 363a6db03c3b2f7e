//! Shared fixture for the plugin's integration tests: runs the built binary
//! as containerd would, in network namespaces, a bridge, a subnet, an nft
//! table and a state dir that belong to one test only, and removes all of
//! them when the fixture drops (on success and on panic alike).

#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

pub const PLUGIN: &str = env!("CARGO_BIN_EXE_nodelet-cni");
pub const NETWORK: &str = "nct";

pub struct Fixture {
    pub tag: String,
    pub bridge: String,
    pub table: String,
    pub subnet: String,
    pub third_octet: (u8, u8),
    pub state: tempfile::TempDir,
    netns: Mutex<Vec<String>>,
    veths: Mutex<std::collections::BTreeSet<String>>,
}

/// Run a command the test needs (never the plugin's own work) and insist it works.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Same contract as the plugin: "vn" + 10 hex of sha256(id NUL ifname).
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let d = Sha256::new().chain_update(container_id.as_bytes()).chain_update(b"\0").chain_update(ifname.as_bytes()).finalize();
    let hex: String = d.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("vn{hex}")
}

pub fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", "dev", name]).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("plugin output {:?} is not JSON: {e}", self.stdout))
    }
    /// The container address from an ADD result.
    pub fn ip(&self) -> Ipv4Addr {
        let v = self.json();
        let cidr = v["ips"][0]["address"].as_str().expect("ips[0].address");
        cidr.split('/').next().unwrap().parse().unwrap()
    }
}

impl Fixture {
    /// `k` keeps the tests of one binary apart; the pid keeps concurrent runs apart.
    pub fn new(k: u8) -> Fixture {
        let pid = std::process::id();
        let tag = format!("{}{k}", pid % 100_000);
        let third = (pid % 250) as u8;
        Fixture {
            bridge: format!("nct{tag}"),
            table: format!("nct_{tag}"),
            subnet: format!("10.{}.{third}.0/24", 150 + k),
            third_octet: (150 + k, third),
            state: tempfile::tempdir().unwrap(),
            netns: Mutex::new(Vec::new()),
            veths: Mutex::new(Default::default()),
            tag,
        }
    }

    /// Container ids are global on the host (veth names derive from them),
    /// so each test's ids carry its tag.
    pub fn cid(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    pub fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.third_octet.0, self.third_octet.1, last)
    }

    pub fn config(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "nodelet-cni",
            "bridge": self.bridge,
            "subnet": self.subnet,
            "dataDir": self.state.path(),
            "masqTable": self.table,
        })
        .to_string()
    }

    /// Create a netns owned by this fixture; returns its name.
    pub fn netns(&self, suffix: &str) -> String {
        let name = format!("nct{}-{suffix}", self.tag);
        sh(&["ip", "netns", "add", &name]);
        self.netns.lock().unwrap().push(name.clone());
        name
    }

    pub fn netns_path(name: &str) -> String {
        format!("/var/run/netns/{name}")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.state.path().join(NETWORK)
    }

    /// Allocation files: ip -> "containerid\nifname".
    pub fn allocations(&self) -> BTreeMap<Ipv4Addr, String> {
        allocations_in(&self.ipam_dir())
    }

    pub fn spawn(&self, command: &str, cid: &str, netns: Option<&str>, config: &str) -> Child {
        self.veths.lock().unwrap().insert(host_veth(cid, "eth0"));
        let mut cmd = Command::new(PLUGIN);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", Self::netns_path(ns));
        }
        let mut child = cmd.spawn().unwrap();
        // A killed child may close its stdin early; that is not our failure.
        let _ = child.stdin.take().unwrap().write_all(config.as_bytes());
        child
    }

    pub fn run_with(&self, command: &str, cid: &str, netns: Option<&str>, config: &str) -> Run {
        let out = self.spawn(command, cid, netns, config).wait_with_output().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, command: &str, cid: &str, netns: Option<&str>) -> Run {
        self.run_with(command, cid, netns, &self.config())
    }

    pub fn masq_rule_count(&self) -> usize {
        let out = Command::new("nft").args(["list", "table", "ip", &self.table]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).matches(" masquerade comment").count()
    }
}

pub fn allocations_in(dir: &Path) -> BTreeMap<Ipv4Addr, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if let Ok(ip) = e.file_name().to_string_lossy().parse::<Ipv4Addr>() {
            if let Ok(owner) = std::fs::read_to_string(e.path()) {
                out.insert(ip, owner);
            }
        }
    }
    out
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        for ns in self.netns.lock().unwrap().iter() {
            quiet(&["ip", "netns", "del", ns]);
        }
        for v in self.veths.lock().unwrap().iter() {
            if link_exists(v) {
                quiet(&["ip", "link", "del", v]);
            }
        }
        quiet(&["ip", "link", "del", &self.bridge]);
        quiet(&["nft", "delete", "table", "ip", &self.table]);
    }
}

/// Run `f` on a thread inside the named netns (sockets it creates stay there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Fixture::netns_path(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}
