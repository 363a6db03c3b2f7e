//! Resource usage of the node and its pods, for `GET /stats/summary` (the Summary API) and
//! `GET /metrics/resource`: cgroup v1 accounting for cpu and memory, /proc for the network,
//! statvfs and directory walks (cached, done in the background) for file systems, CRI for the writable layers and the image
//! file system. A pod whose figures cannot be read gets a thinner entry; the answer stands.
//!
//! Pure parts: `cgroupv1` and `procfs` parsing, `rate` (nanocores from two samples),
//! `summary` (the JSON shape), `resource` (the metrics text), `usage_cache` (which trees to walk). Effectful: `disk` and `Collector`.

pub mod cgroup;
pub mod cgroupv1;
pub mod cgroupv2;
pub mod disk;
pub mod procfs;
pub mod rate;
pub mod resource;
pub mod summary;
pub mod usage_cache;

use crate::machine::timestamp::rfc3339;
use crate::metrics::ContainerCounts;
use crate::pods::spec::{self, NodeContext};
use crate::pods::store::PodStore;
use crate::runtime::labels;
use crate::runtime::Cri;
use cgroup::CgroupUsage;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use rate::{CpuRates, CpuSample};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use summary::*;

/// Where the figures come from, and the CPU samples kept between requests.
pub struct Collector {
    pub cri: Cri,
    pub pods: PodStore,
    pub ctx: Arc<NodeContext>,
    /// nodelet's --root-dir: the node's file system figures are that of its file system.
    pub root_dir: PathBuf,
    /// The cgroup mount (/sys/fs/cgroup, v1 or v2) and procfs (/proc).
    pub cgroups: cgroup::Reader,
    pub proc_root: PathBuf,
    rates: CpuRates,
    /// Volume and log directory usage, measured in the background.
    trees: Arc<usage_cache::UsageCache>,
    /// The last collection served over HTTP, and when it was made.
    served: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Collected>)>>,
}

/// How old a collection served over HTTP may be.
pub const SERVED_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// One collection: the Summary, when it was read, and whether some pod's figures were missing.
pub struct Collected {
    pub summary: Summary,
    pub at: SystemTime,
    pub degraded: bool,
}

/// What the runtime said, gathered before the blocking reads.
#[derive(Default)]
struct RuntimeFigures {
    /// Writable layer usage by container ID: (bytes, inodes).
    writable_layers: HashMap<String, (Option<u64>, Option<u64>)>,
    image_fs: Option<cri::FilesystemUsage>,
    failed: bool,
}

impl Collector {
    pub fn new(cri: Cri, pods: PodStore, ctx: Arc<NodeContext>, root_dir: PathBuf) -> Collector {
        Collector {
            cri,
            pods,
            ctx,
            root_dir,
            cgroups: cgroup::Reader {
                mount: crate::cgroups::MOUNT.into(),
                version: crate::cgroups::detect_version(crate::cgroups::MOUNT.as_ref()),
                proc_root: "/proc".into(),
            },
            proc_root: "/proc".into(),
            rates: CpuRates::default(),
            trees: Arc::new(usage_cache::UsageCache::new(usage_cache::MAX_AGE)),
            served: tokio::sync::Mutex::new(None),
        }
    }

    /// For readers over HTTP (/stats/summary, /metrics/resource): the last collection while it
    /// is younger than `SERVED_MAX_AGE`, else a new one. Concurrent requests share one collection,
    /// so a burst of scrapes costs one round of CRI calls and cgroup reads, not one each. (The
    /// eviction manager collects afresh: it must see what a reclaim just freed.)
    pub async fn collect_shared(self: &Arc<Self>) -> Arc<Collected> {
        let mut served = self.served.lock().await;
        if let Some((_, collected)) = served.as_ref().filter(|(at, _)| at.elapsed() < SERVED_MAX_AGE) {
            return collected.clone();
        }
        let collected = Arc::new(self.collect().await);
        *served = Some((std::time::Instant::now(), collected.clone()));
        collected
    }

    /// The node's and every pod's figures now.
    pub async fn collect(self: &Arc<Self>) -> Collected {
        let runtime = self.runtime_figures().await;
        let me = self.clone();
        let pods = self.pods.list();
        let collected = tokio::task::spawn_blocking(move || me.read_all(&pods, &runtime)).await;
        self.measure_due_trees();
        match collected {
            Ok(collected) => collected,
            Err(e) => {
                tracing::warn!(error = %e, "stats: collecting failed");
                Collected { summary: Summary::default(), at: SystemTime::now(), degraded: true }
            }
        }
    }

