//! One task per pod, owning that pod's lifecycle: observe the runtime, plan, act, publish the
//! status; wake on a container exit, a spec change, a back-off's end or the periodic resync.

use super::backoff::Backoff;
use super::env_sources::EnvSources;
use crate::events::Kind::{Normal, Warning};
use super::observed::{ObservedPod, RunState};
use super::plan::{self, Memory, Plan, StartContainer, StartFailure};
use super::security;
use super::spec::{self, NodeContext};
use super::status::{pod_status, StatusInput};
use super::store::PodStore;
use crate::runtime::{Cri, CriError};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc};

/// How many plan-act rounds one sync may take (sandbox, then inits, then containers).
const MAX_ROUNDS: usize = 8;

/// A failed start shows its own reason (ErrImagePull) until the next sync, which comes this soon
/// and shows the back-off (ImagePullBackOff), as the kubelet's statuses go.
const FAILURE_RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct WorkerDeps {
    pub cri: Cri,
    pub ctx: Arc<NodeContext>,
    pub exits: broadcast::Sender<String>,
    pub store: PodStore,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub resync: Duration,
    /// The apiserver in cluster mode: volumes and env read configMaps, secrets and tokens from it.
    pub api: Option<kube::Client>,
    pub events: crate::events::Recorder,
    /// Closed while the pod network is not ready (no pod CIDR yet, the runtime reloading).
    pub network: crate::pod_network::NetworkGate,
}

pub enum WorkerMsg {
    Update(Box<Pod>),
    /// Stop the pod; a `grace` of None takes the pod's own; `done` hears when all is stopped.
    Terminate { grace: Option<Duration>, done: Option<tokio::sync::oneshot::Sender<()>> },
}

pub fn spawn(deps: WorkerDeps, pod: Pod) -> (mpsc::UnboundedSender<WorkerMsg>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(run(deps, pod, rx));
    (tx, handle)
}

struct Worker {
    deps: WorkerDeps,
    pod: Pod,
    memory: Memory,
    first_seen: SystemTime,
    /// Sandbox and container IDs whose exit should wake this worker.
    watched: HashSet<String>,
    /// Exits announced by containerd that CRI does not show yet (it updates its store after
    /// publishing the event): looked at again shortly.
    unconfirmed_exits: HashSet<String>,
    /// When the volumes' written content (a token) must be renewed; None until first written.
    volumes_refresh: Option<Option<SystemTime>>,
    /// When nodelet first saw the pod, until its start-up latency is recorded (or known not to
    /// be nodelet's to measure: the pod was already running when this worker began).
    start_pending: Option<std::time::Instant>,
    synced_once: bool,
    /// The pod's probe workers and their results (src/probes).
    probes: Probes,
}

type Probes = crate::probes::pod::PodProbes<crate::probes::run::Real, crate::events::Recorder>;

/// How soon to look again when CRI has not caught up with an exit event.
const EXIT_RECHECK: Duration = Duration::from_millis(20);

