//! One task per pod, owning that pod's lifecycle: observe the runtime, plan, act, publish the
//! status; wake on a container exit, a spec change, a back-off's end or the periodic resync.
//!
//! The worker moves through three states (`PodWorkerState`), as the kubelet's pod worker does:
//! ```text
//!  spawn -> Syncing --Update(spec)--> sync -> wait (exit, back-off, resync) -> sync ...
//!              |
//!              | Terminate(grace) (deleted, or gone from its source; the manager gone: its own grace)
//!              v
//!          Terminating { deadline = now + grace } --Terminate(shorter grace)--> deadline earlier,
//!              |   stop every container (SIGTERM, SIGKILL at the deadline), stop and remove sandboxes
//!              v
//!          Terminated -> pod directories and cgroup removed, status dropped, `done` told -> removed
//! ```
//! Until Terminated, containers may still run: the manager asks `WorkerHandle::could_be_running`.
//! A Terminate that arrives during a sync ends it before its next round: nothing more is started
//! for a pod going away.

use super::backoff::Backoff;
use super::env_sources::EnvSources;
use super::plan::KillContainer;
use super::plan::{self, Memory, Plan, StartContainer, StartFailure, StartFrom};
use super::reasons::KillReason;
use super::reasons::{self, WaitingReason};
use super::security;
use super::spec::{self, NodeContext};
use super::status::{pod_status, StatusInput};
use super::stopping::{pod_ip, stop_container, stop_pod};
pub use super::stopping::{release_volumes, remove_orphan, remove_pod_leftovers};
use super::store::PodStore;
pub use super::worker_state::WorkerHandle;
use super::worker_state::{Inbox, PodWorkerState};
use crate::events::Kind::{Normal, Warning};
use crate::runtime::observed::{ObservedPod, RunState};
use crate::runtime::{Cri, CriError, Runtime};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How many plan-act rounds one sync may take (sandbox, then inits, then containers).
const MAX_ROUNDS: usize = 8;

/// A failed start shows its own reason (ErrImagePull) until the next sync, which comes this soon
/// and shows the back-off (ImagePullBackOff), as the kubelet's statuses go.
const FAILURE_RECHECK: Duration = Duration::from_secs(1);
/// How soon to look again at a container the runtime is still starting.
const START_RECHECK: Duration = Duration::from_millis(250);

/// The longest a pod waiting for the pod network waits between tries.
const NETWORK_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct WorkerDeps {
    /// The manager's orphan sweep and the node agent use the client itself; the worker does not.
    pub cri: Cri,
    /// All the worker does in the runtime goes through here.
    pub runtime: Arc<dyn Runtime>,
    pub ctx: Arc<NodeContext>,
    pub exits: broadcast::Sender<String>,
    pub store: PodStore,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub resync: Duration,
    /// The apiserver in cluster mode: volumes and env read configMaps, secrets and tokens from it.
    pub api: Option<kube::Client>,
    /// ConfigMaps, Secrets and Services from watch-fed caches (cluster mode).
    pub objects: Option<crate::objects::Objects>,
    pub events: crate::events::Recorder,
    /// Closed while the pod network is not ready (no pod CIDR yet, the runtime reloading).
    pub network: crate::pod_network::NetworkGate,
    /// Pods' cgroups, made and sized before their sandboxes.
    pub cgroups: Arc<dyn crate::cgroups::PodCgroups>,
}

/// Why one sync of a pod did not get through; the worker retries it with a growing delay.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Runtime(#[from] CriError),
    #[error("pod {pod}: network is not ready: {why}")]
    NetworkNotReady { pod: String, why: String },
    /// Volumes, directories or files of the pod could not be written.
    #[error("pod {pod}: {cause}")]
    Files { pod: String, cause: String },
    /// The pod's sandbox could not be created (its RuntimeClass, or the runtime refused).
    #[error("pod {pod}: failed to create pod sandbox: {cause}")]
    Sandbox { pod: String, cause: String },
}

