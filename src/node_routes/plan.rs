//! The pure part of the routes between nodes: which route each other node's pod CIDR wants
//! (via that node's InternalIP), checked against what this host has (its interfaces' subnets,
//! the routes in its main table), and the changes that bring nodelet's own routes there.
//! Only routes tagged with nodelet's protocol number are ever changed or deleted.

use k8s_openapi::api::core::v1::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network: address with the host bits zero, and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Cidr, String> {
        if prefix > 32 {
            return Err(format!("{addr}/{prefix}: the prefix length is over 32"));
        }
        let cidr = Cidr { addr, prefix };
        if u32::from(addr) & !cidr.mask() != 0 {
            return Err(format!("{addr}/{prefix} has host bits set"));
        }
        Ok(cidr)
    }

    /// The network an interface address belongs to (`10.254.0.11/24` -> `10.254.0.0/24`).
    pub fn of_address(addr: Ipv4Addr, prefix: u8) -> Cidr {
        let prefix = prefix.min(32);
        let mask = Cidr { addr, prefix }.mask();
        Cidr { addr: Ipv4Addr::from(u32::from(addr) & mask), prefix }
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("{text:?} is not a CIDR such as 10.244.1.0/24"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("{text:?}: {prefix:?} is not a prefix length"))?;
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the routes need of a Node: its IPv4 pod CIDRs and its IPv4 InternalIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub pod_cidrs: Vec<Cidr>,
    pub internal_ip: Option<Ipv4Addr>,
}

impl NodeFacts {
    /// From the Node object: `spec.podCIDRs` (else `spec.podCIDR`), IPv6 ones and unparsable
    /// ones left out; the first IPv4 InternalIP.
    pub fn from_node(node: &Node) -> NodeFacts {
        let spec = node.spec.as_ref();
        let listed = spec.and_then(|s| s.pod_cidrs.clone()).filter(|l| !l.is_empty());
        let texts = listed.or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c])).unwrap_or_default();
        let internal_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok());
        NodeFacts { name: node.metadata.name.clone().unwrap_or_default(), pod_cidrs: texts.iter().filter_map(|t| t.parse().ok()).collect(), internal_ip }
    }
}

/// A route nodelet keeps: another node's pod CIDR via that node's address, out of the
/// interface whose subnet holds that address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Cidr,
    pub gateway: Ipv4Addr,
    pub oif: u32,
}

/// A route of the host's main table as netlink shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
}

/// An IPv4 address of one of the host's interfaces, with the subnet it makes reachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    pub address: Ipv4Addr,
    pub subnet: Cidr,
    pub oif: u32,
    pub interface: String,
    pub loopback: bool,
}

/// What the host has: its interface addresses and the routes of its main table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    pub addresses: Vec<Connected>,
    pub routes: Vec<HostRoute>,
}

/// Why a node's pod CIDR gets no route from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The Node has no IPv4 InternalIP yet.
    NoInternalIp,
    /// Its address is this host's own (nodes sharing one host, as tests run them): nothing to
    /// route through.
    SameHost(Ipv4Addr),
    /// Its address is on no subnet of this host's interfaces: another L2 segment, which
    /// host-gw routing cannot reach.
    NotDirectlyReachable(Ipv4Addr),
    /// A route nodelet did not make has that destination already; it is left alone.
    ForeignRoute { dst: Cidr, protocol: u8 },
    /// That pod CIDR overlaps this node's own or one another node has (named).
    Overlaps { dst: Cidr, with: String },
}

