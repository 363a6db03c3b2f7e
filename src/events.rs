//! Pod events as the kubelet records them (Pulling, Pulled, Created, Started, Killing, BackOff,
//! Failed): always logged, and in cluster mode posted as core/v1 Events, where a repeat of the
//! same event raises its count instead of adding another object.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::HashMap;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Normal,
    Warning,
}

#[derive(Debug, Clone)]
pub struct PodEvent {
    pub pod: ObjectReference,
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::UnboundedSender<PodEvent>>,
}

impl Recorder {
    /// Logs only (standalone mode).
    pub fn log_only() -> Recorder {
        Recorder { tx: None }
    }

    /// Posts events to the apiserver from a task of its own, so a slow apiserver never holds a pod back.
    pub fn to_apiserver(client: kube::Client, node: String) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(post_events(client, node, rx));
        Recorder { tx: Some(tx) }
    }

    /// `container` names the container the event is about, as the kubelet's fieldPath does.
    pub fn record(&self, pod: &Pod, container: Option<&str>, kind: Kind, reason: &'static str, message: String) {
        // namespace/name as pods::spec::pod_ref writes it, without importing pods/ (which imports this).
        let pod_ref = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""));
        match kind {
            Kind::Normal => tracing::info!(pod = %pod_ref, reason, "{message}"),
            Kind::Warning => tracing::warn!(pod = %pod_ref, reason, "{message}"),
        }
        let Some(tx) = &self.tx else { return };
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            ..Default::default()
        };
        let _ = tx.send(PodEvent { pod: object, kind, reason, message });
    }

    /// An event about the node itself (image GC, disk space), as the kubelet's node reference
    /// names it: kind Node, the node's name as its UID, posted in namespace default.
    pub fn record_node(&self, node: &str, kind: Kind, reason: &'static str, message: String) {
        match kind {
            Kind::Normal => tracing::info!(node, reason, "{message}"),
            Kind::Warning => tracing::warn!(node, reason, "{message}"),
        }
        let Some(tx) = &self.tx else { return };
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            uid: Some(node.into()),
            ..Default::default()
        };
        let _ = tx.send(PodEvent { pod: object, kind, reason, message });
    }
}

async fn post_events(client: kube::Client, node: String, mut rx: mpsc::UnboundedReceiver<PodEvent>) {
    // (pod uid, reason, message) -> (event name, count) of events already posted.
    let mut posted: HashMap<(String, &'static str, String), (String, i32)> = HashMap::new();
    while let Some(event) = rx.recv().await {
        let ns = event.pod.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let now = Time(Timestamp::now());
        let key = (event.pod.uid.clone().unwrap_or_default(), event.reason, event.message.clone());
        let result = match posted.get_mut(&key) {
            Some((name, count)) => {
                *count += 1;
                let patch = serde_json::json!({ "count": *count, "lastTimestamp": now });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
            None => {
                let name = format!("{}.{:x}", event.pod.name.clone().unwrap_or_default(), Timestamp::now().as_nanosecond());
                let body = Event {
                    metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() },
                    involved_object: event.pod.clone(),
                    reason: Some(event.reason.into()),
                    message: Some(event.message.clone()),
                    type_: Some(if event.kind == Kind::Normal { "Normal" } else { "Warning" }.into()),
                    source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.clone()) }),
                    reporting_component: Some("kubelet".into()),
                    reporting_instance: Some(node.clone()),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    count: Some(1),
                    ..Default::default()
                };
                let result = api.create(&PostParams::default(), &body).await.map(|_| ());
                if result.is_ok() {
                    posted.insert(key, (name, 1));
                }
                result
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, reason = event.reason, "posting an event failed");
        }
        // Bounded memory: forget the oldest aggregation keys when there are many.
        if posted.len() > 10_000 {
            posted.clear();
        }
    }
}
