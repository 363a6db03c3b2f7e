//! One shared view of the runtime, as the kubelet's PLEG and runtime cache keep it: one task lists
//! this node's sandboxes and containers (one ListPodSandbox, one ListContainers) every relist
//! period, when containerd reports an exit or when a reader asks for a newer view; it asks for the
//! status only of what is new or changed state since the last relist, and keeps the result per pod
//! UID with the time the lists were asked for. Workers read their pod from it ("at least as new as
//! T") instead of calling CRI.
//!
//! Pure part: `wanted` (which statuses the previous snapshot does not answer) and `assemble`
//! (previous snapshot + new lists + fetched statuses -> new snapshot + the pods that changed).

use super::labels;
use super::observed::{ObservedContainer, ObservedPod, ObservedSandbox, RunState};
use super::{Cri, CriError, CriResult};
use futures::future::join_all;
use k8s_cri::v1 as cri;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch, Notify};

/// The kubelet's relist period.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// What the runtime holds for this node, by pod UID.
pub type Pods = HashMap<String, ObservedPod>;

/// One relist's result: the pods, or why the relist failed, and when its lists were asked for
/// (None before the first relist).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Option<Instant>,
    pub pods: Result<Arc<Pods>, CriError>,
}

/// The two lists of one relist, before any status.
#[derive(Debug, Default)]
pub struct Listed {
    pub sandboxes: Vec<cri::PodSandbox>,
    pub containers: Vec<cri::Container>,
}

/// The statuses a relist needs: ready sandboxes not seen ready before (for their address) and
/// containers that are new or whose state changed.
#[derive(Debug, Default, PartialEq)]
pub struct Wanted {
    pub sandboxes: Vec<String>,
    pub containers: Vec<String>,
}

/// The statuses fetched for `Wanted`; an object gone meanwhile (NotFound) is absent.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Sandbox ID -> its address (None when the runtime names none).
    pub sandbox_ips: HashMap<String, Option<String>>,
    pub containers: HashMap<String, cri::ContainerStatus>,
}

fn pod_uid(labels: &HashMap<String, String>) -> Option<&String> {
    labels.get(labels::POD_UID)
}

fn run_state(state: i32) -> RunState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => RunState::Created,
        Ok(cri::ContainerState::ContainerRunning) => RunState::Running,
        Ok(cri::ContainerState::ContainerExited) => RunState::Exited,
        _ => RunState::Unknown,
    }
}

fn is_ready(sandbox: &cri::PodSandbox) -> bool {
    sandbox.state == cri::PodSandboxState::SandboxReady as i32
}

/// Every container and sandbox of the previous snapshot, by ID.
fn index(prev: &Pods) -> (HashMap<&str, &ObservedSandbox>, HashMap<&str, &ObservedContainer>) {
    let sandboxes = prev.values().flat_map(|p| p.sandboxes.iter()).map(|s| (s.id.as_str(), s)).collect();
    let containers = prev.values().flat_map(|p| p.containers.iter()).map(|c| (c.id.as_str(), c)).collect();
    (sandboxes, containers)
}

pub fn wanted(prev: &Pods, listed: &Listed) -> Wanted {
    let (sandboxes, containers) = index(prev);
    let listed_pod = |labels: &HashMap<String, String>| pod_uid(labels).is_some();
    Wanted {
        sandboxes: listed
            .sandboxes
            .iter()
            .filter(|s| listed_pod(&s.labels) && is_ready(s) && !sandboxes.get(s.id.as_str()).is_some_and(|p| p.ready))
            .map(|s| s.id.clone())
            .collect(),
        containers: listed
            .containers
            .iter()
            .filter(|c| listed_pod(&c.labels) && containers.get(c.id.as_str()).is_none_or(|p| p.state != run_state(c.state)))
            .map(|c| c.id.clone())
            .collect(),
    }
}

