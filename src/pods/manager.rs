//! The pod manager: turns the desired set of pods into one worker per pod, stops the workers of
//! pods that went away, and at start-up and periodically removes what the runtime holds for pods
//! nobody wants any more (its manifest vanished while nodelet was down).

use super::labels;
use super::source::ManifestDir;
use super::spec;
use super::worker::{self, WorkerDeps, WorkerMsg};
use crate::health::Health;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Running {
    pod: Pod,
    tx: UnboundedSender<WorkerMsg>,
}

pub struct Manager {
    deps: WorkerDeps,
    running: HashMap<String, Running>,
    /// Every worker's task by pod UID; a stopping worker owns its sandbox until it finishes.
    handles: HashMap<String, JoinHandle<()>>,
}

impl Manager {
    pub fn new(deps: WorkerDeps) -> Self {
        Manager { deps, running: HashMap::new(), handles: HashMap::new() }
    }

    /// Polls the manifest directory for ever, keeping workers in line with it.
    pub async fn run(mut self, mut source: Option<ManifestDir>, poll: Duration, health: Arc<Health>) {
        let mut last_sweep: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = match source.as_ref().map(|s| super::source::watch_dir(s.dir())) {
            Some(Ok(rx)) => Some(rx),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot watch the static pod directory; polling only");
                None
            }
            None => None,
        };
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(()) = async { match changes.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {}
            }
            health.sync_loop_ran();
            if let Some(pods) = source.as_mut().and_then(ManifestDir::scan) {
                self.apply(pods);
            }
            // The first sweep waits for the first scan, so adopted pods are never mistaken for orphans.
            if last_sweep.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP_EVERY) {
                self.sweep_orphans().await;
                last_sweep = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Makes the set of workers match `pods`.
    pub fn apply(&mut self, pods: Vec<Pod>) {
        let desired: HashMap<String, Pod> = pods.into_iter().map(|p| (spec::pod_uid(&p).to_string(), p)).collect();
        let gone: Vec<String> = self.running.keys().filter(|uid| !desired.contains_key(*uid)).cloned().collect();
        for uid in gone {
            let running = self.running.remove(&uid).expect("listed above");
            tracing::info!(pod = %spec::pod_ref(&running.pod), "pod removed from its source");
            let _ = running.tx.send(WorkerMsg::Terminate(None));
        }
        for (uid, pod) in desired {
            match self.running.get_mut(&uid) {
                Some(running) if running.pod != pod => {
                    running.pod = pod.clone();
                    let _ = running.tx.send(WorkerMsg::Update(Box::new(pod)));
                }
                Some(_) => {}
                None => {
                    tracing::info!(pod = %spec::pod_ref(&pod), uid = %uid, "pod added");
                    let (tx, handle) = worker::spawn(self.deps.clone(), pod.clone());
                    self.running.insert(uid.clone(), Running { pod, tx });
                    self.handles.retain(|_, h| !h.is_finished());
                    self.handles.insert(uid, handle);
                }
            }
        }
    }

    /// Removes sandboxes labelled with this node whose pod has no worker.
    async fn sweep_orphans(&mut self) {
        let node = self.deps.ctx.node_name.clone();
        let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node)]);
        let sandboxes = match self.deps.cri.list_sandboxes(selector).await {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot list sandboxes to find orphans"),
        };
        let known: HashSet<&String> = self.running.keys().collect();
        for sandbox in sandboxes {
            let uid = sandbox.labels.get(labels::POD_UID).cloned().unwrap_or_default();
            if known.contains(&uid) || self.handles.get(&uid).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let meta = sandbox.metadata.clone().unwrap_or_default();
            tracing::info!(pod = %format!("{}/{}", meta.namespace, meta.name), sandbox = %sandbox.id, "removing the sandbox of a pod that is no longer wanted");
            let grace = sandbox_grace(&sandbox.annotations);
            let cri = self.deps.cri.clone();
            let ctx = self.deps.ctx.clone();
            tokio::spawn(async move {
                match worker::remove_orphan(&cri, &sandbox.id, grace).await {
                    Ok(()) => {
                        let mut pod = Pod::default();
                        pod.metadata.name = Some(meta.name);
                        pod.metadata.namespace = Some(meta.namespace);
                        pod.metadata.uid = Some(meta.uid);
                        worker::remove_pod_leftovers(&ctx, &pod).await;
                    }
                    Err(e) => tracing::warn!(sandbox = %sandbox.id, error = %e, "could not remove orphaned sandbox"),
                }
            });
        }
    }
}

/// An orphan keeps the grace period its pod had, recorded on the sandbox.
fn sandbox_grace(annotations: &HashMap<String, String>) -> Duration {
    let secs = annotations.get(labels::TERMINATION_GRACE).and_then(|v| v.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(30))
}
