//! The eviction manager's judgement, pure (the kubelet's eviction manager and its helpers):
//! which thresholds are met, which have been met for their grace period, the node's pressure
//! conditions (kept for the transition period after the last sighting), which threshold to act
//! on, the order pods are evicted in, and the message an evicted pod carries.

use super::thresholds::{Pressure, Resource, Signal, Threshold};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What is left of a resource and how much there is in all (bytes or inodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// Pods at or above this priority are never evicted (system-cluster-critical and up).
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// A hard threshold's eviction kills at once: the kubelet asks for 1 s ...
pub const HARD_EVICTION_GRACE: Duration = Duration::from_secs(1);
/// ... and its runtime manager never gives a container less than 2 s.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// What the manager remembers from one pass to the next.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When each threshold (by its index) was first seen met, while it stays met.
    first_met: HashMap<usize, Instant>,
    /// When each pressure was last seen.
    pressure_seen: HashMap<Pressure, Instant>,
}

/// One pass's judgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    /// Thresholds (indices) met now, grace periods aside.
    pub met: Vec<usize>,
    /// Thresholds met for at least their grace period: these drive reclaim and eviction.
    pub due: Vec<usize>,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
}

/// Whether the observation crosses the threshold (the level, raised by its minimum reclaim when
/// asked, is above what is available). A signal that could not be observed crosses nothing.
pub fn is_met(threshold: &Threshold, with_min_reclaim: bool, observations: &Observations) -> bool {
    observations.get(&threshold.signal).is_some_and(|o| {
        let reclaim = threshold.min_reclaim.as_ref().filter(|_| with_min_reclaim).map_or(0, |r| r.amount(o.capacity));
        threshold.value.amount(o.capacity) + reclaim > o.available
    })
}

/// Judges the observations at `now` and updates the history.
pub fn assess(thresholds: &[Threshold], observations: &Observations, history: &mut History, transition: Duration, now: Instant) -> Assessment {
    // One met before stays met until its minimum reclaim is available too.
    let met: Vec<usize> = (0..thresholds.len())
        .filter(|i| is_met(&thresholds[*i], false, observations) || (history.first_met.contains_key(i) && is_met(&thresholds[*i], true, observations)))
        .collect();
    history.first_met.retain(|i, _| met.contains(i));
    for i in &met {
        history.first_met.entry(*i).or_insert(now);
        history.pressure_seen.insert(thresholds[*i].signal.pressure(), now);
    }
    let due = met.iter().copied().filter(|i| now.saturating_duration_since(history.first_met[i]) >= thresholds[*i].grace.unwrap_or_default()).collect();
    // A condition stays true until its pressure has not been seen for the transition period,
    // so a node hovering at a threshold does not flap.
    let under = |p: Pressure| history.pressure_seen.get(&p).is_some_and(|seen| now.saturating_duration_since(*seen) < transition);
    Assessment { memory_pressure: under(Pressure::Memory), disk_pressure: under(Pressure::Disk), met, due }
}

/// The threshold to act on among those due: memory before everything else, then in order.
pub fn to_reclaim(thresholds: &[Threshold], due: &[usize]) -> Option<usize> {
    due.iter().copied().find(|i| thresholds[*i].signal == Signal::MemoryAvailable).or_else(|| due.first().copied())
}

/// Whether node-level resources are reclaimed (dead containers, then unused images) before a
/// pod is evicted for this signal: disk, not memory.
pub fn reclaims_node_first(signal: Signal) -> bool {
    signal.pressure() == Pressure::Disk
}

/// Whether the node-level reclaim for `signal` removes unused images: for the image file
/// system's signals, and for nodefs' when the images are on it (the kubelet's reclaim functions;
/// with a dedicated image disk, removing images does not relieve nodefs).
pub fn reclaims_images(signal: Signal, images_on_node_fs: bool) -> bool {
    match signal {
        Signal::ImagefsAvailable | Signal::ImagefsInodesFree => true,
        Signal::NodefsAvailable | Signal::NodefsInodesFree => images_on_node_fs,
        Signal::MemoryAvailable => false,
    }
}

/// A pod's use as the stats read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    /// Working set bytes of the pod's cgroup.
    pub memory: Option<u64>,
    /// Writable layers, logs and local volumes.
    pub ephemeral_storage: Option<u64>,
    pub inodes: Option<u64>,
    pub containers: Vec<ContainerUsage>,
    /// Bytes used by each of its volumes, by name.
    pub volumes: std::collections::HashMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub memory: Option<u64>,
    pub rootfs: Option<u64>,
    pub logs: Option<u64>,
}

impl PodUsage {
    fn of(&self, resource: Resource) -> Option<u64> {
        match resource {
            Resource::Memory => self.memory,
            Resource::EphemeralStorage => self.ephemeral_storage,
            Resource::Inodes => self.inodes,
        }
    }
}

/// A pod that may be evicted, with its use (None: no figures were found for it).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pod: Pod,
    pub usage: Option<PodUsage>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Never evicted: critical by priority, or a mirror pod (its static pod is the node's own).
pub fn never_evicted(pod: &Pod) -> bool {
    priority(pod) >= CRITICAL_PRIORITY || crate::pods::status_sync::is_mirror_pod(pod)
}

/// A static pod (from the manifest directory) is evicted only after every other pod: it is not
/// admitted again once evicted. (The kubelet never evicts one; in standalone mode every pod is
/// static, and eviction would do nothing.)
fn is_static(pod: &Pod) -> bool {
    !crate::pods::status_sync::is_api_pod(pod)
}

/// The containers whose requests count: regular containers and the largest init container.
fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
}