async fn run(deps: WorkerDeps, pod: Pod, mut rx: mpsc::UnboundedReceiver<WorkerMsg>) {
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
        start_pending: Some(std::time::Instant::now()),
        synced_once: false,
        probes: Probes::new(Arc::new(crate::probes::run::Real { cri: deps.cri.clone() }), Arc::new(deps.events.clone()), spec::pod_uid(&pod).to_string()),
        deps,
        pod,
    };
    let mut failures = 0u32;
    loop {
        let wait = match worker.sync().await {
            Ok(wake) => {
                failures = 0;
                let wait = wake.map_or(worker.deps.resync, |w| w.min(worker.deps.resync));
                if worker.unconfirmed_exits.is_empty() { wait } else { wait.min(EXIT_RECHECK) }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(pod = %spec::pod_ref(&worker.pod), error = %e, "sync failed; retrying");
                Duration::from_millis(250 << failures.min(6)).min(worker.deps.resync)
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WorkerMsg::Update(pod)) => { worker.pod = *pod; break; }
                    Some(WorkerMsg::Terminate { grace, done }) => {
                        worker.terminate(grace).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                    None => return worker.terminate(None).await,
                },
                exit = exits.recv() => match exit {
                    Ok(id) if worker.watched.contains(&id) => {
                        worker.unconfirmed_exits.insert(id);
                        break;
                    }
                    Ok(_) => continue,
                    // Missed events: resync to be safe.
                    Err(_) => break,
                },
                _ = worker.probes.changed() => break,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
}

impl Worker {
    fn pod_ref(&self) -> String {
        spec::pod_ref(&self.pod)
    }

    fn event(&self, container: Option<&str>, kind: crate::events::Kind, reason: &'static str, message: String) {
        self.deps.events.record(&self.pod, container, kind, reason, message);
    }

    fn uid(&self) -> String {
        spec::pod_uid(&self.pod).to_string()
    }

    async fn observe(&self) -> Result<ObservedPod, CriError> {
        self.deps.cri.observe_pod(&self.deps.ctx.node_name, &self.uid()).await
    }

    /// Brings the runtime in line with the spec and publishes the status; returns when to look again.
    async fn sync(&mut self) -> Result<Option<Duration>, String> {
        let sync_started = SystemTime::now();
        let mut observed = self.observe().await.map_err(|e| e.to_string())?;
        if !std::mem::replace(&mut self.synced_once, true) && all_containers_running(&self.pod, &observed) {
            // Adopted after a restart of nodelet: its start was not seen here.
            self.start_pending = None;
        }
        if self.kill_unhealthy(&observed).await {
            observed = self.observe().await.map_err(|e| e.to_string())?;
        }
        if let Err(e) = self.prepare_volumes(&observed).await {
            self.publish_error(&observed, &e);
            return Err(e);
        }
        let mut plan = Plan::default();
        for _ in 0..MAX_ROUNDS {
            plan = plan::plan(&self.pod, &observed, &self.memory, spec::container_hash, SystemTime::now());
            let acted = self.execute(&plan, &observed).await;
            if let Ok(false) = acted {
                break;
            }
            observed = self.observe().await.map_err(|e| e.to_string())?;
            if let Err(e) = acted {
                self.publish_error(&observed, &e);
                return Err(e);
            }
        }
        self.watched = observed.sandboxes.iter().map(|s| s.id.clone()).chain(observed.containers.iter().map(|c| c.id.clone())).collect();
        let still_running = |id: &String| {
            observed.containers.iter().any(|c| &c.id == id && c.state == RunState::Running)
                || observed.sandboxes.iter().any(|s| &s.id == id && s.ready)
        };
        self.unconfirmed_exits.retain(still_running);
        let probe_ip = self.probe_ip(&observed);
        self.probes.sync(&self.pod, &observed, &probe_ip);
        for (name, failure) in self.memory.start_failures.iter().filter(|(_, f)| f.at >= sync_started) {
            plan.waiting.insert(name.clone(), plan::Waiting { reason: failure.reason.clone(), message: failure.message.clone() });
            plan.wake_after = Some(plan.wake_after.map_or(FAILURE_RECHECK, |w| w.min(FAILURE_RECHECK)));
        }
        for (name, waiting) in &plan.waiting {
            if waiting.reason == "CrashLoopBackOff" || waiting.reason == "ImagePullBackOff" {
                let what = if waiting.reason == "CrashLoopBackOff" { "restarting failed container" } else { "pulling image" };
                self.event(Some(name), Warning, "BackOff", format!("Back-off {what} {name} in pod {}", self.pod_ref()));
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
        self.publish(&observed, &plan);
        Ok(plan.wake_after)
    }

    /// Writes the pod's volumes before its first container, and again when a token needs renewing.
    async fn prepare_volumes(&mut self, observed: &ObservedPod) -> Result<(), String> {
        let due = match self.volumes_refresh {
            None => true,
            Some(at) => at.is_some_and(|at| at <= SystemTime::now()),
        };
        let finished = plan::finished_phase(&self.pod, observed).is_some();
        if !due || finished {
            return Ok(());
        }
        let prepared = crate::volumes::prepare(&self.deps.ctx, &self.pod, self.deps.api.as_ref()).await.map_err(|e| format!("pod {}: {e}", self.pod_ref()))?;
        self.volumes_refresh = Some(prepared.refresh_at);
        Ok(())
    }

    /// A pod that cannot go further shows why, on every container not yet running.
    fn publish_error(&self, observed: &ObservedPod, error: &str) {
        let mut plan = Plan::default();
        for c in self.pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter())) {
            plan.waiting.insert(c.name.clone(), plan::Waiting { reason: "ContainerCreating".into(), message: error.to_string() });
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
        });
        crate::probes::status::apply(&mut status, &self.pod, &self.probes.view(), self.probes.is_terminating());
        self.deps.store.set_status(&self.pod, status);
    }

    /// Carries out a plan; Ok(true) when something changed in the runtime.
    async fn execute(&mut self, plan: &Plan, observed: &ObservedPod) -> Result<bool, String> {
        let mut acted = false;
        for id in &plan.remove_sandboxes {
            self.remove_sandbox(id).await.map_err(|e| e.to_string())?;
            acted = true;
        }
        if let Some(attempt) = plan.create_sandbox {
            self.create_sandbox(attempt).await?;
            return Ok(true);
        }
        if plan.finished.is_some() {
            for sandbox in observed.sandboxes.iter().filter(|s| s.ready) {
                tracing::info!(pod = %self.pod_ref(), phase = ?plan.finished, "pod finished; stopping its sandbox");
                self.deps.cri.stop_sandbox(&sandbox.id).await.map_err(|e| e.to_string())?;
                acted = true;
            }
        }
        for (id, name, reason) in &plan.kill {
            self.event(Some(name), Normal, "Killing", format!("Stopping container {name}: {reason}"));
            self.deps.cri.stop_container(id, self.grace_period()).await.map_err(|e| e.to_string())?;
            acted = true;
        }
        if let Some(sandbox) = observed.ready_sandbox() {
            let sandbox_ip = sandbox.ip.clone();
            for start in &plan.start {
                acted |= self.start_container(&sandbox.id, sandbox.attempt, sandbox_ip.as_deref(), start).await;
            }
        }
        for id in &plan.remove_containers {
            if let Err(e) = self.deps.cri.remove_container(id).await {
                tracing::warn!(pod = %self.pod_ref(), error = %e, "could not remove an old container");
            }
        }
        Ok(acted)
    }

    fn grace_period(&self) -> Duration {
        let secs = self.pod.metadata.deletion_grace_period_seconds.or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds));
        Duration::from_secs(secs.unwrap_or(30).max(0) as u64)
    }

    fn host_network(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
    }

    async fn create_sandbox(&mut self, attempt: u32) -> Result<(), String> {
        if !self.host_network() {
            // As the kubelet: no pod joins the pod network before it is ready.
            self.deps.network.check().map_err(|why| format!("pod {}: network is not ready: {why}", self.pod_ref()))?;
        }
        let ctx = &self.deps.ctx;
        let config = spec::sandbox_config(ctx, &self.pod, attempt);
        for dir in [spec::log_directory(ctx, &self.pod), spec::pod_data_dir(ctx, &self.pod)] {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("pod {}: creating {}: {e}", self.pod_ref(), dir.display()))?;
        }
        // The pod's volumes (its secrets among them) are no business of other local users.
        crate::volumes::private_dir(&spec::pod_data_dir(ctx, &self.pod)).await.map_err(|e| format!("pod {}: {e}", self.pod_ref()))?;
        let started = std::time::Instant::now();
        let id = self.deps.cri.run_sandbox(config).await.map_err(|e| e.to_string())?;
        tracing::info!(pod = %self.pod_ref(), sandbox = %id, attempt, elapsed = ?started.elapsed(), "sandbox ready");
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        tracing::info!(pod = %self.pod_ref(), sandbox = %id, "removing old sandbox");
        self.deps.cri.stop_sandbox(id).await?;
        self.deps.cri.remove_sandbox(id).await
    }

    fn container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == name).cloned()
    }

    /// Pulls, creates and starts one container; a failure is remembered for status and back-off.
    async fn start_container(&mut self, sandbox_id: &str, sandbox_attempt: u32, pod_ip: Option<&str>, start: &StartContainer) -> bool {
        let Some(container) = self.container(&start.name) else { return false };
        let now = SystemTime::now();
        match self.try_start(sandbox_id, sandbox_attempt, pod_ip, &container, start).await {
            Ok(id) => {
                tracing::debug!(pod = %self.pod_ref(), container = %start.name, id = %id, attempt = start.attempt, "container started");
                self.post_start(&container, &id, pod_ip).await;
                self.memory.start_failures.remove(&start.name);
                self.memory.backoff.forget(&plan::start_failure_key(&start.name));
                if start.is_restart {
                    self.memory.backoff.next(&plan::backoff_key(&start.name), now);
                }
                true
            }
            Err((reason, message)) => {
                self.event(Some(&start.name), Warning, "Failed", format!("Error: {reason}: {message}"));
                self.memory.backoff.next(&plan::start_failure_key(&start.name), now);
                self.memory.start_failures.insert(start.name.clone(), StartFailure { reason: reason.into(), message, at: now });
                // A created but unstartable container counts as a change: observe it again.
                reason == "RunContainerError"
            }
        }
    }

    async fn try_start(&self, sandbox_id: &str, sandbox_attempt: u32, pod_ip: Option<&str>, c: &Container, start: &StartContainer) -> Result<String, (&'static str, String)> {
        let ctx = &self.deps.ctx;
        self.ensure_image(c).await?;
        let config_error = |e: String| ("CreateContainerConfigError", e);
        self.verify_run_as_non_root(c).await.map_err(config_error)?;
        let sources = EnvSources::gather(self.deps.api.as_ref(), &self.pod, c).await.map_err(config_error)?;
        let env_from = sources.env_from(c).map_err(config_error)?;
        let env = spec::container_env(c, env_from, &sources.service_env, |var| {
            let source = var.value_from.as_ref().expect("only called for valueFrom");
            if let Some(field) = &source.field_ref {
                return spec::field_value(&self.pod, pod_ip, ctx.host_ip.as_deref(), &field.field_path)
                    .map(Some)
                    .ok_or_else(|| format!("env {:?}: unsupported fieldPath {:?}", var.name, field.field_path));
            }
            match sources.key_ref(var) {
                Some(found) => found,
                None if self.deps.api.is_none() => Err(format!("env {:?}: configMap and secret references need an apiserver", var.name)),
                None => Err(format!("env {:?}: unsupported valueFrom (fieldRef, configMapKeyRef and secretKeyRef are)", var.name)),
            }
        })
        .map_err(config_error)?;
        let volumes = spec::volume_paths(ctx, &self.pod).map_err(config_error)?;
        let sub_paths = {
            let (pod_dir, container, env, volumes) = (spec::pod_data_dir(ctx, &self.pod), c.clone(), env.clone(), volumes.clone());
            tokio::task::spawn_blocking(move || crate::volumes::subpath::prepare(&pod_dir, &container, &env, &volumes)).await.map_err(|e| config_error(e.to_string()))?.map_err(config_error)?
        };
        let etc_hosts = self.write_etc_hosts(pod_ip).await.map_err(config_error)?;
        let input = spec::ContainerInput { pod: &self.pod, container: c, attempt: start.attempt, env, volumes: &volumes, sub_paths: &sub_paths, etc_hosts };
        let config = spec::container_config(ctx, &input).map_err(config_error)?;
        let sandbox = spec::sandbox_config(ctx, &self.pod, sandbox_attempt);
        let id = self.deps.cri.create_container(sandbox_id, config, sandbox).await.map_err(|e| ("CreateContainerError", e.to_string()))?;
        self.event(Some(&c.name), Normal, "Created", format!("Created container {}", c.name));
        self.deps.cri.start_container(&id).await.map_err(|e| ("RunContainerError", e.to_string()))?;
        self.event(Some(&c.name), Normal, "Started", format!("Started container {}", c.name));
        Ok(id)
    }

    /// runAsNonRoot, checked against runAsUser or else the user the image runs as (from CRI).
    async fn verify_run_as_non_root(&self, c: &Container) -> Result<(), String> {
        let image_user = if security::needs_image_user(&self.pod, c) {
            let image = c.image.clone().unwrap_or_default();
            let status = self.deps.cri.image_status(&image).await.map_err(|e| e.to_string())?;
            security::ImageUser::of(status.as_ref())
        } else {
            // Not consulted: runAsUser (or no runAsNonRoot) decides.
            security::ImageUser::Uid(0)
        };
        security::verify_run_as_non_root(&self.pod, c, &image_user)
    }

    /// The pod's /etc/hosts (its address and hostname, then hostAliases); none with the host's network.
    async fn write_etc_hosts(&self, pod_ip: Option<&str>) -> Result<Option<std::path::PathBuf>, String> {
        if self.host_network() {
            return Ok(None);
        }
        let path = spec::pod_data_dir(&self.deps.ctx, &self.pod).join("etc-hosts");
        let content = spec::etc_hosts(&self.pod, pod_ip);
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, content).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(Some(path))
    }

    /// Makes the image present as the container's imagePullPolicy asks.
    async fn ensure_image(&self, c: &Container) -> Result<(), (&'static str, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let pull_error = |e: CriError| ("ErrImagePull", format!("failed to pull image {image:?}: {}", e.message));
        if policy != "Always" {
            let present = self.deps.cri.image_id(&image).await.map_err(pull_error)?;
            match (present, policy) {
                (Some(_), _) => {
                    self.event(Some(&c.name), Normal, "Pulled", format!("Container image {image:?} already present on machine"));
                    return Ok(());
                }
                (None, "Never") => {
                    return Err(("ErrImageNeverPull", format!("container image {image:?} is not present with pull policy of Never")));
                }
                _ => {}
            }
        }
        let started = std::time::Instant::now();
        self.event(Some(&c.name), Normal, "Pulling", format!("Pulling image {image:?}"));
        let sandbox = spec::sandbox_config(&self.deps.ctx, &self.pod, 0);
        let auth = match &self.deps.api {
            Some(client) => super::pull_secrets::auth_for(&image, &super::pull_secrets::read(client, &self.pod).await),
            None => None,
        };
        self.deps.cri.pull_image(&image, auth, Some(sandbox)).await.map_err(pull_error)?;
        self.event(Some(&c.name), Normal, "Pulled", format!("Successfully pulled image {image:?} in {:.3}s", started.elapsed().as_secs_f64()));
        Ok(())
    }

    /// Stops every container with the grace period (SIGTERM, then SIGKILL), removes the sandbox
    /// and the pod's directories, retrying until the runtime has let go of everything.
    async fn terminate(mut self, grace: Option<Duration>) {
        let grace = grace.unwrap_or_else(|| self.grace_period());
        self.probes.terminating();
        tracing::info!(pod = %self.pod_ref(), ?grace, "stopping pod");
        crate::retry::until_ok(&format!("stopping pod {}", self.pod_ref()), || self.try_terminate(grace)).await;
        remove_pod_leftovers(&self.deps.ctx, &self.pod).await;
        self.deps.store.remove(&self.uid());
        tracing::info!(pod = %self.pod_ref(), "pod stopped and removed");
    }

    async fn try_terminate(&self, grace: Duration) -> Result<(), CriError> {
        let observed = self.observe().await?;
        let running: Vec<_> = observed.containers.iter().filter(|c| c.state == RunState::Running).collect();
        for c in &running {
            self.event(Some(&c.name), Normal, "Killing", format!("Stopping container {}", c.name));
        }
        // Not ready from here on, while preStop hooks and the grace period run.
        self.publish(&observed, &Plan::default());
        let stops = running.iter().map(|c| self.stop_with_pre_stop(&observed, &c.id, &c.name, grace));
        join_all(stops).await.into_iter().collect::<Result<Vec<_>, _>>()?;
        for sandbox in &observed.sandboxes {
            self.deps.cri.stop_sandbox(&sandbox.id).await?;
            self.deps.cri.remove_sandbox(&sandbox.id).await?;
        }
        Ok(())
    }
}