impl Skip {
    /// Whether it is worth telling (a warning and a Node event): the others are ordinary.
    pub fn is_problem(&self) -> bool {
        !matches!(self, Skip::NoInternalIp | Skip::SameHost(_))
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Skip::NoInternalIp => "NoInternalIP",
            Skip::SameHost(_) => "SameHost",
            Skip::NotDirectlyReachable(_) => "NodeNotDirectlyReachable",
            Skip::ForeignRoute { .. } => "RouteNotOwned",
            Skip::Overlaps { .. } => "PodCIDROverlaps",
        }
    }

    /// The one line that tells it, about node `node`.
    pub fn message(&self, node: &str) -> String {
        match self {
            Skip::NoInternalIp => format!("node {node} has no IPv4 InternalIP: no route to its pod CIDR yet"),
            Skip::SameHost(ip) => format!("node {node} has this host's address {ip}: no route to its pod CIDR"),
            Skip::NotDirectlyReachable(ip) => format!(
                "no route to the pod CIDR of node {node}: its InternalIP {ip} is on no subnet of this host's interfaces \
                 (nodes must share one L2 segment for nodelet's host-gw routes; use a CNI with an overlay, --network-plugin=external)"
            ),
            Skip::ForeignRoute { dst, protocol } => {
                format!("no route to the pod CIDR of node {node}: a route to {dst} that nodelet did not make (protocol {protocol}) is there; it is left alone")
            }
            Skip::Overlaps { dst, with } => format!("no route to the pod CIDR {dst} of node {node}: it overlaps the pod CIDR of node {with}"),
        }
    }
}

/// The changes that make nodelet's routes the wanted ones, and the nodes that get none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<Route>,
    /// Routes of nodelet's to the same destination with another gateway or interface.
    pub replace: Vec<Route>,
    /// nodelet's routes no node wants any more.
    pub delete: Vec<HostRoute>,
    pub skipped: BTreeMap<String, Skip>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The routes the other nodes' pod CIDRs want, given this node's name and what the host has.
