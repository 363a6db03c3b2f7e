//! The node's presence in the cluster: registration of the Node object (or taking over an
//! existing one), its status patched when it changes and at least every few minutes, and the
//! Lease heartbeat in kube-node-lease. Status patches are strategic merges of nodelet's own
//! conditions (`object::status_patch`): other components' conditions on the Node stay. Failures
//! are retried; pods are never touched here.

pub mod object;
pub mod pod_cidr;
pub mod pressure;

use crate::health::Health;
use crate::machine::read_host_facts;
use crate::runtime::Cri;
use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use object::{conditions_overwritten, is_own_condition, node_status, status_changed, status_patch, NodeHealth, NodeInput, ProviderIdTakeOver};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub internal_ip: Option<String>,
    pub pod_cidr: String,
    pub max_pods: u32,
    pub reserved_cpu_millis: i64,
    pub reserved_memory: i64,
    pub kubelet_port: i32,
    /// spec.providerID to register with (`--provider-id`).
    pub provider_id: Option<String>,
    pub lease_duration: Duration,
    pub lease_renew_every: Duration,
    pub status_update_every: Duration,
    pub status_report_every: Duration,
    pub root_dir: PathBuf,
}

pub struct NodeAgent {
    pub client: kube::Client,
    pub settings: NodeSettings,
    pub cri: Cri,
    pub health: Arc<Health>,
    /// Memory and disk pressure as the eviction manager judges them.
    pub pressure: tokio::sync::watch::Receiver<crate::eviction::NodePressure>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl NodeAgent {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    async fn input(&self) -> anyhow::Result<NodeInput> {
        let facts = tokio::task::spawn_blocking(|| read_host_facts(std::path::Path::new("/"))).await??;
        let runtime_version = match self.cri.version().await {
            Ok(v) => format!("{}://{}", v.runtime_name, v.runtime_version),
            Err(_) => String::new(),
        };
        let runtime_problem = self.health.node_readiness().err().map(|failures| failures.join("; "));
        let ephemeral_storage = nix::sys::statvfs::statvfs(&self.settings.root_dir).map(|s| s.blocks() * s.fragment_size()).unwrap_or(0);
        let s = &self.settings;
        Ok(NodeInput {
            name: s.name.clone(),
            labels: s.labels.clone(),
            taints: s.taints.clone(),
            internal_ip: s.internal_ip.clone(),
            facts,
            runtime_version,
            kubelet_version: crate::version::KUBELET.into(),
            pod_cidr: Some(s.pod_cidr.clone()),
            max_pods: s.max_pods,
            reserved_cpu_millis: s.reserved_cpu_millis,
            reserved_memory: s.reserved_memory,
            ephemeral_storage,
            kubelet_port: s.kubelet_port,
            provider_id: s.provider_id.clone(),
            health: {
                let pid = pressure::pid_pressure(&pressure::read());
                let evicting = *self.pressure.borrow();
                NodeHealth { runtime_problem, memory_pressure: evicting.memory, disk_pressure: evicting.disk, pid_pressure: pid }
            },
        })
    }

    /// Creates the Node, or takes over the one of the same name; returns it as the cluster has it.
    pub async fn register(&self) -> anyhow::Result<Node> {
        let input = self.input().await?;
        let mut node = object::new_node(&input, &now());
        // The cluster may assign the pod CIDR itself; a node that has one keeps it.
        node.spec.as_mut().expect("new_node sets a spec").pod_cidr = None;
        node.spec.as_mut().expect("new_node sets a spec").pod_cidrs = None;
        match self.nodes().create(&PostParams::default(), &node).await {
            Ok(created) => {
                tracing::info!(node = %self.settings.name, "registered the node");
                Ok(created)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let name = &self.settings.name;
                let labels = object::node_labels(&input.name, &input.labels);
                let mut patch = serde_json::json!({ "metadata": { "labels": labels } });
                if input.provider_id.is_some() {
                    let existing = self.nodes().get(name).await.with_context(|| format!("reading the existing Node {name}"))?;
                    let in_api = existing.spec.as_ref().and_then(|s| s.provider_id.as_deref());
                    match object::provider_id_on_take_over(in_api, input.provider_id.as_deref()) {
                        ProviderIdTakeOver::Keep => {}
                        ProviderIdTakeOver::Set(id) => patch["spec"] = serde_json::json!({ "providerID": id }),
                        ProviderIdTakeOver::Differs { in_api, ours } => tracing::warn!(
                            node = %name,
                            %in_api,
                            %ours,
                            "the existing Node has another spec.providerID than --provider-id; it cannot change and is kept"
                        ),
                    }
                }
                let existing = self
                    .nodes()
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("taking over the existing Node {name}"))?;
                tracing::info!(node = %name, "took over the existing node");
                Ok(existing)
            }
            Err(e) => Err(e).context("registering the Node"),
        }
    }

