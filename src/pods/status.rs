//! A pod's status as the API shows it, computed from its spec, what the runtime holds and the
//! plan's waiting reasons. Pure: the same input always gives the same status.

use super::plan::{Phase, Plan};
use super::reasons::{TerminatedReason, WaitingReason};
use crate::runtime::observed::{nanos_to_system_time, ObservedContainer, ObservedPod, RunState};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::SystemTime;

pub const CONTAINER_ID_SCHEME: &str = "containerd://";

pub struct StatusInput<'a> {
    pub pod: &'a Pod,
    pub observed: &'a ObservedPod,
    pub plan: &'a Plan,
    pub host_ip: Option<&'a str>,
    /// When nodelet first saw the pod: the pod's startTime.
    pub start_time: SystemTime,
    /// When the status is computed: a condition's lastTransitionTime (the status manager keeps
    /// the earlier time of a condition that did not change).
    pub now: SystemTime,
}

pub fn pod_status(input: &StatusInput) -> PodStatus {
    let spec = input.pod.spec.clone().unwrap_or_default();
    let observed = input.observed;
    let sandbox = observed.latest_sandbox();
    let sandbox_ready = sandbox.is_some_and(|s| s.ready) && input.plan.finished.is_none();
    // As the kubelet: a container with nothing to show yet waits for the pod's init containers
    // when it has any, else for its own creation.
    let not_yet = if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty()) { WaitingReason::PodInitializing } else { WaitingReason::ContainerCreating };
    let init_statuses: Vec<ContainerStatus> = spec.init_containers.iter().flatten().map(|c| init_container_status(c, observed, input.plan, not_yet)).collect();
    let statuses: Vec<ContainerStatus> = spec.containers.iter().map(|c| container_status(c, observed, input.plan, not_yet)).collect();
    let ephemeral: Vec<ContainerStatus> =
        super::ephemeral::containers(input.pod).iter().map(|c| container_status(c, observed, input.plan, WaitingReason::ContainerCreating)).collect();

    let incomplete: Vec<&str> =
        spec.init_containers.iter().flatten().zip(&init_statuses).filter(|(c, s)| !init_complete(c, s)).map(|(c, _)| c.name.as_str()).collect();
    let initialized = incomplete.is_empty();
    let containers_ready = statuses.iter().all(|s| s.ready);
    let phase = input.plan.finished.clone().unwrap_or_else(|| running_phase(&statuses, initialized));

    let pod_ip = sandbox.and_then(|s| s.ip.clone()).filter(|ip| !ip.is_empty());
    let now_time = input.now;
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, now_time),
        PodCondition {
            message: (!initialized).then(|| format!("containers with incomplete status: [{}]", incomplete.join(" "))),
            ..condition("Initialized", initialized, (!initialized).then_some("ContainersNotInitialized"), now_time)
        },
        condition("Ready", containers_ready && sandbox_ready, (!containers_ready).then_some("ContainersNotReady"), now_time),
        condition("ContainersReady", containers_ready, (!containers_ready).then_some("ContainersNotReady"), now_time),
        condition("PodScheduled", true, None, now_time),
    ];
    PodStatus {
        phase: Some(phase.as_str().into()),
        conditions: Some(conditions),
        host_ip: input.host_ip.map(String::from),
        host_ips: input.host_ip.map(|ip| vec![HostIP { ip: ip.into() }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(time(input.start_time)),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        qos_class: Some(qos_class(&spec).into()),
        ..Default::default()
    }
}

fn running_phase(statuses: &[ContainerStatus], initialized: bool) -> Phase {
    let any_running = statuses.iter().any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
    let any_ran = statuses.iter().any(|s| s.last_state.as_ref().is_some_and(|st| st.terminated.is_some()));
    if initialized && (any_running || any_ran) {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// An init container is done when it exited 0; a restartable one (a sidecar) once it runs.
fn init_complete(c: &Container, status: &ContainerStatus) -> bool {
    let state = status.state.as_ref();
    if super::plan::is_sidecar(c) {
        return state.is_some_and(|s| s.running.is_some());
    }
    matches!(state.and_then(|s| s.terminated.as_ref()), Some(t) if t.exit_code == 0)
}

/// An init container's status: ready once it has done its part (exited 0, or runs as a sidecar).
fn init_container_status(c: &Container, observed: &ObservedPod, plan: &Plan, not_yet: WaitingReason) -> ContainerStatus {
    let mut status = container_status(c, observed, plan, not_yet);
    status.ready = init_complete(c, &status);
    status
}

fn container_status(c: &Container, observed: &ObservedPod, plan: &Plan, not_yet: WaitingReason) -> ContainerStatus {
    let instances = observed.instances(&c.name);
    let mut instances = instances.into_iter();
    let latest = instances.next();
    let previous = instances.next();
    let waiting = plan.waiting.get(&c.name);
    let (state, last_state) = match (latest, waiting) {
        // Not running and about to be (re)started or held back: waiting, the last run as lastState.
        (latest, Some(w)) if latest.is_none_or(|l| l.state != RunState::Running) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some(w.reason.as_str().into()), message: non_empty(&w.message) }),
                ..Default::default()
            },
            latest.filter(|l| l.state == RunState::Exited).map(run_state),
        ),
        (Some(l), _) => (run_state(l), previous.filter(|p| p.state == RunState::Exited).map(run_state)),
        (None, _) => {
            (ContainerState { waiting: Some(ContainerStateWaiting { reason: Some(not_yet.as_str().into()), message: None }), ..Default::default() }, None)
        }
    };
    let running = state.running.is_some();
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("{CONTAINER_ID_SCHEME}{}", l.id)),
        ready: running,
        started: Some(running),
        restart_count: latest.map_or(0, |l| l.attempt as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

fn run_state(c: &ObservedContainer) -> ContainerState {
    match c.state {
        RunState::Running => ContainerState { running: Some(ContainerStateRunning { started_at: nanos(c.started_at) }), ..Default::default() },
        RunState::Exited => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: c.exit_code,
                reason: non_empty(&c.reason).or_else(|| Some(TerminatedReason::of_exit(c.exit_code).as_str().into())),
                message: non_empty(&c.message),
                started_at: nanos(c.started_at),
                finished_at: nanos(c.finished_at),
                container_id: Some(format!("{CONTAINER_ID_SCHEME}{}", c.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        RunState::Created | RunState::Unknown => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(WaitingReason::ContainerCreating.as_str().into()), message: None }),
            ..Default::default()
        },
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, at: SystemTime) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(String::from),
        last_transition_time: Some(time(at)),
        ..Default::default()
    }
}

