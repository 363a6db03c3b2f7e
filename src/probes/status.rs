//! How probe results shape a pod's status: a running container is `started` once its startup
//! probe succeeded and `ready` once started and its readiness probe says so; ContainersReady
//! follows, and Ready also waits for every readiness gate's condition to be True.

use super::results::ContainerResults;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use std::collections::HashMap;

/// Applies the probes' `view` (by container name) to a status computed without them; nothing is
/// ready while the pod terminates.
pub fn apply(status: &mut PodStatus, pod: &Pod, view: &HashMap<String, ContainerResults>, terminating: bool) {
    let mut unready = Vec::new();
    // Sidecars' probes count as the regular containers' do (the other init containers are done by now).
    let sidecar_names: Vec<&str> = crate::pods::plan::sidecars(pod).map(|c| c.name.as_str()).collect();
    let sidecars = status.init_container_statuses.iter_mut().flatten().filter(|c| sidecar_names.contains(&c.name.as_str()));
    for c in status.container_statuses.iter_mut().flatten().chain(sidecars) {
        let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
        if let (true, Some(r)) = (running, view.get(&c.name)) {
            c.started = Some(r.started);
            c.ready = r.started && r.ready;
        }
        if terminating {
            c.ready = false;
        }
        if !c.ready {
            unready.push(c.name.clone());
        }
    }
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let Some(conditions) = status.conditions.as_mut() else { return };
    let sandbox_ready = conditions.iter().any(|c| c.type_ == "PodReadyToStartContainers" && c.status == "True");
    let containers = if unready.is_empty() { None } else { Some(format!("containers with unready status: [{}]", unready.join(" "))) };
    let gates = gates_not_ready(pod);
    for cond in conditions.iter_mut() {
        match cond.type_.as_str() {
            "ContainersReady" if !finished => set(cond, containers.is_none(), "ContainersNotReady", containers.clone()),
            "Ready" if !finished => match (&containers, &gates) {
                (Some(m), _) => set(cond, false, "ContainersNotReady", Some(m.clone())),
                (None, Some(m)) => set(cond, false, "ReadinessGatesNotReady", Some(m.clone())),
                (None, None) => set(cond, sandbox_ready, "ContainersNotReady", None),
            },
            _ => {}
        }
    }
}

fn set(cond: &mut PodCondition, ok: bool, reason: &str, message: Option<String>) {
    cond.status = if ok { "True" } else { "False" }.into();
    cond.reason = (!ok).then(|| reason.to_string());
    cond.message = if ok { None } else { message };
}

/// Why the pod's readiness gates hold it back, as the kubelet says it; None when all are True.
pub fn gates_not_ready(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_ref())?;
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let mut problems = Vec::new();
    for gate in gates {
        match conditions.and_then(|cs| cs.iter().find(|c| c.type_ == gate.condition_type)) {
            None => problems.push(format!("corresponding condition of pod readiness gate {:?} does not exist.", gate.condition_type)),
            Some(c) if c.status != "True" => {
                problems.push(format!("the status of pod readiness gate {:?} is not \"True\", but {}", gate.condition_type, c.status))
            }
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStateRunning, ContainerStatus, PodReadinessGate, PodSpec};

    fn status(names: &[&str]) -> PodStatus {
        let cond = |t: &str| PodCondition { type_: t.into(), status: "True".into(), ..Default::default() };
        PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![cond("PodReadyToStartContainers"), cond("Ready"), cond("ContainersReady")]),
            container_statuses: Some(
                names
                    .iter()
                    .map(|n| ContainerStatus {
                        name: n.to_string(),
                        ready: true,
                        started: Some(true),
                        state: Some(ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    fn results(started: bool, ready: bool) -> ContainerResults {
        ContainerResults { container_id: "id".into(), started, ready, kill: None }
    }

    #[test]
    fn readiness_and_startup_decide_ready_and_started() {
        let mut s = status(&["a", "b"]);
        let view = HashMap::from([("a".to_string(), results(false, true))]);
        apply(&mut s, &Pod::default(), &view, false);
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!((a.started, a.ready), (Some(false), false));
        assert_eq!(cond(&s, "ContainersReady").status, "False");
        assert_eq!(cond(&s, "Ready").message.as_deref(), Some("containers with unready status: [a]"));
        let mut s = status(&["a"]);
        apply(&mut s, &Pod::default(), &HashMap::from([("a".to_string(), results(true, true))]), false);
        assert_eq!(cond(&s, "Ready").status, "True");
    }

    #[test]
    fn a_sidecars_readiness_counts_and_other_init_containers_do_not() {
        let init = |name: &str, always: bool| Container { name: name.into(), restart_policy: always.then(|| "Always".into()), ..Default::default() };
        let pod =
            Pod { spec: Some(PodSpec { init_containers: Some(vec![init("setup", false), init("side", true)]), ..Default::default() }), ..Default::default() };
        let mut s = status(&["a"]);
        s.init_container_statuses = status(&["setup", "side"]).container_statuses;
        let view = HashMap::from([("side".to_string(), results(true, false))]);
        apply(&mut s, &pod, &view, false);
        let side = &s.init_container_statuses.as_ref().unwrap()[1];
        assert_eq!((side.started, side.ready), (Some(true), false));
        assert_eq!(cond(&s, "ContainersReady").message.as_deref(), Some("containers with unready status: [side]"));
        apply(&mut s, &pod, &HashMap::from([("side".to_string(), results(true, true))]), false);
        assert_eq!(cond(&s, "Ready").status, "True");
    }

    #[test]
    fn terminating_pods_are_not_ready() {
        let mut s = status(&["a"]);
        apply(&mut s, &Pod::default(), &HashMap::new(), true);
        assert!(!s.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(cond(&s, "Ready").status, "False");
    }

    #[test]
    fn readiness_gates_hold_ready_until_their_condition_is_true() {
        let mut pod = Pod {
            spec: Some(PodSpec { readiness_gates: Some(vec![PodReadinessGate { condition_type: "k8s.io/test-condition1".into() }]), ..Default::default() }),
            ..Default::default()
        };
        let mut s = status(&["a"]);
        apply(&mut s, &pod, &HashMap::new(), false);
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(cond(&s, "Ready").message.as_deref(), Some("corresponding condition of pod readiness gate \"k8s.io/test-condition1\" does not exist."));
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition { type_: "k8s.io/test-condition1".into(), status: "True".into(), ..Default::default() }]),
            ..Default::default()
        });
        let mut s = status(&["a"]);
        apply(&mut s, &pod, &HashMap::new(), false);
        assert_eq!(cond(&s, "Ready").status, "True");
    }
}
