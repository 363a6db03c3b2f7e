//! The one place that writes pod status to the apiserver: statuses that changed are patched in
//! batches, only when they differ from the last one written, with conditions keeping the
//! transition times they had. Static pods are shown through mirror pods, created, replaced and
//! removed here, and their status goes to the mirror.

use super::manifest::{CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
use super::spec;
use super::store::PodStore;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const BATCH_DELAY: Duration = Duration::from_millis(50);
const RESYNC: Duration = Duration::from_secs(10);

/// Pods from the apiserver, as opposed to static pods from files.
pub fn is_api_pod(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key(CONFIG_SOURCE_ANNOTATION))
}

/// Keeps a condition's lastTransitionTime from the previous status while its status is unchanged.
pub fn keep_transition_times(previous: Option<&PodStatus>, status: &mut PodStatus) {
    let Some(previous) = previous.and_then(|p| p.conditions.as_ref()) else { return };
    for condition in status.conditions.iter_mut().flatten() {
        if let Some(old) = previous.iter().find(|c| c.type_ == condition.type_ && c.status == condition.status) {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
}

/// A mirror pod: the API's copy of a static pod, pointing at its config hash.
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CONFIG_MIRROR_ANNOTATION))
}

fn config_hash(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned()).unwrap_or_default()
}

/// The mirror pod of a static pod, owned by the Node so it goes when the Node goes.
pub fn mirror_of(pod: &Pod, node_uid: Option<&str>) -> Pod {
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR_ANNOTATION.into(), config_hash(pod));
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            labels: pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node,
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: pod.spec.clone(),
        status: None,
    }
}

pub async fn run(client: kube::Client, store: PodStore, node: String) {
    let mut written: HashMap<String, PodStatus> = HashMap::new();
    // Static pod UID -> UID of its mirror pod in the apiserver.
    let mut mirrors: HashMap<String, String> = HashMap::new();
    let mut changes = store.subscribe();
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(BATCH_DELAY).await;
        let pods = store.list();
        written.retain(|uid, _| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));
        let had_mirrors = mirrors.len();
        mirrors.retain(|uid, _| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));
        // A static pod went away: its mirror goes now, not at the next periodic sweep.
        if mirrors.len() != had_mirrors || last_sweep.is_none_or(|t| t.elapsed() >= RESYNC) {
            remove_stale_mirrors(&client, &node, &pods).await;
            last_sweep = Some(std::time::Instant::now());
        }
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(mut status) = pod.status.clone() else { continue };
            // A static pod's status goes to its mirror pod, created first if needed.
            let target_uid = if is_api_pod(&pod) {
                uid.clone()
            } else {
                match mirrors.get(&uid) {
                    Some(mirror) => mirror.clone(),
                    None => match ensure_mirror(&client, &node, &pod).await {
                        Ok(mirror) => {
                            mirrors.insert(uid.clone(), mirror.clone());
                            written.remove(&uid);
                            mirror
                        }
                        Err(e) => {
                            tracing::warn!(pod = %spec::pod_ref(&pod), error = %e, "creating the mirror pod failed; retrying");
                            continue;
                        }
                    },
                }
            };
            let previous = written.get(&uid);
            keep_transition_times(previous, &mut status);
            if previous == Some(&status) {
                continue;
            }
            match patch_status(&client, &pod, &target_uid, &status).await {
                Ok(()) => {
                    written.insert(uid, status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // A deleted mirror pod is created again on the next round.
                    mirrors.remove(&uid);
                    written.insert(uid, status);
                }
                Err(e) => tracing::warn!(pod = %spec::pod_ref(&pod), error = %e, "writing the pod status failed; retrying"),
            }
        }
    }
}

async fn patch_status(client: &kube::Client, pod: &Pod, uid: &str, status: &PodStatus) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), spec::pod_namespace(pod));
    // The UID in the patch makes the apiserver refuse it for a recreated pod of the same name.
    let patch = serde_json::json!({ "metadata": { "uid": uid }, "status": status_patch(status) });
    api.patch_status(spec::pod_name(pod), &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    Ok(())
}

/// The status as a strategic merge patch. Conditions merge by type, so a field a condition no
/// longer has (the reason of a condition that became True) is sent as null to be removed.
/// podIPs and hostIPs merge by ip: a new sandbox's address (after a reboot, or a sandbox made
/// again) would be added beside the old one, which the apiserver refuses (`may specify no more
/// than one IP for each IP family`); they are sent whole with the `$patch: replace` directive.
fn status_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
            for field in ["reason", "message"] {
                condition.entry(field).or_insert(serde_json::Value::Null);
            }
        }
    }
    for list in ["podIPs", "hostIPs"] {
        if let Some(ips) = value.get_mut(list).and_then(|l| l.as_array_mut()) {
            ips.push(serde_json::json!({ "$patch": "replace" }));
        }
    }
    value
}

