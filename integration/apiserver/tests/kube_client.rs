//! The `kube` crate nodelet uses, against the server: what nodelet does must work unchanged.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use nodelet_test_apiserver::{start, Options};
use serde_json::json;

async fn client(path: &std::path::Path) -> kube::Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn kube_crate_as_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(Options::new(dir.path()).node("n1")).await.unwrap();
    let admin = client(&s.admin_kubeconfig()).await;
    let node = client(&dir.path().join("node-n1.kubeconfig")).await;

    // Register the node and patch its status, as the node.
    let nodes: Api<Node> = Api::all(node.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}});
    let n = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(n.status.unwrap().conditions.unwrap()[0].status, "True");
    let err = nodes
        .patch_status("n2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );

    // Its Lease.
    let leases: Api<Lease> = Api::namespaced(node.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}})).unwrap();
    let mut lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    lease.spec.as_mut().unwrap().lease_duration_seconds = Some(41);
    let renewed = leases
        .replace("n1", &PostParams::default(), &lease)
        .await
        .unwrap();
    let stale = leases
        .replace("n1", &PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "{stale}"
    );
    assert_eq!(renewed.spec.unwrap().lease_duration_seconds, Some(41));

    // Watch pods bound to the node with the runtime watcher (list, then watch).
    let pods: Api<Pod> = Api::all(node.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName=n1");
    let mut events = watcher(pods.clone(), cfg).boxed();
    let admin_pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    let created = admin_pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.try_next().await.unwrap() {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = e {
                return p;
            }
        }
        panic!("watch ended")
    })
    .await
    .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some("p"));
    assert_eq!(
        seen.spec.unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("Always")
    );

    // Status through a strategic merge patch, as the node.
    let node_pods: Api<Pod> = Api::namespaced(node.clone(), "default");
    let st = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    let p = node_pods
        .patch_status("p", &PatchParams::default(), &Patch::Strategic(&st))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    let listed = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // Graceful deletion by the user, final deletion by the node with a uid precondition.
    let gone = admin_pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = gone.left().expect("the pod is returned while terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    node_pods.delete("p", &dp).await.unwrap();
    assert!(node_pods.get_opt("p").await.unwrap().is_none());
    s.stop().await.unwrap();
}