impl SyncError {
    /// How long to wait before the next try, given the worker's back-off. A pod waiting for the
    /// network retries at the short end: the gate opens any moment.
    pub fn retry_in(&self, backoff: &mut crate::retry::Backoff) -> Duration {
        let wait = backoff.fail();
        match self {
            SyncError::NetworkNotReady { .. } => wait.min(NETWORK_RETRY),
            SyncError::Runtime(_) | SyncError::Files { .. } | SyncError::Sandbox { .. } => wait,
        }
    }
}

pub enum WorkerMsg {
    Update(Arc<Pod>),
    /// Stop the pod; a `grace` of None takes the pod's own; `done` hears when all is stopped.
    /// A second Terminate can only shorten the grace of the first.
    Terminate {
        grace: Option<Duration>,
        done: Option<oneshot::Sender<()>>,
    },
    /// End the pod for good without removing it (the eviction manager): containers killed,
    /// phase Failed with the reason. The first reason stays.
    End(super::end::EndReason),
}

/// The pod is shared with the manager (and the apiserver watch's store), not copied.
pub fn spawn(deps: WorkerDeps, pod: impl Into<Arc<Pod>>) -> (mpsc::UnboundedSender<WorkerMsg>, WorkerHandle) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(PodWorkerState::Syncing);
    let task = tokio::spawn(run(deps, pod.into(), Inbox::new(rx), state_tx));
    (tx, WorkerHandle::new(state, task))
}

struct Worker {
    deps: WorkerDeps,
    pod: Arc<Pod>,
    state: watch::Sender<PodWorkerState>,
    /// Who waits for the pod to be stopped (each Terminate may bring one).
    done: Vec<oneshot::Sender<()>>,
    memory: Memory,
    first_seen: SystemTime,
    /// Sandbox and container IDs whose exit should wake this worker.
    watched: HashSet<String>,
    /// Exits announced by containerd that CRI does not show yet (it updates its store after
    /// publishing the event): looked at again shortly.
    unconfirmed_exits: HashSet<String>,
    /// When the volumes' written content (a token) must be renewed; None until first written.
    volumes_refresh: Option<Option<SystemTime>>,
    /// Service account tokens written in the volumes, kept until due for renewal.
    tokens: crate::volumes::Tokens,
    /// The last FailedMount message told, so a retry does not repeat it.
    mount_failure: Option<String>,
    /// When nodelet first saw the pod, until its start-up latency is recorded (or known not to
    /// be nodelet's to measure: the pod was already running when this worker began).
    start_pending: Option<std::time::Instant>,
    /// The runtime was still starting a container this sync (a start asked before a restart of
    /// nodelet): look again soon.
    start_in_progress: bool,
    synced_once: bool,
    /// Failed syncs (or stops) in a row, for the retry delay: from 250 ms doubling, at most
    /// the resync period.
    failures: crate::retry::Backoff,
    /// A new spec arrived during a sync: sync again at once.
    updated: bool,
    /// The termination messages of exited instances, read once each.
    termination: super::termination::Messages,
    /// Why nodelet ended the pod (its deadline passed, it was evicted): it stays ended.
    ended: Option<super::end::EndReason>,
    /// The event telling why was recorded.
    end_told: bool,
    /// The pod finished (its containers ended for good): disk pressure may remove its dead
    /// containers, and it must not run again when they are gone.
    finished: bool,
    /// The finished pod's volumes were torn down.
    volumes_released: bool,
    /// The pod's probe workers and their results (src/probes).
    probes: Probes,
}

type Probes = crate::probes::pod::PodProbes<crate::probes::run::Real, crate::events::Recorder>;

/// How soon to look again when CRI has not caught up with an exit event.
const EXIT_RECHECK: Duration = Duration::from_millis(20);

