//! What to do next for one pod, decided from its spec and what the runtime holds: the kubelet's
//! computePodActions as a pure function. The worker executes a plan, observes again, plans again.

use super::backoff::Backoff;
use super::reasons::{KillReason, WaitingReason};
use crate::runtime::observed::{nanos_to_system_time, ObservedContainer, ObservedPod, RunState};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// How many dead instances of a container to keep beyond the newest (for `logs --previous`).
const KEEP_DEAD_INSTANCES: usize = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// Why a container is not running, shown as its `waiting` state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: WaitingReason,
    pub message: String,
}

/// A failed attempt to start a container (pull or create), remembered until a start succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub reason: WaitingReason,
    pub message: String,
    pub at: SystemTime,
}

/// What a pod's worker remembers between syncs; lost on restart, which only resets back-offs.
#[derive(Debug, Clone)]
pub struct Memory {
    pub backoff: Backoff,
    pub start_failures: HashMap<String, StartFailure>,
}

impl Memory {
    pub fn new(backoff: Backoff) -> Self {
        Memory { backoff, start_failures: HashMap::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    pub name: String,
    pub init: bool,
    pub attempt: u32,
    /// A restart of a container that ran before: counts against its back-off.
    pub is_restart: bool,
    pub from: StartFrom,
}

/// What a container's start begins with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// Nothing of this attempt: pull as the policy says, create, start.
    Scratch,
    /// This attempt's container, created but never started (nodelet stopped between the two
    /// calls): it is started, not replaced.
    Created(String),
    /// This attempt's container, whose start a stop of nodelet cut short (`start_cut_short`):
    /// it is removed and the attempt made again, not counted as a restart.
    CutShort(String),
}

/// Whether a container exited because its start was cut short by the one who asked going
/// away: containerd aborts a StartContainer whose caller is gone (its request context is
/// canceled, which also kills a shim being started), tears down what it began and marks the
/// container exited with StartError. That caller was a nodelet killed mid-call, so the
/// container's own code never failed; counting it as a restart (or, with restartPolicy Never,
/// failing the pod) would report a fault that is not the pod's. The planner only trusts this
/// when the nodelet running now has not seen the container's start fail itself.
pub fn start_cut_short(c: &ObservedContainer) -> bool {
    let canceled = CANCELED_START.iter().any(|m| c.message.contains(m));
    c.state == RunState::Exited && c.started_at == 0 && c.reason == START_ERROR && canceled
}

/// How containerd words a start canceled mid-way: the request's context, or the shim process
/// it was starting, killed with that context.
const CANCELED_START: [&str; 2] = ["context canceled", "failed to start shim: start failed: : signal: killed"];

/// The reason containerd gives a container whose start failed.
const START_ERROR: &str = "StartError";

/// Exited, and not through a start cut short (that attempt is made again).
fn has_exited(c: &ObservedContainer) -> bool {
    c.state == RunState::Exited && !start_cut_short(c)
}

/// A running container the plan stops, and why (the kubelet's containerToKillInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillContainer {
    pub id: String,
    pub name: String,
    pub reason: KillReason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sandboxes to stop and remove (with their containers) before anything else.
    pub remove_sandboxes: Vec<String>,
    /// Create a new sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    pub start: Vec<StartContainer>,
    /// Running containers to stop.
    pub kill: Vec<KillContainer>,
    /// Dead containers no longer worth keeping.
    pub remove_containers: Vec<String>,
    /// The pod has finished for good: stop its sandbox and keep what is left for inspection.
    pub finished: Option<Phase>,
    pub waiting: BTreeMap<String, Waiting>,
    /// When to plan again even if nothing happens (a back-off ends).
    pub wake_after: Option<Duration>,
}

pub fn backoff_key(container: &str) -> String {
    format!("restart/{container}")
}

pub fn start_failure_key(container: &str) -> String {
    format!("start/{container}")
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

/// A restartable init container (`restartPolicy: Always`): it starts in the init sequence,
/// lets the next one start once it runs, and keeps running beside the regular containers.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's sidecars, in the order of the spec.
pub fn sidecars(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| s.init_containers.iter().flatten()).filter(|c| is_sidecar(c))
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Always" => true,
        "OnFailure" => exit_code != 0,
        _ => false,
    }
}

