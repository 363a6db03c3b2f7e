//! Pods bound to this node, from the apiserver: list, then watch from the list's
//! resourceVersion, relisting on 410 Gone (kube's watcher does both, with bookmarks; its
//! reflector keeps the set). Each change sends the whole set to the manager, which diffs it
//! against what runs.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::sync::Arc;
use tokio::sync::mpsc;

pub async fn watch_node_pods(client: kube::Client, node: String, updates: mpsc::UnboundedSender<Vec<Arc<Pod>>>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    // The reflector's store buffers a (re)list and swaps it in whole at InitDone, so the manager
    // never sees half a list (which would stop the pods not listed yet).
    let (store, writer) = reflector::store::<Pod>();
    // managedFields (often the largest part of a pod) are dropped on arrival: nothing here reads
    // them; the store's pods are shared with the manager and the workers, the status store keeps a copy.
    let pods = watcher::watcher(api, config).default_backoff().modify(|pod| pod.metadata.managed_fields = None);
    let mut stream = reflector(writer, pods).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching this node's pods failed; retrying");
                continue;
            }
        }
        // Mirror pods are the apiserver's view of this node's static pods, not pods to run.
        let wanted: Vec<Arc<Pod>> = store.state().into_iter().filter(|p| !super::status_sync::is_mirror_pod(p)).collect();
        if updates.send(wanted).is_err() {
            return;
        }
    }
}
