//! Pure rendering of the proxy's model into nft scripts: the whole table (full sync) and the
//! smallest script that turns one Service port's rules into another's (incremental sync).
//!
//! The shape, chosen by measurement (see shared/notes/nftables-costs.md): few chains, large maps.
//! - `service_ips` (daddr . proto . port -> verdict) and `service_nodeports` (proto . port ->
//!   verdict, only for local destination addresses) send a new connection to a chain shared by
//!   every Service with the same endpoint count N and traffic path, e.g. `cluster_3`;
//! - that chain marks for masquerade when needed and DNATs with
//!   `numgen random mod N` through `backends` / `np_backends`, which hold one element per
//!   (frontend, endpoint index);
//! - Services with ClientIP affinity get chains of their own since they are few: a chain per
//!   endpoint records the client in that endpoint's sticky set (with a timeout), and the
//!   Service's chain sends a client found in a set to its endpoint;
//! - frontends without usable endpoints are in `no_endpoints` / `no_endpoint_nodeports` and
//!   rejected by filter chains (TCP reset, ICMP port unreachable);
//! - externalTrafficPolicy Local keeps external traffic on this node's endpoints (its own
//!   backend maps, `local_backends` / `np_local_backends`), but traffic from pods and from the
//!   node itself takes a shortcut to every endpoint (`shortcut_ips` / `shortcut_nodeports`,
//!   consulted first), as kube-proxy does: such clients are inside the cluster;
//! - `postrouting` masquerades marked packets and hairpin traffic (`hairpin` holds ip . ip for
//!   every endpoint address);
//! - the maps and sets above exist in two generations, `service_ips` and `service_ips_b`: a
//!   full sync fills the other one beside the live one, then switches (`staged`).

//!
//! Parts: `service` (what one Service port contributes: elements, count and affinity chains),
//! `table` (the fixed skeleton and the whole table, in one transaction or staged), `diff` (the
//! incremental commands between two renderings of a Service port).

mod diff;
mod service;
mod table;

pub use diff::{diff, hairpin_diff};
pub use service::{count_chain, count_chain_name, render_service};
pub use table::{delete_table, full, full_from_rendered, staged, Counts, Existing, Staged, SKELETON_CHAINS};
use table::{hairpin_key, sticky_decl, write_element};

use super::model::{usable_endpoints, Endpoint, Family, Model, Protocol, ServiceEntry, ServicePort};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

/// The packet mark bit that asks postrouting to masquerade (kube-proxy's default).
pub const MASQ_MARK: u32 = 0x4000;
/// Rules in the fixed chains of the table (see `skeleton`).
pub fn skeleton_rules(ctx: &Context) -> usize {
    if ctx.pod_cidr.is_some() {
        17
    } else {
        15
    }
}
const COMMENT_MAX: usize = 120;

/// What the rendering needs to know about the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The nftables table's name, e.g. "nodelet", and its family.
    pub table: String,
    pub family: Family,
    /// The generation of the table's maps, 0 or 1 (see `map`).
    pub generation: u32,
    /// This node's name: endpoints with this nodeName are local.
    pub node_name: String,
    /// The pod network of the family ("10.88.0.0/16"): ClusterIP traffic from outside it is
    /// masqueraded.
    /// None: ClusterIP traffic is never masqueraded (except hairpin).
    pub pod_cidr: Option<String>,
}

impl Context {
    /// How commands name the table: "ip nodelet", "ip6 nodelet".
    pub fn table_ref(&self) -> String {
        format!("{} {}", self.family.nft(), self.table)
    }

    /// A map or set of the skeleton as this generation names it: `service_ips` or
    /// `service_ips_b`. A full sync fills the other generation's maps beside the live ones, then
    /// switches the rules over to them in one small transaction.
    pub fn map(&self, base: &str) -> String {
        if self.generation == 0 {
            base.to_string()
        } else {
            format!("{base}_b")
        }
    }

    /// The same table at another generation.
    pub fn at(&self, generation: u32) -> Context {
        Context { generation, ..self.clone() }
    }
}