/// The new snapshot and the UIDs of the pods whose view changed (appeared, went or differs).
pub fn assemble(prev: &Pods, listed: Listed, mut fetched: Fetched) -> (Pods, BTreeSet<String>) {
    let (old_sandboxes, old_containers) = index(prev);
    let mut pods = Pods::new();
    for sandbox in listed.sandboxes {
        let Some(uid) = pod_uid(&sandbox.labels).cloned() else { continue };
        let ready = is_ready(&sandbox);
        // Only a ready sandbox has an address worth asking for; once known it does not change.
        let ip = match fetched.sandbox_ips.remove(&sandbox.id) {
            Some(ip) => ip,
            None if ready => match old_sandboxes.get(sandbox.id.as_str()) {
                Some(old) if old.ready => old.ip.clone(),
                // Ready but its status went missing (removed meanwhile): leave it out.
                _ => continue,
            },
            None => None,
        };
        let attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
        pods.entry(uid).or_default().sandboxes.push(ObservedSandbox { id: sandbox.id, attempt, ready, created_at: sandbox.created_at, ip });
    }
    for container in listed.containers {
        let Some(uid) = pod_uid(&container.labels).cloned() else { continue };
        let observed = match fetched.containers.remove(&container.id) {
            Some(status) => observed_container(&container, status),
            None => match old_containers.get(container.id.as_str()) {
                Some(&old) if old.state == run_state(container.state) => old.clone(),
                // New or changed and its status went missing (removed meanwhile): leave it out.
                _ => continue,
            },
        };
        pods.entry(uid).or_default().containers.push(observed);
    }
    for pod in pods.values_mut() {
        // A stable order, so an unchanged pod compares equal whatever order the runtime lists in.
        pod.sandboxes.sort_by(|a, b| a.id.cmp(&b.id));
        pod.containers.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let changed = pods.keys().chain(prev.keys()).filter(|uid| pods.get(*uid) != prev.get(*uid)).cloned().collect();
    (pods, changed)
}

pub(super) fn observed_container(container: &cri::Container, status: cri::ContainerStatus) -> ObservedContainer {
    ObservedContainer {
        id: container.id.clone(),
        sandbox_id: container.pod_sandbox_id.clone(),
        name: status.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        attempt: status.metadata.as_ref().map_or(0, |m| m.attempt),
        state: run_state(status.state),
        created_at: status.created_at,
        started_at: status.started_at,
        finished_at: status.finished_at,
        exit_code: status.exit_code,
        reason: status.reason,
        message: status.message,
        image: status.image.map(|i| i.image).unwrap_or_default(),
        image_ref: status.image_ref,
        spec_hash: container.annotations.get(labels::CONTAINER_HASH).cloned().unwrap_or_default(),
        log_path: status.log_path,
    }
}

/// The shared view: cheap to clone, one relist task behind it.
#[derive(Clone)]
pub struct RuntimeCache {
    snapshot: watch::Receiver<Snapshot>,
    relist_now: Arc<Notify>,
    period: Duration,
}

impl RuntimeCache {
    /// Starts the relist task for the sandboxes and containers labelled with `node`; an exit on
    /// `exits` relists at once.
    pub fn spawn(cri: Cri, node: String, period: Duration, exits: &broadcast::Sender<String>) -> RuntimeCache {
        let never = CriError { call: "ListPodSandbox", target: "sandboxes".into(), message: "not relisted yet".into(), code: tonic::Code::Unavailable };
        let (tx, rx) = watch::channel(Snapshot { taken: None, pods: Err(never) });
        let cache = RuntimeCache { snapshot: rx, relist_now: Arc::new(Notify::new()), period };
        tokio::spawn(relist_loop(cri, node, period, exits.subscribe(), tx, cache.relist_now.clone()));
        cache
    }

    /// A cache fed by hand (unit tests of its readers); nothing relists it.
    pub fn fixed(pods: Pods) -> (RuntimeCache, watch::Sender<Snapshot>) {
        let (tx, rx) = watch::channel(Snapshot { taken: Some(Instant::now()), pods: Ok(Arc::new(pods)) });
        (RuntimeCache { snapshot: rx, relist_now: Arc::new(Notify::new()), period: RELIST_PERIOD }, tx)
    }

    /// What a periodic resync accepts: the latest periodic relist (its period, plus the time a
    /// relist takes), so idle workers never relist on their own.
    pub fn recent(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.period * 2).unwrap_or(now)
    }

    /// The latest relist's pods, whatever its age; None before the first or after a failed one.
    pub fn latest(&self) -> Option<Arc<Pods>> {
        self.snapshot.borrow().pods.as_ref().ok().cloned()
    }

    /// The pod's view from a relist that began at or after `at_least` (asking for one when the
    /// latest is older); a pod the runtime holds nothing of is empty.
    pub async fn pod(&self, uid: &str, at_least: Instant) -> CriResult<ObservedPod> {
        let mut rx = self.snapshot.clone();
        loop {
            {
                let snapshot = rx.borrow_and_update();
                if snapshot.taken.is_some_and(|taken| taken >= at_least) {
                    return snapshot.pods.as_ref().map(|pods| pods.get(uid).cloned().unwrap_or_default()).map_err(Clone::clone);
                }
            }
            self.relist_now.notify_one();
            if rx.changed().await.is_err() {
                return Err(CriError {
                    call: "ListPodSandbox",
                    target: format!("pod {uid}"),
                    message: "the relist task ended".into(),
                    code: tonic::Code::Unavailable,
                });
            }
        }
    }
}