fn request_text(c: &Container, resource: Resource) -> Option<&str> {
    let name = match resource {
        Resource::Memory => "memory",
        Resource::EphemeralStorage => "ephemeral-storage",
        Resource::Inodes => return None,
    };
    c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(name)).map(|q| q.0.as_str())
}

fn request_of(c: &Container, resource: Resource) -> u64 {
    request_text(c, resource).and_then(|t| crate::pods::quantity::bytes(t).ok()).unwrap_or(0).max(0) as u64
}

/// The pod's request of the resource: its containers' sum, or its largest init container if more.
pub fn pod_request(pod: &Pod, resource: Resource) -> u64 {
    pod_total(pod, |c| Some(request_of(c, resource))).unwrap_or(0)
}

/// A pod's amount from its containers' (a request, a limit): their sum, or the largest init
/// container's if more (init containers run one at a time, before the others); None when no
/// container has one.
pub fn pod_total(pod: &Pod, amount: impl Fn(&Container) -> Option<u64>) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let sum = spec.containers.iter().filter_map(&amount).reduce(|a, b| a + b);
    let init = spec.init_containers.iter().flatten().filter_map(&amount).max();
    sum.max(init)
}

/// The order pods are evicted in for the resource (the kubelet's rankMemoryPressure and
/// rankDiskPressure): pods without figures and pods using more than they requested first, then
/// lower priority first, then the largest use above the request; static pods after all others.
/// Returns indices into `candidates`, leaving out pods never evicted.
pub fn rank(candidates: &[Candidate], resource: Resource) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).filter(|i| !never_evicted(&candidates[*i].pod)).collect();
    order.sort_by_cached_key(|i| {
        let c = &candidates[*i];
        let request = pod_request(&c.pod, resource) as i128;
        let usage = c.usage.as_ref().and_then(|u| u.of(resource));
        let (found, exceeds, over) = match usage {
            Some(used) => (true, used as i128 > request, used as i128 - request),
            None => (false, true, i128::MAX),
        };
        (is_static(&c.pod), found, !exceeds, priority(&c.pod), Reverse(over), *i)
    });
    order
}

/// A quantity as the kubelet prints bytes (binary suffixes when exact: 100Mi, 1536).
pub fn binary_si(n: u64) -> String {
    let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut n, mut i) = (n, 0);
    if n < 1024 {
        return decimal_si(n);
    }
    while n % 1024 == 0 && i + 1 < suffixes.len() {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

/// A count as the kubelet prints one (decimal suffixes when exact: 5k, 1M).
pub fn decimal_si(n: u64) -> String {
    let suffixes = ["", "k", "M", "G", "T", "P", "E"];
    let (mut n, mut i) = (n, 0);
    while n != 0 && n % 1000 == 0 && i + 1 < suffixes.len() {
        n /= 1000;
        i += 1;
    }
    format!("{n}{}", suffixes[i])
}

fn quantity(resource: Resource, n: u64) -> String {
    match resource {
        Resource::Inodes => decimal_si(n),
        _ => binary_si(n),
    }
}

/// The evicted pod's message, as the kubelet words it: the resource, the threshold and what was
/// available, and each container using more than it requested.
pub fn message(threshold: &Threshold, observation: Option<&Observation>, pod: &Pod, usage: Option<&PodUsage>) -> String {
    let resource = threshold.signal.resource();
    let mut text = format!("The node was low on resource: {}. ", resource.as_str());
    if let Some(o) = observation {
        let level = match &threshold.value {
            super::thresholds::Value::Quantity { text, .. } => text.clone(),
            value => quantity(resource, value.amount(o.capacity)),
        };
        text += &format!("Threshold quantity: {level}, available: {}. ", quantity(resource, o.available));
    }
    let Some(usage) = usage else { return text };
    for used in &usage.containers {
        let Some(container) = containers(pod).find(|c| c.name == used.name) else { continue };
        let amount = match resource {
            Resource::Memory => used.memory,
            Resource::EphemeralStorage => used.rootfs.zip(used.logs).map(|(r, l)| r + l),
            Resource::Inodes => None,
        };
        let Some(amount) = amount.filter(|a| *a > request_of(container, resource)) else { continue };
        let request = request_text(container, resource).unwrap_or("0");
        text += &format!(
            "Container {} was using {}, request is {request}, has larger consumption of {}. ",
            used.name,
            quantity(resource, amount),
            resource.as_str()
        );
    }
    text
}

/// The grace an evicted pod's containers get: next to none for a hard threshold; for a soft one
/// the pod's own, at most `max_pod_grace` (evictionMaxPodGracePeriod); never under the runtime's
/// minimum.
pub fn eviction_grace(threshold: &Threshold, pod_grace: Duration, max_pod_grace: Duration) -> Duration {
    let grace = if threshold.is_hard() { HARD_EVICTION_GRACE } else { pod_grace.min(max_pod_grace) };
    grace.max(MINIMUM_GRACE)
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
