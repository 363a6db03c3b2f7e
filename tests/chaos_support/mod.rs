//! What the fault cases of `make chaos` (tests/chaos.rs) share: their settings from the
//! environment, the `chaos: <name> <figure>` lines, what the runtime holds for a node's pods,
//! nodelet-cni's address claims, and the restart of the containerd the env scripts started.

#![allow(dead_code)]

pub mod containerd;
pub mod disk;
pub mod fuzz;
pub mod mutate;

use crate::common::{on_runtime, on_runtime_at, Node};
use nodelet::runtime::labels;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A number from the environment (the suite's durations and counts), else `default`.
pub fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        _ => default,
    }
}

/// One figure of the suite, as `make chaos` prints it.
pub fn figure(name: &str, value: impl std::fmt::Display) {
    println!("chaos: {name} {value}");
}

/// A container as the runtime lists it, with the pod it belongs to.
#[derive(Debug, Clone)]
pub struct RuntimeContainer {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub running: bool,
    pub created_at: i64,
}

/// A sandbox as the runtime lists it.
#[derive(Debug, Clone)]
pub struct RuntimeSandbox {
    pub id: String,
    pub pod_uid: String,
    pub ready: bool,
}

/// Everything the runtime holds for one node (by nodelet's node label): sandboxes and containers.
pub fn inventory(node: &Node) -> (Vec<RuntimeSandbox>, Vec<RuntimeContainer>) {
    let node_name = node.name.clone();
    on_runtime_at(&node.runtime_socket, move |cri| async move {
        let node = node_name;
        let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node.clone())]);
        let uid = |l: &HashMap<String, String>| l.get(labels::POD_UID).cloned().unwrap_or_default();
        let sandboxes = cri.list_sandboxes(selector.clone()).await.unwrap_or_else(|e| panic!("listing the sandboxes of node {node}: {e}"));
        let sandboxes = sandboxes.into_iter().map(|s| RuntimeSandbox { pod_uid: uid(&s.labels), ready: s.state == 0, id: s.id }).collect();
        let containers = cri.list_containers(selector).await.unwrap_or_else(|e| panic!("listing the containers of node {node}: {e}"));
        let containers = containers
            .into_iter()
            .map(|c| RuntimeContainer {
                pod_uid: uid(&c.labels),
                name: c.labels.get(labels::CONTAINER_NAME).cloned().unwrap_or_default(),
                attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
                running: c.state == 1,
                created_at: c.created_at,
                id: c.id,
            })
            .collect();
        (sandboxes, containers)
    })
}

/// The IDs of every sandbox containerd holds, of any node or client.
pub fn all_sandbox_ids() -> HashSet<String> {
    on_runtime(|cri| async move { cri.list_sandboxes(HashMap::new()).await.expect("listing all sandboxes").into_iter().map(|s| s.id).collect() })
}

/// Where nodelet-cni keeps its address claims for nodelet's network: `<dataDir>/<name>`, with
/// the conflist nodelet writes (no dataDir: the plugin's default, see cni/README.md).
pub fn ipam_dir() -> PathBuf {
    Path::new("/var/lib/nodelet/cni").join(nodelet::network::NETWORK_NAME)
}

/// The address claims: ip -> the container (sandbox) id that holds it.
pub fn ip_claims() -> BTreeMap<String, String> {
    let mut claims = BTreeMap::new();
    for entry in std::fs::read_dir(ipam_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::Ipv4Addr>().is_err() {
            continue;
        }
        if let Ok(owner) = std::fs::read_to_string(entry.path()) {
            claims.insert(name, owner.lines().next().unwrap_or("").to_string());
        }
    }
    claims
}

/// Claims made since `before` whose sandbox containerd no longer has, seen twice a few seconds
/// apart (so an ADD or DEL of another client in progress is not taken for a leak).
pub fn leaked_ips(before: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let candidates = |claims: BTreeMap<String, String>| -> Vec<(String, String)> {
        let live = all_sandbox_ids();
        claims.into_iter().filter(|(ip, owner)| before.get(ip) != Some(owner) && !live.contains(owner)).collect()
    };
    let first = candidates(ip_claims());
    if first.is_empty() {
        return first;
    }
    std::thread::sleep(Duration::from_secs(5));
    let second = candidates(ip_claims());
    first.into_iter().filter(|c| second.contains(c)).collect()
}

/// The pods /pods shows, by name: (uid, phase, every container ready, container ids, restarts).
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub uid: String,
    pub running: bool,
    pub container_ids: Vec<String>,
    pub restarts: i64,
}

