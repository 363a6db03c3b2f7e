//! Routes between nodes (host-gw, as flannel's host-gw backend and kube-router do): pods on
//! one node reach pods on another by their own addresses, through one route per other node in
//! this node's main routing table: that node's pod CIDR via its InternalIP.
//!
//! nodelet watches the Nodes (their `spec.podCIDR(s)` and InternalIPs) and keeps those routes
//! as Nodes come, change and go, and every `RESYNC_EVERY` repairs what else changed them. Its
//! routes carry a protocol number of their own (`ROUTE_PROTOCOL`, `proto 110` in `ip route`):
//! only routes with it are ever replaced or deleted, so routes nodelet did not make are never
//! touched. A route that needs a gateway not on a subnet of this host's interfaces (a node on
//! another L2 segment) is refused, told once per node in the log and as a Node event.
//!
//! - `plan`: pure: the wanted routes from the Nodes and the host's view, and the changes;
//! - `table`: the routing table (a trait), its netlink side and a recording fake.

pub mod plan;
pub mod table;

use crate::events::{Kind, Recorder};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use plan::{NodeFacts, Plan, Skip};
use std::collections::BTreeMap;
use std::time::Duration;
use table::{RouteError, RouteTable};

/// The protocol number of nodelet's routes (`ip route show proto 110`): not one the kernel or a
/// routing daemon uses (rtnetlink.h names up to 99 and 186-192).
pub const ROUTE_PROTOCOL: u8 = 110;
/// How often the routes are checked against the Nodes even when nothing changed.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Changes arriving together are planned once.
const DEBOUNCE: Duration = Duration::from_millis(100);

pub struct NodeRoutes<T: RouteTable> {
    own: String,
    table: T,
    events: Recorder,
    /// What was last told about each node that gets no route.
    told: BTreeMap<String, Skip>,
}

impl<T: RouteTable> NodeRoutes<T> {
    pub fn new(own: impl Into<String>, table: T, events: Recorder) -> NodeRoutes<T> {
        NodeRoutes { own: own.into(), table, events, told: BTreeMap::new() }
    }

    /// One pass: reads the host, plans and applies the changes; a node that gets no route is
    /// told once (again when the reason changes). Returns the plan it carried out.
    pub async fn reconcile(&mut self, nodes: &[NodeFacts]) -> Result<Plan, RouteError> {
        let view = self.table.view().await?;
        let plan = plan::plan(&self.own, nodes, &view, ROUTE_PROTOCOL);
        let node_of = |dst: &plan::Cidr| nodes.iter().find(|n| n.pod_cidrs.contains(dst)).map_or("(gone)", |n| n.name.as_str()).to_string();
        let mut failure = None;
        for route in &plan.add {
            match self.table.add(route).await {
                Ok(()) => tracing::info!(node = %node_of(&route.dst), dst = %route.dst, via = %route.gateway, "added the route to the node's pod CIDR"),
                Err(e) => failure = Some(e),
            }
        }
        for route in &plan.replace {
            match self.table.replace(route).await {
                Ok(()) => tracing::info!(node = %node_of(&route.dst), dst = %route.dst, via = %route.gateway, "changed the route to the node's pod CIDR"),
                Err(e) => failure = Some(e),
            }
        }
        for route in &plan.delete {
            match self.table.delete(route).await {
                Ok(()) => tracing::info!(dst = %route.dst, via = ?route.gateway, "removed the route to a pod CIDR no node has any more"),
                Err(e) => failure = Some(e),
            }
        }
        self.tell(&plan.skipped);
        match failure {
            Some(e) => Err(e),
            None => Ok(plan),
        }
    }

    fn tell(&mut self, skipped: &BTreeMap<String, Skip>) {
        for (node, skip) in skipped {
            if self.told.get(node) == Some(skip) {
                continue;
            }
            if skip.is_problem() {
                self.events.record_node(&self.own, Kind::Warning, skip.reason(), skip.message(node));
            } else {
                tracing::debug!("{}", skip.message(node));
            }
            self.told.insert(node.clone(), skip.clone());
        }
        self.told.retain(|node, _| skipped.contains_key(node));
    }

    /// Removes every route of nodelet's (a node whose pod network is another CNI's keeps none).
    pub async fn remove_all(&mut self) {
        match self.reconcile(&[]).await {
            Ok(plan) if !plan.delete.is_empty() => tracing::info!(routes = plan.delete.len(), "removed nodelet's routes: the pod network is not nodelet's"),
            Ok(_) => {}
            Err(e) => tracing::warn!("removing nodelet's routes: {e}"),
        }
    }