/// The phase of a pod whose regular containers have all ended and will not run again.
pub fn finished_phase(pod: &Pod, observed: &ObservedPod) -> Option<Phase> {
    // A phase the apiserver already holds as final stays final, whatever the runtime kept.
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => return Some(Phase::Succeeded),
        Some("Failed") => return Some(Phase::Failed),
        _ => {}
    }
    let policy = restart_policy(pod);
    if policy == "Always" {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    if let Some(phase) = failed_init(pod, observed) {
        return Some(phase);
    }
    let mut all_ok = true;
    for c in &spec.containers {
        let latest = observed.latest(&c.name)?;
        if !has_exited(latest) || should_restart(policy, latest.exit_code) {
            return None;
        }
        all_ok &= latest.exit_code == 0;
    }
    Some(if all_ok { Phase::Succeeded } else { Phase::Failed })
}

/// With restartPolicy Never, a failed init container fails the whole pod.
fn failed_init(pod: &Pod, observed: &ObservedPod) -> Option<Phase> {
    let spec = pod.spec.as_ref()?;
    if restart_policy(pod) != "Never" {
        return None;
    }
    let failed =
        spec.init_containers.iter().flatten().filter(|c| !is_sidecar(c)).any(|c| observed.latest(&c.name).is_some_and(|l| has_exited(l) && l.exit_code != 0));
    failed.then_some(Phase::Failed)
}

/// `started` tells whether a running container has passed its startup probe (true without
/// one): a sidecar lets the next init container start only then, as in the kubelet.
pub fn plan(
    pod: &Pod,
    observed: &ObservedPod,
    memory: &Memory,
    spec_hash: impl Fn(&Container) -> String,
    started: impl Fn(&ObservedContainer) -> bool,
    now: SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = pod.spec.as_ref() else { return plan };

    if let Some(phase) = finished_phase(pod, observed) {
        plan.finished = Some(phase);
        // Sidecars serve the regular containers: once those have ended for good, so do they.
        for c in sidecars(pod) {
            if let Some(live) = observed.latest(&c.name).filter(|l| l.state == RunState::Running) {
                plan.kill.push(KillContainer { id: live.id.clone(), name: c.name.clone(), reason: KillReason::PodFinished });
            }
        }
        collect_garbage(observed, &mut plan);
        return plan;
    }

    let Some(sandbox) = observed.ready_sandbox() else {
        let ever_ran = !observed.containers.is_empty();
        if restart_policy(pod) == "Never" && ever_ran {
            // The sandbox died under containers that may not be restarted: the pod is over.
            plan.finished = Some(Phase::Failed);
            return plan;
        }
        plan.remove_sandboxes = observed.sandboxes.iter().map(|s| s.id.clone()).collect();
        plan.create_sandbox = Some(observed.sandboxes.iter().map(|s| s.attempt + 1).max().unwrap_or(0));
        return plan;
    };
    plan.remove_sandboxes = observed.sandboxes.iter().filter(|s| s.id != sandbox.id).map(|s| s.id.clone()).collect();

    let policy = restart_policy(pod);
    let mut wake: Vec<Duration> = Vec::new();
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    // Once a regular container has run in this sandbox, the init sequence is over for good:
    // only sidecars that ended are restarted, beside the running containers.
    let initialized = spec.containers.iter().any(|c| observed.latest_in(&c.name, &sandbox.id).is_some());
    let mut inits_done = true;
    for c in inits {
        let latest = observed.latest_in(&c.name, &sandbox.id);
        if is_sidecar(c) {
            match latest {
                Some(live) if live.state == RunState::Running && started(live) => continue,
                // Running, its startup probe not passed yet: the next init container waits.
                Some(live) if live.state == RunState::Running => {}
                // A sidecar is restarted whenever it ends, whatever the pod's restart policy.
                latest => consider_start(&mut plan, &mut wake, c, true, latest, observed, memory, "Always", &spec_hash(c), now),
            }
            if initialized {
                continue;
            }
        } else {
            if initialized {
                continue;
            }
            match latest {
                Some(done) if done.state == RunState::Exited && done.exit_code == 0 => continue,
                Some(live) if live.state == RunState::Running => {}
                latest => consider_start(&mut plan, &mut wake, c, true, latest, observed, memory, policy, &spec_hash(c), now),
            }
        }
        inits_done = false;
        break;
    }
    if !inits_done {
        for c in &spec.containers {
            plan.waiting.insert(c.name.clone(), waiting(WaitingReason::PodInitializing, ""));
        }
    } else {
        for c in &spec.containers {
            let latest = observed.latest_in(&c.name, &sandbox.id);
            match latest {
                Some(live) if live.state == RunState::Running => {
                    let want = spec_hash(c);
                    if !live.spec_hash.is_empty() && live.spec_hash != want {
                        plan.kill.push(KillContainer { id: live.id.clone(), name: c.name.clone(), reason: KillReason::SpecChanged });
                    }
                }
                _ => consider_start(&mut plan, &mut wake, c, false, latest, observed, memory, policy, &spec_hash(c), now),
            }
        }
        // Ephemeral containers start once in the running pod and are never restarted.
        for c in &super::ephemeral::containers(pod) {
            match observed.latest(&c.name) {
                Some(live) if live.state == RunState::Running => {}
                latest => consider_start(&mut plan, &mut wake, c, false, latest, observed, memory, "Never", &spec_hash(c), now),
            }
        }
    }
    collect_garbage(observed, &mut plan);
    plan.wake_after = wake.into_iter().min();
    plan
}