/// `protocol` is nodelet's route protocol number: routes with it are nodelet's own.
pub fn plan(own: &str, nodes: &[NodeFacts], host: &HostView, protocol: u8) -> Plan {
    let mut plan = Plan::default();
    let mut claimed: Vec<(Cidr, String)> = nodes.iter().filter(|n| n.name == own).flat_map(|n| n.pod_cidrs.iter().map(|c| (*c, n.name.clone()))).collect();
    let local: BTreeSet<Ipv4Addr> = host.addresses.iter().map(|a| a.address).collect();
    let mut wanted: Vec<Route> = Vec::new();
    let mut others: Vec<&NodeFacts> = nodes.iter().filter(|n| n.name != own && !n.pod_cidrs.is_empty()).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    for node in others {
        let Some(gateway) = node.internal_ip else {
            plan.skipped.insert(node.name.clone(), Skip::NoInternalIp);
            continue;
        };
        if local.contains(&gateway) || gateway.is_loopback() {
            plan.skipped.insert(node.name.clone(), Skip::SameHost(gateway));
            continue;
        }
        let Some(via) = host.addresses.iter().find(|a| !a.loopback && a.subnet.prefix < 32 && a.subnet.contains(gateway)) else {
            plan.skipped.insert(node.name.clone(), Skip::NotDirectlyReachable(gateway));
            continue;
        };
        for dst in &node.pod_cidrs {
            if let Some((_, with)) = claimed.iter().find(|(c, _)| c.overlaps(dst)) {
                plan.skipped.insert(node.name.clone(), Skip::Overlaps { dst: *dst, with: with.clone() });
                continue;
            }
            claimed.push((*dst, node.name.clone()));
            if let Some(foreign) = host.routes.iter().find(|r| r.dst == *dst && r.protocol != protocol) {
                plan.skipped.insert(node.name.clone(), Skip::ForeignRoute { dst: *dst, protocol: foreign.protocol });
                continue;
            }
            wanted.push(Route { dst: *dst, gateway, oif: via.oif });
        }
    }
    let own_routes: Vec<&HostRoute> = host.routes.iter().filter(|r| r.protocol == protocol).collect();
    for route in &wanted {
        match own_routes.iter().find(|r| r.dst == route.dst) {
            None => plan.add.push(*route),
            Some(current) if current.gateway != Some(route.gateway) || current.oif != Some(route.oif) => plan.replace.push(*route),
            Some(_) => {}
        }
    }
    plan.delete = own_routes.into_iter().filter(|r| !wanted.iter().any(|w| w.dst == r.dst)).copied().collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u8 = 110;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    fn node(name: &str, cidrs: &[&str], ip: Option<&str>) -> NodeFacts {
        NodeFacts { name: name.into(), pod_cidrs: cidrs.iter().map(|c| cidr(c)).collect(), internal_ip: ip.map(|i| i.parse().unwrap()) }
    }

    /// A node on 10.254.0.11/24 (eth0, index 2), loopback beside it.
    fn host(routes: Vec<HostRoute>) -> HostView {
        HostView {
            addresses: vec![
                Connected { address: "127.0.0.1".parse().unwrap(), subnet: cidr("127.0.0.0/8"), oif: 1, interface: "lo".into(), loopback: true },
                Connected { address: "10.254.0.11".parse().unwrap(), subnet: cidr("10.254.0.0/24"), oif: 2, interface: "eth0".into(), loopback: false },
                Connected { address: "10.244.1.1".parse().unwrap(), subnet: cidr("10.244.1.0/24"), oif: 5, interface: "nodelet0".into(), loopback: false },
            ],
            routes,
        }
    }

    fn ours(dst: &str, gw: &str, oif: u32) -> HostRoute {
        HostRoute { dst: cidr(dst), gateway: Some(gw.parse().unwrap()), oif: Some(oif), protocol: OURS }
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route { dst: cidr(dst), gateway: gw.parse().unwrap(), oif: 2 }
    }

    fn cluster() -> Vec<NodeFacts> {
        vec![
            node("n1", &["10.244.1.0/24"], Some("10.254.0.11")),
            node("n2", &["10.244.2.0/24"], Some("10.254.0.12")),
            node("n3", &["10.244.3.0/24"], Some("10.254.0.13")),
        ]
    }

    #[test]
    fn each_other_node_gets_a_route_via_its_address() {
        let p = plan("n1", &cluster(), &host(vec![]), OURS);
        assert_eq!(p.add, vec![route("10.244.2.0/24", "10.254.0.12"), route("10.244.3.0/24", "10.254.0.13")]);
        assert!(p.replace.is_empty() && p.delete.is_empty() && p.skipped.is_empty(), "{p:?}");
    }

    #[test]
    fn routes_in_place_are_left_changed_ones_replaced_and_gone_nodes_removed() {
        let routes = vec![ours("10.244.2.0/24", "10.254.0.12", 2), ours("10.244.3.0/24", "10.254.0.99", 2), ours("10.244.9.0/24", "10.254.0.19", 2)];
        let p = plan("n1", &cluster(), &host(routes), OURS);
        assert!(p.add.is_empty(), "{p:?}");
        assert_eq!(p.replace, vec![route("10.244.3.0/24", "10.254.0.13")]);
        assert_eq!(p.delete, vec![ours("10.244.9.0/24", "10.254.0.19", 2)]);
        let settled = plan("n1", &cluster(), &host(vec![ours("10.244.2.0/24", "10.254.0.12", 2), ours("10.244.3.0/24", "10.254.0.13", 2)]), OURS);
        assert!(settled.is_empty(), "{settled:?}");
    }

    #[test]
    fn routes_nodelet_did_not_make_are_never_changed_or_deleted() {
        let foreign = |dst: &str, protocol| HostRoute { dst: cidr(dst), gateway: Some("10.254.0.1".parse().unwrap()), oif: Some(2), protocol };
        // Another CNI's route to n2's CIDR, and unrelated static and kernel routes.
        let routes = vec![foreign("10.244.2.0/24", 3), foreign("0.0.0.0/0", 4), foreign("10.254.0.0/24", 2), foreign("10.244.7.0/24", 4)];
        let p = plan("n1", &cluster(), &host(routes), OURS);
        assert_eq!(p.add, vec![route("10.244.3.0/24", "10.254.0.13")]);
        assert!(p.delete.is_empty() && p.replace.is_empty(), "{p:?}");
        assert_eq!(p.skipped.get("n2"), Some(&Skip::ForeignRoute { dst: cidr("10.244.2.0/24"), protocol: 3 }));
        assert!(p.skipped["n2"].is_problem());
    }

    #[test]
    fn a_gateway_on_no_connected_subnet_is_refused() {
        let mut nodes = cluster();
        nodes.push(node("far", &["10.244.4.0/24"], Some("192.168.7.4")));
        // A /32 address makes nothing reachable, and loopback's subnet does not count.
        nodes.push(node("lo-ish", &["10.244.5.0/24"], Some("127.0.0.2")));
        let mut h = host(vec![ours("10.244.4.0/24", "192.168.7.4", 2)]);
        h.addresses.push(Connected { address: "192.168.7.1".parse().unwrap(), subnet: cidr("192.168.7.1/32"), oif: 3, interface: "x".into(), loopback: false });
        let p = plan("n1", &nodes, &h, OURS);
        assert_eq!(p.skipped.get("far"), Some(&Skip::NotDirectlyReachable("192.168.7.4".parse().unwrap())));
        assert!(p.skipped["far"].message("far").contains("L2 segment"));
        assert_eq!(p.skipped.get("lo-ish"), Some(&Skip::SameHost("127.0.0.2".parse().unwrap())));
        assert!(!p.skipped["lo-ish"].is_problem());
        assert_eq!(p.delete, vec![ours("10.244.4.0/24", "192.168.7.4", 2)], "a route that is no longer possible goes");
    }

    #[test]
    fn nodes_on_this_host_without_an_address_or_cidr_get_none() {
        let nodes = vec![
            node("n1", &["10.244.1.0/24"], Some("10.254.0.11")),
            node("twin", &["10.244.6.0/24"], Some("10.254.0.11")),
            node("new", &[], Some("10.254.0.14")),
            node("bare", &["10.244.8.0/24"], None),
        ];
        let p = plan("n1", &nodes, &host(vec![]), OURS);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.skipped.get("twin"), Some(&Skip::SameHost("10.254.0.11".parse().unwrap())));
        assert_eq!(p.skipped.get("bare"), Some(&Skip::NoInternalIp));
        assert!(!p.skipped.contains_key("new"), "a node without a pod CIDR is not a problem");
    }

    #[test]
    fn overlapping_pod_cidrs_get_no_route() {
        let mut nodes = cluster();
        nodes.push(node("z-dup", &["10.244.2.0/25"], Some("10.254.0.15")));
        nodes.push(node("mine", &["10.244.1.0/24"], Some("10.254.0.16")));
        let p = plan("n1", &nodes, &host(vec![]), OURS);
        assert_eq!(p.skipped.get("z-dup"), Some(&Skip::Overlaps { dst: cidr("10.244.2.0/25"), with: "n2".into() }));
        assert_eq!(p.skipped.get("mine"), Some(&Skip::Overlaps { dst: cidr("10.244.1.0/24"), with: "n1".into() }));
        assert_eq!(p.add.len(), 2);
    }

    #[test]
    fn node_facts_come_from_the_node_object() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n2"},
            "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd00:2::/64"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n2"},
                {"type": "InternalIP", "address": "fd00::2"},
                {"type": "InternalIP", "address": "10.254.0.12"}
            ]}
        }))
        .unwrap();
        assert_eq!(NodeFacts::from_node(&n), node("n2", &["10.244.2.0/24"], Some("10.254.0.12")));
        let only_single: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.9.0/24"}})).unwrap();
        assert_eq!(NodeFacts::from_node(&only_single), node("n", &["10.244.9.0/24"], None));
    }

    #[test]
    fn cidrs_parse_and_compare() {
        assert_eq!(Cidr::of_address("10.254.0.11".parse().unwrap(), 24), cidr("10.254.0.0/24"));
        assert!("10.244.1.1/24".parse::<Cidr>().is_err());
        assert!("10.244.1.0/33".parse::<Cidr>().is_err());
        assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(cidr("10.244.0.0/16").overlaps(&cidr("10.244.3.0/24")));
        assert!(!cidr("10.244.2.0/24").overlaps(&cidr("10.244.3.0/24")));
        assert_eq!(cidr("10.244.2.0/24").to_string(), "10.244.2.0/24");
    }
}
