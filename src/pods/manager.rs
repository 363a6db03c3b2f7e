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
    file_pods: Vec<Pod>,
    api_pods: Vec<Pod>,
    /// The apiserver, in cluster mode: pods it deletes are removed there once stopped.
    api: Option<kube::Client>,
    /// API pods being stopped for deletion.
    deleting: HashSet<String>,
}

impl Manager {
    pub fn new(deps: WorkerDeps, api: Option<kube::Client>) -> Self {
        Manager { deps, running: HashMap::new(), handles: HashMap::new(), file_pods: Vec::new(), api_pods: Vec::new(), api, deleting: HashSet::new() }
    }

    /// Follows the manifest directory and the apiserver's pods for this node for ever,
    /// keeping one worker per wanted pod.
    pub async fn run(
        mut self,
        mut source: Option<ManifestDir>,
        mut api_pods: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Pod>>>,
        poll: Duration,
        health: Arc<Health>,
    ) {
        let mut last_sweep: Option<tokio::time::Instant> = None;
        // Orphans are only judged once every source has said what it wants: a pod the
        // apiserver has not listed yet is not an orphan.
        let mut api_listed = api_pods.is_none();
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
                Some(pods) = async { match api_pods.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    self.api_pods = pods;
                    api_listed = true;
                    self.reconcile();
                }
            }
            health.sync_loop_ran();
            let scanned = match source.as_mut() {
                Some(dir) => dir.scan().await,
                None => None,
            };
            if let Some(pods) = scanned {
                self.file_pods = pods;
                self.reconcile();
            }
            // The first sweep waits for the first scan, so adopted pods are never mistaken for orphans.
            if api_listed && last_sweep.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP_EVERY) {
                self.sweep_orphans().await;
                last_sweep = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Makes the set of workers match the pods of all sources.
    fn reconcile(&mut self) {
        let all = self.file_pods.iter().chain(self.api_pods.iter()).cloned();
        let mut desired: HashMap<String, Pod> = all.map(|p| (spec::pod_uid(&p).to_string(), p)).collect();
        let api_uids: HashSet<String> = self.api_pods.iter().map(|p| spec::pod_uid(p).to_string()).collect();
        self.deleting.retain(|uid| api_uids.contains(uid));
        let gone: Vec<String> = self.running.keys().filter(|uid| !desired.contains_key(*uid)).cloned().collect();
        for uid in gone {
            let running = self.running.remove(&uid).expect("listed above");
            tracing::info!(pod = %spec::pod_ref(&running.pod), "pod removed from its source");
            let _ = running.tx.send(WorkerMsg::Terminate { grace: None, done: None });
        }
        let deleted: Vec<Pod> = desired.values().filter(|p| p.metadata.deletion_timestamp.is_some()).cloned().collect();
        for pod in deleted {
            let uid = spec::pod_uid(&pod).to_string();
            desired.remove(&uid);
            if self.deleting.insert(uid.clone()) {
                self.stop_deleted(pod);
            }
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

    /// Stops a pod the apiserver deletes, honouring its deletion grace period, then removes it
    /// there (grace 0, with its UID as precondition so a new pod of the same name is safe).
    fn stop_deleted(&mut self, pod: Pod) {
        let uid = spec::pod_uid(&pod).to_string();
        let grace = Duration::from_secs(pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64);
        tracing::info!(pod = %spec::pod_ref(&pod), ?grace, "pod deleted in the apiserver; stopping it");
        let tx = match self.running.remove(&uid) {
            Some(running) => running.tx,
            None => {
                // Not running here (deleted while nodelet was down): a worker adopts what is left and stops it.
                let (tx, handle) = worker::spawn(self.deps.clone(), pod.clone());
                self.handles.insert(uid.clone(), handle);
                tx
            }
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(WorkerMsg::Terminate { grace: Some(grace), done: Some(done_tx) });
        let Some(client) = self.api.clone() else { return };
        tokio::spawn(async move {
            if done_rx.await.is_err() {
                return;
            }
            let api: kube::Api<Pod> = kube::Api::namespaced(client, spec::pod_namespace(&pod));
            let params = kube::api::DeleteParams { grace_period_seconds: Some(0), preconditions: Some(kube::api::Preconditions { uid: Some(uid), resource_version: None }), ..Default::default() };
            crate::retry::until_ok("removing a stopped pod from the apiserver", || async {
                match api.delete(spec::pod_name(&pod), &params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            })
            .await;
            tracing::info!(pod = %spec::pod_ref(&pod), "pod removed from the apiserver");
        });
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
        // Pod cgroups left empty behind (the runtime was slow to let go when the pod was removed).
        // Any sandbox of any node sharing the hierarchy keeps its pod's cgroup.
        let all_sandboxes = self.deps.cri.list_sandboxes(HashMap::new()).await.unwrap_or_default();
        let with_sandbox: HashSet<&String> = all_sandboxes.iter().filter_map(|s| s.labels.get(labels::POD_UID)).collect();
        for uid in crate::cgroups::pod_cgroup_uids(&self.deps.ctx.cgroup_root) {
            let busy = known.contains(&uid) || with_sandbox.contains(&uid) || self.handles.get(&uid).is_some_and(|h| !h.is_finished());
            if !busy {
                crate::cgroups::remove_pod_cgroup(&format!("{}/pod{uid}", self.deps.ctx.cgroup_root.trim_end_matches('/')));
            }
        }
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
