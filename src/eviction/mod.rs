//! The eviction manager (the kubelet's pkg/kubelet/eviction): every 10 s it reads the node's
//! figures, judges them against the hard and soft thresholds (`thresholds`, `decide`), keeps the
//! node's MemoryPressure and DiskPressure view, and when a threshold has been met for its grace
//! period it first reclaims what the node itself holds (disk: dead containers, then unused
//! images) and, if that is not enough, ends one pod per pass: the first in the kubelet's order,
//! Failed with reason Evicted. Effects go through `Effects` (the real node in `Real`, a
//! recording fake in the tests).

pub mod decide;
pub mod local_storage;
pub mod observe;
pub mod thresholds;

use crate::pods::end::EndReason;
use crate::stats::summary::Summary;
use decide::{Assessment, Candidate, History, Observations};
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thresholds::{Signal, Threshold};

/// How often the manager looks, as the kubelet's evictionMonitoringPeriod.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The eviction settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition stays after its threshold was last met.
    pub pressure_transition: Duration,
    /// The longest grace a pod evicted for a soft threshold gets.
    pub max_pod_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            thresholds: thresholds::thresholds(&Default::default()).expect("the default thresholds parse"),
            pressure_transition: thresholds::DEFAULT_PRESSURE_TRANSITION,
            max_pod_grace: Duration::ZERO,
        }
    }
}

/// The node's pressure conditions as the manager last judged them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodePressure {
    pub memory: bool,
    pub disk: bool,
}

/// What the manager does to the node.
#[async_trait::async_trait]
pub trait Effects: Send + Sync {
    /// The node's and pods' figures now.
    async fn observe(&self) -> Summary;
    /// Removes dead containers, every one of the finished pods, with their logs (and what pods
    /// that are gone left).
    async fn collect_containers(&self) -> Result<(), String>;
    /// Whether the images share the file system of nodelet's root dir (nodefs).
    async fn images_on_node_fs(&self) -> bool;
    /// Removes every unused image old enough to go.
    async fn collect_images(&self) -> Result<(), String>;
    /// The pods that have not finished.
    fn active_pods(&self) -> Vec<Pod>;
    /// Ends the pod.
    fn evict(&self, pod: &Pod, reason: EndReason);
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No threshold is due.
    Nothing,
    /// Node-level reclaim brought the signal back under its thresholds.
    Reclaimed(Signal),
    /// The pod (namespace/name) was evicted for the signal.
    Evicted { pod: String, signal: Signal },
    /// A threshold is due but no pod may be evicted.
    NoneEvictable(Signal),
    /// These pods (namespace/name) were evicted for using more local storage than their limits.
    OverLocalLimits(Vec<String>),
}

pub struct Manager<E: Effects> {
    pub settings: Settings,
    pub effects: E,
    history: History,
    /// Pods already evicted, until they leave the active pods: never twice.
    evicted: HashSet<String>,
    pressure: tokio::sync::watch::Sender<NodePressure>,
}

impl<E: Effects> Manager<E> {
    pub fn new(settings: Settings, effects: E) -> Self {
        Manager { settings, effects, history: History::default(), evicted: HashSet::new(), pressure: tokio::sync::watch::channel(NodePressure::default()).0 }
    }

    /// The node's pressure conditions, updated every pass.
    pub fn pressure(&self) -> tokio::sync::watch::Receiver<NodePressure> {
        self.pressure.subscribe()
    }

    /// Runs a pass every `PERIOD` for ever.
    pub async fn run(mut self) {
        loop {
            let outcome = self.pass(Instant::now()).await;
            if outcome != Outcome::Nothing {
                tracing::info!(?outcome, "eviction manager");
            }
            tokio::time::sleep(PERIOD).await;
        }
    }

    /// One look at the node, and what it calls for.
    pub async fn pass(&mut self, now: Instant) -> Outcome {
        let summary = self.effects.observe().await;
        let observations = observe::observations(&summary);
        let assessment = decide::assess(&self.settings.thresholds, &observations, &mut self.history, self.settings.pressure_transition, now);
        self.pressure.send_replace(NodePressure { memory: assessment.memory_pressure, disk: assessment.disk_pressure });
        // Pods over their own local-storage limits go first, however full the disk (the kubelet's order).
        let over_limits = self.evict_over_local_limits(&summary);
        if !over_limits.is_empty() {
            return Outcome::OverLocalLimits(over_limits);
        }
        let thresholds = &self.settings.thresholds;
        let Some(target) = decide::to_reclaim(thresholds, &assessment.due) else { return Outcome::Nothing };
        let signal = thresholds[target].signal;
        let (summary, observations) = if decide::reclaims_node_first(signal) {
            match self.reclaim_node(signal, &assessment).await {
                Some(after) => after,
                None => return Outcome::Reclaimed(signal),
            }
        } else {
            (summary, observations)
        };
        self.evict_one(target, &summary, &observations)
    }

    /// Dead containers, then unused images when they are on the pressed file system; the
    /// figures after, or None when every due threshold is resolved.
    async fn reclaim_node(&self, signal: Signal, assessment: &Assessment) -> Option<(Summary, Observations)> {
        if let Err(e) = self.effects.collect_containers().await {
            tracing::warn!(error = %e, "eviction: removing dead containers failed");
        }
        if decide::reclaims_images(signal, self.effects.images_on_node_fs().await) {
            if let Err(e) = self.effects.collect_images().await {
                tracing::warn!(error = %e, "eviction: removing unused images failed");
            }
        }
        let summary = self.effects.observe().await;
        let after = observe::observations(&summary);
        let still = assessment.due.iter().any(|i| decide::is_met(&self.settings.thresholds[*i], true, &after));
        if !still {
            tracing::info!("eviction: node-level reclaim relieved the pressure without evicting a pod");
            return None;
        }
        Some((summary, after))
    }

