//! The pod manager: turns the desired set of pods into one worker per pod, stops the workers of
//! pods that went away, and at start-up and periodically removes what the runtime holds for pods
//! nobody wants any more (its manifest vanished while nodelet was down).

use super::admission::{self, AdmissionConfig};
use super::source::ManifestDir;
use super::spec;
use super::worker::{self, WorkerDeps, WorkerHandle, WorkerMsg};
use crate::health::Health;
use crate::runtime::labels;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(30);

struct Running {
    pod: Arc<Pod>,
    tx: UnboundedSender<WorkerMsg>,
}

pub struct Manager {
    deps: WorkerDeps,
    running: HashMap<String, Running>,
    /// Every worker by pod UID; a stopping worker owns its sandbox until it is Terminated.
    handles: HashMap<String, WorkerHandle>,
    file_pods: Vec<Pod>,
    /// Shared with the apiserver watch's store and the workers.
    api_pods: Vec<Arc<Pod>>,
    /// The apiserver, in cluster mode: pods it deletes are removed there once stopped.
    api: Option<kube::Client>,
    /// API pods being stopped for deletion.
    deleting: HashSet<String>,
    /// What decides whether a new pod is taken on at all.
    admission: AdmissionConfig,
    /// Pods refused at admission, by UID: no worker, only their Failed status in the store.
    rejected: HashMap<String, Arc<Pod>>,
    /// Pods (by UID) the eviction manager ends, and why.
    evictions: Option<tokio::sync::mpsc::UnboundedReceiver<(String, super::end::EndReason)>>,
}

impl Manager {
    pub fn new(deps: WorkerDeps, api: Option<kube::Client>, admission: AdmissionConfig) -> Self {
        Manager {
            deps,
            running: HashMap::new(),
            handles: HashMap::new(),
            file_pods: Vec::new(),
            api_pods: Vec::new(),
            api,
            deleting: HashSet::new(),
            admission,
            rejected: HashMap::new(),
            evictions: None,
        }
    }

    /// Ends the pods the eviction manager names (their workers keep them, Failed).
    pub fn with_evictions(mut self, evictions: tokio::sync::mpsc::UnboundedReceiver<(String, super::end::EndReason)>) -> Self {
        self.evictions = Some(evictions);
        self
    }