/// Decides whether a container that is not running starts now, waits out a back-off, or stays down.
#[allow(clippy::too_many_arguments)]
fn consider_start(
    plan: &mut Plan,
    wake: &mut Vec<Duration>,
    c: &Container,
    init: bool,
    latest_here: Option<&ObservedContainer>,
    observed: &ObservedPod,
    memory: &Memory,
    policy: &str,
    want_hash: &str,
    now: SystemTime,
) {
    // This attempt's container, made from this spec, whose start this nodelet has not seen fail:
    // left Created (nodelet stopped between create and start), it is started; its start cut
    // short (`start_cut_short`), it is made again. Either way as the attempt it is, so no
    // restart is counted that nobody asked for.
    let resumable = latest_here.filter(|p| !p.spec_hash.is_empty() && p.spec_hash == want_hash && !memory.start_failures.contains_key(&c.name));
    let resume = resumable.and_then(|p| match p.state {
        RunState::Created => Some((p.attempt, StartFrom::Created(p.id.clone()))),
        _ if start_cut_short(p) => Some((p.attempt, StartFrom::CutShort(p.id.clone()))),
        _ => None,
    });
    if let Some((attempt, from)) = resume {
        plan.waiting.insert(c.name.clone(), waiting(WaitingReason::ContainerCreating, ""));
        plan.start.push(StartContainer { name: c.name.clone(), init, attempt, is_restart: false, from });
        return;
    }
    // A container created but never started (its start failed, or its spec changed since) is
    // replaced like an exited one.
    let previous = latest_here.filter(|p| p.state != RunState::Running);
    if let Some(prev) = previous {
        // Init containers of a pod that may restart are retried whatever the policy says, as in the kubelet.
        let restart = should_restart(policy, prev.exit_code) || (init && policy != "Never");
        if prev.state == RunState::Exited && !restart {
            return;
        }
        let finished = nanos_to_system_time(prev.finished_at.max(prev.created_at));
        if let Some(left) = memory.backoff.remaining(&backoff_key(&c.name), finished, now) {
            let delay = memory.backoff.current_delay(&backoff_key(&c.name), now).unwrap_or(left);
            let message = format!("back-off {} restarting failed container={}", fmt_secs(delay), c.name);
            plan.waiting.insert(c.name.clone(), waiting(WaitingReason::CrashLoopBackOff, &message));
            wake.push(left);
            return;
        }
    }
    if let Some(failure) = memory.start_failures.get(&c.name) {
        if let Some(left) = memory.backoff.remaining(&start_failure_key(&c.name), failure.at, now) {
            let reason = failure.reason.backing_off();
            let message = if reason == WaitingReason::ImagePullBackOff {
                format!("Back-off pulling image {:?}: {}", c.image.as_deref().unwrap_or(""), failure.message)
            } else {
                failure.message.clone()
            };
            plan.waiting.insert(c.name.clone(), waiting(reason, &message));
            wake.push(left);
            return;
        }
        plan.waiting.insert(c.name.clone(), waiting(failure.reason, &failure.message));
    } else {
        plan.waiting.insert(c.name.clone(), waiting(WaitingReason::ContainerCreating, ""));
    }
    plan.start.push(StartContainer {
        name: c.name.clone(),
        init,
        attempt: observed.next_attempt(&c.name),
        is_restart: previous.is_some(),
        from: StartFrom::Scratch,
    });
}

