//! Container garbage collection, every minute, node-wide (the kubelet's ContainerGC):
//! - dead containers beyond `max_per_pod_container` per (pod, container name), oldest first,
//!   never the newest instance of a container (a pod's worker decides on that one, and
//!   `kubectl logs --previous` reads the newest dead one). With the default of 1 this is the
//!   same rule as the pod worker's own cleanup (plan.rs collect_garbage), so the two agree;
//!   this pass also covers pods no worker syncs and the node-wide `max_containers` limit;
//! - sandboxes that are not ready and hold no container, of pods nodelet no longer runs
//!   (a pod with a worker has its old sandboxes removed by the worker);
//! - log folders (`<ns>_<name>_<uid>`) and pod folders (`<root-dir>/pods/<uid>`, the volumes
//!   with them, unmounted first) of pods that are gone: no worker, no sandbox. A pod's own
//!   removal deletes them; these are what a crash of nodelet in between leaves.
//!
//! Under disk pressure the eviction manager asks for more (the kubelet's
//! DeleteAllUnusedContainers): every dead container of a pod that has finished (Succeeded,
//! Failed, evicted) goes too. A removed container's log file and its rotated files go with it,
//! as the kubelet removes them (the runtime leaves them).

use crate::pods::store::PodStore;
use crate::runtime::labels;
use crate::runtime::Cri;
use k8s_cri::v1 as cri;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The kubelet's GCPolicy (defaults: MinAge 0, MaxPerPodContainer 1, MaxContainers -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A dead container younger than this (since its creation) stays.
    pub min_age: Duration,
    /// Dead instances kept per (pod, container name) behind the newest instance.
    pub max_per_pod_container: usize,
    /// Dead containers kept on the node in all; negative: no limit.
    pub max_containers: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { min_age: Duration::ZERO, max_per_pod_container: 1, max_containers: -1 }
    }
}

/// How often the collection runs, as the kubelet's ContainerGCPeriod.
pub const PERIOD: Duration = Duration::from_secs(60);
/// A log or pod folder younger than this stays: its pod may be starting right now.
const DIR_MIN_AGE: Duration = Duration::from_secs(60);

/// A container as the collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// Exited (or unknown): neither running nor created-and-about-to-start.
    pub dead: bool,
}

/// The containers to remove, oldest first within each rule.
pub fn dead_containers_to_remove(instances: &[Instance], policy: &Policy, now: SystemTime) -> Vec<String> {
    let now_nanos = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let old_enough = |c: &Instance| now_nanos.saturating_sub(c.created_at) >= policy.min_age.as_nanos() as i64;
    let mut units: HashMap<(&str, &str), Vec<&Instance>> = HashMap::new();
    for c in instances {
        units.entry((&c.pod_uid, &c.name)).or_default().push(c);
    }
    let mut remove = Vec::new();
    // Dead instances that the per-container rule keeps but the node-wide limit may take.
    let mut kept: Vec<&Instance> = Vec::new();
    for list in units.values_mut() {
        list.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        // The newest instance is never collected, nor the newest dead one behind it.
        let older: Vec<&Instance> = list.iter().skip(1).filter(|c| c.dead).copied().collect();
        for (i, c) in older.into_iter().enumerate() {
            if i < policy.max_per_pod_container {
                if i > 0 {
                    kept.push(c);
                }
            } else if old_enough(c) {
                remove.push(c);
            }
        }
    }
    if policy.max_containers >= 0 {
        let dead_total = instances.iter().filter(|c| c.dead).count() - remove.len();
        let mut excess = dead_total.saturating_sub(policy.max_containers as usize);
        kept.sort_by_key(|c| c.created_at);
        for c in kept.into_iter().filter(|c| old_enough(c)) {
            if excess == 0 {
                break;
            }
            remove.push(c);
            excess -= 1;
        }
    }
    remove.sort_by_key(|c| c.created_at);
    remove.into_iter().map(|c| c.id.clone()).collect()
}

/// Under disk pressure: every dead container of the finished pods (by UID), besides what
/// `dead_containers_to_remove` takes. A finished pod runs nothing again, so its newest dead
/// instance is no longer kept for a restart.
pub fn dead_containers_of_finished_pods(instances: &[Instance], finished: &HashSet<String>) -> Vec<String> {
    let mut dead: Vec<&Instance> = instances.iter().filter(|c| c.dead && finished.contains(&c.pod_uid)).collect();
    dead.sort_by_key(|c| c.created_at);
    dead.into_iter().map(|c| c.id.clone()).collect()
}