    /// Walks the trees the last collection found due, on a blocking thread of their own: no
    /// request waits on a walk.
    fn measure_due_trees(&self) {
        let due = self.trees.take_due(std::time::Instant::now());
        if due.is_empty() {
            return;
        }
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || {
            for dir in due {
                let usage = disk::tree_usage(&dir);
                trees.record(&dir, usage, std::time::Instant::now());
            }
        });
    }

    /// A directory's last measured use with its file system's figures now; None until measured.
    fn directory(&self, dir: &Path, time: &str) -> Option<FsStats> {
        let usage = self.trees.lookup(dir, std::time::Instant::now())?;
        Some(disk::directory(dir, usage, time))
    }

    async fn runtime_figures(&self) -> RuntimeFigures {
        let mut figures = RuntimeFigures::default();
        let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), self.ctx.node_name.clone())]);
        match self.cri.container_stats(selector).await {
            Ok(stats) => {
                for s in stats {
                    let (Some(attributes), Some(layer)) = (s.attributes, s.writable_layer) else { continue };
                    figures.writable_layers.insert(attributes.id, (layer.used_bytes.map(|v| v.value), layer.inodes_used.map(|v| v.value)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stats: no writable layer figures");
                figures.failed = true;
            }
        }
        match self.cri.image_fs_info().await {
            Ok(filesystems) => figures.image_fs = filesystems.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "stats: no image file system figures");
                figures.failed = true;
            }
        }
        figures
    }

    /// Sets the running pods and containers gauges of /metrics from what the runtime holds.
    pub async fn refresh_runtime_gauges(&self) {
        let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), self.ctx.node_name.clone())]);
        let (sandboxes, containers) = match (self.cri.list_sandboxes(selector.clone()).await, self.cri.list_containers(selector).await) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => return tracing::warn!(error = %e, "metrics: running pods and containers not counted"),
        };
        let ready = sandboxes.iter().filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32).count();
        crate::metrics::global().set_running(ready as i64, count_states(containers.iter().map(|c| c.state)));
    }

    fn read_all(&self, pods: &[Pod], runtime: &RuntimeFigures) -> Collected {
        let at = SystemTime::now();
        let time = rfc3339(at);
        let mut seen = HashSet::new();
        let image_fs = runtime.image_fs.as_ref().map(|fs| image_fs_stats(fs, &time));
        let node = self.node_stats(at, &time, image_fs.clone(), &mut seen);
        let mut degraded = runtime.failed;
        let mut pod_stats = Vec::new();
        for pod in pods.iter().filter(|p| is_active(p)) {
            let (stats, complete) = self.pod_stats(pod, at, &time, runtime, image_fs.as_ref(), &mut seen);
            degraded |= !complete;
            pod_stats.push(stats);
        }
        self.rates.retain(&seen);
        Collected { summary: Summary { node, pods: pod_stats }, at, degraded }
    }

    /// cpu and memory of a cgroup; `capacity` (the node's memory) gives availableBytes.
    fn cgroup(&self, relative: &str, capacity: Option<u64>, at: SystemTime, time: &str, seen: &mut HashSet<String>) -> (Option<CpuStats>, Option<MemoryStats>) {
        let usage = self.cgroups.read(relative);
        seen.insert(relative.to_string());
        let cpu = usage.cpu_nanos.map(|nanos| CpuStats {
            time: time.to_string(),
            usage_nano_cores: self.rates.observe(relative, CpuSample { at, usage_nanos: nanos }),
            usage_core_nano_seconds: Some(nanos),
        });
        (cpu, memory_stats(&usage, time, capacity))
    }

    fn node_stats(&self, at: SystemTime, time: &str, image_fs: Option<FsStats>, seen: &mut HashSet<String>) -> NodeStats {
        let read_proc = |file: &str| std::fs::read_to_string(self.proc_root.join(file)).unwrap_or_default();
        let capacity = crate::machine::parse::meminfo_bytes(&read_proc("meminfo"), "MemTotal");
        let (cpu, memory) = self.cgroup("/", capacity, at, time, seen);
        let default_iface = crate::nodeip::default_route_interface(&read_proc("net/route"));
        let interfaces: Vec<_> = procfs::parse_net_dev(&read_proc("net/dev")).into_iter().filter(|i| !is_pod_side(&i.name)).collect();
        let start = procfs::boot_time(&read_proc("stat")).map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)).unwrap_or(at);
        NodeStats {
            node_name: self.ctx.node_name.clone(),
            start_time: rfc3339(start),
            cpu,
            memory,
            network: network_stats(interfaces, default_iface.as_deref(), time),
            fs: disk::filesystem(&self.root_dir, time),
            runtime: Some(RuntimeStats { image_fs }),
        }
    }

    /// One pod's entry, and whether every figure could be read.
    fn pod_stats(
        &self,
        pod: &Pod,
        at: SystemTime,
        time: &str,
        runtime: &RuntimeFigures,
        image_fs: Option<&FsStats>,
        seen: &mut HashSet<String>,
    ) -> (PodStats, bool) {
        let pod_cgroup_name = spec::pod_cgroup(&self.ctx, pod);
        let pod_cgroup = self.ctx.cgroups.path(&pod_cgroup_name);
        let (cpu, memory) = self.cgroup(&pod_cgroup, None, at, time, seen);
        let mut complete = cpu.is_some() && memory.is_some();
        let log_dir = spec::log_directory(&self.ctx, pod);
        let mut containers = Vec::new();
        for (name, id, started) in running_containers(pod) {
            let (cpu, memory) = self.cgroup(&self.ctx.cgroups.container_path(&pod_cgroup_name, &id), None, at, time, seen);
            complete &= cpu.is_some() && memory.is_some();
            let rootfs = runtime.writable_layers.get(&id).map(|(used, inodes)| FsStats {
                time: time.to_string(),
                used_bytes: *used,
                inodes_used: *inodes,
                ..image_fs.cloned().map(|fs| FsStats { used_bytes: None, inodes_used: None, ..fs }).unwrap_or_default()
            });
            let logs = self.directory(&log_dir.join(&name), time);
            containers.push(ContainerStats { name, start_time: started, cpu, memory, rootfs, logs });
        }
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let network = if host_network {
            None
        } else {
            self.cgroups
                .any_process(&pod_cgroup)
                .and_then(|pid| std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("net/dev")).ok())
                .and_then(|text| network_stats(procfs::parse_net_dev(&text), Some("eth0"), time))
        };
        let volume: Vec<VolumeStats> = spec::volume_paths(&self.ctx, pod)
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| !is_host_path(pod, name))
            .filter_map(|(name, path)| self.directory(&path, time).map(|fs| VolumeStats { fs, name }))
            .collect();
        let ephemeral_storage = ephemeral_storage(&containers, &volume, disk::filesystem(&self.ctx.pod_data_root, time));
        let stats = PodStats {
            pod_ref: PodReference { name: spec::pod_name(pod).into(), namespace: spec::pod_namespace(pod).into(), uid: spec::pod_uid(pod).into() },
            start_time: pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()),
            containers,
            cpu,
            memory,
            network,
            volume,
            ephemeral_storage,
        };
        (stats, complete)
    }
}