/// The worker's loop: each state does its part and moves to the next.
async fn run(deps: WorkerDeps, pod: Arc<Pod>, mut inbox: Inbox, state: watch::Sender<PodWorkerState>) {
    let mut exits = deps.exits.subscribe();
    let backoff = Backoff::new(deps.backoff_initial, deps.backoff_max);
    let mut worker = Worker {
        memory: Memory::new(backoff),
        // An API pod keeps the startTime it was given, so a restart of nodelet does not move it.
        first_seen: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| std::time::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64))
            .unwrap_or_else(SystemTime::now),
        watched: HashSet::new(),
        unconfirmed_exits: HashSet::new(),
        volumes_refresh: None,
        tokens: Default::default(),
        mount_failure: None,
        start_pending: Some(std::time::Instant::now()),
        start_in_progress: false,
        synced_once: false,
        failures: crate::retry::Backoff::new(Duration::from_millis(250), deps.resync),
        updated: false,
        state,
        done: Vec::new(),
        termination: Default::default(),
        // Ended before a restart of nodelet: it stays so.
        ended: super::end::EndReason::from_status(pod.status.as_ref()).or_else(|| super::end::recorded(&spec::pod_data_dir(&deps.ctx, &pod))),
        end_told: false,
        finished: false,
        volumes_released: false,
        probes: Probes::new(Arc::new(crate::probes::run::Real { cri: deps.cri.clone() }), Arc::new(deps.events.clone()), spec::pod_uid(&pod).to_string()),
        deps,
        pod,
    };
    // The task keeps its largest state for life: a sync, a stop and the removal are boxed, so
    // a waiting worker holds only the wait (its futures were most of 17 KB per pod).
    loop {
        match worker.current() {
            PodWorkerState::Syncing => worker.syncing(&mut inbox, &mut exits).await,
            PodWorkerState::Terminating { .. } => Box::pin(worker.terminating(&mut inbox)).await,
            PodWorkerState::Terminated => return Box::pin(worker.terminated()).await,
        }
    }
}

impl Worker {
    fn current(&self) -> PodWorkerState {
        *self.state.borrow()
    }

    fn set_state(&self, next: PodWorkerState) {
        if next != self.current() {
            tracing::debug!(pod = %self.pod_ref(), state = ?next, "pod worker state");
            self.state.send_replace(next);
        }
    }