    /// Follows the manifest directory and the apiserver's pods for this node for ever,
    /// keeping one worker per wanted pod.
    pub async fn run(
        mut self,
        mut source: Option<ManifestDir>,
        mut api_pods: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<Arc<Pod>>>>,
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
                Some((uid, reason)) = async { match self.evictions.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    match self.running.get(&uid) {
                        Some(running) => { let _ = running.tx.send(WorkerMsg::End(reason)); }
                        None => tracing::debug!(uid = %uid, "a pod to end has no worker any more"),
                    }
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
        let all = self.file_pods.iter().map(|p| Arc::new(p.clone())).chain(self.api_pods.iter().cloned());
        let mut desired: HashMap<String, Arc<Pod>> = all.map(|p| (spec::pod_uid(&p).to_string(), p)).collect();
        let api_uids: HashSet<String> = self.api_pods.iter().map(|p| spec::pod_uid(p).to_string()).collect();
        self.deleting.retain(|uid| api_uids.contains(uid));
        let gone: Vec<String> = self.running.keys().filter(|uid| !desired.contains_key(*uid)).cloned().collect();
        for uid in gone {
            let running = self.running.remove(&uid).expect("listed above");
            tracing::info!(pod = %spec::pod_ref(&running.pod), "pod removed from its source");
            let _ = running.tx.send(WorkerMsg::Terminate { grace: None, done: None });
        }
        let gone_rejected: Vec<String> = self.rejected.keys().filter(|uid| !desired.contains_key(*uid)).cloned().collect();
        for uid in gone_rejected {
            self.rejected.remove(&uid);
            self.deps.store.remove(&uid);
        }
        let deleted: Vec<Arc<Pod>> = desired.values().filter(|p| p.metadata.deletion_timestamp.is_some()).cloned().collect();
        for pod in deleted {
            let uid = spec::pod_uid(&pod).to_string();
            desired.remove(&uid);
            if self.deleting.insert(uid.clone()) {
                self.stop_deleted(pod);
            }
        }
        // New pods are admitted oldest first, as the kubelet does, so a newcomer cannot take the
        // room of a pod that was here before it.
        let mut desired: Vec<(String, Arc<Pod>)> = desired.into_iter().collect();
        desired.sort_by(|(_, a), (_, b)| admission_order(a).cmp(&admission_order(b)));
        for (uid, pod) in desired {
            match self.running.get_mut(&uid) {
                Some(running) if running.pod != pod => {
                    running.pod = pod.clone();
                    let _ = running.tx.send(WorkerMsg::Update(pod));
                }
                Some(_) => {}
                None if self.rejected.contains_key(&uid) => {}
                None => {
                    if let Err(rejection) = self.admit(&pod) {
                        self.reject(uid, pod, rejection);
                        continue;
                    }
                    tracing::info!(pod = %spec::pod_ref(&pod), uid = %uid, "pod added");
                    let (tx, handle) = worker::spawn(self.deps.clone(), pod.clone());
                    self.running.insert(uid.clone(), Running { pod, tx });
                    self.handles.retain(|_, h| h.could_be_running());
                    self.handles.insert(uid, handle);
                }
            }
        }
    }

    /// Runs admission for a new pod against the pods admitted here that have not finished.
    fn admit(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let finished: HashSet<String> = self
            .deps
            .store
            .list()
            .into_iter()
            .filter(|p| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
            .map(|p| spec::pod_uid(&p).to_string())
            .collect();
        let admitted: Vec<&Pod> = self.running.iter().filter(|(uid, _)| !finished.contains(*uid)).map(|(_, r)| &*r.pod).collect();
        admission::admit(pod, &admission::Context { config: &self.admission, admitted: &admitted })
    }

    /// A pod the node does not take on: a Warning event and a Failed status, as the kubelet's
    /// rejectPod gives it, and nothing created for it.
    fn reject(&mut self, uid: String, pod: Arc<Pod>, rejection: admission::Rejection) {
        let reason = rejection.reason.as_str();
        self.deps.events.record(&pod, None, crate::events::Kind::Warning, reason, rejection.message.clone());
        let status = admission::rejected_status(&pod, &rejection, self.deps.ctx.host_ip.as_deref(), std::time::SystemTime::now());
        self.deps.store.set_status(&pod, status);
        self.rejected.insert(uid, pod);
    }

    /// Stops a pod the apiserver deletes, honouring its deletion grace period, then removes it
    /// there (grace 0, with its UID as precondition so a new pod of the same name is safe).
    fn stop_deleted(&mut self, pod: Arc<Pod>) {
        let uid = spec::pod_uid(&pod).to_string();
        let refused = self.rejected.remove(&uid).is_some() || (!self.running.contains_key(&uid) && self.admit(&pod).is_err());
        if refused {
            // Nothing runs for a rejected pod (a worker's first sync could create its sandbox):
            // it only leaves the store and the apiserver; the orphan sweep takes any leftovers.
            self.deps.store.remove(&uid);
            if let Some(client) = self.api.clone() {
                tokio::spawn(remove_from_apiserver(client, pod, None));
            }
            return;
        }
        let grace = Duration::from_secs(pod.metadata.deletion_grace_period_seconds.unwrap_or(super::reasons::DEFAULT_GRACE_PERIOD_SECS).max(0) as u64);
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
        tokio::spawn(remove_from_apiserver(client, pod, Some(done_rx)));
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
        for (qos, uid) in self.deps.cgroups.pod_uids() {
            let busy = known.contains(&uid) || with_sandbox.contains(&uid) || self.handles.get(&uid).is_some_and(WorkerHandle::could_be_running);
            if !busy {
                let name = self.deps.cgroups.layout().pod(qos, &uid);
                if let Err(e) = self.deps.cgroups.remove(&name).await {
                    tracing::debug!(pod_uid = %uid, error = %e, "empty pod cgroup not removed");
                }
            }
        }
        for sandbox in sandboxes {
            let uid = sandbox.labels.get(labels::POD_UID).cloned().unwrap_or_default();
            if known.contains(&uid) || self.handles.get(&uid).is_some_and(WorkerHandle::could_be_running) {
                continue;
            }
            let meta = sandbox.metadata.clone().unwrap_or_default();
            tracing::info!(pod = %format!("{}/{}", meta.namespace, meta.name), sandbox = %sandbox.id, "removing the sandbox of a pod that is no longer wanted");
            let grace = sandbox_grace(&sandbox.annotations);
            let cri = self.deps.cri.clone();
            let ctx = self.deps.ctx.clone();
            let cgroups = self.deps.cgroups.clone();
            tokio::spawn(async move {
                match worker::remove_orphan(&cri, &sandbox.id, grace).await {
                    Ok(()) => {
                        let mut pod = Pod::default();
                        pod.metadata.name = Some(meta.name);
                        pod.metadata.namespace = Some(meta.namespace);
                        pod.metadata.uid = Some(meta.uid);
                        worker::remove_pod_leftovers(&ctx, cgroups.as_ref(), &pod).await;
                    }
                    Err(e) => tracing::warn!(sandbox = %sandbox.id, error = %e, "could not remove orphaned sandbox"),
                }
            });
        }
    }
}

/// Deletes a stopped pod in the apiserver once `stopped` says so (grace 0, with its UID as
/// precondition so a new pod of the same name is safe).
async fn remove_from_apiserver(client: kube::Client, pod: Arc<Pod>, stopped: Option<tokio::sync::oneshot::Receiver<()>>) {
    if let Some(stopped) = stopped {
        if stopped.await.is_err() {
            return;
        }
    }
    let uid = spec::pod_uid(&pod).to_string();
    let api: kube::Api<Pod> = kube::Api::namespaced(client, spec::pod_namespace(&pod));
    let params = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    crate::retry::until_ok("removing a stopped pod from the apiserver", || async {
        match api.delete(spec::pod_name(&pod), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    })
    .await;
    tracing::info!(pod = %spec::pod_ref(&pod), "pod removed from the apiserver");
}

/// The order new pods are admitted in: by creation time, then namespace and name.
fn admission_order(pod: &Pod) -> (Option<i64>, &str, &str) {
    (pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), spec::pod_namespace(pod), spec::pod_name(pod))
}

/// An orphan keeps the grace period its pod had, recorded on the sandbox.
fn sandbox_grace(annotations: &HashMap<String, String>) -> Duration {
    let secs = annotations.get(labels::TERMINATION_GRACE).and_then(|v| v.parse::<u64>().ok());
    secs.map_or(super::reasons::DEFAULT_GRACE_PERIOD, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::manifest::parse_static_pod;
    use crate::pods::spec::NodeContext;
    use crate::pods::store::PodStore;

    fn manager(store: PodStore) -> Manager {
        let ctx = NodeContext {
            node_name: "n1".into(),
            cgroups: crate::cgroups::Layout::new(crate::cgroups::Driver::Cgroupfs, "/"),
            pod_pids_limit: None,
            pod_log_root: "/nonexistent/logs".into(),
            pod_data_root: "/nonexistent/pods".into(),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: String::new(),
            host_ip: Some("10.0.0.1".into()),
            memory_capacity: 1 << 30,
            allocatable: Default::default(),
            seccomp_root: "/nonexistent/seccomp".into(),
            seccomp_default: false,
        };
        let deps = WorkerDeps {
            // Connects on first use only: a rejected pod must never make it connect.
            cri: crate::runtime::Cri::new(std::path::Path::new("/nonexistent/cri.sock")),
            runtime: Arc::new(crate::runtime::CachedCri {
                cri: crate::runtime::Cri::new(std::path::Path::new("/nonexistent/cri.sock")),
                cache: crate::runtime::relist::RuntimeCache::fixed(Default::default()).0,
            }),
            ctx: Arc::new(ctx),
            exits: tokio::sync::broadcast::channel(1).0,
            store,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(2),
            resync: Duration::from_secs(10),
            api: None,
            objects: None,
            events: crate::events::Recorder::log_only(),
            network: crate::pod_network::NetworkGate::always_ready(),
            cgroups: std::sync::Arc::new(crate::cgroups::Recording::new()),
        };
        Manager::new(deps, None, AdmissionConfig::default())
    }

    #[tokio::test]
    async fn a_rejected_pod_gets_no_worker_only_its_failed_status_until_it_goes() {
        let store = PodStore::default();
        let mut manager = manager(store.clone());
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: msg}\nspec:\n  securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}\n  containers: [{name: c, image: i}]\n";
        let pod = parse_static_pod("msg.yaml", text.as_bytes(), "n1").unwrap();
        let uid = spec::pod_uid(&pod).to_string();
        manager.file_pods = vec![pod];
        manager.reconcile();
        manager.reconcile();
        assert!(manager.running.is_empty() && manager.handles.is_empty());
        let listed = store.list();
        let status = listed[0].status.as_ref().unwrap();
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("SysctlForbidden")));
        assert_eq!(status.message.as_deref(), Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"));
        assert!(manager.rejected.contains_key(&uid));
        manager.file_pods.clear();
        manager.reconcile();
        assert!(store.list().is_empty() && manager.rejected.is_empty());
    }

