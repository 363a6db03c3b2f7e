//! Pods over their own local-storage limits, the kubelet's localStorageEviction: checked every
//! pass before the node's thresholds, whatever the disk's fill. In the kubelet's order: an
//! emptyDir past its `sizeLimit`, the pod past the sum of its containers' `ephemeral-storage`
//! limits, a container (writable layer and logs) past its own. Pure.

use super::decide::PodUsage;
use crate::pods::quantity;
use k8s_openapi::api::core::v1::{Container, Pod};

const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// The eviction message for the first limit the pod's use is over; None when it is within them
/// (or has no figures for what a limit covers).
pub fn over_limits(pod: &Pod, usage: &PodUsage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(limit) = volume.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else { continue };
        let (Ok(bytes), Some(used)) = (quantity::bytes(&limit.0), usage.volumes.get(&volume.name)) else { continue };
        if bytes > 0 && *used > bytes as u64 {
            return Some(format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}. ", volume.name, limit.0));
        }
    }
    if let (Some(limit), Some(used)) = (super::decide::pod_total(pod, |c| limit_of(c).map(|(_, b)| b)), usage.ephemeral_storage) {
        if used > limit {
            return Some(format!("Pod ephemeral local storage usage exceeds the total limit of containers {}. ", binary_quantity(limit)));
        }
    }
    for container in &spec.containers {
        let Some((text, limit)) = limit_of(container) else { continue };
        let Some(used) = usage.containers.iter().find(|c| c.name == container.name) else { continue };
        if used.rootfs.unwrap_or(0) + used.logs.unwrap_or(0) > limit {
            return Some(format!("Container {} exceeded its local ephemeral storage limit {:?}. ", container.name, text));
        }
    }
    None
}

/// A container's ephemeral-storage limit, as written and in bytes.
fn limit_of(c: &Container) -> Option<(&str, u64)> {
    let text = c.resources.as_ref()?.limits.as_ref()?.get(EPHEMERAL_STORAGE)?.0.as_str();
    Some((text, quantity::bytes(text).ok()?.max(0) as u64))
}

/// Bytes as a Kubernetes quantity in the largest binary unit that divides them (1Gi, 1536Mi, 100).
fn binary_quantity(bytes: u64) -> String {
    for (unit, size) in [("Ei", 1u64 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::decide::ContainerUsage;
    use std::collections::HashMap;

    fn pod(yaml_spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: ns}}\nspec:\n{yaml_spec}");
        crate::pods::manifest::parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    fn usage(pod_total: u64, containers: &[(&str, u64, u64)], volumes: &[(&str, u64)]) -> PodUsage {
        PodUsage {
            ephemeral_storage: Some(pod_total),
            containers: containers
                .iter()
                .map(|(n, rootfs, logs)| ContainerUsage { name: n.to_string(), rootfs: Some(*rootfs), logs: Some(*logs), ..Default::default() })
                .collect(),
            volumes: volumes.iter().map(|(n, b)| (n.to_string(), *b)).collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn an_empty_dir_past_its_size_limit_comes_first() {
        let p = pod(
            "  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]\n  containers:\n  - {name: a, image: i, resources: {limits: {ephemeral-storage: 1Mi}}}\n",
        );
        let message = over_limits(&p, &usage(3 * MI, &[("a", 2 * MI, 0)], &[("scratch", 2 * MI)]));
        assert_eq!(message.as_deref(), Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "));
        assert_eq!(over_limits(&p, &usage(MI / 2, &[("a", MI / 4, 0)], &[("scratch", MI / 4)])), None, "within every limit");
    }

    #[test]
    fn the_pod_total_is_the_sum_of_its_containers_limits_then_each_container_is_checked() {
        let spec = "  containers:\n  - {name: a, image: i, resources: {limits: {ephemeral-storage: 1Mi}}}\n  - {name: b, image: i, resources: {limits: {ephemeral-storage: 512Ki}}}\n  - {name: c, image: i}\n";
        let p = pod(spec);
        assert_eq!(
            over_limits(&p, &usage(2 * MI, &[("a", MI / 2, 0), ("b", 0, 0)], &[("v", 3 * MI / 2)])).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 1536Ki. ")
        );
        // Within the pod's total, a container over its own: its writable layer and logs count.
        assert_eq!(
            over_limits(&p, &usage(MI, &[("a", 0, 0), ("b", MI / 2, 1)], &[])).as_deref(),
            Some("Container b exceeded its local ephemeral storage limit \"512Ki\". ")
        );
        assert_eq!(over_limits(&pod("  containers: [{name: c, image: i}]\n"), &usage(100 * MI, &[("c", 100 * MI, 0)], &[])), None, "no limit, no eviction");
    }

    #[test]
    fn an_init_container_larger_than_the_sum_sets_the_pod_limit() {
        let p = pod("  initContainers: [{name: i, image: i, resources: {limits: {ephemeral-storage: 1Gi}}}]\n  containers: [{name: a, image: i, resources: {limits: {ephemeral-storage: 1Mi}}}]\n");
        assert_eq!(over_limits(&p, &usage(MI / 2, &[("a", 0, 0)], &[])), None);
        assert_eq!(
            over_limits(&p, &usage(2 << 30, &[("a", 0, 0)], &[])).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. ")
        );
        assert_eq!(binary_quantity(100), "100");
    }
}