/// Keeps the newest instance of each container and a few dead ones before it.
fn collect_garbage(observed: &ObservedPod, plan: &mut Plan) {
    let mut names: Vec<&str> = observed.containers.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let dead_old = observed.instances(name).into_iter().skip(1 + KEEP_DEAD_INSTANCES).filter(|c| c.state != RunState::Running);
        plan.remove_containers.extend(dead_old.map(|c| c.id.clone()));
    }
}

fn waiting(reason: WaitingReason, message: &str) -> Waiting {
    Waiting { reason, message: message.into() }
}

fn fmt_secs(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{secs:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::observed::ObservedSandbox;

    const SEC: i64 = 1_000_000_000;

    fn pod(policy: &str, inits: &[&str], containers: &[&str]) -> Pod {
        let mk = |n: &&str| Container { name: n.to_string(), image: Some("img".into()), ..Default::default() };
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!inits.is_empty()).then(|| inits.iter().map(mk).collect()),
                containers: containers.iter().map(mk).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox(id: &str, attempt: u32, ready: bool) -> ObservedSandbox {
        ObservedSandbox { id: id.into(), attempt, ready, created_at: attempt as i64, ip: Some("10.0.0.2".into()) }
    }

    fn container(name: &str, attempt: u32, state: RunState, exit: i32, finished_s: i64) -> ObservedContainer {
        ObservedContainer {
            id: format!("{name}-{attempt}"),
            sandbox_id: "sb".into(),
            name: name.into(),
            attempt,
            state,
            exit_code: exit,
            created_at: attempt as i64,
            finished_at: finished_s * SEC,
            spec_hash: "h".into(),
            ..Default::default()
        }
    }

    fn memory() -> Memory {
        Memory::new(Backoff::new(Duration::from_secs(10), Duration::from_secs(300)))
    }

    fn at(s: i64) -> SystemTime {
        nanos_to_system_time(s * SEC)
    }

    fn run(pod: &Pod, obs: &ObservedPod, mem: &Memory, now: i64) -> Plan {
        plan(pod, obs, mem, |_| "h".to_string(), |_| true, at(now))
    }

    #[test]
    fn new_pod_creates_a_sandbox_first() {
        let p = run(&pod("Always", &[], &["a"]), &ObservedPod::default(), &memory(), 0);
        assert_eq!(p.create_sandbox, Some(0));
        assert!(p.start.is_empty());
    }

    #[test]
    fn dead_sandbox_is_replaced_with_the_next_attempt() {
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, false)], containers: vec![container("a", 0, RunState::Exited, 137, 5)] };
        let p = run(&pod("Always", &[], &["a"]), &obs, &memory(), 10);
        assert_eq!(p.remove_sandboxes, vec!["sb".to_string()]);
        assert_eq!(p.create_sandbox, Some(1));
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_others() {
        let pod = pod("Always", &["i1", "i2"], &["a"]);
        let mut obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![] };
        let p = run(&pod, &obs, &memory(), 0);
        assert_eq!(p.start.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["i1"]);
        assert_eq!(p.waiting["a"].reason, WaitingReason::PodInitializing);
        obs.containers.push(container("i1", 0, RunState::Running, 0, 0));
        assert!(run(&pod, &obs, &memory(), 0).start.is_empty());
        obs.containers[0] = container("i1", 0, RunState::Exited, 0, 1);
        let p = run(&pod, &obs, &memory(), 1);
        assert_eq!(p.start[0].name, "i2");
        obs.containers.push(container("i2", 0, RunState::Exited, 0, 2));
        let p = run(&pod, &obs, &memory(), 2);
        assert_eq!(p.start, vec![StartContainer { name: "a".into(), init: false, attempt: 0, is_restart: false, from: StartFrom::Scratch }]);
    }

    /// A pod whose init containers named in `sidecars` have `restartPolicy: Always`.
    fn with_sidecars(policy: &str, inits: &[&str], sidecars: &[&str], containers: &[&str]) -> Pod {
        let mut pod = pod(policy, inits, containers);
        for c in pod.spec.as_mut().unwrap().init_containers.iter_mut().flatten() {
            if sidecars.contains(&c.name.as_str()) {
                c.restart_policy = Some("Always".into());
            }
        }
        pod
    }

    #[test]
    fn a_start_cut_short_by_a_stop_of_nodelet_is_made_again_at_its_attempt() {
        let failed_start =
            |message: &str| ObservedContainer { reason: "StartError".into(), message: message.into(), ..container("a", 2, RunState::Exited, 128, 4) };
        let cut = failed_start("failed to start containerd task \"a-2\": context canceled");
        assert!(start_cut_short(&cut));
        for policy in ["Always", "OnFailure", "Never"] {
            let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![cut.clone()] };
            let p = run(&pod(policy, &[], &["a"]), &obs, &memory(), 5);
            assert_eq!(p.finished, None, "{policy}: the pod has not failed");
            assert_eq!(p.start, vec![StartContainer { name: "a".into(), init: false, attempt: 2, is_restart: false, from: StartFrom::CutShort("a-2".into()) }]);
            assert_eq!(p.waiting["a"].reason, WaitingReason::ContainerCreating);
        }
        // A start that failed on its own (a missing executable) is the container's failure.
        let own = failed_start("failed to create containerd task: exec: \"nope\": executable file not found in $PATH");
        assert!(!start_cut_short(&own));
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![own] };
        assert_eq!(run(&pod("Never", &[], &["a"]), &obs, &memory(), 5).finished, Some(Phase::Failed));
        let p = run(&pod("Always", &[], &["a"]), &obs, &memory(), 5);
        assert_eq!((p.start[0].attempt, p.start[0].is_restart, &p.start[0].from), (3, true, &StartFrom::Scratch));
        // The shim being started, killed with the canceled request, is the same cut.
        assert!(start_cut_short(&failed_start("failed to create containerd task: failed to start shim: start failed: : signal: killed: unknown")));
        // This nodelet saw that start fail itself: a failure like any other, with its back-off.
        let mut seen = memory();
        let failure = StartFailure { reason: WaitingReason::RunContainerError, message: cut.message.clone(), at: at(4) };
        seen.start_failures.insert("a".into(), failure);
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![cut.clone()] };
        assert!(run(&pod("Always", &[], &["a"]), &obs, &seen, 5).start.iter().all(|s| s.from == StartFrom::Scratch));
        // A container that ran and then saw its context canceled is no cut-short start.
        let ran = ObservedContainer { started_at: 2 * SEC, ..cut };
        assert!(!start_cut_short(&ran));
    }

    #[test]
    fn a_container_created_but_never_started_is_started_not_replaced() {
        let pod = pod("Always", &["i1"], &["a"]);
        let created = |name: &str| container(name, 0, RunState::Created, 0, 0);
        // An init container and a regular one, each left Created by a nodelet that stopped.
        for (obs, name) in [
            (ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![created("i1")] }, "i1"),
            (ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![container("i1", 0, RunState::Exited, 0, 1), created("a")] }, "a"),
        ] {
            let p = run(&pod, &obs, &memory(), 5);
            let want = StartContainer { name: name.into(), init: name == "i1", attempt: 0, is_restart: false, from: StartFrom::Created(format!("{name}-0")) };
            assert_eq!(p.start, vec![want]);
            assert_eq!(p.waiting[name].reason, WaitingReason::ContainerCreating);
            // Created from another spec: replaced by the next attempt.
            let p = plan(&pod, &obs, &memory(), |_| "other".to_string(), |_| true, at(5));
            assert_eq!((p.start[0].attempt, &p.start[0].from), (1, &StartFrom::Scratch));
            // Its start failed here before: replaced too.
            let mut mem = memory();
            mem.start_failures.insert(name.into(), StartFailure { reason: WaitingReason::RunContainerError, message: "no".into(), at: at(0) });
            let p = run(&pod, &obs, &mem, 500);
            assert_eq!((p.start[0].attempt, &p.start[0].from), (1, &StartFrom::Scratch));
        }
    }

    #[test]
    fn sidecars_start_in_order_keep_running_and_restart_whatever_the_policy() {
        let pod = with_sidecars("Never", &["side", "i1"], &["side"], &["a"]);
        let mut obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![] };
        assert_eq!(run(&pod, &obs, &memory(), 0).start.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["side"]);
        // Created is not yet running: it is started, and the next init container waits.
        obs.containers.push(container("side", 0, RunState::Created, 0, 0));
        let p = run(&pod, &obs, &memory(), 0);
        assert_eq!(p.start.iter().map(|s| (s.name.as_str(), &s.from)).collect::<Vec<_>>(), vec![("side", &StartFrom::Created("side-0".into()))]);
        // Running but its startup probe not passed yet: the next init container still waits.
        obs.containers[0] = container("side", 0, RunState::Running, 0, 0);
        let p = plan(&pod, &obs, &memory(), |_| "h".to_string(), |_| false, at(1));
        assert!(p.start.is_empty() && p.waiting["a"].reason == WaitingReason::PodInitializing);
        // Running (and started): the next init container starts beside it.
        assert_eq!(run(&pod, &obs, &memory(), 1).start.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["i1"]);
        obs.containers.push(container("i1", 0, RunState::Exited, 0, 2));
        let p = run(&pod, &obs, &memory(), 2);
        assert_eq!(p.start.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert!(p.waiting.get("a").is_none_or(|w| w.reason != WaitingReason::PodInitializing));
        // The app runs; the sidecar ends: it alone restarts (a Never pod), the app is untouched.
        obs.containers.push(container("a", 0, RunState::Running, 0, 0));
        obs.containers[0] = container("side", 0, RunState::Exited, 1, 3);
        let p = run(&pod, &obs, &memory(), 100);
        assert_eq!(p.start, vec![StartContainer { name: "side".into(), init: true, attempt: 1, is_restart: true, from: StartFrom::Scratch }]);
        assert!(p.finished.is_none() && p.kill.is_empty() && !p.waiting.contains_key("a"));
    }

    #[test]
    fn a_finished_pod_stops_its_sidecars_and_a_failed_sidecar_does_not_fail_it() {
        let pod = with_sidecars("Never", &["side"], &["side"], &["a"]);
        let obs = ObservedPod {
            sandboxes: vec![sandbox("sb", 0, true)],
            containers: vec![
                container("side", 1, RunState::Running, 0, 0),
                container("side", 0, RunState::Exited, 2, 1),
                container("a", 0, RunState::Exited, 0, 5),
            ],
        };
        let p = run(&pod, &obs, &memory(), 6);
        assert_eq!(p.finished, Some(Phase::Succeeded));
        assert_eq!(p.kill, vec![KillContainer { id: "side-1".into(), name: "side".into(), reason: KillReason::PodFinished }]);
    }

    #[test]
    fn restart_policies_decide_on_exit() {
        let obs = |exit| ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![container("a", 0, RunState::Exited, exit, 1)] };
        assert_eq!(run(&pod("Always", &[], &["a"]), &obs(0), &memory(), 2).start.len(), 1);
        assert_eq!(run(&pod("OnFailure", &[], &["a"]), &obs(1), &memory(), 2).start.len(), 1);
        let p = run(&pod("OnFailure", &[], &["a"]), &obs(0), &memory(), 2);
        assert_eq!((p.start.len(), p.finished), (0, Some(Phase::Succeeded)));
        let p = run(&pod("Never", &[], &["a"]), &obs(3), &memory(), 2);
        assert_eq!((p.start.len(), p.finished), (0, Some(Phase::Failed)));
    }

    #[test]
    fn crash_loop_waits_out_the_backoff() {
        let pod = pod("Always", &[], &["a"]);
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![container("a", 1, RunState::Exited, 1, 100)] };
        let mut mem = memory();
        mem.backoff.next(&backoff_key("a"), at(95));
        let p = run(&pod, &obs, &mem, 104);
        assert!(p.start.is_empty());
        assert_eq!(p.waiting["a"].reason, WaitingReason::CrashLoopBackOff);
        assert!(p.waiting["a"].message.starts_with("back-off 10s restarting failed container=a"), "{}", p.waiting["a"].message);
        assert_eq!(p.wake_after, Some(Duration::from_secs(6)));
        let p = run(&pod, &obs, &mem, 111);
        assert_eq!(p.start, vec![StartContainer { name: "a".into(), init: false, attempt: 2, is_restart: true, from: StartFrom::Scratch }]);
    }

    #[test]
    fn failed_pulls_back_off_as_image_pull_back_off() {
        let pod = pod("Always", &[], &["a"]);
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![] };
        let mut mem = memory();
        mem.start_failures.insert("a".into(), StartFailure { reason: WaitingReason::ErrImagePull, message: "not found".into(), at: at(100) });
        mem.backoff.next(&start_failure_key("a"), at(100));
        let p = run(&pod, &obs, &mem, 105);
        assert_eq!(p.waiting["a"].reason, WaitingReason::ImagePullBackOff);
        assert!(p.start.is_empty());
        let p = run(&pod, &obs, &mem, 111);
        assert_eq!(p.waiting["a"].reason, WaitingReason::ErrImagePull);
        assert_eq!(p.start.len(), 1);
    }

    #[test]
    fn changed_spec_kills_the_running_container() {
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![container("a", 0, RunState::Running, 0, 0)] };
        let p = plan(&pod("Always", &[], &["a"]), &obs, &memory(), |_| "other".into(), |_| true, at(1));
        assert_eq!(p.kill, vec![KillContainer { id: "a-0".into(), name: "a".into(), reason: KillReason::SpecChanged }]);
    }

    #[test]
    fn an_ephemeral_container_starts_once_and_never_again() {
        let mut pod = pod("Always", &[], &["a"]);
        pod.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![k8s_openapi::api::core::v1::EphemeralContainer { name: "debug".into(), image: Some("img".into()), ..Default::default() }]);
        let mut obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers: vec![container("a", 0, RunState::Running, 0, 0)] };
        let p = run(&pod, &obs, &memory(), 1);
        assert_eq!(p.start, vec![StartContainer { name: "debug".into(), init: false, attempt: 0, is_restart: false, from: StartFrom::Scratch }]);
        obs.containers.push(container("debug", 0, RunState::Exited, 1, 2));
        assert!(run(&pod, &obs, &memory(), 100).start.is_empty());
    }

    #[test]
    fn old_dead_instances_are_collected() {
        let containers = (0..4).map(|i| container("a", i, RunState::Exited, 1, i as i64)).collect();
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, true)], containers };
        let p = run(&pod("Always", &[], &["a"]), &obs, &memory(), 100);
        assert_eq!(p.remove_containers, vec!["a-1".to_string(), "a-0".to_string()]);
    }

    #[test]
    fn a_final_phase_from_the_apiserver_is_never_undone() {
        let mut pod = pod("Never", &[], &["a"]);
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Succeeded".into()), ..Default::default() });
        let p = run(&pod, &ObservedPod::default(), &memory(), 0);
        assert_eq!((p.finished, p.create_sandbox), (Some(Phase::Succeeded), None));
    }

    #[test]
    fn never_restarting_pod_whose_sandbox_died_has_failed() {
        let obs = ObservedPod { sandboxes: vec![sandbox("sb", 0, false)], containers: vec![container("a", 0, RunState::Running, 0, 0)] };
        let p = run(&pod("Never", &[], &["a"]), &obs, &memory(), 1);
        assert_eq!(p.finished, Some(Phase::Failed));
        assert_eq!(p.create_sandbox, None);
    }
}