/// The UIDs of the pods that have finished: phase Succeeded or Failed in their status.
pub fn finished_pods(pods: &[k8s_openapi::api::core::v1::Pod]) -> HashSet<String> {
    let finished = |p: &&k8s_openapi::api::core::v1::Pod| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    pods.iter().filter(finished).filter_map(|p| p.metadata.uid.clone()).collect()
}

/// A sandbox as the collection sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: String,
    pub pod_uid: String,
    pub ready: bool,
}

/// Sandboxes of pods nodelet no longer runs that are not ready and hold no container.
pub fn sandboxes_to_remove(sandboxes: &[Sandbox], containers_in: &HashSet<String>, active_pods: &HashSet<String>) -> Vec<String> {
    sandboxes.iter().filter(|s| !s.ready && !containers_in.contains(&s.id) && !active_pods.contains(&s.pod_uid)).map(|s| s.id.clone()).collect()
}

/// The pod UID of a log folder named `<namespace>_<name>_<uid>`.
pub fn log_dir_uid(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    (!ns.is_empty() && !pod.is_empty() && !uid.is_empty() && !uid.contains('_')).then_some(uid)
}

/// The pod UID of a pod folder: its name.
pub fn pod_dir_uid(name: &str) -> Option<&str> {
    Some(name)
}

/// Folders (name, age) of pods that are gone: no worker and no sandbox, old enough that no pod
/// is being set up in them. `uid_of` reads the pod's UID from a folder's name.
pub fn dirs_of_gone_pods<'a>(
    dirs: &'a [(String, Duration)],
    uid_of: impl Fn(&str) -> Option<&str>,
    active_pods: &HashSet<String>,
    with_sandbox: &HashSet<String>,
) -> Vec<&'a str> {
    dirs.iter()
        .filter(|(name, age)| *age >= DIR_MIN_AGE && uid_of(name).is_some_and(|uid| !active_pods.contains(uid) && !with_sandbox.contains(uid)))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: usize,
    pub sandboxes: usize,
    pub log_folders: usize,
    pub pod_folders: usize,
}

/// The collector: the runtime, the pods nodelet runs, and where pod logs live.
#[derive(Clone)]
pub struct ContainerGc {
    pub cri: Cri,
    pub store: PodStore,
    pub node_name: String,
    pub pod_logs_dir: PathBuf,
    /// `<root-dir>/pods`: a folder per pod UID (volumes, the reason it ended).
    pub pod_data_root: PathBuf,
    pub policy: Policy,
}

impl ContainerGc {
    /// Runs the collection every `PERIOD` (first after one period, once the pods are known).
    pub async fn run(self) {
        loop {
            tokio::time::sleep(PERIOD).await;
            if let Err(e) = self.collect().await {
                tracing::warn!(error = %e, "container garbage collection failed");
            }
        }
    }

    /// One pass; returns what was removed.
    pub async fn collect(&self) -> Result<Removed, crate::runtime::CriError> {
        self.collect_with(false).await
    }

    /// The pass disk pressure asks for: also every dead container of the pods that finished.
    pub async fn collect_unused(&self) -> Result<Removed, crate::runtime::CriError> {
        self.collect_with(true).await
    }