/// Pods with something that may run: not finished.
fn is_active(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed") | None)
}

/// Veth ends of pods and nodelet's bridge carry pod traffic, not the node's.
fn is_pod_side(name: &str) -> bool {
    name.starts_with("veth")
}

fn is_host_path(pod: &Pod, volume: &str) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| v.name == volume && v.host_path.is_some())
}

/// (name, container ID without the runtime prefix, start time) of the pod's running containers.
fn running_containers(pod: &Pod) -> Vec<(String, String, Option<String>)> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let running = c.state.as_ref()?.running.as_ref()?;
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((c.name.clone(), id.to_string(), running.started_at.as_ref().map(|t| t.0.to_string())))
        })
        .collect()
}

/// The Summary's memory figures; `capacity` (the node's) gives availableBytes.
fn memory_stats(usage: &CgroupUsage, time: &str, capacity: Option<u64>) -> Option<MemoryStats> {
    let m = usage.memory?;
    Some(MemoryStats {
        time: time.to_string(),
        available_bytes: capacity.map(|c| c.saturating_sub(m.working_set_bytes)),
        usage_bytes: Some(m.usage_bytes),
        working_set_bytes: Some(m.working_set_bytes),
        rss_bytes: Some(m.rss_bytes),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    })
}

/// The interfaces, with `default` (or the first) as the top-level figures; None without any.
fn network_stats(interfaces: Vec<procfs::InterfaceCounters>, default: Option<&str>, time: &str) -> Option<NetworkStats> {
    let interfaces: Vec<InterfaceStats> = interfaces
        .into_iter()
        .map(|i| InterfaceStats { name: i.name, rx_bytes: i.rx_bytes, rx_errors: i.rx_errors, tx_bytes: i.tx_bytes, tx_errors: i.tx_errors })
        .collect();
    let chosen = default.and_then(|d| interfaces.iter().find(|i| i.name == d)).or(interfaces.first())?.clone();
    Some(NetworkStats { time: time.to_string(), default: chosen, interfaces })
}

