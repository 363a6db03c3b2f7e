//! Pod events as the kubelet records them (Pulling, Pulled, Created, Started, Killing, BackOff,
//! Failed): always logged, and in cluster mode posted as core/v1 Events, where a repeat of the
//! same event raises its count instead of adding another object. While the apiserver is away
//! they are aggregated (`aggregate`) and posted with their counts once it answers again.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

mod aggregate;
use aggregate::{Aggregates, Entry};

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

/// How long a failed post waits before the due events are tried again (the kubelet's recorder
/// sleeps 10 s between tries).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Aggregation keys kept, posted or due.
const MAX_KEPT: usize = 10_000;

async fn post_events(client: kube::Client, node: String, mut rx: mpsc::UnboundedReceiver<PodEvent>) {
    let mut aggregates = Aggregates::default();
    // Set while the apiserver is away: events are only aggregated until then.
    let mut retry_at: Option<Instant> = None;
    loop {
        let received = match retry_at {
            Some(at) => tokio::select! {
                event = rx.recv() => Some(event),
                _ = tokio::time::sleep_until(at) => None,
            },
            None => Some(rx.recv().await),
        };
        match received {
            Some(None) => return,
            Some(Some(event)) => aggregates.record(event, Timestamp::now()),
            None => {}
        }
        while let Ok(event) = rx.try_recv() {
            aggregates.record(event, Timestamp::now());
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        retry_at = None;
        while let Some((_, entry)) = aggregates.next_due() {
            let count = entry.count;
            match post(&client, &node, entry).await {
                Ok(()) => aggregates.settle(count),
                Err(kube::Error::Api(status)) if (400..500).contains(&status.code) && ![408, 429].contains(&status.code) => {
                    tracing::debug!(reason = entry_reason(&aggregates), code = status.code, "the apiserver refused an event: {}", status.message);
                    aggregates.refused();
                }
                Err(e) => {
                    tracing::debug!(error = %e, due = aggregates.due_len(), "posting events failed; trying again in {RETRY_AFTER:?}");
                    retry_at = Some(Instant::now() + RETRY_AFTER);
                    break;
                }
            }
        }
        aggregates.bound(MAX_KEPT);
    }
}

fn entry_reason(aggregates: &Aggregates) -> &'static str {
    aggregates.next_due().map_or("", |(key, _)| key.1)
}

/// Creates the Event object with the count so far, or raises the count of the one created
/// before (also when a create whose answer was lost did create it).
async fn post(client: &kube::Client, node: &str, entry: &Entry) -> Result<(), kube::Error> {
    let ns = entry.event.pod.namespace.clone().unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let patch = || async {
        let patch = serde_json::json!({ "count": entry.count, "lastTimestamp": Time(entry.last) });
        api.patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    };
    if entry.created {
        return patch().await;
    }
    let event = &entry.event;
    let body = Event {
        metadata: ObjectMeta { name: Some(entry.name.clone()), namespace: Some(ns.clone()), ..Default::default() },
        involved_object: event.pod.clone(),
        reason: Some(event.reason.into()),
        message: Some(event.message.clone()),
        type_: Some(if event.kind == Kind::Normal { "Normal" } else { "Warning" }.into()),
        source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.into()) }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(Time(entry.first)),
        last_timestamp: Some(Time(entry.last)),
        count: Some(entry.count),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &body).await {
        Err(kube::Error::Api(status)) if status.code == 409 => patch().await,
        result => result.map(|_| ()),
    }
}