async fn relist_loop(cri: Cri, node: String, period: Duration, exits: broadcast::Receiver<String>, tx: watch::Sender<Snapshot>, relist_now: Arc<Notify>) {
    let mut pods = Arc::new(Pods::new());
    let mut exits = Some(exits);
    loop {
        let taken = Instant::now();
        match relist(&cri, &node, &pods).await {
            Ok((next, changes)) => {
                if !changes.is_empty() {
                    tracing::debug!(pods = ?changes, "relist: pods changed in the runtime");
                }
                pods = Arc::new(next);
                tx.send_replace(Snapshot { taken: Some(taken), pods: Ok(pods.clone()) });
            }
            Err(e) => {
                tracing::warn!(error = %e, "relisting the runtime failed");
                tx.send_replace(Snapshot { taken: Some(taken), pods: Err(e) });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = relist_now.notified() => {}
            Some(exit) = async { match exits.as_mut() { Some(rx) => Some(rx.recv().await), None => None } } => {
                if let Err(broadcast::error::RecvError::Closed) = exit {
                    // No exit stream any more: the period and the readers drive the relists.
                    exits = None;
                }
            }
        }
    }
}

/// One relist: two lists, then only the statuses the previous snapshot does not answer.
async fn relist(cri: &Cri, node: &str, prev: &Pods) -> CriResult<(Pods, BTreeSet<String>)> {
    let selector = HashMap::from([(labels::MANAGED_BY_NODE.to_string(), node.to_string())]);
    let listed = Listed { sandboxes: cri.list_sandboxes(selector.clone()).await?, containers: cri.list_containers(selector).await? };
    let wanted = wanted(prev, &listed);
    let mut fetched = Fetched::default();
    for (id, status) in wanted.sandboxes.iter().zip(join_all(wanted.sandboxes.iter().map(|id| cri.sandbox_status(id))).await) {
        match status {
            Ok(status) => {
                fetched.sandbox_ips.insert(id.clone(), status.network.map(|n| n.ip));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for (id, status) in wanted.containers.iter().zip(join_all(wanted.containers.iter().map(|id| cri.container_status(id))).await) {
        match status {
            Ok(status) => {
                fetched.containers.insert(id.clone(), status);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(assemble(prev, listed, fetched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_labels(uid: &str) -> HashMap<String, String> {
        HashMap::from([(labels::POD_UID.to_string(), uid.to_string())])
    }

    fn sandbox(id: &str, uid: &str, ready: bool) -> cri::PodSandbox {
        let state = if ready { cri::PodSandboxState::SandboxReady } else { cri::PodSandboxState::SandboxNotready };
        cri::PodSandbox { id: id.into(), labels: pod_labels(uid), state: state as i32, created_at: 1, ..Default::default() }
    }

    fn container(id: &str, uid: &str, state: cri::ContainerState) -> cri::Container {
        cri::Container { id: id.into(), pod_sandbox_id: "s1".into(), labels: pod_labels(uid), state: state as i32, ..Default::default() }
    }

    fn status(name: &str, state: cri::ContainerState, exit_code: i32) -> cri::ContainerStatus {
        let metadata = Some(cri::ContainerMetadata { name: name.into(), attempt: 0 });
        cri::ContainerStatus { metadata, state: state as i32, exit_code, ..Default::default() }
    }

    /// A first relist of one pod with a ready sandbox and a running container.
    fn first() -> Pods {
        let listed = Listed { sandboxes: vec![sandbox("s1", "u1", true)], containers: vec![container("c1", "u1", cri::ContainerState::ContainerRunning)] };
        let fetched = Fetched {
            sandbox_ips: HashMap::from([("s1".into(), Some("10.0.0.5".into()))]),
            containers: HashMap::from([("c1".into(), status("app", cri::ContainerState::ContainerRunning, 0))]),
        };
        assemble(&Pods::new(), listed, fetched).0
    }

    #[test]
    fn the_first_relist_asks_for_every_status_and_groups_by_pod_uid() {
        let listed = Listed {
            sandboxes: vec![sandbox("s1", "u1", true), sandbox("s0", "u1", false)],
            containers: vec![container("c1", "u1", cri::ContainerState::ContainerRunning)],
        };
        // A not-ready sandbox has no address to ask for.
        assert_eq!(wanted(&Pods::new(), &listed), Wanted { sandboxes: vec!["s1".into()], containers: vec!["c1".into()] });
        let fetched = Fetched {
            sandbox_ips: HashMap::from([("s1".into(), Some("10.0.0.5".into()))]),
            containers: HashMap::from([("c1".into(), status("app", cri::ContainerState::ContainerRunning, 0))]),
        };
        let (pods, changed) = assemble(&Pods::new(), listed, fetched);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), ["u1"]);
        let pod = &pods["u1"];
        assert_eq!(pod.ready_sandbox().unwrap().ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(pod.sandboxes.len(), 2);
        assert_eq!((pod.containers[0].name.as_str(), pod.containers[0].state), ("app", RunState::Running));
    }

    #[test]
    fn an_idle_relist_asks_for_no_status_and_changes_nothing() {
        let prev = first();
        let listed = Listed { sandboxes: vec![sandbox("s1", "u1", true)], containers: vec![container("c1", "u1", cri::ContainerState::ContainerRunning)] };
        assert_eq!(wanted(&prev, &listed), Wanted::default());
        let (pods, changed) = assemble(&prev, listed, Fetched::default());
        assert!(changed.is_empty());
        assert_eq!(pods, prev);
    }

    #[test]
    fn a_container_that_changed_state_is_asked_for_again_and_its_pod_reported() {
        let prev = first();
        let listed = Listed { sandboxes: vec![sandbox("s1", "u1", true)], containers: vec![container("c1", "u1", cri::ContainerState::ContainerExited)] };
        assert_eq!(wanted(&prev, &listed), Wanted { sandboxes: vec![], containers: vec!["c1".into()] });
        let fetched = Fetched { containers: HashMap::from([("c1".into(), status("app", cri::ContainerState::ContainerExited, 3))]), ..Default::default() };
        let (pods, changed) = assemble(&prev, listed, fetched);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), ["u1"]);
        let c = &pods["u1"].containers[0];
        assert_eq!((c.state, c.exit_code), (RunState::Exited, 3));
        // The sandbox's address is kept without asking again.
        assert_eq!(pods["u1"].ready_sandbox().unwrap().ip.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn a_pod_gone_from_the_runtime_is_reported_and_one_removed_meanwhile_is_left_out() {
        let prev = first();
        let listed = Listed { sandboxes: vec![sandbox("s2", "u2", true)], containers: vec![container("c2", "u2", cri::ContainerState::ContainerCreated)] };
        // Both statuses came back NotFound: s2 and c2 were removed between the list and the status.
        let (pods, changed) = assemble(&prev, listed, Fetched::default());
        assert!(pods.is_empty());
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), ["u1"]);
    }

    #[test]
    fn objects_without_a_pod_uid_are_not_nodelets_pods() {
        let mut stray = sandbox("sx", "u9", true);
        stray.labels.clear();
        let listed = Listed { sandboxes: vec![stray], containers: vec![] };
        assert_eq!(wanted(&Pods::new(), &listed), Wanted::default());
        assert!(assemble(&Pods::new(), listed, Fetched::default()).0.is_empty());
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_snapshot_at_least_as_new_as_it_asks() {
        let (cache, tx) = RuntimeCache::fixed(first());
        let asked = Instant::now();
        assert_eq!(cache.pod("u1", asked - Duration::from_millis(1)).await.unwrap().containers.len(), 1);
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.pod("u1", asked).await }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the snapshot predates the request");
        tx.send_replace(Snapshot { taken: Some(Instant::now()), pods: Ok(Arc::new(Pods::new())) });
        // Newer and without the pod: the runtime holds nothing of it any more.
        assert_eq!(reader.await.unwrap().unwrap(), ObservedPod::default());
        let failed = CriError { call: "ListContainers", target: "containers".into(), message: "down".into(), code: tonic::Code::Unavailable };
        tx.send_replace(Snapshot { taken: Some(Instant::now()), pods: Err(failed) });
        assert!(cache.pod("u1", asked).await.is_err());
    }
}