pub fn pod_views(node: &Node) -> BTreeMap<String, PodView> {
    let pods = node.pods();
    let mut out = BTreeMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let running = pod["status"]["phase"] == "Running" && !statuses.is_empty() && statuses.iter().all(|c| c["ready"] == true);
        out.insert(
            pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
            PodView {
                uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                running,
                container_ids: statuses.iter().map(|c| c["containerID"].as_str().unwrap_or("").to_string()).collect(),
                restarts: statuses.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum(),
            },
        );
    }
    out
}

/// Waits until /pods shows exactly `names` (full pod names), each Running with its containers
/// ready; fails with what it last saw.
pub fn wait_exactly_running(node: &Node, names: &HashSet<String>, timeout: Duration) -> BTreeMap<String, PodView> {
    let deadline = Instant::now() + timeout;
    loop {
        let views = pod_views(node);
        let shown: HashSet<String> = views.keys().cloned().collect();
        if &shown == names && views.values().all(|v| v.running) {
            return views;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = names.difference(&shown).collect();
            let extra: Vec<_> = shown.difference(names).collect();
            let waiting: Vec<_> = views.iter().filter(|(_, v)| !v.running).map(|(n, _)| n).collect();
            panic!("after {timeout:?}: pods missing {missing:?}, extra {extra:?}, not running {waiting:?}\nnodelet log (tail):\n{}", log_tail(node, 80));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The last `lines` lines of nodelet's log (all its runs).
pub fn log_tail(node: &Node, lines: usize) -> String {
    let log = node.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn env_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/env").join(name)
}

/// The containerd the env scripts started (its pid file), or None for one started otherwise,
/// which the suite must leave alone.
pub fn scripted_containerd_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string("/run/nodelet-env/containerd.pid").ok()?.trim().parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    (exe == Path::new("/usr/bin/containerd")).then_some(pid)
}

/// Stops that containerd with the env scripts' own stop_daemon (TERM, KILL after 15 s, by the
/// pid file only); the shims and so the containers keep running.
pub fn stop_containerd() {
    let script = format!("source {} && stop_daemon containerd \"$NODELET_ENV_RUN_DIR/containerd.pid\" /usr/bin/containerd", env_script("lib.sh").display());
    let out = Command::new("bash").args(["-c", &script]).output().expect("running bash");
    assert!(out.status.success(), "stopping containerd failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Starts containerd again (integration/env/start-containerd.sh: returns once its CRI answers).
pub fn start_containerd() {
    let out = Command::new("bash").arg(env_script("start-containerd.sh")).output().expect("running bash");
    assert!(out.status.success(), "start-containerd.sh failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Starts containerd when dropped, unless it was started already: a case that fails between the
/// stop and the start must not leave the machine without its runtime.
pub struct RestartGuard {
    pub started: bool,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if !self.started && scripted_containerd_pid().is_none() {
            let _ = Command::new("bash").arg(env_script("start-containerd.sh")).status();
        }
    }
}

/// The text of a log line without its colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The pod events nodelet recorded (its log has each one, whether or not it reached the
/// apiserver) for pods of `namespace`: (pod name, reason) -> how many.
pub fn logged_events(log: &str, namespace: &str) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    let prefix = format!("pod={namespace}/");
    for line in strip_ansi(log).lines().filter(|l| l.contains(" nodelet::events: ")) {
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_matches('"').to_string());
        let (Some(pod), Some(reason)) = (field(&prefix), field("reason=")) else { continue };
        *out.entry((pod, reason)).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_events_are_counted_by_pod_and_reason_through_colour_codes() {
        let log = "\u{1b}[2m2026-11-30T08:01:41Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mnodelet::events\u{1b}[0m\u{1b}[2m:\u{1b}[0m Created container main \u{1b}[3mpod\u{1b}[0m\u{1b}[2m=\u{1b}[0mns1/a \u{1b}[3mreason\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"Created\"\n\
                   2026-11-30T08:01:42Z  WARN nodelet::events: Back-off restarting failed container main pod=ns1/a reason=\"BackOff\"\n\
                   2026-11-30T08:01:43Z  WARN nodelet::events: Back-off restarting failed container main pod=ns1/a reason=\"BackOff\"\n\
                   2026-11-30T08:01:43Z  INFO nodelet::events: Started container main pod=other/a reason=\"Started\"\n\
                   2026-11-30T08:01:44Z  INFO nodelet::pods: not an event pod=ns1/a reason=\"Started\"\n";
        let counted = logged_events(log, "ns1");
        let expected = BTreeMap::from([(("a".to_string(), "BackOff".to_string()), 2), (("a".to_string(), "Created".to_string()), 1)]);
        assert_eq!(counted, expected);
    }
}
