//! The kubelet's resource fit (the scheduler's NodeResourcesFit, run again on the node): the pod
//! count against maxPods, then the pod's cpu and memory requests against what the node's
//! allocatable leaves after the pods already admitted here.

use super::{Context, RejectReason, Rejection};
use crate::pods::quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// What a pod asks the node for: cpu in millicores, memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_millis: i64,
    pub memory: i64,
}

impl Requests {
    fn add(self, other: Requests) -> Requests {
        Requests { cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis), memory: self.memory.saturating_add(other.memory) }
    }

    fn max(self, other: Requests) -> Requests {
        Requests { cpu_millis: self.cpu_millis.max(other.cpu_millis), memory: self.memory.max(other.memory) }
    }

    fn of_list(list: Option<&BTreeMap<String, Quantity>>) -> Requests {
        // The apiserver validates quantities; one that cannot be read (a static pod's) counts as
        // nothing here and fails the container's creation with its own error.
        let get = |name: &str, parse: fn(&str) -> Result<i64, String>| list.and_then(|l| l.get(name)).and_then(|q| parse(&q.0).ok()).unwrap_or(0);
        Requests { cpu_millis: get("cpu", quantity::cpu_millis), memory: get("memory", quantity::bytes) }
    }
}

/// One container's requests; a resource with a limit but no request requests its limit, as the
/// apiserver's defaulting makes it.
fn container_requests(c: &Container) -> Requests {
    let resources = c.resources.as_ref();
    let requests = Requests::of_list(resources.and_then(|r| r.requests.as_ref()));
    let limits = Requests::of_list(resources.and_then(|r| r.limits.as_ref()));
    let has = |name: &str| resources.and_then(|r| r.requests.as_ref()).is_some_and(|l| l.contains_key(name));
    Requests {
        cpu_millis: if has("cpu") { requests.cpu_millis } else { limits.cpu_millis },
        memory: if has("memory") { requests.memory } else { limits.memory },
    }
}

/// The pod's effective requests, as the kubelet computes them: the sum of its containers (and
/// sidecars, which keep running beside them), or the largest init container's step if more
/// (each step also holds the sidecars started before it), plus the pod's overhead.
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else { return Requests::default() };
    let mut total = spec.containers.iter().map(container_requests).fold(Requests::default(), Requests::add);
    let (mut sidecars, mut init_peak) = (Requests::default(), Requests::default());
    for c in spec.init_containers.iter().flatten() {
        let own = container_requests(c);
        let step = if c.restart_policy.as_deref() == Some("Always") {
            total = total.add(own);
            sidecars = sidecars.add(own);
            sidecars
        } else {
            own.add(sidecars)
        };
        init_peak = init_peak.max(step);
    }
    total.max(init_peak).add(Requests::of_list(spec.overhead.as_ref()))
}

fn insufficient(reason: RejectReason, resource: &str, requested: i64, used: i64, capacity: i64) -> Rejection {
    Rejection { reason, message: format!("Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}") }
}

/// The rule: room for one more pod, and for its cpu and memory requests.
pub fn admit(pod: &Pod, ctx: &Context) -> Result<(), Rejection> {
    let node = &ctx.config.node;
    let used_pods = ctx.admitted.len() as i64;
    if used_pods + 1 > i64::from(node.max_pods) {
        return Err(insufficient(RejectReason::OutOfPods, "pods", 1, used_pods, node.max_pods.into()));
    }
    let wanted = pod_requests(pod);
    let used = ctx.admitted.iter().map(|p| pod_requests(p)).fold(Requests::default(), Requests::add);
    if wanted.cpu_millis > 0 && wanted.cpu_millis > node.allocatable_cpu_millis.saturating_sub(used.cpu_millis) {
        return Err(insufficient(RejectReason::OutOfCpu, "cpu", wanted.cpu_millis, used.cpu_millis, node.allocatable_cpu_millis));
    }
    if wanted.memory > 0 && wanted.memory > node.allocatable_memory.saturating_sub(used.memory) {
        return Err(insufficient(RejectReason::OutOfMemory, "memory", wanted.memory, used.memory, node.allocatable_memory));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::admission::{AdmissionConfig, NodeFacts};
    use crate::pods::manifest::parse_static_pod;

    fn pod(yaml_spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{yaml_spec}");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    fn with_cpu(cpu: &str, memory: &str) -> Pod {
        pod(&format!("  containers: [{{name: c, image: i, resources: {{requests: {{cpu: '{cpu}', memory: '{memory}'}}}}}}]\n"))
    }

    fn config(max_pods: u32, cpu: i64, memory: i64) -> AdmissionConfig {
        AdmissionConfig { node: NodeFacts { max_pods, allocatable_cpu_millis: cpu, allocatable_memory: memory, ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn init_containers_count_as_their_largest_step_and_sidecars_add_up() {
        let p = pod("  initContainers: [{name: i1, image: i, resources: {requests: {cpu: '2'}}}, {name: i2, image: i, resources: {limits: {memory: 1Gi}}}]\n  containers: [{name: a, image: i, resources: {requests: {cpu: 500m, memory: 100Mi}}}, {name: b, image: i, resources: {requests: {cpu: 500m}}}]\n");
        assert_eq!(pod_requests(&p), Requests { cpu_millis: 2000, memory: 1 << 30 });
        let sidecar = pod("  initContainers: [{name: s, image: i, restartPolicy: Always, resources: {requests: {cpu: 300m}}}, {name: i1, image: i, resources: {requests: {cpu: 1}}}]\n  containers: [{name: a, image: i, resources: {requests: {cpu: 500m}}}]\n  overhead: {cpu: 10m}\n");
        assert_eq!(pod_requests(&sidecar), Requests { cpu_millis: 1310, memory: 0 });
    }

    #[test]
    fn max_pods_counts_the_admitted_pods() {
        let config = config(2, 1000, 1 << 30);
        let (a, b) = (with_cpu("0", "0"), with_cpu("0", "0"));
        assert_eq!(admit(&a, &Context { config: &config, admitted: &[&b] }), Ok(()));
        let err = admit(&a, &Context { config: &config, admitted: &[&a, &b] }).unwrap_err();
        assert_eq!(err.reason.as_str(), "OutOfpods");
        assert_eq!(err.message, "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2");
    }

    #[test]
    fn cpu_and_memory_requests_must_fit_beside_the_admitted_pods() {
        let config = config(110, 1000, 1 << 30);
        let half = with_cpu("500m", "0");
        assert_eq!(admit(&with_cpu("500m", "0"), &Context { config: &config, admitted: &[&half] }), Ok(()));
        let err = admit(&with_cpu("1", "0"), &Context { config: &config, admitted: &[&half] }).unwrap_err();
        assert_eq!(err.reason.as_str(), "OutOfcpu");
        assert_eq!(err.message, "Node didn't have enough resource: cpu, requested: 1000, used: 500, capacity: 1000");
        let err = admit(&with_cpu("0", "2Gi"), &Context { config: &config, admitted: &[] }).unwrap_err();
        assert_eq!(err.reason.as_str(), "OutOfmemory");
        assert_eq!(err.message, "Node didn't have enough resource: memory, requested: 2147483648, used: 0, capacity: 1073741824");
        // A pod that requests nothing always fits (as the scheduler's fit: only the count matters).
        let full = with_cpu("1", "1Gi");
        assert_eq!(admit(&with_cpu("0", "0"), &Context { config: &config, admitted: &[&full] }), Ok(()));
    }
}
