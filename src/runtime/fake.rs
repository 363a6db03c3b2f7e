//! A recording fake of the `Runtime`: sandboxes and containers live in memory, every call is
//! recorded in order, and a test can make a container exit, a call fail once, a container ignore
//! SIGTERM (stop waits out its grace) or a call wait until the test lets it go.

use super::{CriError, CriResult, Runtime};
use crate::runtime::labels;
use crate::runtime::observed::{ObservedContainer, ObservedPod, ObservedSandbox, RunState};
use k8s_cri::v1 as cri;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// One call the fake received, with what a test wants to check of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ObservePod,
    RunSandbox { attempt: u32 },
    StopSandbox(String),
    RemoveSandbox(String),
    CreateContainer { name: String, attempt: u32 },
    StartContainer(String),
    StopContainer { id: String, grace: Duration },
    RemoveContainer(String),
    ImageStatus(String),
    PullImage(String),
}

impl Call {
    /// The CRI method this call stands for, the key of `fail_next` and `hold`.
    pub fn method(&self) -> &'static str {
        match self {
            Call::ObservePod => "ObservePod",
            Call::RunSandbox { .. } => "RunPodSandbox",
            Call::StopSandbox(_) => "StopPodSandbox",
            Call::RemoveSandbox(_) => "RemovePodSandbox",
            Call::CreateContainer { .. } => "CreateContainer",
            Call::StartContainer(_) => "StartContainer",
            Call::StopContainer { .. } => "StopContainer",
            Call::RemoveContainer(_) => "RemoveContainer",
            Call::ImageStatus(_) => "ImageStatus",
            Call::PullImage(_) => "PullImage",
        }
    }

    /// A call that changes what the runtime holds (not a look).
    pub fn changes(&self) -> bool {
        !matches!(self, Call::ObservePod | Call::ImageStatus(_))
    }
}

struct FakeSandbox {
    uid: String,
    sandbox: ObservedSandbox,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    sandboxes: Vec<FakeSandbox>,
    containers: Vec<ObservedContainer>,
    images: HashSet<String>,
    failures: HashMap<&'static str, VecDeque<String>>,
    holds: HashMap<&'static str, Hold>,
    /// Containers (by name) whose process ignores SIGTERM: a stop takes the whole grace.
    stubborn: HashSet<String>,
    next_id: u64,
}

/// Now, in CRI's nanoseconds: back-offs count from a container's finish on the real clock.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// A call held back until the test releases it.
#[derive(Clone)]
pub struct Hold {
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Default for Hold {
    fn default() -> Self {
        Hold { entered: Arc::new(Notify::new()), release: Arc::new(Semaphore::new(0)) }
    }
}

impl Hold {
    /// Waits until the held call has been made.
    pub async fn entered(&self) {
        self.entered.notified().await
    }

    /// Lets the held call (and any later one of the same method) go on.
    pub fn release(&self) {
        self.release.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[derive(Default, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        FakeRuntime::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake runtime state")
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls that changed something, in order (observations and image looks left out).
    pub fn changes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::changes).collect()
    }

    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(image.to_string());
    }

    /// The next call of `method` fails with `message`.
    pub fn fail_next(&self, method: &'static str, message: &str) {
        self.lock().failures.entry(method).or_default().push_back(message.to_string());
    }

    /// Calls of `method` wait (once recorded) until the returned hold is released.
    pub fn hold(&self, method: &'static str) -> Hold {
        self.lock().holds.entry(method).or_default().clone()
    }

    /// The container ignores SIGTERM: stopping it takes the whole grace period.
    pub fn ignore_sigterm(&self, name: &str) {
        self.lock().stubborn.insert(name.to_string());
    }

    /// The newest instance of container `name` exits with `code`.
    pub fn exit(&self, name: &str, code: i32) -> String {
        let mut state = self.lock();
        let now = now();
        let c = state
            .containers
            .iter_mut()
            .filter(|c| c.name == name && c.state == RunState::Running)
            .max_by_key(|c| c.attempt)
            .expect("a running container of that name");
        c.state = RunState::Exited;
        c.exit_code = code;
        c.finished_at = now;
        c.id.clone()
    }