    async fn collect_with(&self, finished_pods_too: bool) -> Result<Removed, crate::runtime::CriError> {
        // Folders are listed first: a pod that appears later is in the store or the runtime.
        let log_dirs = list_dirs(&self.pod_logs_dir);
        let pod_dirs = list_dirs(&self.pod_data_root);
        let pods = self.store.list();
        let active: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let mine = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), self.node_name.clone())]);
        let containers = self.cri.list_containers(mine.clone()).await?;
        let instances: Vec<Instance> = containers.iter().map(instance).collect();
        let mut removed = Removed::default();
        let mut doomed = dead_containers_to_remove(&instances, &self.policy, SystemTime::now());
        if finished_pods_too {
            let more = dead_containers_of_finished_pods(&instances, &finished_pods(&pods));
            doomed.extend(more.into_iter().filter(|id| !doomed.contains(id)).collect::<Vec<_>>());
        }
        for id in doomed {
            match crate::logrotate::remove_container_and_logs(&self.cri, &id).await {
                Ok(()) => removed.containers += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "could not remove a dead container"),
            }
        }
        let sandboxes: Vec<Sandbox> = self
            .cri
            .list_sandboxes(mine)
            .await?
            .into_iter()
            .map(|s| Sandbox {
                pod_uid: s.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
                ready: s.state == cri::PodSandboxState::SandboxReady as i32,
                id: s.id,
            })
            .collect();
        let containers_in: HashSet<String> = self.cri.list_containers(HashMap::new()).await?.into_iter().map(|c| c.pod_sandbox_id).collect();
        for id in sandboxes_to_remove(&sandboxes, &containers_in, &active) {
            match self.cri.remove_sandbox(&id).await {
                Ok(()) => removed.sandboxes += 1,
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "could not remove the sandbox of a pod that is gone"),
            }
        }
        // Any node's sandbox keeps its folder: a shared log directory is never emptied under a pod.
        let with_sandbox: HashSet<String> =
            self.cri.list_sandboxes(HashMap::new()).await?.into_iter().filter_map(|s| s.labels.get(labels::POD_UID).cloned()).collect();
        for name in dirs_of_gone_pods(&log_dirs, log_dir_uid, &active, &with_sandbox) {
            removed.log_folders += remove_folder(self.pod_logs_dir.join(name), "log").await;
        }
        for name in dirs_of_gone_pods(&pod_dirs, pod_dir_uid, &active, &with_sandbox) {
            removed.pod_folders += remove_folder(self.pod_data_root.join(name), "pod").await;
        }
        if removed != Removed::default() {
            tracing::info!(?removed, "container garbage collection");
        }
        Ok(removed)
    }
}

