//! Pods bound to this node, from the apiserver: list, then watch from the list's
//! resourceVersion, relisting on 410 Gone (kube's watcher does both, with bookmarks). Each
//! change sends the whole set to the manager, which diffs it against what runs.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

pub async fn watch_node_pods(client: kube::Client, node: String, updates: mpsc::UnboundedSender<Vec<Pod>>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, Pod>> = None;
    while let Some(event) = stream.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                relisting = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(pod)) => {
                if let Some(set) = relisting.as_mut() {
                    set.insert(uid(&pod), pod);
                }
                false
            }
            Ok(Event::InitDone) => {
                pods = relisting.take().unwrap_or_default();
                true
            }
            Ok(Event::Apply(pod)) => {
                pods.insert(uid(&pod), pod);
                true
            }
            Ok(Event::Delete(pod)) => pods.remove(&uid(&pod)).is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "watching this node's pods failed; retrying");
                false
            }
        };
        // Mirror pods are the apiserver's view of this node's static pods, not pods to run.
        let wanted: Vec<Pod> = pods.values().filter(|p| !super::status_sync::is_mirror_pod(p)).cloned().collect();
        if changed && updates.send(wanted).is_err() {
            return;
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}