    /// Puts a ready sandbox of pod `uid` in place, as one left by an earlier nodelet.
    pub fn add_sandbox(&self, uid: &str, attempt: u32) -> String {
        let mut state = self.lock();
        let id = state.new_id("sandbox");
        let sandbox = ObservedSandbox { id: id.clone(), attempt, ready: true, created_at: now(), ip: Some("10.0.0.9".into()) };
        state.sandboxes.push(FakeSandbox { uid: uid.into(), sandbox });
        id
    }

    /// Puts a running (or created, never started) container in a sandbox, as one left by an
    /// earlier nodelet.
    pub fn add_container(&self, sandbox_id: &str, name: &str, attempt: u32, spec_hash: &str, run_state: RunState) -> String {
        let mut state = self.lock();
        let id = state.new_id(name);
        let at = now();
        state.containers.push(ObservedContainer {
            id: id.clone(),
            sandbox_id: sandbox_id.into(),
            name: name.into(),
            attempt,
            state: run_state,
            created_at: at,
            started_at: if run_state == RunState::Running { at } else { 0 },
            spec_hash: spec_hash.into(),
            ..Default::default()
        });
        id
    }

    /// Container `id`, never started, exits by a failed start as containerd records one:
    /// reason StartError, exit code 128, `message`.
    pub fn fail_start_of(&self, id: &str, message: &str) {
        let mut state = self.lock();
        let c = state.containers.iter_mut().find(|c| c.id == id).expect("a container with that id");
        (c.state, c.exit_code, c.finished_at) = (RunState::Exited, 128, now());
        (c.reason, c.message) = ("StartError".into(), message.into());
    }

    pub fn sandbox_count(&self) -> usize {
        self.lock().sandboxes.len()
    }

    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    pub fn running(&self, name: &str) -> usize {
        self.lock().containers.iter().filter(|c| c.name == name && c.state == RunState::Running).count()
    }

    /// Records the call, waits if it is held, and fails it if a failure was queued.
    async fn enter(&self, call: Call) -> CriResult<()> {
        let method = call.method();
        let (hold, failure) = {
            let mut state = self.lock();
            state.calls.push(call);
            (state.holds.get(method).cloned(), state.failures.get_mut(method).and_then(|q| q.pop_front()))
        };
        if let Some(hold) = hold {
            hold.entered.notify_one();
            hold.release.acquire().await.expect("hold semaphore").forget();
        }
        match failure {
            Some(message) => Err(CriError { call: method, target: "fake".into(), message, code: tonic::Code::Unknown }),
            None => Ok(()),
        }
    }
}

impl State {
    fn new_id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("{what}-{}", self.next_id)
    }
}