/// The runtime's image file system: its use from CRI, its size from statvfs of its mount point.
fn image_fs_stats(fs: &cri::FilesystemUsage, time: &str) -> FsStats {
    let mountpoint = fs.fs_id.as_ref().map(|id| id.mountpoint.clone()).unwrap_or_default();
    let base = disk::filesystem(Path::new(&mountpoint), time).unwrap_or_else(|| FsStats { time: time.to_string(), ..Default::default() });
    FsStats { used_bytes: fs.used_bytes.as_ref().map(|v| v.value), inodes_used: fs.inodes_used.as_ref().map(|v| v.value), ..base }
}

/// A pod's local ephemeral storage: its containers' writable layers and logs plus its volumes,
/// on the file system of nodelet's pod directories (`fs`).
pub fn ephemeral_storage(containers: &[ContainerStats], volumes: &[VolumeStats], fs: Option<FsStats>) -> Option<FsStats> {
    let fs = fs?;
    let parts = containers.iter().flat_map(|c| [c.rootfs.as_ref(), c.logs.as_ref()]).flatten().chain(volumes.iter().map(|v| &v.fs));
    let (used, inodes) = parts.fold((0, 0), |(b, i), p| (b + p.used_bytes.unwrap_or(0), i + p.inodes_used.unwrap_or(0)));
    Some(FsStats { used_bytes: Some(used), inodes_used: Some(inodes), ..fs })
}

/// Containers by CRI state, for kubelet_running_containers.
pub fn count_states(states: impl Iterator<Item = i32>) -> ContainerCounts {
    let mut counts = ContainerCounts::default();
    for state in states {
        match cri::ContainerState::try_from(state) {
            Ok(cri::ContainerState::ContainerCreated) => counts.created += 1,
            Ok(cri::ContainerState::ContainerRunning) => counts.running += 1,
            Ok(cri::ContainerState::ContainerExited) => counts.exited += 1,
            _ => counts.unknown += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, PodStatus};

    #[test]
    fn running_containers_have_bare_ids() {
        let mut pod = Pod::default();
        let running = ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() };
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![
                ContainerStatus { name: "app".into(), container_id: Some("containerd://abc".into()), state: Some(running), ..Default::default() },
                ContainerStatus { name: "waiting".into(), state: Some(ContainerState::default()), ..Default::default() },
            ]),
            ..Default::default()
        });
        assert_eq!(running_containers(&pod), vec![("app".to_string(), "abc".to_string(), None)]);
        assert!(is_active(&pod));
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_active(&pod));
    }

    #[test]
    fn the_default_interface_leads_the_network_figures() {
        let iface = |name: &str, rx| procfs::InterfaceCounters { name: name.into(), rx_bytes: rx, ..Default::default() };
        let net = network_stats(vec![iface("eth1", 1), iface("eth0", 2)], Some("eth0"), "t").unwrap();
        assert_eq!((net.default.name.as_str(), net.default.rx_bytes, net.interfaces.len()), ("eth0", 2, 2));
        assert_eq!(network_stats(vec![iface("eth1", 1)], Some("eth0"), "t").unwrap().default.name, "eth1");
        assert!(network_stats(vec![], None, "t").is_none());
    }

    #[test]
    fn ephemeral_storage_adds_layers_logs_and_volumes() {
        let used = |b| Some(FsStats { used_bytes: Some(b), inodes_used: Some(1), ..Default::default() });
        let containers = vec![ContainerStats { name: "a".into(), rootfs: used(100), logs: used(10), ..Default::default() }];
        let volumes = vec![VolumeStats { fs: used(1000).unwrap(), name: "v".into() }];
        let fs = FsStats { capacity_bytes: Some(1 << 30), ..Default::default() };
        let e = ephemeral_storage(&containers, &volumes, Some(fs)).unwrap();
        assert_eq!((e.used_bytes, e.inodes_used, e.capacity_bytes), (Some(1110), Some(3), Some(1 << 30)));
    }

    #[test]
    fn container_states_are_counted() {
        let states =
            [cri::ContainerState::ContainerRunning as i32, cri::ContainerState::ContainerRunning as i32, cri::ContainerState::ContainerExited as i32, 99];
        assert_eq!(count_states(states.into_iter()), ContainerCounts { created: 0, running: 2, exited: 1, unknown: 1 });
    }
}