    #[tokio::test]
    async fn max_pods_counts_the_pods_admitted_and_not_finished() {
        let store = PodStore::default();
        let mut manager = manager(store.clone());
        manager.admission.node.max_pods = 1;
        let pod = |name: &str| {
            parse_static_pod(
                &format!("{name}.yaml"),
                format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: i}}]\n").as_bytes(),
                "n1",
            )
            .unwrap()
        };
        let (a, b, c) = (pod("a"), pod("b"), pod("c"));
        manager.file_pods = vec![a.clone(), b.clone()];
        manager.reconcile();
        assert!(manager.running.contains_key(spec::pod_uid(&a)), "the older pod is admitted first");
        let status = store.list().into_iter().find(|p| spec::pod_uid(p) == spec::pod_uid(&b)).unwrap().status.unwrap();
        assert_eq!(status.reason.as_deref(), Some("OutOfpods"));
        assert_eq!(status.message.as_deref(), Some("Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 1, capacity: 1"));
        // A finished pod no longer holds its place.
        store.set_status(&a, k8s_openapi::api::core::v1::PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        manager.file_pods.push(c.clone());
        manager.reconcile();
        assert!(manager.running.contains_key(spec::pod_uid(&c)));
        for (_, handle) in manager.handles.drain() {
            handle.abort();
        }
    }

    #[tokio::test]
    async fn a_deleted_pod_that_would_be_rejected_gets_no_worker_either() {
        let store = PodStore::default();
        let mut manager = manager(store.clone());
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: msg}\nspec:\n  securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}\n  containers: [{name: c, image: i}]\n";
        let mut pod = parse_static_pod("msg.yaml", text.as_bytes(), "n1").unwrap();
        pod.metadata.deletion_timestamp = Some(crate::pods::status::time(std::time::SystemTime::now()));
        manager.file_pods = vec![pod];
        manager.reconcile();
        assert!(manager.running.is_empty() && manager.handles.is_empty() && store.list().is_empty());
    }
}
