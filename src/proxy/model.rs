//! The service proxy's plain data: what a Service port looks like once validated, what an
//! endpoint looks like, and which endpoints a kind of traffic may use. No effects here.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// A transport protocol a Service port may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes spells it "TCP"; an absent protocol means TCP.
    pub fn parse(s: Option<&str>) -> Result<Protocol, String> {
        match s.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }

    /// The name nft uses.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An address family: the proxy runs one table per family (`ip nodelet`, `ip6 nodelet`), each
/// programming the Services' addresses and endpoints of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The nftables family of the table, and the keyword of the address match (`ip daddr`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The nftables address type.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    /// The loopback network: node ports are not served on it (as kube-proxy).
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1",
        }
    }

    /// An EndpointSlice's addressType for this family.
    pub fn slice_address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The family as conntrack(8) names it.
    pub fn conntrack(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slice_address_type())
    }
}

/// Names a Service (namespace/name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ServiceName {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        ServiceName { namespace: namespace.as_ref().into(), name: name.as_ref().into() }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Names one port of a Service: namespace/name:port-name (the port name may be empty when the
/// Service has a single port). The unit the proxy programs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub service: ServiceName,
    pub port_name: Arc<str>,
    /// Two ports may share a name only if their protocols differ (e.g. DNS over TCP and UDP).
    pub protocol: Protocol,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port_name, self.protocol.nft())
    }
}

/// One validated Service port with every address it is reachable on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub key: ServiceKey,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    /// sessionAffinity ClientIP: how long a client sticks to its endpoint, in seconds.
    pub affinity_timeout: Option<u32>,
    /// externalTrafficPolicy Local: external traffic only to this node's endpoints, source kept.
    pub external_local: bool,
    /// internalTrafficPolicy Local: cluster traffic only to this node's endpoints.
    pub internal_local: bool,
}

/// One endpoint of a Service port, resolved to the port it listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub node_name: Option<NodeName>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A Service port with its endpoints and the number the ruleset knows it by (it names the
/// Service's own chains and maps when it has any).
/// The node an endpoint is on. A cluster has a few node names and a proxy holds one per
/// endpoint (100,000 at 10,000 Services), so each name is held once and shared.
pub type NodeName = Arc<str>;

/// The node names seen so far, each held once (bounded by the cluster's nodes).
#[derive(Default)]
pub struct NodeNames(HashSet<NodeName>);

impl NodeNames {
    pub fn get(&mut self, name: &str) -> NodeName {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let name: NodeName = name.into();
        self.0.insert(name.clone());
        name
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub id: u32,
    pub port: ServicePort,
    pub endpoints: Vec<Endpoint>,
}

/// Everything the proxy programs.
pub type Model = BTreeMap<ServiceKey, ServiceEntry>;

/// One address of an EndpointSlice, before it is joined with a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ip: IpAddr,
    pub node_name: Option<NodeName>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One port of an EndpointSlice: the Service port's name and the port the endpoints listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A validated EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub service: ServiceName,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// Joins a Service port with the slices of its Service: a slice port with the same name and
/// protocol gives each of the slice's addresses its port. Duplicates are dropped; the result is
/// sorted so the same input always renders the same way.
pub fn join_endpoints<'a>(port: &ServicePort, slices: impl IntoIterator<Item = &'a Slice>) -> Vec<Endpoint> {
    let mut out: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let Some(sp) = slice.ports.iter().find(|p| *p.name == *port.key.port_name && p.protocol == port.protocol) else {
            continue;
        };
        for e in &slice.endpoints {
            out.entry((e.ip, sp.port)).or_insert_with(|| Endpoint {
                ip: e.ip,
                port: sp.port,
                node_name: e.node_name.clone(),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
            });
        }
    }
    out.into_values().collect()
}

/// The endpoints traffic may go to, as kube-proxy picks them: only this node's when
/// `local_only`; the ready ones, or when none is ready the serving and terminating ones.
pub fn usable_endpoints<'a>(endpoints: &'a [Endpoint], local_only: bool, node_name: &str) -> Vec<&'a Endpoint> {
    let candidates: Vec<&Endpoint> = endpoints.iter().filter(|e| !local_only || e.node_name.as_deref() == Some(node_name)).collect();
    let ready: Vec<&Endpoint> = candidates.iter().copied().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates.into_iter().filter(|e| e.serving && e.terminating).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_name_is_held_once_however_many_endpoints_name_it() {
        let mut names = NodeNames::default();
        let (a, b, other) = (names.get("node-1"), names.get("node-1"), names.get("node-2"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((&*a, &*other), ("node-1", "node-2"));
    }

    fn ep(ip: [u8; 4], node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint { ip: ip.into(), port: 80, node_name: Some(node.into()), ready, serving, terminating }
    }

    #[test]
    fn ready_endpoints_win_and_terminating_serving_ones_are_the_fallback() {
        let eps = vec![ep([10, 0, 0, 1], "a", true, true, false), ep([10, 0, 0, 2], "a", false, true, true)];
        assert_eq!(usable_endpoints(&eps, false, "a"), vec![&eps[0]]);
        let eps = vec![ep([10, 0, 0, 1], "a", false, false, true), ep([10, 0, 0, 2], "a", false, true, true), ep([10, 0, 0, 3], "a", false, true, false)];
        assert_eq!(usable_endpoints(&eps, false, "a"), vec![&eps[1]]);
    }

    #[test]
    fn local_only_keeps_this_nodes_endpoints() {
        let eps = vec![ep([10, 0, 0, 1], "a", true, true, false), ep([10, 0, 0, 2], "b", true, true, false)];
        assert_eq!(usable_endpoints(&eps, true, "b"), vec![&eps[1]]);
        assert!(usable_endpoints(&eps, true, "c").is_empty());
    }

    #[test]
    fn join_matches_port_name_and_protocol_and_dedups() {
        let port = ServicePort {
            key: ServiceKey { service: ServiceName::new("ns", "s"), port_name: "dns".into(), protocol: Protocol::Udp },
            protocol: Protocol::Udp,
            port: 53,
            node_port: None,
            cluster_ips: vec![],
            external_ips: vec![],
            lb_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
        };
        let se = |ip: [u8; 4]| SliceEndpoint { ip: ip.into(), node_name: None, ready: true, serving: true, terminating: false };
        let slice = |ports: Vec<SlicePort>, eps| Slice { service: ServiceName::new("ns", "s"), ports, endpoints: eps };
        let a = slice(
            vec![SlicePort { name: "dns".into(), port: 5353, protocol: Protocol::Udp }, SlicePort { name: "dns".into(), port: 5354, protocol: Protocol::Tcp }],
            vec![se([10, 0, 0, 2]), se([10, 0, 0, 1])],
        );
        let b = slice(vec![SlicePort { name: "dns".into(), port: 5353, protocol: Protocol::Udp }], vec![se([10, 0, 0, 1])]);
        let c = slice(vec![SlicePort { name: "other".into(), port: 1, protocol: Protocol::Udp }], vec![se([10, 0, 0, 9])]);
        let got = join_endpoints(&port, [&a, &b, &c]);
        let got: Vec<(IpAddr, u16)> = got.iter().map(|e| (e.ip, e.port)).collect();
        assert_eq!(got, vec![([10, 0, 0, 1].into(), 5353), ([10, 0, 0, 2].into(), 5353)]);
    }
}
