//! The pods nodelet runs, each with its latest status: written by the workers, read by the
//! read-only server (and later by the status writer toward the apiserver).

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct PodStore {
    pods: Arc<RwLock<BTreeMap<String, Pod>>>,
    /// Bumped on every change, so the status writer wakes without polling.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for PodStore {
    fn default() -> Self {
        PodStore { pods: Arc::default(), changes: Arc::new(tokio::sync::watch::channel(0).0) }
    }
}

impl PodStore {
    /// A condition whose status did not change keeps the transition time it was stored with.
    pub fn set_status(&self, pod: &Pod, mut status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let pods = self.pods.read().expect("pod store poisoned");
            super::status_sync::keep_transition_times(pods.get(&uid).and_then(|p| p.status.as_ref()), &mut status);
        }
        let mut with_status = pod.clone();
        with_status.status = Some(status);
        let old = self.pods.write().expect("pod store poisoned").insert(uid, with_status.clone());
        if old.as_ref() != Some(&with_status) {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub fn remove(&self, uid: &str) {
        self.pods.write().expect("pod store poisoned").remove(uid);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every pod with its status, ordered by namespace and name.
    pub fn list(&self) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self.pods.read().expect("pod store poisoned").values().cloned().collect();
        pods.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        pods
    }
}