/// Removes the folder of a pod that is gone (unmounting what is under it first); 1 when removed.
async fn remove_folder(dir: PathBuf, what: &str) -> usize {
    let target = dir.clone();
    match tokio::task::spawn_blocking(move || crate::volumes::mounts::remove_pod_dir(&target)).await {
        Ok(Ok(())) => 1,
        Ok(Err(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove the {what} folder of a pod that is gone");
            0
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the {what} folder of a pod that is gone");
            0
        }
    }
}

fn instance(c: &cri::Container) -> Instance {
    let dead = !matches!(cri::ContainerState::try_from(c.state), Ok(cri::ContainerState::ContainerRunning) | Ok(cri::ContainerState::ContainerCreated));
    Instance {
        id: c.id.clone(),
        pod_uid: c.labels.get(labels::POD_UID).cloned().unwrap_or_default(),
        name: c.metadata.as_ref().map(|m| m.name.clone()).or_else(|| c.labels.get(labels::CONTAINER_NAME).cloned()).unwrap_or_default(),
        attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
        created_at: c.created_at,
        dead,
    }
}

/// The folders under `root` with their age (by modification time).
fn list_dirs(root: &Path) -> Vec<(String, Duration)> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let now = SystemTime::now();
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let age = now.duration_since(e.metadata().ok()?.modified().ok()?).unwrap_or_default();
            Some((e.file_name().into_string().ok()?, age))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn c(pod: &str, name: &str, attempt: u32, dead: bool) -> Instance {
        Instance { id: format!("{pod}-{name}-{attempt}"), pod_uid: pod.into(), name: name.into(), attempt, created_at: attempt as i64 * SEC, dead }
    }

    fn at(s: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64)
    }

    #[test]
    fn keeps_the_newest_instance_and_one_dead_one_per_container() {
        let list = vec![
            c("p", "a", 0, true),
            c("p", "a", 1, true),
            c("p", "a", 2, true),
            c("p", "a", 3, false),
            c("p", "b", 0, true),
            c("q", "a", 0, true),
            c("q", "a", 1, true),
        ];
        let removed = dead_containers_to_remove(&list, &Policy::default(), at(100));
        assert_eq!(removed, vec!["p-a-0", "p-a-1"]);
        // The newest instance dead: it and the one before it stay (the worker's rule, and --previous).
        let list = vec![c("p", "a", 0, true), c("p", "a", 1, true), c("p", "a", 2, true)];
        assert_eq!(dead_containers_to_remove(&list, &Policy::default(), at(100)), vec!["p-a-0"]);
    }

    #[test]
    fn min_age_and_more_dead_per_container_keep_more() {
        let list: Vec<Instance> = (0..5).map(|i| c("p", "a", i, true)).collect();
        let young = Policy { min_age: Duration::from_secs(10), ..Default::default() };
        // created at 0..4 s; at 12 s only those created at or before 2 s are old enough
        assert_eq!(dead_containers_to_remove(&list, &young, at(12)), vec!["p-a-0", "p-a-1", "p-a-2"]);
        assert_eq!(dead_containers_to_remove(&list, &young, at(5)), Vec::<String>::new());
        let three = Policy { max_per_pod_container: 3, ..Default::default() };
        assert_eq!(dead_containers_to_remove(&list, &three, at(100)), vec!["p-a-0"]);
    }

    #[test]
    fn the_node_wide_limit_takes_the_oldest_but_never_the_newest_dead_instance() {
        let list: Vec<Instance> = (0..4).map(|i| c("p", "a", i, true)).chain((0..4).map(|i| c("q", "b", i + 10, true))).collect();
        let policy = Policy { max_per_pod_container: 3, max_containers: 4, ..Default::default() };
        // per container: newest (3, 13) + newest dead behind it (2, 12) are untouchable
        let removed = dead_containers_to_remove(&list, &policy, at(100));
        assert_eq!(removed, vec!["p-a-0", "p-a-1", "q-b-10", "q-b-11"]);
        let zero = Policy { max_per_pod_container: 3, max_containers: 0, ..Default::default() };
        assert_eq!(dead_containers_to_remove(&list, &zero, at(100)).len(), 4);
        let running: Vec<Instance> = (0..3).map(|i| c("p", "a", i, false)).collect();
        assert!(dead_containers_to_remove(&running, &zero, at(100)).is_empty());
    }

    #[test]
    fn under_disk_pressure_finished_pods_lose_every_dead_container() {
        let list = vec![c("done", "a", 0, true), c("done", "b", 1, true), c("live", "a", 0, true), c("live", "a", 1, false), c("done", "c", 2, false)];
        let finished = HashSet::from(["done".to_string()]);
        assert_eq!(dead_containers_of_finished_pods(&list, &finished), vec!["done-a-0", "done-b-1"]);
        assert!(dead_containers_of_finished_pods(&list, &HashSet::new()).is_empty());
        let pod = |uid: &str, phase: Option<&str>| k8s_openapi::api::core::v1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { uid: Some(uid.into()), ..Default::default() },
            status: Some(k8s_openapi::api::core::v1::PodStatus { phase: phase.map(String::from), ..Default::default() }),
            ..Default::default()
        };
        let pods = vec![pod("s", Some("Succeeded")), pod("f", Some("Failed")), pod("r", Some("Running")), pod("n", None)];
        assert_eq!(finished_pods(&pods), HashSet::from(["s".to_string(), "f".to_string()]));
    }

    #[test]
    fn only_idle_sandboxes_of_pods_that_are_gone_are_removed() {
        let sb = |id: &str, pod: &str, ready: bool| Sandbox { id: id.into(), pod_uid: pod.into(), ready };
        let sandboxes = vec![sb("s1", "gone", false), sb("s2", "gone", false), sb("s3", "gone", true), sb("s4", "live", false)];
        let containers_in = HashSet::from(["s2".to_string()]);
        let active = HashSet::from(["live".to_string()]);
        assert_eq!(sandboxes_to_remove(&sandboxes, &containers_in, &active), vec!["s1"]);
    }

    #[test]
    fn log_and_pod_folders_of_gone_pods_are_removed_once_old_enough() {
        assert_eq!(log_dir_uid("default_web-1_1234-abcd"), Some("1234-abcd"));
        assert_eq!(log_dir_uid("weird"), None);
        assert_eq!(log_dir_uid("ns_name_"), None);
        let old = Duration::from_secs(3600);
        let dirs = vec![
            ("ns_a_u1".to_string(), old),
            ("ns_b_u2".to_string(), old),
            ("ns_c_u3".to_string(), old),
            ("ns_d_u4".to_string(), Duration::from_secs(5)),
            ("not-a-pod".to_string(), old),
        ];
        let active = HashSet::from(["u1".to_string()]);
        let with_sandbox = HashSet::from(["u2".to_string()]);
        assert_eq!(dirs_of_gone_pods(&dirs, log_dir_uid, &active, &with_sandbox), vec!["ns_c_u3"]);
        // Pod folders are named by the UID alone.
        let pod_dirs = vec![("u1".to_string(), old), ("u2".to_string(), old), ("u3".to_string(), old), ("u4".to_string(), Duration::from_secs(5))];
        assert_eq!(dirs_of_gone_pods(&pod_dirs, pod_dir_uid, &active, &with_sandbox), vec!["u3"]);
    }
}