fn not_found(call: &'static str, id: &str) -> CriError {
    CriError { call, target: id.into(), message: "not found".into(), code: tonic::Code::NotFound }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn observe_pod(&self, uid: &str, _at_least: std::time::Instant) -> CriResult<ObservedPod> {
        self.enter(Call::ObservePod).await?;
        let state = self.lock();
        let sandboxes: Vec<ObservedSandbox> = state.sandboxes.iter().filter(|s| s.uid == uid).map(|s| s.sandbox.clone()).collect();
        let ids: HashSet<&String> = sandboxes.iter().map(|s| &s.id).collect();
        let containers = state.containers.iter().filter(|c| ids.contains(&c.sandbox_id)).cloned().collect();
        Ok(ObservedPod { sandboxes, containers })
    }

    fn recent(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    async fn run_sandbox(&self, config: cri::PodSandboxConfig, _handler: &str) -> CriResult<String> {
        let attempt = config.metadata.as_ref().map_or(0, |m| m.attempt);
        self.enter(Call::RunSandbox { attempt }).await?;
        let mut state = self.lock();
        let id = state.new_id("sandbox");
        let sandbox = ObservedSandbox { id: id.clone(), attempt, ready: true, created_at: now(), ip: Some("10.0.0.9".into()) };
        let label = |key: &str| config.labels.get(key).cloned().unwrap_or_default();
        state.sandboxes.push(FakeSandbox { uid: label(labels::POD_UID), sandbox });
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &str) -> CriResult<()> {
        self.enter(Call::StopSandbox(id.into())).await?;
        let mut state = self.lock();
        let now = now();
        for c in state.containers.iter_mut().filter(|c| c.sandbox_id == id && c.state == RunState::Running) {
            (c.state, c.exit_code, c.finished_at) = (RunState::Exited, 137, now);
        }
        if let Some(s) = state.sandboxes.iter_mut().find(|s| s.sandbox.id == id) {
            s.sandbox.ready = false;
        }
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> CriResult<()> {
        self.enter(Call::RemoveSandbox(id.into())).await?;
        let mut state = self.lock();
        state.sandboxes.retain(|s| s.sandbox.id != id);
        state.containers.retain(|c| c.sandbox_id != id);
        Ok(())
    }

    async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, _sandbox: cri::PodSandboxConfig) -> CriResult<String> {
        let (name, attempt) = config.metadata.as_ref().map_or((String::new(), 0), |m| (m.name.clone(), m.attempt));
        self.enter(Call::CreateContainer { name: name.clone(), attempt }).await?;
        let mut state = self.lock();
        if !state.sandboxes.iter().any(|s| s.sandbox.id == sandbox_id && s.sandbox.ready) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        let id = state.new_id(&name);
        let spec_hash = config.annotations.get(labels::CONTAINER_HASH).cloned().unwrap_or_default();
        let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        state.containers.push(ObservedContainer {
            id: id.clone(),
            sandbox_id: sandbox_id.into(),
            name,
            attempt,
            state: RunState::Created,
            created_at: now(),
            spec_hash,
            image,
            ..Default::default()
        });
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> CriResult<()> {
        self.enter(Call::StartContainer(id.into())).await?;
        let mut state = self.lock();
        let now = now();
        let c = state.containers.iter_mut().find(|c| c.id == id).ok_or_else(|| not_found("StartContainer", id))?;
        (c.state, c.started_at) = (RunState::Running, now);
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> CriResult<()> {
        self.enter(Call::StopContainer { id: id.into(), grace }).await?;
        let stubborn = {
            let state = self.lock();
            state.containers.iter().any(|c| c.id == id && c.state == RunState::Running && state.stubborn.contains(&c.name))
        };
        if stubborn {
            // SIGTERM is ignored: the runtime's SIGKILL comes when the grace is over.
            tokio::time::sleep(grace).await;
        }
        let mut state = self.lock();
        let now = now();
        if let Some(c) = state.containers.iter_mut().find(|c| c.id == id && c.state == RunState::Running) {
            (c.state, c.exit_code, c.finished_at) = (RunState::Exited, if stubborn { 137 } else { 0 }, now);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> CriResult<()> {
        self.enter(Call::RemoveContainer(id.into())).await?;
        self.lock().containers.retain(|c| c.id != id);
        Ok(())
    }

    async fn image_status(&self, image: &str) -> CriResult<Option<cri::Image>> {
        self.enter(Call::ImageStatus(image.into())).await?;
        let present = self.lock().images.contains(image);
        Ok(present.then(|| cri::Image { id: format!("sha256:{image}"), ..Default::default() }))
    }

    async fn pull_image(&self, image: &str, _auth: Option<cri::AuthConfig>, _sandbox: Option<cri::PodSandboxConfig>) -> CriResult<String> {
        self.enter(Call::PullImage(image.into())).await?;
        self.lock().images.insert(image.to_string());
        Ok(format!("sha256:{image}"))
    }
}