/// Makes the static pod's mirror exist with the current config hash; returns the mirror's UID.
/// Creates first, as the kubelet does: under the Node authorizer a node may read only pods bound
/// to it, so asking for a mirror that does not exist yet is refused (403), not answered 404.
async fn ensure_mirror(client: &kube::Client, node: &str, pod: &Pod) -> Result<String, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), spec::pod_namespace(pod));
    let name = spec::pod_name(pod);
    let node_uid = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).get_opt(node).await?.and_then(|n| n.metadata.uid);
    let mirror = mirror_of(pod, node_uid.as_deref());
    match api.create(&PostParams::default(), &mirror).await {
        Ok(created) => {
            tracing::info!(pod = %spec::pod_ref(pod), "created the mirror pod");
            return Ok(created.metadata.uid.unwrap_or_default());
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let existing = api.get(name).await?;
    let current = existing.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_MIRROR_ANNOTATION)).cloned();
    if current.as_deref() == Some(config_hash(pod).as_str()) && existing.metadata.deletion_timestamp.is_none() {
        return Ok(existing.metadata.uid.unwrap_or_default());
    }
    if current.is_none() {
        // Not ours to replace: the error is logged and the next round tries again.
        return Err(kube::Error::Service(format!("pod {} exists and is not this static pod's mirror", spec::pod_ref(pod)).into()));
    }
    // A mirror of an older version of the static pod: replaced.
    let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    let _ = api.delete(name, &params).await;
    let created = api.create(&PostParams::default(), &mirror).await?;
    tracing::info!(pod = %spec::pod_ref(pod), "replaced the mirror pod");
    Ok(created.metadata.uid.unwrap_or_default())
}

/// Deletes mirror pods on this node whose static pod no longer runs here.
async fn remove_stale_mirrors(client: &kube::Client, node: &str, pods: &[Pod]) {
    let hashes: HashSet<String> = pods.iter().filter(|p| !is_api_pod(p)).map(config_hash).collect();
    let api: Api<Pod> = Api::all(client.clone());
    let Ok(list) = api.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await else { return };
    for mirror in list.items.into_iter().filter(is_mirror_pod) {
        let hash = mirror.metadata.annotations.as_ref().and_then(|a| a.get(CONFIG_MIRROR_ANNOTATION)).cloned().unwrap_or_default();
        if hashes.contains(&hash) {
            continue;
        }
        let ns_api: Api<Pod> = Api::namespaced(client.clone(), spec::pod_namespace(&mirror));
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        if ns_api.delete(spec::pod_name(&mirror), &params).await.is_ok() {
            tracing::info!(pod = %spec::pod_ref(&mirror), "removed the mirror pod of a static pod that is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn cond(kind: &str, status: &str, at: i64) -> PodCondition {
        PodCondition { type_: kind.into(), status: status.into(), last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())), ..Default::default() }
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let old = PodStatus { conditions: Some(vec![cond("Ready", "True", 10), cond("Initialized", "False", 10)]), ..Default::default() };
        let mut new = PodStatus { conditions: Some(vec![cond("Ready", "True", 50), cond("Initialized", "True", 50)]), ..Default::default() };
        keep_transition_times(Some(&old), &mut new);
        let c = new.conditions.unwrap();
        assert_eq!(c[0].last_transition_time, Some(Time(Timestamp::from_second(10).unwrap())));
        assert_eq!(c[1].last_transition_time, Some(Time(Timestamp::from_second(50).unwrap())));
    }

    #[test]
    fn a_condition_without_reason_removes_the_old_one() {
        let status = PodStatus { conditions: Some(vec![cond("Ready", "True", 10)]), ..Default::default() };
        let patch = status_patch(&status);
        assert_eq!(patch["conditions"][0]["reason"], serde_json::Value::Null);
        assert!(patch["conditions"][0].as_object().unwrap().contains_key("reason"));
        assert_eq!(patch["conditions"][0]["status"], "True");
    }

    #[test]
    fn pod_and_host_ips_replace_the_old_lists() {
        use k8s_openapi::api::core::v1::{HostIP, PodIP};
        let status =
            PodStatus { pod_ips: Some(vec![PodIP { ip: "10.244.0.7".into() }]), host_ips: Some(vec![HostIP { ip: "192.0.2.1".into() }]), ..Default::default() };
        let patch = status_patch(&status);
        assert_eq!(patch["podIPs"], serde_json::json!([{"ip": "10.244.0.7"}, {"$patch": "replace"}]));
        assert_eq!(patch["hostIPs"], serde_json::json!([{"ip": "192.0.2.1"}, {"$patch": "replace"}]));
        assert!(status_patch(&PodStatus::default()).get("podIPs").is_none(), "no list, no directive");
    }

    #[test]
    fn static_pods_are_not_api_pods() {
        let mut pod = Pod::default();
        assert!(is_api_pod(&pod));
        pod.metadata.annotations = Some([(CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
        assert!(!is_api_pod(&pod));
    }
}
