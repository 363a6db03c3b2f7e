//! Finding the pod and container a secure-port request names, in nodelet's own pod store.

use crate::pods::store::PodStore;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The pod bound to this node by namespace and name.
pub fn find_pod(pods: &PodStore, namespace: &str, name: &str) -> Option<Pod> {
    pods.list().into_iter().find(|p| p.metadata.namespace.as_deref().unwrap_or("default") == namespace && p.metadata.name.as_deref() == Some(name))
}

/// The status of a container of any kind (regular, init or ephemeral) by name.
pub fn container_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .find(|s| s.name == container)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_init_and_ephemeral_containers_too() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {
                "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "setup", "image": "i", "imageID": "", "ready": true, "restartCount": 0}],
                "ephemeralContainerStatuses": [{"name": "debugger", "image": "i", "imageID": "", "ready": false, "restartCount": 0}]
            }
        }))
        .unwrap();
        for name in ["main", "setup", "debugger"] {
            assert_eq!(container_status(&pod, name).map(|s| s.name.as_str()), Some(name));
        }
        assert!(container_status(&pod, "other").is_none());
    }
}