    /// A message from the manager: a new spec while syncing, or a stop (which can only shorten
    /// a stop under way).
    fn receive(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Update(pod) if self.current() == PodWorkerState::Syncing => {
                self.pod = pod;
                self.updated = true;
            }
            // A pod being stopped keeps the spec it is stopped with, as in the kubelet.
            WorkerMsg::Update(_) => {}
            WorkerMsg::End(reason) if self.current() == PodWorkerState::Syncing => {
                if self.ended.is_none() {
                    tracing::info!(pod = %self.pod_ref(), reason = reason.reason(), message = reason.message(), "ending pod");
                    self.ended = Some(reason);
                }
                self.updated = true;
            }
            WorkerMsg::End(_) => {}
            WorkerMsg::Terminate { grace, done } => {
                self.done.extend(done);
                let grace = grace.unwrap_or_else(|| self.grace_period());
                let next = self.current().terminate(grace, tokio::time::Instant::now());
                if next != self.current() {
                    tracing::info!(pod = %self.pod_ref(), ?grace, "stopping pod");
                }
                self.set_state(next);
            }
        }
    }

    /// Syncing: one sync, then waits for a reason to sync again (or a stop).
    async fn syncing(&mut self, inbox: &mut Inbox, exits: &mut broadcast::Receiver<String>) {
        let wait = match Box::pin(self.sync(inbox)).await {
            Ok(wake) => {
                self.failures.reset();
                let wait = wake.map_or(self.deps.resync, |w| w.min(self.deps.resync));
                if self.unconfirmed_exits.is_empty() {
                    wait
                } else {
                    wait.min(EXIT_RECHECK)
                }
            }
            Err(e) => {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "sync failed; retrying");
                e.retry_in(&mut self.failures)
            }
        };
        if std::mem::take(&mut self.updated) || self.current() != PodWorkerState::Syncing {
            return;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                msg = inbox.next() => {
                    self.receive(msg);
                    self.updated = false;
                    return;
                }
                exit = exits.recv() => match exit {
                    Ok(id) if self.watched.contains(&id) => {
                        self.unconfirmed_exits.insert(id);
                        return;
                    }
                    Ok(_) => continue,
                    // Missed events: resync to be safe.
                    Err(_) => return,
                },
                _ = self.probes.changed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Terminating: stops everything with the grace left to the deadline; a shorter grace
    /// arriving meanwhile starts the stop again with it (the runtime's SIGKILL comes sooner).
    async fn terminating(&mut self, inbox: &mut Inbox) {
        let Some(grace) = self.current().grace_left(tokio::time::Instant::now()) else { return };
        // Not ready from here on, while preStop hooks and the grace period run.
        if self.probes.terminating() {
            if let Ok(observed) = self.observe(self.deps.runtime.recent()).await {
                self.publish(&observed, &Plan::default());
            }
        }
        let before = self.current();
        let mut stop = std::pin::pin!(stop_pod(self.deps.clone(), self.pod.clone(), grace));
        loop {
            let msg = tokio::select! {
                stopped = &mut stop => match stopped {
                    Ok(()) => return self.set_state(self.current().stopped()),
                    Err(e) => {
                        let delay = self.failures.fail();
                        tracing::warn!(pod = %self.pod_ref(), error = %e, ?delay, "stopping pod failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            msg = inbox.next() => self.receive(msg),
                        }
                        return;
                    }
                },
                msg = inbox.next() => msg,
            };
            self.receive(msg);
            if self.current() != before {
                return;
            }
        }
    }

    /// Terminated: removes what is left on disk and the pod's status, then tells who waits.
    async fn terminated(self) {
        remove_pod_leftovers(&self.deps.ctx, self.deps.cgroups.as_ref(), &self.pod).await;
        self.deps.store.remove(&self.uid());
        tracing::info!(pod = %self.pod_ref(), "pod stopped and removed");
        for done in self.done {
            let _ = done.send(());
        }
    }

    fn pod_ref(&self) -> String {
        spec::pod_ref(&self.pod)
    }

    fn event(&self, container: Option<&str>, kind: crate::events::Kind, reason: &'static str, message: String) {
        self.deps.events.record(&self.pod, container, kind, reason, message);
    }

    fn uid(&self) -> String {
        spec::pod_uid(&self.pod).to_string()
    }

    /// The pod as a relist that began at or after `at_least` saw it, with the termination
    /// messages of exited instances filled in.
    async fn observe(&self, at_least: std::time::Instant) -> Result<ObservedPod, CriError> {
        let mut observed = self.deps.runtime.observe_pod(&self.uid(), at_least).await?;
        self.termination.fill(&self.deps.ctx, &self.pod, &mut observed);
        Ok(observed)
    }

    /// Brings the runtime in line with the spec and publishes the status; returns when to look again.
    async fn sync(&mut self, inbox: &mut Inbox) -> Result<Option<Duration>, SyncError> {
        let sync_started = SystemTime::now();
        // A resync takes the latest periodic relist; a first look or an exit to confirm needs a newer one.
        let fresh = !self.synced_once || !self.unconfirmed_exits.is_empty();
        let at_least = if fresh { std::time::Instant::now() } else { self.deps.runtime.recent() };
        let mut observed = self.observe(at_least).await?;
        if !std::mem::replace(&mut self.synced_once, true) && all_containers_running(&self.pod, &observed) {
            // Adopted after a restart of nodelet: its start was not seen here.
            self.start_pending = None;
        }
        let deadline = super::deadline::check(&self.pod, self.first_seen, SystemTime::now());
        if self.ended.is_none() && deadline == super::deadline::Deadline::Passed && plan::finished_phase(&self.pod, &observed).is_none() {
            self.ended = Some(super::end::EndReason::DeadlineExceeded);
        }
        // Once ended (here, or before a restart of nodelet as its status or directory says), the pod stays so.
        if let Some(reason) = self.ended.clone().or_else(|| super::end::EndReason::from_status(self.pod.status.as_ref())) {
            return self.end_pod(reason, observed).await;
        }
        let none_running = observed.containers.iter().all(|c| c.state != RunState::Running);
        if self.finished && none_running && plan::finished_phase(&self.pod, &observed).is_none() {
            // Its dead containers were collected (all or some): nothing starts again, the last status stands.
            return Ok(None);
        }
        if self.kill_unhealthy(&observed).await {
            observed = self.observe(std::time::Instant::now()).await?;
        }
        if let Err(e) = self.prepare_volumes(&observed).await {
            self.publish_error(&observed, &e.to_string());
            return Err(e);
        }
        let mut plan = Plan::default();
        for _ in 0..MAX_ROUNDS {
            while let Some(msg) = inbox.try_next() {
                self.receive(msg);
            }
            if self.current() != PodWorkerState::Syncing {
                break;
            }
            let probed = self.probes.view();
            let started = |live: &crate::runtime::observed::ObservedContainer| {
                let has_startup_probe = spec::find_container(&self.pod, &live.name).is_some_and(|c| c.startup_probe.is_some());
                !has_startup_probe || probed.get(&live.name).is_some_and(|r| r.container_id == live.id && r.started)
            };
            plan = plan::plan(&self.pod, &observed, &self.memory, spec::container_hash, started, SystemTime::now());
            self.finished |= plan.finished.is_some();
            let acted = self.execute(&plan, &observed).await;
            if let Ok(false) = acted {
                break;
            }
            observed = self.observe(std::time::Instant::now()).await?;
            if let Err(e) = acted {
                self.publish_error(&observed, &e.to_string());
                return Err(e);
            }
        }
        self.watched = observed.sandboxes.iter().map(|s| s.id.clone()).chain(observed.containers.iter().map(|c| c.id.clone())).collect();
        let still_running = |id: &String| {
            observed.containers.iter().any(|c| &c.id == id && c.state == RunState::Running) || observed.sandboxes.iter().any(|s| &s.id == id && s.ready)
        };
        self.unconfirmed_exits.retain(still_running);
        if self.finished && !self.volumes_released && observed.sandboxes.iter().all(|s| !s.ready) {
            // As the kubelet does for a terminated pod: its emptyDirs' disk and its tmpfs volumes'
            // memory come back now, not when the pod object is deleted (a Job's pods can stay for
            // days). Its logs and data directory stay.
            release_volumes(&self.deps.ctx, &self.pod).await;
            self.volumes_released = true;
            self.volumes_refresh = Some(None);
        }
        let probe_ip = pod_ip(&self.deps, &observed);
        self.probes.sync(&self.pod, &observed, &probe_ip);
        for (name, failure) in self.memory.start_failures.iter().filter(|(_, f)| f.at >= sync_started) {
            plan.waiting.insert(name.clone(), plan::Waiting { reason: failure.reason, message: failure.message.clone() });
            plan.wake_after = Some(plan.wake_after.map_or(FAILURE_RECHECK, |w| w.min(FAILURE_RECHECK)));
        }
        if std::mem::take(&mut self.start_in_progress) {
            plan.wake_after = Some(plan.wake_after.map_or(START_RECHECK, |w| w.min(START_RECHECK)));
        }
        for (name, waiting) in &plan.waiting {
            if let Some(message) = waiting.reason.backoff_event(name, &self.pod_ref()) {
                self.event(Some(name), Warning, "BackOff", message);
            }
        }
        if let Some(Some(refresh)) = self.volumes_refresh {
            let until = refresh.duration_since(SystemTime::now()).unwrap_or_default();
            plan.wake_after = Some(plan.wake_after.map_or(until, |w| w.min(until)));
        }
        if let Some(seen) = self.start_pending.filter(|_| all_containers_running(&self.pod, &observed)) {
            crate::metrics::global().pod_started(seen.elapsed());
            self.start_pending = None;
        }
        if let super::deadline::Deadline::In(left) = deadline {
            plan.wake_after = Some(plan.wake_after.map_or(left, |w| w.min(left)));
        }
        self.publish(&observed, &plan);
        Ok(plan.wake_after)
    }

    /// The one way nodelet ends a pod itself (activeDeadlineSeconds passed, evicted): an event
    /// (once), the reason remembered, every container stopped with the reason's grace (the pod's
    /// own for a deadline), the sandbox stopped, and the pod Failed with the reason from now on.
    async fn end_pod(&mut self, reason: super::end::EndReason, observed: ObservedPod) -> Result<Option<Duration>, SyncError> {
        if !std::mem::replace(&mut self.end_told, true) {
            tracing::info!(pod = %self.pod_ref(), reason = reason.reason(), "pod ended by nodelet; stopping it");
            let kind = if matches!(reason, super::end::EndReason::Evicted { .. }) { Warning } else { Normal };
            self.event(None, kind, reason.reason(), reason.message().into());
            self.ended = Some(reason.clone());
            let dir = spec::pod_data_dir(&self.deps.ctx, &self.pod);
            if let Err(e) = super::end::record(&dir, &reason).await {
                tracing::warn!(pod = %self.pod_ref(), dir = %dir.display(), error = %e, "could not remember why the pod ended");
            }
        }
        let grace = reason.grace().unwrap_or_else(|| self.grace_period());
        let running: Vec<_> = observed.containers.iter().filter(|c| c.state == RunState::Running).collect();
        let ip = pod_ip(&self.deps, &observed);
        let kills: Vec<KillContainer> =
            running.iter().map(|c| KillContainer { id: c.id.clone(), name: c.name.clone(), reason: KillReason::PodFinished }).collect();
        futures::future::join_all(kills.iter().map(|kill| stop_container(&self.deps, &self.pod, kill, grace, &ip)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        for sandbox in observed.sandboxes.iter().filter(|s| s.ready) {
            self.deps.runtime.stop_sandbox(&sandbox.id).await?;
        }
        release_volumes(&self.deps.ctx, &self.pod).await;
        let observed =
            if running.is_empty() && observed.sandboxes.iter().all(|s| !s.ready) { observed } else { self.observe(std::time::Instant::now()).await? };
        let plan = Plan { finished: Some(plan::Phase::Failed), ..Default::default() };
        let mut status = pod_status(&StatusInput {
            pod: &self.pod,
            observed: &observed,
            plan: &plan,
            host_ip: self.deps.ctx.host_ip.as_deref(),
            start_time: self.first_seen,
            now: SystemTime::now(),
        });
        reason.mark(&mut status, SystemTime::now());
        self.deps.store.set_status(&self.pod, status);
        Ok(None)
    }

    /// Writes the pod's volumes before its first container, and again when a token needs renewing.
    async fn prepare_volumes(&mut self, observed: &ObservedPod) -> Result<(), SyncError> {
        let due = match self.volumes_refresh {
            None => true,
            Some(at) => at.is_some_and(|at| at <= SystemTime::now()),
        };
        let finished = plan::finished_phase(&self.pod, observed).is_some();
        if !due || finished {
            return Ok(());
        }
        let prepared = match crate::volumes::prepare(&self.deps.ctx, &self.pod, self.deps.objects.as_ref(), &mut self.tokens).await {
            Ok(prepared) => prepared,
            Err(e) => {
                if self.mount_failure.as_deref() != Some(e.as_str()) {
                    self.event(None, Warning, "FailedMount", format!("MountVolume.SetUp failed: {e}"));
                    self.mount_failure = Some(e.clone());
                }
                // Once written, a volume whose source went wrong keeps its last content and the
                // pod keeps running, as the kubelet's does; looked at again after a resync.
                if self.volumes_refresh.is_some() {
                    tracing::warn!(pod = %self.pod_ref(), error = %e, "refreshing volumes failed; keeping their last content");
                    self.volumes_refresh = Some(Some(SystemTime::now() + crate::volumes::RESYNC));
                    return Ok(());
                }
                return Err(self.files_error(e));
            }
        };
        self.mount_failure = None;
        self.volumes_refresh = Some(prepared.refresh_at);
        Ok(())
    }

    /// A pod that cannot go further shows why, on every container not yet running.
    fn publish_error(&self, observed: &ObservedPod, error: &str) {
        let mut plan = Plan::default();
        // The kubelet's default waiting reason: PodInitializing for every container of a pod
        // with init containers, ContainerCreating otherwise; the cause is the message.
        let has_init = self.pod.spec.as_ref().is_some_and(|s| s.init_containers.as_ref().is_some_and(|i| !i.is_empty()));
        let reason = if has_init { WaitingReason::PodInitializing } else { WaitingReason::ContainerCreating };
        for c in self.pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter())) {
            plan.waiting.insert(c.name.clone(), plan::Waiting { reason, message: error.to_string() });
        }
        self.publish(observed, &plan);
    }

    fn publish(&self, observed: &ObservedPod, plan: &Plan) {
        let mut status = pod_status(&StatusInput {
            pod: &self.pod,
            observed,
            plan,
            host_ip: self.deps.ctx.host_ip.as_deref(),
            start_time: self.first_seen,
            now: SystemTime::now(),
        });
        crate::probes::status::apply(&mut status, &self.pod, &self.probes.view(), self.probes.is_terminating());
        self.deps.store.set_status(&self.pod, status);
    }

    /// Carries out a plan; Ok(true) when something changed in the runtime.
    async fn execute(&mut self, plan: &Plan, observed: &ObservedPod) -> Result<bool, SyncError> {
        let mut acted = false;
        for id in &plan.remove_sandboxes {
            self.remove_sandbox(id).await?;
            acted = true;
        }
        if let Some(attempt) = plan.create_sandbox {
            self.create_sandbox(attempt).await?;
            return Ok(true);
        }
        let ip = pod_ip(&self.deps, observed);
        for kill in &plan.kill {
            stop_container(&self.deps, &self.pod, kill, self.grace_period(), &ip).await?;
            acted = true;
        }
        // After the kills: a finished pod's sidecars get their grace period before the sandbox goes.
        if plan.finished.is_some() {
            for sandbox in observed.sandboxes.iter().filter(|s| s.ready) {
                tracing::info!(pod = %self.pod_ref(), phase = ?plan.finished, "pod finished; stopping its sandbox");
                self.deps.runtime.stop_sandbox(&sandbox.id).await?;
                acted = true;
            }
        }
        if let Some(sandbox) = observed.ready_sandbox() {
            let sandbox_ip = sandbox.ip.clone();
            for start in &plan.start {
                acted |= self.start_container(&sandbox.id, sandbox.attempt, sandbox_ip.as_deref(), start).await;
            }
        }
        for id in &plan.remove_containers {
            if let Err(e) = self.deps.runtime.remove_container(id).await {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "could not remove an old container");
            }
        }
        Ok(acted)
    }

    fn grace_period(&self) -> Duration {
        let secs = self.pod.metadata.deletion_grace_period_seconds.or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds));
        Duration::from_secs(secs.unwrap_or(reasons::DEFAULT_GRACE_PERIOD_SECS).max(0) as u64)
    }

    fn files_error(&self, cause: String) -> SyncError {
        SyncError::Files { pod: self.pod_ref(), cause }
    }

    fn host_network(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
    }
}

