//! The QoS levels' cgroups, as the kubelet's QoS container manager keeps them: kubepods sized to
//! the node's allocatable (enforceNodeAllocatable: pods), so pods together cannot starve the
//! node; besteffort with the least cpu shares; burstable with the shares of its pods' cpu
//! requests, kept up to date as pods come and go. Guaranteed pods sit in kubepods itself.

use super::store::PodStore;
use crate::cgroups::{resources, CgroupError, PodCgroups, Qos, ResourceConfig};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::Duration;

/// The node's allocatable cpu and memory, and whether kubepods is held to them.
#[derive(Debug, Clone, Copy)]
pub struct Allocatable {
    pub cpu_millis: i64,
    pub memory: i64,
    pub enforce: bool,
}

/// kubepods' settings: cpu shares of the allocatable cpu and, when enforced, its memory as the
/// limit (the kubelet's enforceNodeAllocatable: pods).
pub fn kubepods_resources(allocatable: Allocatable) -> ResourceConfig {
    ResourceConfig {
        cpu_shares: Some(resources::millis_to_shares(allocatable.cpu_millis)),
        memory_limit: allocatable.enforce.then_some(allocatable.memory.max(1)),
        ..Default::default()
    }
}

/// burstable's cpu shares: the sum of its pods' cpu requests (the kubelet's setCPUCgroupConfig).
pub fn burstable_resources(pods: &[Pod]) -> ResourceConfig {
    let millis: i64 = pods
        .iter()
        .filter(|p| p.spec.as_ref().is_some_and(|s| super::status::qos(s) == Qos::Burstable))
        .filter_map(|p| super::spec::pod_amounts(p).ok())
        .map(|a| a.cpu_request_millis)
        .sum();
    ResourceConfig { cpu_shares: Some(resources::millis_to_shares(millis)), ..Default::default() }
}

/// besteffort's: the least shares there are.
pub fn besteffort_resources() -> ResourceConfig {
    ResourceConfig { cpu_shares: Some(resources::MIN_SHARES), ..Default::default() }
}

/// Makes kubepods and its QoS levels with their settings, before any pod goes in them.
pub async fn setup(cgroups: &dyn PodCgroups, allocatable: Allocatable) -> Result<(), CgroupError> {
    let layout = cgroups.layout().clone();
    cgroups.ensure(&layout.kubepods(), &kubepods_resources(allocatable)).await?;
    cgroups.ensure(&layout.qos(Qos::Burstable), &burstable_resources(&[])).await?;
    cgroups.ensure(&layout.qos(Qos::BestEffort), &besteffort_resources()).await
}

/// Keeps burstable's cpu shares following its pods, looking every `every`.
pub async fn keep_burstable_shares(cgroups: Arc<dyn PodCgroups>, store: PodStore, every: Duration) {
    let burstable = cgroups.layout().qos(Qos::Burstable);
    let mut applied = burstable_resources(&[]);
    loop {
        tokio::time::sleep(every).await;
        let wanted = burstable_resources(&store.list());
        if wanted != applied {
            match cgroups.ensure(&burstable, &wanted).await {
                Ok(()) => applied = wanted,
                Err(e) => tracing::warn!(error = %e, "setting the burstable QoS cgroup's cpu shares failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu_request: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu_request}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn kubepods_follows_the_allocatable() {
        let r = kubepods_resources(Allocatable { cpu_millis: 2000, memory: 1 << 30, enforce: true });
        assert_eq!((r.cpu_shares, r.memory_limit), (Some(2048), Some(1 << 30)));
        assert_eq!(kubepods_resources(Allocatable { cpu_millis: 2000, memory: 1 << 30, enforce: false }).memory_limit, None);
    }

    #[test]
    fn burstable_shares_are_its_pods_requests() {
        assert_eq!(burstable_resources(&[]).cpu_shares, Some(2));
        assert_eq!(burstable_resources(&[pod("250m"), pod("500m")]).cpu_shares, Some(768));
        assert_eq!(besteffort_resources().cpu_shares, Some(2));
    }

    #[tokio::test]
    async fn setup_makes_the_three_levels() {
        let fake = crate::cgroups::Recording::new();
        setup(&fake, Allocatable { cpu_millis: 1000, memory: 1 << 20, enforce: true }).await.unwrap();
        assert_eq!(*fake.calls.lock().unwrap(), ["ensure kubepods", "ensure kubepods/burstable", "ensure kubepods/besteffort"]);
    }
}
