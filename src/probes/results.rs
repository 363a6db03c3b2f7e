//! The probes' results for the containers of a pod, keyed by pod UID and container name (for
//! the container instance they were found on): written by the probe workers, read when the pod
//! worker computes status and plans; a change wakes the pod worker.

use super::Kind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A kill a liveness or startup probe asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub kind: Kind,
    /// The probe's own terminationGracePeriodSeconds, else the pod's.
    pub grace: Option<Duration>,
}

impl Kill {
    /// The `Killing` event's message, as the kubelet words it.
    pub fn message(&self, container: &str) -> String {
        format!("Container {container} failed {} probe, will be restarted", self.kind.title().to_lowercase())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerResults {
    pub container_id: String,
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    /// The readiness probe's last published result (true when there is none).
    pub ready: bool,
    pub kill: Option<Kill>,
}

#[derive(Clone, Default)]
pub struct Results {
    entries: Arc<Mutex<HashMap<(String, String), ContainerResults>>>,
    changed: Arc<Notify>,
}

impl Results {
    /// Starts the entry of a newly running container instance.
    pub fn begin(&self, uid: &str, container: &str, initial: ContainerResults) {
        self.entries.lock().unwrap().insert((uid.into(), container.into()), initial);
        self.changed.notify_one();
    }

    /// Changes the entry of `container_id` (and nothing when it has been replaced meanwhile).
    pub fn update(&self, uid: &str, container: &str, container_id: &str, change: impl FnOnce(&mut ContainerResults)) {
        let mut entries = self.entries.lock().unwrap();
        let Some(entry) = entries.get_mut(&(uid.to_string(), container.to_string())).filter(|e| e.container_id == container_id) else { return };
        let before = entry.clone();
        change(entry);
        if *entry != before {
            self.changed.notify_one();
        }
    }

    pub fn get(&self, uid: &str, container: &str) -> Option<ContainerResults> {
        self.entries.lock().unwrap().get(&(uid.to_string(), container.to_string())).cloned()
    }

    pub fn remove(&self, uid: &str, container: &str) {
        if self.entries.lock().unwrap().remove(&(uid.to_string(), container.to_string())).is_some() {
            self.changed.notify_one();
        }
    }

    /// Returns once a result changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn updates_of_a_replaced_instance_are_ignored_and_changes_wake() {
        let r = Results::default();
        r.begin("u", "c", ContainerResults { container_id: "new".into(), started: true, ..Default::default() });
        r.changed().await;
        r.update("u", "c", "old", |e| e.ready = true);
        assert!(!r.get("u", "c").unwrap().ready);
        r.update("u", "c", "new", |e| e.ready = true);
        assert!(r.get("u", "c").unwrap().ready);
        tokio::time::timeout(Duration::from_secs(1), r.changed()).await.expect("a change wakes");
        assert_eq!(Kill { kind: Kind::Liveness, grace: None }.message("web"), "Container web failed liveness probe, will be restarted");
    }
}