/// True when every (regular) container of the pod has a running instance: the end of the
/// kubelet's pod start-up latency.
fn all_containers_running(pod: &Pod, observed: &ObservedPod) -> bool {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    !containers.is_empty() && containers.iter().all(|c| observed.containers.iter().any(|o| o.name == c.name && o.state == RunState::Running))
}

#[path = "worker_start.rs"]
mod start;

#[path = "worker_sandbox.rs"]
mod sandbox;

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

/// The prober's touch point: it reports, the worker kills.
impl Worker {
    /// Kills the containers a liveness or startup probe failed on (the restart policy and its
    /// back-off then apply); true when one was killed.
    async fn kill_unhealthy(&self, observed: &ObservedPod) -> bool {
        let mut killed = false;
        let running = |id: &str| observed.containers.iter().any(|c| c.id == id && c.state == RunState::Running);
        let ip = pod_ip(&self.deps, observed);
        for (id, name, kill) in self.probes.kills().into_iter().filter(|(id, _, _)| running(id)) {
            let reason = if kill.kind == crate::probes::Kind::Startup { KillReason::StartupFailed } else { KillReason::LivenessFailed };
            let grace = kill.grace.unwrap_or_else(|| self.grace_period());
            match stop_container(&self.deps, &self.pod, &KillContainer { id, name: name.clone(), reason }, grace, &ip).await {
                Ok(()) => killed = true,
                Err(e) => tracing::warn!(pod = %self.pod_ref(), container = %name, error = %e, "could not kill an unhealthy container"),
            }
        }
        killed
    }
}
