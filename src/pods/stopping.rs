//! How a pod's containers and sandboxes are stopped and what it leaves on disk removed: by its
//! worker when it terminates, and by the manager for orphans nobody runs any more.

use super::plan::KillContainer;
use super::reasons::KillReason;
use super::spec::{self, NodeContext};
use super::worker::WorkerDeps;
use crate::events::Kind::{Normal, Warning};
use crate::runtime::observed::{ObservedPod, RunState};
use crate::runtime::{Cri, CriError};
use futures::future::{join_all, BoxFuture, FutureExt};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::Duration;

/// The one place a container is stopped (its spec changed, its pod ends, a probe or hook
/// failed): the Killing event, its preStop hook within `grace`, then SIGTERM and, once the rest
/// of the grace has passed, SIGKILL. `pod_ip` is where an httpGet preStop hook goes.
/// (Boxed: the hook runners' futures are generic, and a boxed future keeps callers that stop
/// many containers at once provably Send.)
pub fn stop_container<'a>(
    deps: &'a WorkerDeps,
    pod: &'a Pod,
    kill: &'a KillContainer,
    grace: Duration,
    pod_ip: &'a str,
) -> BoxFuture<'a, Result<(), CriError>> {
    async move {
        deps.events.record(pod, Some(&kill.name), Normal, "Killing", kill.reason.message(&kill.name));
        let container = spec::find_container(pod, &kill.name);
        let effects = crate::probes::run::Real { cri: deps.cri.clone() };
        let (failure, left) = crate::probes::hooks::pre_stop(&effects, pod, container.as_ref(), &kill.id, pod_ip, grace).await;
        if let Some(message) = failure {
            deps.events.record(pod, Some(&kill.name), Warning, "FailedPreStopHook", message);
        }
        deps.runtime.stop_container(&kill.id, left).await
    }
    .boxed()
}

/// Where probes and hooks reach the pod: its sandbox's IP, the node's for a host-network pod.
pub fn pod_ip(deps: &WorkerDeps, observed: &ObservedPod) -> String {
    let sandbox_ip = observed.ready_sandbox().and_then(|s| s.ip.clone()).filter(|ip| !ip.is_empty());
    sandbox_ip.or_else(|| deps.ctx.host_ip.clone()).unwrap_or_else(|| "127.0.0.1".into())
}

/// Stops every running container of the pod with `grace`, then stops and removes its sandboxes.
/// Owns what it uses, so the worker can read its inbox while the stop runs.
pub async fn stop_pod(deps: WorkerDeps, pod: Arc<Pod>, grace: Duration) -> Result<(), CriError> {
    let started = std::time::Instant::now();
    let observed = deps.runtime.observe_pod(spec::pod_uid(&pod), std::time::Instant::now()).await?;
    let running: Vec<KillContainer> = observed
        .containers
        .iter()
        .filter(|c| c.state == RunState::Running)
        .map(|c| KillContainer { id: c.id.clone(), name: c.name.clone(), reason: KillReason::PodFinished })
        .collect();
    let (sidecars, others) = in_stop_order(&pod, running);
    let ip = pod_ip(&deps, &observed);
    join_all(others.iter().map(|kill| stop_container(&deps, &pod, kill, grace, &ip))).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Sidecars outlive what they serve: stopped after it, the last started first, in what is
    // left of the grace period (at least the kubelet's minimum).
    for kill in &sidecars {
        let left = grace.saturating_sub(started.elapsed()).max(MIN_SIDECAR_GRACE);
        stop_container(&deps, &pod, kill, left, &ip).await?;
    }
    for sandbox in &observed.sandboxes {
        deps.runtime.stop_sandbox(&sandbox.id).await?;
        deps.runtime.remove_sandbox(&sandbox.id).await?;
    }
    Ok(())
}

/// The grace a sidecar gets when the pod's has run out stopping the other containers.
const MIN_SIDECAR_GRACE: Duration = Duration::from_secs(2);

/// Splits the containers to stop into the sidecars (in reverse order of the spec) and the rest.
fn in_stop_order(pod: &Pod, kills: Vec<KillContainer>) -> (Vec<KillContainer>, Vec<KillContainer>) {
    let sidecar_names: Vec<&str> = super::plan::sidecars(pod).map(|c| c.name.as_str()).collect();
    let position = |k: &KillContainer| sidecar_names.iter().position(|n| *n == k.name);
    let (mut sidecars, others): (Vec<_>, Vec<_>) = kills.into_iter().partition(|k| position(k).is_some());
    sidecars.sort_by_key(|k| std::cmp::Reverse(position(k)));
    (sidecars, others)
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

/// Tears down the volumes of a pod nodelet ended (evicted, past its deadline) once its
/// containers are stopped, as the kubelet does for a terminated pod: an evicted pod's emptyDir
/// space comes back, which is what relieves the disk pressure it was evicted for. Its data
/// directory (with the reason it ended) stays until the pod is removed.
pub async fn release_volumes(ctx: &NodeContext, pod: &Pod) {
    remove_dir(pod, crate::volumes::volumes_dir(ctx, pod)).await;
}

/// Deletes the pod's log and data directories (unmounting what is mounted under them first,
/// never following a symlink or crossing into another file system) and its (now empty) cgroup.
pub async fn remove_pod_leftovers(ctx: &NodeContext, cgroups: &dyn crate::cgroups::PodCgroups, pod: &Pod) {
    for dir in [spec::log_directory(ctx, pod), spec::pod_data_dir(ctx, pod)] {
        remove_dir(pod, dir).await;
    }
    crate::cgroups::remove_pod(cgroups, spec::pod_uid(pod)).await;
}

/// Removes one of the pod's directories (unmounting first, on a blocking thread); a failure is logged.
async fn remove_dir(pod: &Pod, dir: std::path::PathBuf) {
    let target = dir.clone();
    let removed = tokio::task::spawn_blocking(move || crate::volumes::mounts::remove_pod_dir(&target))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    if let Err(e) = removed {
        tracing::warn!(pod = %spec::pod_ref(pod), dir = %dir.display(), error = %e, "could not remove a pod directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    #[test]
    fn sidecars_stop_after_the_others_the_last_started_first() {
        let c = |name: &str, always: bool| Container { name: name.into(), restart_policy: always.then(|| "Always".into()), ..Default::default() };
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![c("s1", true), c("init", false), c("s2", true)]),
                containers: vec![c("app", false)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let kill = |name: &str| KillContainer { id: name.into(), name: name.into(), reason: KillReason::PodFinished };
        let (sidecars, others) = in_stop_order(&pod, vec![kill("s1"), kill("app"), kill("s2")]);
        assert_eq!(sidecars.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["s2", "s1"]);
        assert_eq!(others.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["app"]);
    }
}