/// The QoS class the apiserver derives from requests and limits.
pub fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    qos(spec).as_str()
}

/// The pod's QoS class: Guaranteed when every container's cpu and memory limits are set and
/// its requests equal them, BestEffort when none sets any, else Burstable.
pub fn qos(spec: &k8s_openapi::api::core::v1::PodSpec) -> crate::cgroups::Qos {
    use crate::cgroups::Qos;
    let all = spec.init_containers.iter().flatten().chain(spec.containers.iter());
    let (mut any_set, mut guaranteed) = (false, true);
    for c in all {
        let res = c.resources.clone().unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        any_set |= !limits.is_empty() || !requests.is_empty();
        for resource in ["cpu", "memory"] {
            let limit = limits.get(resource);
            let request = requests.get(resource).or(limit);
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any_set, guaranteed) {
        (false, _) => Qos::BestEffort,
        (true, true) => Qos::Guaranteed,
        (true, false) => Qos::Burstable,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn nanos(n: i64) -> Option<Time> {
    (n > 0).then(|| time(nanos_to_system_time(n)))
}

pub fn time(t: SystemTime) -> Time {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    // The API carries whole seconds; rounding keeps statuses stable from sync to sync.
    Time(Timestamp::from_second(d.as_secs() as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::plan::Waiting;
    use crate::runtime::observed::ObservedSandbox;

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: containers.iter().map(|n| Container { name: n.to_string(), image: Some("img:1".into()), ..Default::default() }).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn observed(state: RunState) -> ObservedPod {
        ObservedPod {
            sandboxes: vec![ObservedSandbox { id: "sb".into(), ready: true, ip: Some("10.88.0.5".into()), ..Default::default() }],
            containers: vec![ObservedContainer {
                id: "abc".into(),
                sandbox_id: "sb".into(),
                name: "a".into(),
                attempt: 2,
                state,
                started_at: 1_000_000_000_000,
                finished_at: 2_000_000_000_000,
                exit_code: 1,
                image_ref: "sha256:1".into(),
                ..Default::default()
            }],
        }
    }

    fn input<'a>(pod: &'a Pod, obs: &'a ObservedPod, plan: &'a Plan) -> StatusInput<'a> {
        StatusInput { pod, observed: obs, plan, host_ip: Some("127.0.0.1"), start_time: SystemTime::UNIX_EPOCH, now: SystemTime::UNIX_EPOCH }
    }

    #[test]
    fn running_pod_reports_ip_ready_and_ids() {
        let (pod, obs, plan) = (pod(&["a"]), observed(RunState::Running), Plan::default());
        let status = pod_status(&input(&pod, &obs, &plan));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.5"));
        let c = &status.container_statuses.unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.container_id.as_deref(), Some("containerd://abc"));
        assert!(c.state.as_ref().unwrap().running.is_some());
        let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn crash_looping_container_waits_with_last_state() {
        let (pod, obs) = (pod(&["a"]), observed(RunState::Exited));
        let mut plan = Plan::default();
        plan.waiting.insert("a".into(), Waiting { reason: WaitingReason::CrashLoopBackOff, message: "back-off 10s".into() });
        let status = pod_status(&input(&pod, &obs, &plan));
        let c = &status.container_statuses.unwrap()[0];
        assert_eq!(c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(c.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn finished_pod_shows_its_phase() {
        let (pod, obs) = (pod(&["a"]), observed(RunState::Exited));
        let plan = Plan { finished: Some(Phase::Failed), ..Default::default() };
        let status = pod_status(&input(&pod, &obs, &plan));
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let c = &status.container_statuses.unwrap()[0];
        assert_eq!(c.state.as_ref().unwrap().terminated.as_ref().unwrap().reason.as_deref(), Some("Error"));
    }

    #[test]
    fn new_pod_is_pending_and_creating() {
        let (pod, obs, plan) = (pod(&["a"]), ObservedPod::default(), Plan::default());
        let status = pod_status(&input(&pod, &obs, &plan));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.pod_ip, None);
        let c = &status.container_statuses.unwrap()[0];
        assert_eq!(c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn init_containers_show_their_progress_as_the_kubelet_does() {
        let mut pod = pod(&["run1"]);
        let init = |n: &str| Container { name: n.into(), image: Some("img:1".into()), ..Default::default() };
        pod.spec.as_mut().unwrap().init_containers = Some(vec![init("init1"), init("init2")]);
        // Nothing yet: everything waits for the init containers.
        let status = pod_status(&input(&pod, &ObservedPod::default(), &Plan::default()));
        let reason = |s: &ContainerStatus| s.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.clone().unwrap();
        assert_eq!(reason(&status.container_statuses.as_ref().unwrap()[0]), "PodInitializing");
        assert_eq!(reason(&status.init_container_statuses.as_ref().unwrap()[1]), "PodInitializing");
        let initialized = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(initialized.message.as_deref(), Some("containers with incomplete status: [init1 init2]"));
        // init1 done: it is ready, init2 is what is left.
        let mut obs = observed(RunState::Exited);
        obs.containers[0].name = "init1".into();
        obs.containers[0].exit_code = 0;
        let status = pod_status(&input(&pod, &obs, &Plan::default()));
        assert!(status.init_container_statuses.as_ref().unwrap()[0].ready);
        let initialized = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(initialized.message.as_deref(), Some("containers with incomplete status: [init2]"));
    }

    #[test]
    fn qos_classes() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut spec = pod(&["a"]).spec.unwrap();
        assert_eq!(qos_class(&spec), "BestEffort");
        let q = |s: &str| Quantity(s.into());
        spec.containers[0].resources =
            Some(ResourceRequirements { limits: Some([("cpu".to_string(), q("1")), ("memory".to_string(), q("1Gi"))].into()), ..Default::default() });
        assert_eq!(qos_class(&spec), "Guaranteed");
        spec.containers[0].resources.as_mut().unwrap().limits.as_mut().unwrap().remove("cpu");
        assert_eq!(qos_class(&spec), "Burstable");
    }
}