/// True when every (regular) container of the pod has a running instance: the end of the
/// kubelet's pod start-up latency.
fn all_containers_running(pod: &Pod, observed: &ObservedPod) -> bool {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    !containers.is_empty() && containers.iter().all(|c| observed.containers.iter().any(|o| o.name == c.name && o.state == RunState::Running))
}

/// Stops and removes everything the runtime holds for a pod nodelet no longer knows
/// (its manifest vanished while nodelet was down): a short grace, as for an orphan.
pub async fn remove_orphan(cri: &Cri, sandbox_id: &str, grace: Duration) -> Result<(), CriError> {
    let selector = std::collections::HashMap::new();
    let containers = cri.list_containers(selector).await?;
    let in_sandbox = containers.iter().filter(|c| c.pod_sandbox_id == sandbox_id && c.state == k8s_cri::v1::ContainerState::ContainerRunning as i32);
    join_all(in_sandbox.map(|c| cri.stop_container(&c.id, grace))).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    cri.stop_sandbox(sandbox_id).await?;
    cri.remove_sandbox(sandbox_id).await
}

/// Deletes the pod's log and data directories (unmounting what is mounted under them first,
/// never following a symlink or crossing into another file system) and its (now empty) cgroups.
pub async fn remove_pod_leftovers(ctx: &NodeContext, pod: &Pod) {
    for dir in [spec::log_directory(ctx, pod), spec::pod_data_dir(ctx, pod)] {
        let target = dir.clone();
        let removed = tokio::task::spawn_blocking(move || crate::volumes::mounts::remove_pod_dir(&target)).await.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = removed {
            tracing::warn!(pod = %spec::pod_ref(pod), dir = %dir.display(), error = %e, "could not remove pod directory");
        }
    }
    crate::cgroups::remove_pod_cgroup(&spec::pod_cgroup(ctx, pod));
}