    /// Evicts every pod over its emptyDir size limits or ephemeral-storage limits (critical ones
    /// never; a static pod over its own limits is, as for node pressure); their names.
    fn evict_over_local_limits(&mut self, summary: &Summary) -> Vec<String> {
        let usage = observe::pod_usage(summary);
        let mut evicted = Vec::new();
        for pod in self.effects.active_pods().into_iter().filter(|p| !decide::never_evicted(p)) {
            let uid = crate::pods::spec::pod_uid(&pod);
            let Some(message) = usage.get(uid).filter(|_| !self.evicted.contains(uid)).and_then(|u| local_storage::over_limits(&pod, u)) else { continue };
            let name = crate::pods::spec::pod_ref(&pod);
            tracing::warn!(pod = %name, message = %message, "evicting a pod over its local storage limits");
            self.effects.evict(&pod, EndReason::Evicted { message, grace: Some(decide::MINIMUM_GRACE) });
            self.evicted.insert(uid.to_string());
            evicted.push(name.to_string());
        }
        evicted
    }

    fn evict_one(&mut self, target: usize, summary: &Summary, observations: &Observations) -> Outcome {
        let threshold = &self.settings.thresholds[target];
        let signal = threshold.signal;
        let pods = self.effects.active_pods();
        let active: HashSet<String> = pods.iter().map(|p| crate::pods::spec::pod_uid(p).to_string()).collect();
        self.evicted.retain(|uid| active.contains(uid));
        let mut usage: HashMap<String, decide::PodUsage> = observe::pod_usage(summary);
        let candidates: Vec<Candidate> = pods
            .into_iter()
            .filter(|p| !self.evicted.contains(crate::pods::spec::pod_uid(p)))
            .map(|pod| Candidate { usage: usage.remove(crate::pods::spec::pod_uid(&pod)), pod })
            .collect();
        let Some(first) = decide::rank(&candidates, signal.resource()).into_iter().next() else {
            tracing::info!(signal = %signal, "eviction threshold met but no pod may be evicted");
            return Outcome::NoneEvictable(signal);
        };
        let Candidate { pod, usage } = &candidates[first];
        let message = decide::message(threshold, observations.get(&signal), pod, usage.as_ref());
        let pod_grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(crate::pods::reasons::DEFAULT_GRACE_PERIOD_SECS);
        let grace = decide::eviction_grace(threshold, Duration::from_secs(pod_grace.max(0) as u64), self.settings.max_pod_grace);
        let name = crate::pods::spec::pod_ref(pod);
        tracing::warn!(pod = %name, signal = %signal, message = %message, ?grace, "evicting pod");
        self.effects.evict(pod, EndReason::Evicted { message, grace: Some(grace) });
        self.evicted.insert(crate::pods::spec::pod_uid(pod).to_string());
        Outcome::Evicted { pod: name, signal }
    }
}

/// The node itself: the stats collector, the garbage collectors, the pod store, and the pod
/// manager's channel for pods to end.
pub struct Real {
    pub stats: Arc<crate::stats::Collector>,
    pub containers: crate::gc::containers::ContainerGc,
    pub images: Arc<crate::gc::images::ImageGc>,
    pub store: crate::pods::store::PodStore,
    pub evictions: tokio::sync::mpsc::UnboundedSender<(String, EndReason)>,
}

#[async_trait::async_trait]
impl Effects for Real {
    async fn observe(&self) -> Summary {
        let mut summary = self.stats.collect().await.summary;
        let node_memory = summary.node.memory.as_ref().is_some_and(|m| m.available_bytes.is_some() && m.working_set_bytes.is_some());
        if !node_memory {
            // No root cgroup figures: the kernel's own estimate stands in.
            if let Some(o) = observe::memory_from_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()) {
                summary.node.memory = Some(crate::stats::summary::MemoryStats {
                    available_bytes: Some(o.available),
                    working_set_bytes: Some(o.capacity - o.available),
                    ..Default::default()
                });
            }
        }
        summary
    }

    async fn collect_containers(&self) -> Result<(), String> {
        // Disk pressure: the finished pods' dead containers (and their logs) go too.
        self.containers.collect_unused().await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn images_on_node_fs(&self) -> bool {
        // Unknown (the runtime does not answer): as the images most often are on the node's disk.
        self.images.shares_fs_with(&self.stats.root_dir).await.unwrap_or(true)
    }

    async fn collect_images(&self) -> Result<(), String> {
        self.images.remove_unused().await.map(|_| ()).map_err(|e| e.to_string())
    }

    fn active_pods(&self) -> Vec<Pod> {
        let finished = |p: &Pod| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        self.store.list().into_iter().filter(|p| !finished(p)).collect()
    }

    fn evict(&self, pod: &Pod, reason: EndReason) {
        let _ = self.evictions.send((crate::pods::spec::pod_uid(pod).to_string(), reason));
    }
}

#[cfg(test)]
mod tests;