    /// Follows the Nodes and keeps the routes, forever. `client` must be allowed to list and
    /// watch Nodes (a node's own credentials read only its own Node since Kubernetes 1.33).
    pub async fn run(mut self, client: kube::Client) {
        let api: Api<Node> = Api::all(client);
        let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut nodes: BTreeMap<String, NodeFacts> = BTreeMap::new();
        let mut listing: BTreeMap<String, NodeFacts> = BTreeMap::new();
        // Nothing is planned before the first complete list: a partial one would delete routes.
        let mut listed = false;
        let mut dirty = false;
        let mut refused = false;
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        loop {
            tokio::select! {
                event = stream.next() => {
                    let Some(event) = event else { return };
                    if event.is_ok() && std::mem::take(&mut refused) {
                        tracing::info!("the apiserver now lets nodelet watch the Nodes for its routes");
                    }
                    match event {
                        Ok(Event::Init) => listing.clear(),
                        Ok(Event::InitApply(node)) => {
                            listing.insert(node.name_any(), NodeFacts::from_node(&node));
                        }
                        Ok(Event::InitDone) => {
                            nodes = std::mem::take(&mut listing);
                            listed = true;
                            dirty = true;
                        }
                        Ok(Event::Apply(node)) => {
                            let facts = NodeFacts::from_node(&node);
                            dirty |= nodes.get(&facts.name) != Some(&facts);
                            nodes.insert(facts.name.clone(), facts);
                        }
                        Ok(Event::Delete(node)) => dirty |= nodes.remove(&node.name_any()).is_some(),
                        Err(e) => {
                            if let Some(why) = refusal(&e) {
                                if !std::mem::replace(&mut refused, true) {
                                    tracing::error!("{why}");
                                }
                            } else {
                                tracing::warn!(error = %e, "watching the Nodes for the routes between nodes failed; retrying with back-off");
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(DEBOUNCE), if dirty && listed => {
                    dirty = false;
                    self.reconcile_logged(&nodes).await;
                }
                _ = resync.tick(), if listed => self.reconcile_logged(&nodes).await,
            }
        }
    }

    async fn reconcile_logged(&mut self, nodes: &BTreeMap<String, NodeFacts>) {
        let all: Vec<NodeFacts> = nodes.values().cloned().collect();
        if let Err(e) = self.reconcile(&all).await {
            tracing::warn!("the routes between nodes: {e}; trying again in {RESYNC_EVERY:?}");
        }
    }
}

/// A 403 on the Nodes, told as how to grant it.
fn refusal(error: &watcher::Error) -> Option<String> {
    let api = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(api)) | watcher::Error::WatchStartFailed(kube::Error::Api(api)) => api,
        watcher::Error::WatchError(api) => api,
        _ => return None,
    };
    (api.code == 403).then(|| {
        format!(
            "the apiserver refuses nodelet to list and watch Nodes ({}), which the routes to other nodes' pod CIDRs need: \
             a node's own credentials read only its own Node; give nodelet kube-proxy's credentials with --proxy-kubeconfig \
             (system:node-proxier may list Nodes), or --network-plugin=external with a CNI of the cluster's; retrying with back-off",
            api.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::plan::{Cidr, Connected, HostRoute, HostView};
    use super::table::fake::Recording;
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn node(name: &str, pod_cidr: &str, ip: &str) -> NodeFacts {
        NodeFacts { name: name.into(), pod_cidrs: vec![cidr(pod_cidr)], internal_ip: Some(ip.parse().unwrap()) }
    }

    fn host() -> HostView {
        HostView {
            addresses: vec![Connected {
                address: "10.254.0.11".parse().unwrap(),
                subnet: cidr("10.254.0.0/24"),
                oif: 2,
                interface: "eth0".into(),
                loopback: false,
            }],
            routes: vec![HostRoute { dst: cidr("0.0.0.0/0"), gateway: Some("10.254.0.1".parse().unwrap()), oif: Some(2), protocol: 3 }],
        }
    }

    #[tokio::test]
    async fn routes_follow_nodes_as_they_come_change_and_go() {
        let mut routes = NodeRoutes::new("n1", Recording::new(host(), ROUTE_PROTOCOL), Recorder::log_only());
        let mut nodes = vec![node("n1", "10.244.1.0/24", "10.254.0.11"), node("n2", "10.244.2.0/24", "10.254.0.12")];
        routes.reconcile(&nodes).await.unwrap();
        assert_eq!(routes.table.take_changes(), ["add 10.244.2.0/24 via 10.254.0.12"]);
        routes.reconcile(&nodes).await.unwrap();
        assert!(routes.table.take_changes().is_empty(), "nothing to do the second time");
        nodes.push(node("n3", "10.244.3.0/24", "10.254.0.13"));
        nodes[1].internal_ip = Some("10.254.0.22".parse().unwrap());
        routes.reconcile(&nodes).await.unwrap();
        assert_eq!(routes.table.take_changes(), ["add 10.244.3.0/24 via 10.254.0.13", "replace 10.244.2.0/24 via 10.254.0.22"]);
        nodes.remove(1);
        routes.reconcile(&nodes).await.unwrap();
        assert_eq!(routes.table.take_changes(), ["delete 10.244.2.0/24"]);
        // The default route (not nodelet's) is there all along.
        assert!(routes.table.view.lock().unwrap().routes.iter().any(|r| r.dst == cidr("0.0.0.0/0")));
        routes.remove_all().await;
        assert_eq!(routes.table.take_changes(), ["delete 10.244.3.0/24"]);
        assert_eq!(routes.table.view.lock().unwrap().routes.len(), 1);
    }

    #[tokio::test]
    async fn a_node_out_of_reach_is_told_once() {
        let mut routes = NodeRoutes::new("n1", Recording::new(host(), ROUTE_PROTOCOL), Recorder::log_only());
        let nodes = vec![node("n1", "10.244.1.0/24", "10.254.0.11"), node("far", "10.244.4.0/24", "192.168.9.4")];
        for _ in 0..3 {
            let plan = routes.reconcile(&nodes).await.unwrap();
            assert!(plan.skipped.contains_key("far"));
        }
        assert_eq!(routes.told.len(), 1);
        assert!(routes.table.take_changes().is_empty());
        routes.reconcile(&nodes[..1]).await.unwrap();
        assert!(routes.told.is_empty(), "forgotten with the node");
    }

    #[test]
    fn a_403_says_how_to_grant_the_nodes() {
        let api = kube::core::Status::failure("nodes is forbidden: node 'n1' cannot read all nodes", "Forbidden").with_code(403).boxed();
        let why = refusal(&watcher::Error::InitialListFailed(kube::Error::Api(api))).unwrap();
        assert!(why.contains("--proxy-kubeconfig") && why.contains("cannot read all nodes"), "{why}");
    }
}