/// Probes and lifecycle hooks (src/probes): the pod worker's touch points.
impl Worker {
    /// Where probes and hooks reach the pod: its IP, the node's for a host-network pod.
    fn probe_ip(&self, observed: &ObservedPod) -> String {
        let sandbox_ip = observed.ready_sandbox().and_then(|s| s.ip.clone()).filter(|ip| !ip.is_empty());
        sandbox_ip.or_else(|| self.deps.ctx.host_ip.clone()).unwrap_or_else(|| "127.0.0.1".into())
    }

    /// Kills the containers a liveness or startup probe failed on (the restart policy and its
    /// back-off then apply); true when one was killed.
    async fn kill_unhealthy(&self, observed: &ObservedPod) -> bool {
        let mut killed = false;
        let running = |id: &str| observed.containers.iter().any(|c| c.id == id && c.state == RunState::Running);
        for (id, name, kill) in self.probes.kills().into_iter().filter(|(id, _, _)| running(id)) {
            self.event(Some(&name), Normal, "Killing", kill.message(&name));
            let grace = kill.grace.unwrap_or_else(|| self.grace_period());
            match self.stop_with_pre_stop(observed, &id, &name, grace).await {
                Ok(()) => killed = true,
                Err(e) => tracing::warn!(pod = %self.pod_ref(), container = %name, error = %e, "could not kill an unhealthy container"),
            }
        }
        killed
    }