    /// Registers (retrying with back-off until the apiserver answers), then keeps the status
    /// and the Lease fresh for ever.
    pub async fn run(self: Arc<Self>) {
        let node = crate::retry::until_ok("registering the node", || self.register()).await;
        let node_uid = node.metadata.uid.clone().unwrap_or_default();
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().filter(is_own_condition).collect();
        let lease = tokio::spawn(self.clone().keep_lease(node_uid));
        self.keep_status(conditions).await;
        lease.abort();
    }

    async fn keep_status(&self, mut previous: Vec<NodeCondition>) {
        let mut last: Option<(NodeStatus, Instant)> = None;
        loop {
            match self.input().await {
                Ok(input) => {
                    // The Node as the apiserver has it: someone else (the node controller, after
                    // an outage) may have changed its conditions since our last patch.
                    let in_api = self.nodes().get_opt(&self.settings.name).await.ok().flatten().and_then(|n| n.status);
                    // Only nodelet's own conditions: another component's is neither compared nor copied.
                    if let Some(conditions) = in_api.as_ref().and_then(|s| s.conditions.clone()) {
                        previous = conditions.into_iter().filter(is_own_condition).collect();
                    }
                    let status = node_status(&input, &previous, &now());
                    let overwritten = in_api.as_ref().is_some_and(|api| conditions_overwritten(api, &status));
                    let due = overwritten
                        || match &last {
                            None => true,
                            Some((old, at)) => status_changed(old, &status) || at.elapsed() >= self.settings.status_report_every,
                        };
                    if due {
                        let patch = status_patch(&status, in_api.as_ref());
                        match self.nodes().patch_status(&self.settings.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                            Ok(_) => {
                                previous = status.conditions.clone().unwrap_or_default();
                                last = Some((status, Instant::now()));
                            }
                            Err(e) => tracing::warn!(node = %self.settings.name, error = %e, "patching the node status failed; retrying"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "gathering the node status failed"),
            }
            tokio::time::sleep(self.settings.status_update_every).await;
        }
    }

    async fn keep_lease(self: Arc<Self>, node_uid: String) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        // After a failure retry sooner (the kubelet backs off from 200 ms up to the interval).
        let mut backoff = crate::retry::Backoff::new(Duration::from_millis(200), self.settings.lease_renew_every);
        loop {
            let wait = match self.renew_lease(&leases, &node_uid).await {
                Ok(()) => {
                    backoff.reset();
                    self.settings.lease_renew_every
                }
                Err(e) => {
                    tracing::warn!(node = %self.settings.name, error = %e, "renewing the node lease failed");
                    backoff.fail()
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn renew_lease(&self, leases: &Api<Lease>, node_uid: &str) -> anyhow::Result<()> {
        let name = &self.settings.name;
        let spec = LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs() as i32),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        };
        match leases.get_opt(name).await? {
            Some(mut lease) => {
                lease.spec = Some(spec);
                leases.replace(name, &PostParams::default(), &lease).await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(LEASE_NAMESPACE.into()),
                        owner_references: (!node_uid.is_empty()).then(|| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: name.clone(),
                                uid: node_uid.into(),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                leases.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }
}