/// How a frontend's traffic is handled: which endpoints, which backend map, masquerade or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    /// ClusterIP: masquerade when the client is outside the pod network.
    Cluster,
    /// externalIPs and load balancer IPs with externalTrafficPolicy Cluster: always masquerade.
    External,
    /// externalIPs and load balancer IPs with externalTrafficPolicy Local: keep the source.
    ExternalLocal,
    /// NodePort with externalTrafficPolicy Cluster.
    NodePort,
    /// NodePort with externalTrafficPolicy Local.
    NodePortLocal,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Cluster => "cluster",
            Path::External => "external",
            Path::ExternalLocal => "local",
            Path::NodePort => "nodeport",
            Path::NodePortLocal => "nodeport_local",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Path::Cluster => "c",
            Path::External => "x",
            Path::ExternalLocal => "l",
            Path::NodePort => "n",
            Path::NodePortLocal => "nl",
        }
    }
    fn is_node_port(self) -> bool {
        matches!(self, Path::NodePort | Path::NodePortLocal)
    }
    fn masquerade_rule(self, ctx: &Context) -> Option<String> {
        let mark = format!("meta mark set meta mark | {MASQ_MARK:#x}");
        match self {
            Path::Cluster => ctx.pod_cidr.as_ref().map(|cidr| format!("{} saddr != {cidr} {mark}", ctx.family.nft())),
            Path::External | Path::NodePort => Some(mark),
            Path::ExternalLocal | Path::NodePortLocal => None,
        }
    }
    fn dispatch_map(self) -> &'static str {
        if self.is_node_port() {
            "service_nodeports"
        } else {
            "service_ips"
        }
    }
    /// One backend map per protocol: the map's data type names the protocol, and nft derives
    /// the rule's protocol match from it. The Local paths have their own, since the same
    /// frontend's shortcut uses the shared ones with every endpoint.
    fn backend_map(self, proto: Protocol) -> &'static str {
        use Protocol::*;
        match (self, proto) {
            (Path::Cluster | Path::External, Tcp) => "backends_tcp",
            (Path::Cluster | Path::External, Udp) => "backends_udp",
            (Path::Cluster | Path::External, Sctp) => "backends_sctp",
            (Path::ExternalLocal, Tcp) => "local_backends_tcp",
            (Path::ExternalLocal, Udp) => "local_backends_udp",
            (Path::ExternalLocal, Sctp) => "local_backends_sctp",
            (Path::NodePort, Tcp) => "np_backends_tcp",
            (Path::NodePort, Udp) => "np_backends_udp",
            (Path::NodePort, Sctp) => "np_backends_sctp",
            (Path::NodePortLocal, Tcp) => "np_local_backends_tcp",
            (Path::NodePortLocal, Udp) => "np_local_backends_udp",
            (Path::NodePortLocal, Sctp) => "np_local_backends_sctp",
        }
    }
    fn reject_set(self) -> &'static str {
        if self.is_node_port() {
            "no_endpoint_nodeports"
        } else {
            "no_endpoints"
        }
    }
}

/// A chain: its name, comment and rules, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub comment: Option<String>,
    pub rules: Vec<String>,
}

/// A map or set element value and comment; the key is the map's key in `Rendered::elements`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementValue {
    pub value: Option<String>,
    pub comment: Option<String>,
}

/// A dynamic set of the clients that stick to one endpoint (ClientIP affinity). One set per
/// endpoint, as kube-proxy has: when an endpoint goes away only its clients choose again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickySet {
    /// sticky<id>_<path>_<timeout>_<endpoint>: a new timeout is a new set (a set's timeout is
    /// fixed).
    pub name: String,
    pub timeout: u32,
    pub comment: String,
}

/// A chain shared by all frontends of one path and protocol with the same endpoint count.
pub type CountChain = (Path, Protocol, usize);

/// What one Service port contributes to the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// (map or set name, key) -> value.
    pub elements: BTreeMap<(&'static str, String), ElementValue>,
    /// The Service's own chains, each after the chains it jumps to.
    pub chains: Vec<Chain>,
    pub sticky: Vec<StickySet>,
    pub count_chains: BTreeSet<CountChain>,
    /// Addresses of the endpoints in use that may be on this node (a pod can only hairpin
    /// through its own node); the hairpin set holds each once.
    pub endpoint_ips: BTreeSet<IpAddr>,
}

impl Rendered {
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
    pub fn element_count(&self) -> usize {
        self.elements.len()
    }
}

fn comment_text(s: &str) -> String {
    let mut s: String = s.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
    if s.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Service ports and endpoints for the renderer's tests.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::proxy::model::{ServiceKey, ServiceName};

    pub fn ctx() -> Context {
        Context { table: "nodelet".into(), family: Family::V4, generation: 0, node_name: "n1".into(), pod_cidr: Some("10.88.0.0/16".into()) }
    }

    pub fn port(ns: &str, name: &str, ip: [u8; 4], p: u16) -> ServicePort {
        ServicePort {
            key: ServiceKey { service: ServiceName::new(ns, name), port_name: "http".into(), protocol: Protocol::Tcp },
            protocol: Protocol::Tcp,
            port: p,
            node_port: None,
            cluster_ips: vec![ip.into()],
            external_ips: vec![],
            lb_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
        }
    }

    pub fn ep(ip: [u8; 4], node: &str) -> Endpoint {
        Endpoint { ip: ip.into(), port: 8080, node_name: Some(node.into()), ready: true, serving: true, terminating: false }
    }

    pub fn entry(id: u32, port: ServicePort, endpoints: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry { id, port, endpoints }
    }

    pub fn model(entries: Vec<ServiceEntry>) -> Model {
        entries.into_iter().map(|e| (e.port.key.clone(), e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_cleaned_and_bounded() {
        assert_eq!(comment_text("a\"b\\c"), "abc");
        assert_eq!(comment_text(&"x".repeat(300)).len(), COMMENT_MAX);
    }
}