    /// StopContainer after the container's preStop hook, within one grace period.
    async fn stop_with_pre_stop(&self, observed: &ObservedPod, id: &str, name: &str, grace: Duration) -> Result<(), CriError> {
        let c = self.container(name);
        let ip = self.probe_ip(observed);
        let effects = crate::probes::run::Real { cri: self.deps.cri.clone() };
        let (failure, stopped) = crate::probes::hooks::stop_container(&effects, &self.deps.cri, &self.pod, c.as_ref(), id, &ip, grace).await;
        if let Some(message) = failure {
            self.event(Some(name), Warning, "FailedPreStopHook", message);
        }
        stopped.map_err(|message| CriError { call: "StopContainer", target: format!("container {name} ({id}) of pod {}", self.pod_ref()), message, code: tonic::Code::Unknown })
    }

    /// Runs the container's postStart hook; a failure kills the container (which then restarts
    /// by the restart policy).
    async fn post_start(&self, c: &Container, id: &str, pod_ip: Option<&str>) {
        let ip = pod_ip.map(String::from).or_else(|| self.deps.ctx.host_ip.clone()).unwrap_or_else(|| "127.0.0.1".into());
        let effects = crate::probes::run::Real { cri: self.deps.cri.clone() };
        let Err(message) = crate::probes::hooks::post_start(&effects, &self.pod, c, id, &ip).await else { return };
        self.event(Some(&c.name), Warning, "FailedPostStartHook", message);
        self.event(Some(&c.name), Normal, "Killing", "FailedPostStartHook".into());
        if let Err(e) = self.deps.cri.stop_container(id, self.grace_period()).await {
            tracing::warn!(pod = %self.pod_ref(), container = %c.name, error = %e, "could not kill a container whose postStart hook failed");
        }
    }
}
