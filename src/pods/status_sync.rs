//! The one place that writes pod status to the apiserver: statuses of API pods that changed are
//! patched in batches; a status is written only when it differs from the last one written, and
//! conditions keep the transition times they had.

use super::manifest::CONFIG_SOURCE_ANNOTATION;
use super::store::PodStore;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use std::collections::HashMap;
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

pub async fn run(client: kube::Client, store: PodStore) {
    let mut written: HashMap<String, PodStatus> = HashMap::new();
    let mut changes = store.subscribe();
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(BATCH_DELAY).await;
        let pods = store.list();
        written.retain(|uid, _| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));
        for pod in pods.into_iter().filter(is_api_pod) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(mut status) = pod.status.clone() else { continue };
            let previous = written.get(&uid);
            keep_transition_times(previous, &mut status);
            if previous == Some(&status) {
                continue;
            }
            match patch_status(&client, &pod, &status).await {
                Ok(()) => {
                    written.insert(uid, status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    written.insert(uid, status);
                }
                Err(e) => tracing::warn!(pod = %super::spec::pod_ref(&pod), error = %e, "writing the pod status failed; retrying"),
            }
        }
    }
}

async fn patch_status(client: &kube::Client, pod: &Pod, status: &PodStatus) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), super::spec::pod_namespace(pod));
    // The UID in the patch makes the apiserver refuse it for a recreated pod of the same name.
    let patch = serde_json::json!({ "metadata": { "uid": pod.metadata.uid }, "status": status });
    api.patch_status(super::spec::pod_name(pod), &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    Ok(())
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
    fn static_pods_are_not_api_pods() {
        let mut pod = Pod::default();
        assert!(is_api_pod(&pod));
        pod.metadata.annotations = Some([(CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
        assert!(!is_api_pod(&pod));
    }
}
