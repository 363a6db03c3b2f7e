//! The eviction manager's admit handler: while the node is under pressure (its MemoryPressure or
//! DiskPressure condition), a new pod is refused with reason Evicted, as the kubelet does: under
//! memory pressure only, BestEffort pods (unless they tolerate the memory-pressure taint); under
//! disk pressure, every pod. Critical pods (static, mirror, priority 2000000000 and up) are
//! always taken on.

use super::{Context, RejectReason, Rejection};
use crate::eviction::NodePressure;
use k8s_openapi::api::core::v1::{Pod, Toleration};

const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";

pub fn admit(pod: &Pod, ctx: &Context) -> Result<(), Rejection> {
    match &ctx.config.pressure {
        Some(pressure) => admit_under(pod, *pressure.borrow()),
        None => Ok(()),
    }
}

/// The rule over the node's pressure now.
pub fn admit_under(pod: &Pod, pressure: NodePressure) -> Result<(), Rejection> {
    if !pressure.memory && !pressure.disk {
        return Ok(());
    }
    let critical = !crate::pods::status_sync::is_api_pod(pod) || crate::eviction::decide::never_evicted(pod);
    if critical {
        return Ok(());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    if pressure.memory && !pressure.disk {
        let best_effort = crate::pods::status::qos_class(&spec) == "BestEffort";
        if !best_effort || spec.tolerations.iter().flatten().any(tolerates_memory_pressure) {
            return Ok(());
        }
    }
    let conditions: Vec<&str> =
        [(pressure.memory, "MemoryPressure"), (pressure.disk, "DiskPressure")].into_iter().filter(|(on, _)| *on).map(|(_, c)| c).collect();
    Err(Rejection { reason: RejectReason::Evicted, message: format!("The node had condition: [{}]. ", conditions.join(" ")) })
}

/// Whether the toleration tolerates the memory-pressure taint (NoSchedule, no value).
fn tolerates_memory_pressure(t: &Toleration) -> bool {
    let key = t.key.as_deref().unwrap_or_default();
    let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoSchedule");
    let exists = t.operator.as_deref() == Some("Exists");
    let key_ok = key == MEMORY_PRESSURE_TAINT || (key.is_empty() && exists);
    let value_ok = exists || t.value.as_deref().unwrap_or_default().is_empty();
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::manifest::parse_static_pod;

    fn api_pod(spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns}}\nspec:\n{spec}");
        let mut pod = parse_static_pod("f", text.as_bytes(), "n1").unwrap();
        pod.metadata.annotations = None;
        pod
    }

    const BEST_EFFORT: &str = "  containers: [{name: c, image: i}]\n";
    const BURSTABLE: &str = "  containers: [{name: c, image: i, resources: {requests: {memory: 10Mi}}}]\n";

    #[test]
    fn memory_pressure_refuses_best_effort_pods_and_disk_pressure_every_pod() {
        let memory = NodePressure { memory: true, disk: false };
        let disk = NodePressure { memory: false, disk: true };
        let both = NodePressure { memory: true, disk: true };
        assert_eq!(admit_under(&api_pod(BEST_EFFORT), NodePressure::default()), Ok(()));
        let refused = admit_under(&api_pod(BEST_EFFORT), memory).unwrap_err();
        assert_eq!((refused.reason.as_str(), refused.message.as_str()), ("Evicted", "The node had condition: [MemoryPressure]. "));
        assert_eq!(admit_under(&api_pod(BURSTABLE), memory), Ok(()));
        assert_eq!(admit_under(&api_pod(BURSTABLE), disk).unwrap_err().message, "The node had condition: [DiskPressure]. ");
        assert_eq!(admit_under(&api_pod(BURSTABLE), both).unwrap_err().message, "The node had condition: [MemoryPressure DiskPressure]. ");
    }

    #[test]
    fn critical_pods_and_pods_tolerating_memory_pressure_are_taken_on() {
        let memory = NodePressure { memory: true, disk: false };
        let tolerating = format!("  tolerations: [{{key: {MEMORY_PRESSURE_TAINT}, operator: Exists, effect: NoSchedule}}]\n{BEST_EFFORT}");
        assert_eq!(admit_under(&api_pod(&tolerating), memory), Ok(()));
        assert_eq!(admit_under(&api_pod(&format!("  tolerations: [{{operator: Exists}}]\n{BEST_EFFORT}")), memory), Ok(()));
        let other = format!("  tolerations: [{{key: node.kubernetes.io/disk-pressure, operator: Exists}}]\n{BEST_EFFORT}");
        assert!(admit_under(&api_pod(&other), memory).is_err());
        assert!(admit_under(&api_pod(&tolerating), NodePressure { memory: true, disk: true }).is_err(), "disk pressure refuses it anyway");
        let critical = format!("  priority: 2000001000\n{BEST_EFFORT}");
        assert_eq!(admit_under(&api_pod(&critical), NodePressure { memory: true, disk: true }), Ok(()));
        let static_pod = parse_static_pod("f", format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: s}}\nspec:\n{BEST_EFFORT}").as_bytes(), "n1").unwrap();
        assert_eq!(admit_under(&static_pod, NodePressure { memory: true, disk: true }), Ok(()));
    }
}
