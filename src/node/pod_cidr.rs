//! The pod CIDR the cluster assigns this node: kube-controller-manager sets the Node's
//! `spec.podCIDR` a moment after the Node is created (not in the create response), and may
//! set it on a Node that had none; nodelet follows it with a watch on its own Node.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// The Node's `spec.podCIDR` each time the Node is seen (None while it has none); the pod
/// network ignores repeats. A watch failure is logged and retried with back-off.
pub fn assigned_pod_cidrs(client: kube::Client, node_name: &str) -> impl Stream<Item = Option<String>> + Unpin + Send + 'static {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let node = node_name.to_string();
    watcher::watcher(api, config)
        .default_backoff()
        .applied_objects()
        .filter_map(move |result| {
            let value = match result {
                Ok(n) => Some(n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty())),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "watching the node for its pod CIDR failed; retrying");
                    None
                }
            };
            std::future::ready(value)
        })
        .boxed()
}
