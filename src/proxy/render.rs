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

/// The rules of a shared count chain.
pub fn count_chain(ctx: &Context, (path, proto, n): CountChain) -> Chain {
    let mut rules: Vec<String> = path.masquerade_rule(ctx).into_iter().collect();
    let p = proto.nft();
    let f = ctx.family.nft();
    let key = if path.is_node_port() { format!("{p} dport") } else { format!("{f} daddr . {p} dport") };
    rules.push(format!("dnat {f} to {key} . numgen random mod {n} map @{}", ctx.map(path.backend_map(proto))));
    Chain { name: count_chain_name(path, proto, n), comment: None, rules }
}

/// The name of a shared count chain, e.g. `cluster_tcp_3`.
pub fn count_chain_name(path: Path, proto: Protocol, n: usize) -> String {
    format!("{}_{}_{n}", path.name(), proto.nft())
}

/// What a Service port contributes: dispatch elements, backend elements or affinity chains,
/// reject elements for frontends without usable endpoints.
pub fn render_service(ctx: &Context, entry: &ServiceEntry) -> Rendered {
    let mut out = Rendered::default();
    let port = &entry.port;
    let name = comment_text(&format!("{}:{}", port.key.service, port.key.port_name));
    let proto = port.protocol.nft();
    let cluster_eps = usable_endpoints(&entry.endpoints, port.internal_local, &ctx.node_name);
    let external_eps = usable_endpoints(&entry.endpoints, port.external_local, &ctx.node_name);
    let (ext_path, np_path) =
        if port.external_local { (Path::ExternalLocal, Path::NodePortLocal) } else { (Path::External, Path::NodePort) };
    // (path, dispatch key, backend key prefix, endpoints)
    let mut frontends: Vec<(Path, String, String, &[&Endpoint])> = Vec::new();
    for ip in &port.cluster_ips {
        frontends.push((Path::Cluster, format!("{ip} . {proto} . {}", port.port), format!("{ip} . {}", port.port), &cluster_eps));
    }
    for ip in port.external_ips.iter().chain(&port.lb_ips) {
        frontends.push((ext_path, format!("{ip} . {proto} . {}", port.port), format!("{ip} . {}", port.port), &external_eps));
    }
    if let Some(np) = port.node_port {
        frontends.push((np_path, format!("{proto} . {np}"), np.to_string(), &external_eps));
    }
    let mut affinity_paths = BTreeSet::new();
    for (path, key, backend_key, eps) in frontends {
        let here = |e: &&&Endpoint| e.node_name.as_deref().is_none_or(|n| n == ctx.node_name);
        out.endpoint_ips.extend(eps.iter().filter(here).map(|e| e.ip));
        let comment = Some(name.clone());
        if eps.is_empty() {
            out.elements.insert((path.reject_set(), key), ElementValue { value: None, comment });
            continue;
        }
        let target = match port.affinity_timeout {
            Some(timeout) => {
                let chain = format!("aff{}_{}", entry.id, path.short());
                if affinity_paths.insert(path) {
                    affinity_chains(ctx, &mut out, &chain, path, port, eps, timeout, &name);
                }
                chain
            }
            None => {
                for (i, e) in eps.iter().enumerate() {
                    let value = ElementValue { value: Some(format!("{} . {}", e.ip, e.port)), comment: None };
                    out.elements.insert((path.backend_map(port.protocol), format!("{backend_key} . {i}")), value);
                }
                out.count_chains.insert((path, port.protocol, eps.len()));
                count_chain_name(path, port.protocol, eps.len())
            }
        };
        out.elements.insert((path.dispatch_map(), key), ElementValue { value: Some(format!("goto {target}")), comment });
    }
    if port.external_local {
        shortcut(ctx, &mut out, port, &entry.endpoints, &name);
    }
    out
}

/// externalTrafficPolicy Local's shortcut: clients in the pod network or on the node reach the
/// external addresses and node port through every endpoint, as ClusterIP clients do (the
/// Cluster path's chain masquerades the node's own traffic; the NodePort one masquerades all).
fn shortcut(ctx: &Context, out: &mut Rendered, port: &ServicePort, endpoints: &[Endpoint], name: &str) {
    let eps = usable_endpoints(endpoints, false, &ctx.node_name);
    if eps.is_empty() {
        return;
    }
    let proto = port.protocol.nft();
    let here = |e: &&&Endpoint| e.node_name.as_deref().is_none_or(|n| n == ctx.node_name);
    out.endpoint_ips.extend(eps.iter().filter(here).map(|e| e.ip));
    let mut frontends: Vec<(Path, &'static str, String, String)> = port
        .external_ips
        .iter()
        .chain(&port.lb_ips)
        .map(|ip| (Path::Cluster, "shortcut_ips", format!("{ip} . {proto} . {}", port.port), format!("{ip} . {}", port.port)))
        .collect();
    if let Some(np) = port.node_port {
        frontends.push((Path::NodePort, "shortcut_nodeports", format!("{proto} . {np}"), np.to_string()));
    }
    for (path, map, key, backend_key) in frontends {
        for (i, e) in eps.iter().enumerate() {
            let value = ElementValue { value: Some(format!("{} . {}", e.ip, e.port)), comment: None };
            out.elements.insert((path.backend_map(port.protocol), format!("{backend_key} . {i}")), value);
        }
        out.count_chains.insert((path, port.protocol, eps.len()));
        let target = count_chain_name(path, port.protocol, eps.len());
        out.elements.insert((map, key), ElementValue { value: Some(format!("goto {target}")), comment: Some(name.to_string()) });
    }
}

#[allow(clippy::too_many_arguments)]
fn affinity_chains(
    ctx: &Context,
    out: &mut Rendered,
    chain: &str,
    path: Path,
    port: &ServicePort,
    eps: &[&Endpoint],
    timeout: u32,
    name: &str,
) {
    let proto = port.protocol.nft();
    let f = ctx.family.nft();
    let mut rules: Vec<String> = path.masquerade_rule(ctx).into_iter().collect();
    let mut gotos = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        // named after the endpoint, not its position, so other endpoints' sets survive a change
        let tag = endpoint_tag(e);
        let (ep_chain, sticky) = (format!("{chain}_{tag}"), format!("sticky{}_{timeout}_{tag}", &chain[3..]));
        out.chains.push(Chain {
            name: ep_chain.clone(),
            comment: None,
            rules: vec![
                format!("update @{sticky} {{ {f} saddr }}"),
                format!("meta l4proto {proto} dnat {f} to {}", socket_text(e.ip, e.port)),
            ],
        });
        rules.push(format!("{f} saddr @{sticky} goto {ep_chain}"));
        gotos.push(format!("{i} : goto {ep_chain}"));
        out.sticky.push(StickySet { name: sticky, timeout, comment: format!("{name} {}", socket_text(e.ip, e.port)) });
    }
    rules.push(format!("numgen random mod {} vmap {{ {} }}", eps.len(), gotos.join(", ")));
    out.chains.push(Chain {
        name: chain.to_string(),
        comment: Some(comment_text(&format!("{name} {} ClientIP {timeout}s", path.name()))),
        rules,
    });
}

/// An endpoint's address and port as a name part: hex digits of the address, then the port.
fn endpoint_tag(e: &Endpoint) -> String {
    let octets = match e.ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let hex: String = octets.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}_{}", e.port)
}

/// `addr:port` as nft writes a NAT target (`[addr]:port` for IPv6).
fn socket_text(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The maps and sets every table has, as (kind, base name, declaration). Their names carry the
/// table's generation (see `Context::map`).
fn skeleton_maps(ctx: &Context) -> Vec<(&'static str, String, String)> {
    let (f, addr) = (ctx.family.nft(), ctx.family.addr_type());
    let mut maps = vec![
        ("map", "service_ips".to_string(), format!("type {addr} . inet_proto . inet_service : verdict")),
        ("map", "service_nodeports".to_string(), "type inet_proto . inet_service : verdict".to_string()),
        ("map", "shortcut_ips".to_string(), format!("type {addr} . inet_proto . inet_service : verdict")),
        ("map", "shortcut_nodeports".to_string(), "type inet_proto . inet_service : verdict".to_string()),
    ];
    for p in ["tcp", "udp", "sctp"] {
        for prefix in ["", "local_"] {
            maps.push(("map", format!("{prefix}backends_{p}"), format!("typeof {f} daddr . {p} dport . numgen random mod 1 : {f} daddr . {p} dport")));
            maps.push(("map", format!("np_{prefix}backends_{p}"), format!("typeof {p} dport . numgen random mod 1 : {f} daddr . {p} dport")));
        }
    }
    maps.push(("set", "no_endpoints".to_string(), format!("type {addr} . inet_proto . inet_service")));
    maps.push(("set", "no_endpoint_nodeports".to_string(), "type inet_proto . inet_service".to_string()));
    maps.push(("set", "hairpin".to_string(), format!("typeof {f} saddr . {f} daddr")));
    maps
}

/// The skeleton's maps as table-block lines.
fn write_skeleton_maps(ctx: &Context, s: &mut String) {
    for (kind, base, decl) in skeleton_maps(ctx) {
        let _ = write!(s, "\t{kind} {} {{\n\t\t{decl}\n\t}}\n", ctx.map(&base));
    }
}

/// The fixed chains as table-block lines.
fn write_skeleton_chains(ctx: &Context, s: &mut String) {
    let m = MASQ_MARK;
    let (f, lo) = (ctx.family.nft(), ctx.family.loopback());
    let map = |base: &str| ctx.map(base);
    let (service_ips, service_nodeports) = (map("service_ips"), map("service_nodeports"));
    let (no_endpoints, no_endpoint_nodeports, hairpin) = (map("no_endpoints"), map("no_endpoint_nodeports"), map("hairpin"));
    // externalTrafficPolicy Local's shortcut for clients in the pod network and on the node
    let from_pods = |rest: &str| ctx.pod_cidr.as_ref().map(|c| format!("\t\t{f} saddr {c} {rest}\n")).unwrap_or_default();
    let shortcut_ips = format!("{f} daddr . meta l4proto . th dport vmap @{}", map("shortcut_ips"));
    let shortcut_nodeports = format!("{f} daddr != {lo} fib daddr type local meta l4proto . th dport vmap @{}", map("shortcut_nodeports"));
    let shortcuts_ips = from_pods(&shortcut_ips) + &format!("\t\tfib saddr type local {shortcut_ips}\n");
    let shortcuts_nodeports = from_pods(&shortcut_nodeports) + &format!("\t\tfib saddr type local {shortcut_nodeports}\n");
    let _ = write!(
        s,
        r#"	chain services {{
{shortcuts_ips}		{f} daddr . meta l4proto . th dport vmap @{service_ips}
{shortcuts_nodeports}		{f} daddr != {lo} fib daddr type local meta l4proto . th dport vmap @{service_nodeports}
	}}
	chain reject_services {{
		{f} daddr . meta l4proto . th dport @{no_endpoints} goto reject_it
		fib daddr type local meta l4proto . th dport @{no_endpoint_nodeports} goto reject_it
	}}
	chain reject_it {{
		meta l4proto tcp reject with tcp reset
		reject
	}}
	chain nat_prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}}
	chain nat_output {{
		type nat hook output priority -100; policy accept;
		jump services
	}}
	chain nat_postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & {m:#x} == {m:#x} meta mark set meta mark ^ {m:#x} masquerade fully-random
		ct status dnat {f} saddr . {f} daddr @{hairpin} masquerade fully-random
	}}
	chain filter_input {{
		type filter hook input priority filter - 1; policy accept;
		ct state new jump reject_services
	}}
	chain filter_forward {{
		type filter hook forward priority filter - 1; policy accept;
		ct state new jump reject_services
	}}
	chain filter_output {{
		type filter hook output priority filter - 1; policy accept;
		ct state new jump reject_services
	}}
"#
    );
}

/// The names of the fixed chains.
pub const SKELETON_CHAINS: [&str; 9] =
    ["services", "reject_services", "reject_it", "nat_prerouting", "nat_output", "nat_postrouting", "filter_input", "filter_forward", "filter_output"];

const TABLE_COMMENT: &str = "nodelet service proxy: managed by nodelet, rewritten on every resync";

fn write_chain_block(s: &mut String, c: &Chain) {
    let _ = writeln!(s, "\tchain {} {{", c.name);
    if let Some(comment) = &c.comment {
        let _ = writeln!(s, "\t\tcomment \"{comment}\"");
    }
    for r in &c.rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    s.push_str("\t}\n");
}

fn sticky_decl(family: Family, m: &StickySet) -> String {
    let f = family.nft();
    format!("{{ typeof {f} saddr; size 65535; flags timeout; timeout {}s; comment \"{}\"; }}", m.timeout, comment_text(&m.comment))
}

fn write_element(s: &mut String, key: &str, v: &ElementValue) {
    s.push_str(key);
    if let Some(c) = &v.comment {
        let _ = write!(s, " comment \"{c}\"");
    }
    if let Some(value) = &v.value {
        let _ = write!(s, " : {value}");
    }
}

/// Totals of a whole table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub rules: usize,
    pub elements: usize,
    pub chains: usize,
}

/// The hairpin set's elements for a set of endpoint addresses.
fn hairpin_key(ip: IpAddr) -> String {
    format!("{ip} . {ip}")
}

/// The script that replaces the whole table in one transaction (create, delete, define), and
/// the table's totals.
pub fn full(ctx: &Context, model: &Model) -> (String, Counts) {
    let renders: Vec<Rendered> = model.values().map(|e| render_service(ctx, e)).collect();
    full_from_rendered(ctx, renders.iter())
}

/// As `full`, from already rendered Service ports.
pub fn full_from_rendered<'a>(ctx: &Context, renders: impl Iterator<Item = &'a Rendered> + Clone) -> (String, Counts) {
    let t = ctx.table_ref();
    let whole = Whole::collect(ctx, renders);
    let mut s = String::with_capacity(1 << 20);
    let _ = writeln!(s, "add table {t}\ndelete table {t}\ntable {t} {{\n\tcomment \"{TABLE_COMMENT}\"");
    write_skeleton_maps(ctx, &mut s);
    whole.write_sticky(ctx, &mut s, |_| true);
    write_skeleton_chains(ctx, &mut s);
    whole.write_chains(&mut s, |_| true);
    s.push_str("}\n");
    for part in whole.element_parts(ctx, 1) {
        s.push_str(&part);
    }
    (s, whole.counts)
}

/// Everything the Service ports contribute to a table, gathered for writing it whole.
struct Whole<'a> {
    chains: Vec<Chain>,
    sticky: Vec<&'a StickySet>,
    elements: Vec<(&'static str, &'a String, &'a ElementValue)>,
    hairpin: BTreeSet<IpAddr>,
    counts: Counts,
}

impl<'a> Whole<'a> {
    fn collect(ctx: &Context, renders: impl Iterator<Item = &'a Rendered>) -> Whole<'a> {
        let mut counts = Counts { rules: skeleton_rules(ctx), elements: 0, chains: SKELETON_CHAINS.len() };
        let (mut chains, mut sticky, mut elements) = (Vec::new(), Vec::new(), Vec::new());
        let (mut count_chains, mut hairpin) = (BTreeSet::new(), BTreeSet::new());
        for r in renders {
            count_chains.extend(r.count_chains.iter().copied());
            hairpin.extend(r.endpoint_ips.iter().copied());
            sticky.extend(r.sticky.iter());
            chains.extend(r.chains.iter().cloned());
            elements.extend(r.elements.iter().map(|((map, key), v)| (*map, key, v)));
        }
        chains.extend(count_chains.iter().map(|cc| count_chain(ctx, *cc)));
        // grouped by map, so each map's elements make one command
        elements.sort_by_key(|(map, _, _)| *map);
        counts.rules += chains.iter().map(|c| c.rules.len()).sum::<usize>();
        counts.chains += chains.len();
        counts.elements = elements.len() + hairpin.len();
        Whole { chains, sticky, elements, hairpin, counts }
    }

    /// Table-block lines declaring the sticky sets `wanted` picks.
    fn write_sticky(&self, ctx: &Context, s: &mut String, wanted: impl Fn(&str) -> bool) {
        for m in self.sticky.iter().filter(|m| wanted(&m.name)) {
            let _ = writeln!(s, "\tset {} {}", m.name, sticky_decl(ctx.family, m));
        }
    }

    /// Table-block lines of the Service ports' chains (count and affinity chains) `wanted` picks.
    fn write_chains(&self, s: &mut String, wanted: impl Fn(&str) -> bool) {
        for c in self.chains.iter().filter(|c| wanted(&c.name)) {
            write_chain_block(s, c);
        }
    }

    /// `add element` commands for every element, in `parts` scripts of about equal size.
    fn element_parts(&self, ctx: &Context, parts: usize) -> Vec<String> {
        let t = ctx.table_ref();
        let hairpin: Vec<(&'static str, String)> = self.hairpin.iter().map(|ip| ("hairpin", hairpin_key(*ip))).collect();
        let all: Vec<(&str, &str, Option<&ElementValue>)> = self
            .elements
            .iter()
            .map(|(map, key, v)| (*map, key.as_str(), Some(*v)))
            .chain(hairpin.iter().map(|(map, key)| (*map, key.as_str(), None)))
            .collect();
        let size = all.len().div_ceil(parts.max(1)).max(1);
        let mut out: Vec<String> = all
            .chunks(size)
            .map(|chunk| {
                let mut s = String::with_capacity(chunk.len() * 48);
                let mut open: Option<&str> = None;
                for (map, key, v) in chunk {
                    if open != Some(*map) {
                        if open.is_some() {
                            s.push_str(" }\n");
                        }
                        let _ = write!(s, "add element {t} {} {{ ", ctx.map(map));
                        open = Some(*map);
                    } else {
                        s.push_str(",\n");
                    }
                    match v {
                        Some(v) => write_element(&mut s, key, v),
                        None => s.push_str(key),
                    }
                }
                if open.is_some() {
                    s.push_str(" }\n");
                }
                s
            })
            .collect();
        out.resize(parts.max(1), String::new());
        out
    }
}

/// What the table holds now, as far as the proxy knows: the generation of its maps, its chains
/// besides the fixed ones, and its sticky sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    pub generation: u32,
    pub chains: BTreeSet<String>,
    pub sticky: BTreeSet<String>,
}

impl Existing {
    /// The generation a full sync fills next: the other one.
    pub fn next_generation(&self) -> u32 {
        1 - self.generation.min(1)
    }
}

/// A full sync in three steps, each one transaction. `declare` adds the maps of `ctx`'s
/// generation and the chains and sticky sets the table lacks (inert: no rule leads to them
/// yet); `elements` fill the maps, in scripts that can be applied side by side (parsing them is
/// most of a full sync's time); `switch` rewrites the chains that were there (the fixed ones
/// jump to the new maps from then on) and removes the old generation's maps and the chains and
/// sticky sets nothing needs, so packets see the old table, then the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub declare: String,
    pub elements: Vec<String>,
    pub switch: String,
    pub counts: Counts,
}

/// The staged full sync from `existing` (None: the table does not exist) to the Service ports'
/// table at `ctx`'s generation, with the elements in `parts` scripts.
pub fn staged<'a>(ctx: &Context, existing: Option<&Existing>, renders: impl Iterator<Item = &'a Rendered>, parts: usize) -> Staged {
    let t = ctx.table_ref();
    let whole = Whole::collect(ctx, renders);
    let empty = Existing::default();
    let had = existing.unwrap_or(&empty);
    let mut declare = format!("table {t} {{\n");
    if existing.is_none() {
        let _ = writeln!(declare, "\tcomment \"{TABLE_COMMENT}\"");
    }
    write_skeleton_maps(ctx, &mut declare);
    // the new elements jump to these chains, so they come first
    whole.write_sticky(ctx, &mut declare, |name| !had.sticky.contains(name));
    whole.write_chains(&mut declare, |name| !had.chains.contains(name));
    declare.push_str("}\n");
    let mut switch = String::new();
    let new_chains: BTreeSet<&str> = whole.chains.iter().map(|c| c.name.as_str()).collect();
    let new_sticky: BTreeSet<&str> = whole.sticky.iter().map(|m| m.name.as_str()).collect();
    if let Some(old) = existing {
        let old_ctx = ctx.at(old.generation);
        // no rule refers to the old maps or to chains about to go once every chain is empty
        for c in SKELETON_CHAINS.iter().copied().chain(old.chains.iter().map(String::as_str)) {
            let _ = writeln!(switch, "flush chain {t} {c}");
        }
        for (kind, base, _) in skeleton_maps(&old_ctx) {
            let _ = writeln!(switch, "delete {kind} {t} {}", old_ctx.map(&base));
        }
        for c in old.chains.iter().filter(|c| !new_chains.contains(c.as_str())) {
            let _ = writeln!(switch, "delete chain {t} {c}");
        }
        for m in old.sticky.iter().filter(|m| !new_sticky.contains(m.as_str())) {
            let _ = writeln!(switch, "delete set {t} {m}");
        }
    }
    let _ = writeln!(switch, "table {t} {{");
    write_skeleton_chains(ctx, &mut switch);
    whole.write_chains(&mut switch, |name| had.chains.contains(name));
    switch.push_str("}\n");
    Staged { declare, elements: whole.element_parts(ctx, parts), switch, counts: whole.counts }
}

/// The commands that turn one Service port's part of the table into another's. `existing`
/// are the count chains already in the table; the ones this adds are inserted into it.
pub fn diff(ctx: &Context, old: Option<&Rendered>, new: Option<&Rendered>, existing: &mut BTreeSet<CountChain>, s: &mut String) {
    let t = ctx.table_ref();
    let empty = Rendered::default();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    // 1. chains the new elements jump to, before the elements
    for cc in &new.count_chains {
        if existing.insert(*cc) {
            let c = count_chain(ctx, *cc);
            let _ = writeln!(s, "add chain {t} {}", c.name);
            for r in &c.rules {
                let _ = writeln!(s, "add rule {t} {} {r}", c.name);
            }
        }
    }
    let old_sticky: BTreeMap<&str, &StickySet> = old.sticky.iter().map(|m| (m.name.as_str(), m)).collect();
    let new_sticky: BTreeMap<&str, &StickySet> = new.sticky.iter().map(|m| (m.name.as_str(), m)).collect();
    for (name, m) in &new_sticky {
        if !old_sticky.contains_key(name) {
            let _ = writeln!(s, "add set {t} {name} {}", sticky_decl(ctx.family, m));
        }
    }
    let old_chains: BTreeMap<&str, &Chain> = old.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in &new.chains {
        match old_chains.get(c.name.as_str()) {
            Some(o) if *o == c => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {t} {}", c.name);
            }
            None => {
                let _ = match &c.comment {
                    Some(comment) => writeln!(s, "add chain {t} {} {{ comment \"{comment}\"; }}", c.name),
                    None => writeln!(s, "add chain {t} {}", c.name),
                };
            }
        }
        for r in &c.rules {
            let _ = writeln!(s, "add rule {t} {} {r}", c.name);
        }
    }
    // 2. elements: deletions first so a changed value is a delete and an add
    let mut deletes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut adds: BTreeMap<&str, Vec<(&str, &ElementValue)>> = BTreeMap::new();
    for ((map, key), v) in &old.elements {
        match new.elements.get(&(*map, key.clone())) {
            Some(nv) if nv == v => {}
            _ => deletes.entry(map).or_default().push(key),
        }
    }
    for ((map, key), v) in &new.elements {
        match old.elements.get(&(*map, key.clone())) {
            Some(ov) if ov == v => {}
            _ => adds.entry(map).or_default().push((key, v)),
        }
    }
    for (map, keys) in &deletes {
        let _ = writeln!(s, "delete element {t} {} {{ {} }}", ctx.map(map), keys.join(", "));
    }
    for (map, elems) in &adds {
        let _ = write!(s, "add element {t} {} {{ ", ctx.map(map));
        for (i, (key, v)) in elems.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            write_element(s, key, v);
        }
        s.push_str(" }\n");
    }
    // 3. what nothing refers to any more: parents before the chains they jump to
    let new_chain_names: BTreeSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
    for c in old.chains.iter().rev() {
        if !new_chain_names.contains(c.name.as_str()) {
            let _ = writeln!(s, "delete chain {t} {}", c.name);
        }
    }
    // (the clients that stuck to an endpoint that is gone go with its set, and choose again)
    for name in old_sticky.keys() {
        if !new_sticky.contains_key(name) {
            let _ = writeln!(s, "delete set {t} {name}");
        }
    }
}

/// Commands adding and removing hairpin elements for endpoint addresses that appear or vanish.
pub fn hairpin_diff(ctx: &Context, added: &[IpAddr], removed: &[IpAddr], s: &mut String) {
    let t = ctx.table_ref();
    if !removed.is_empty() {
        let keys: Vec<String> = removed.iter().map(|ip| hairpin_key(*ip)).collect();
        let _ = writeln!(s, "delete element {t} {} {{ {} }}", ctx.map("hairpin"), keys.join(", "));
    }
    if !added.is_empty() {
        let keys: Vec<String> = added.iter().map(|ip| hairpin_key(*ip)).collect();
        let _ = writeln!(s, "add element {t} {} {{ {} }}", ctx.map("hairpin"), keys.join(", "));
    }
}

/// The script that removes the table (it need not exist).
pub fn delete_table(ctx: &Context) -> String {
    let t = ctx.table_ref();
    format!("add table {t}\ndelete table {t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Protocol, ServiceKey, ServiceName};

    fn ctx() -> Context {
        Context { table: "nodelet".into(), family: Family::V4, generation: 0, node_name: "n1".into(), pod_cidr: Some("10.88.0.0/16".into()) }
    }

    fn port(ns: &str, name: &str, ip: [u8; 4], p: u16) -> ServicePort {
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

    fn ep(ip: [u8; 4], node: &str) -> Endpoint {
        Endpoint { ip: ip.into(), port: 8080, node_name: Some(node.into()), ready: true, serving: true, terminating: false }
    }

    fn entry(id: u32, port: ServicePort, endpoints: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry { id, port, endpoints }
    }

    fn model(entries: Vec<ServiceEntry>) -> Model {
        entries.into_iter().map(|e| (e.port.key.clone(), e)).collect()
    }

    #[test]
    fn cluster_ip_goes_to_the_count_chain_and_one_backend_element_per_endpoint() {
        let e = entry(1, port("web", "front", [10, 96, 0, 10], 80), vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n2")]);
        let (s, counts) = full(&ctx(), &model(vec![e]));
        assert!(s.starts_with("add table ip nodelet\ndelete table ip nodelet\ntable ip nodelet {\n"), "{s}");
        assert!(s.contains("add element ip nodelet service_ips { 10.96.0.10 . tcp . 80 comment \"web/front:http\" : goto cluster_tcp_2 }"), "{s}");
        assert!(s.contains("add element ip nodelet backends_tcp { 10.96.0.10 . 80 . 0 : 10.88.0.5 . 8080,\n10.96.0.10 . 80 . 1 : 10.88.0.6 . 8080 }"), "{s}");
        assert!(s.contains(
            "\tchain cluster_tcp_2 {\n\t\tip saddr != 10.88.0.0/16 meta mark set meta mark | 0x4000\n\t\tdnat ip to ip daddr . tcp dport . numgen random mod 2 map @backends_tcp\n\t}"
        ), "{s}");
        // only this node's endpoints can hairpin
        assert!(s.contains("add element ip nodelet hairpin { 10.88.0.5 . 10.88.0.5 }"), "{s}");
        assert_eq!(counts, Counts { rules: skeleton_rules(&ctx()) + 2, elements: 4, chains: 10 });
    }

    #[test]
    fn node_port_external_and_lb_ips_with_local_policy() {
        let mut p = port("ns", "lb", [10, 96, 0, 11], 443);
        p.node_port = Some(30443);
        p.external_ips = vec![[192, 0, 2, 7].into()];
        p.lb_ips = vec![[198, 51, 100, 1].into()];
        p.external_local = true;
        let e = entry(2, p, vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n2")]);
        let r = render_service(&ctx(), &e);
        let get = |m: &'static str, k: &str| r.elements.get(&(m, k.to_string())).and_then(|v| v.value.clone());
        assert_eq!(get("service_ips", "10.96.0.11 . tcp . 443").as_deref(), Some("goto cluster_tcp_2"));
        assert_eq!(get("service_ips", "192.0.2.7 . tcp . 443").as_deref(), Some("goto local_tcp_1"));
        assert_eq!(get("service_ips", "198.51.100.1 . tcp . 443").as_deref(), Some("goto local_tcp_1"));
        assert_eq!(get("service_nodeports", "tcp . 30443").as_deref(), Some("goto nodeport_local_tcp_1"));
        // external clients: this node's endpoint only
        assert_eq!(get("np_local_backends_tcp", "30443 . 0").as_deref(), Some("10.88.0.5 . 8080"));
        assert_eq!(get("local_backends_tcp", "192.0.2.7 . 443 . 0").as_deref(), Some("10.88.0.5 . 8080"));
        assert_eq!(get("local_backends_tcp", "192.0.2.7 . 443 . 1"), None);
        // clients in the cluster: the shortcut to both endpoints
        assert_eq!(get("shortcut_ips", "192.0.2.7 . tcp . 443").as_deref(), Some("goto cluster_tcp_2"));
        assert_eq!(get("shortcut_ips", "198.51.100.1 . tcp . 443").as_deref(), Some("goto cluster_tcp_2"));
        assert_eq!(get("backends_tcp", "192.0.2.7 . 443 . 1").as_deref(), Some("10.88.0.6 . 8080"));
        assert_eq!(get("shortcut_nodeports", "tcp . 30443").as_deref(), Some("goto nodeport_tcp_2"));
        assert_eq!(get("np_backends_tcp", "30443 . 1").as_deref(), Some("10.88.0.6 . 8080"));
        let chains: Vec<CountChain> = r.count_chains.iter().copied().collect();
        assert_eq!(chains, vec![
            (Path::Cluster, Protocol::Tcp, 2),
            (Path::ExternalLocal, Protocol::Tcp, 1),
            (Path::NodePort, Protocol::Tcp, 2),
            (Path::NodePortLocal, Protocol::Tcp, 1)
        ]);
        assert_eq!(count_chain(&ctx(), (Path::NodePortLocal, Protocol::Udp, 1)).rules, vec![
            "dnat ip to udp dport . numgen random mod 1 map @np_local_backends_udp".to_string()
        ]);
        let (s, _) = full(&ctx(), &model(vec![e]));
        for want in [
            "ip saddr 10.88.0.0/16 ip daddr . meta l4proto . th dport vmap @shortcut_ips\n\t\tfib saddr type local ip daddr . meta l4proto . th dport vmap @shortcut_ips\n\t\tip daddr . meta l4proto . th dport vmap @service_ips\n",
            "fib saddr type local ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @shortcut_nodeports\n",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert_eq!(count_chain(&ctx(), (Path::NodePort, Protocol::Tcp, 3)).rules[0], "meta mark set meta mark | 0x4000");
    }

    #[test]
    fn no_usable_endpoints_means_reject_elements() {
        let mut p = port("ns", "empty", [10, 96, 0, 12], 80);
        p.node_port = Some(30080);
        p.internal_local = true;
        let e = entry(3, p, vec![ep([10, 88, 0, 5], "n2")]);
        let r = render_service(&ctx(), &e);
        assert!(r.elements.contains_key(&("no_endpoints", "10.96.0.12 . tcp . 80".to_string())));
        assert!(!r.elements.contains_key(&("service_ips", "10.96.0.12 . tcp . 80".to_string())));
        // the node port follows externalTrafficPolicy Cluster: the remote endpoint is fine
        assert!(r.elements.contains_key(&("service_nodeports", "tcp . 30080".to_string())));
        let e = entry(3, port("ns", "empty", [10, 96, 0, 12], 80), vec![]);
        let (s, _) = full(&ctx(), &model(vec![e]));
        assert!(s.contains("add element ip nodelet no_endpoints { 10.96.0.12 . tcp . 80 comment \"ns/empty:http\" }"), "{s}");
    }

    #[test]
    fn session_affinity_gets_its_own_chains_and_sticky_map() {
        let mut p = port("ns", "sticky", [10, 96, 0, 13], 80);
        p.affinity_timeout = Some(600);
        let e = entry(7, p, vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n1")]);
        let r = render_service(&ctx(), &e);
        assert_eq!(r.elements[&("service_ips", "10.96.0.13 . tcp . 80".to_string())].value.as_deref(), Some("goto aff7_c"));
        let names: Vec<&str> = r.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["aff7_c_0a580005_8080", "aff7_c_0a580006_8080", "aff7_c"]);
        assert_eq!(r.chains[0].rules, vec![
            "update @sticky7_c_600_0a580005_8080 { ip saddr }".to_string(),
            "meta l4proto tcp dnat ip to 10.88.0.5:8080".to_string()
        ]);
        assert_eq!(r.chains[2].rules[1..], [
            "ip saddr @sticky7_c_600_0a580005_8080 goto aff7_c_0a580005_8080".to_string(),
            "ip saddr @sticky7_c_600_0a580006_8080 goto aff7_c_0a580006_8080".to_string(),
            "numgen random mod 2 vmap { 0 : goto aff7_c_0a580005_8080, 1 : goto aff7_c_0a580006_8080 }".to_string(),
        ]);
        assert_eq!(r.sticky[0].timeout, 600);
        assert!(r.count_chains.is_empty());
        let (s, _) = full(&ctx(), &model(vec![e]));
        assert!(
            s.contains("\tset sticky7_c_600_0a580005_8080 { typeof ip saddr; size 65535; flags timeout; timeout 600s; comment \"ns/sticky:http 10.88.0.5:8080\"; }"),
            "{s}"
        );
    }

    #[test]
    fn a_staged_full_sync_fills_the_other_generation_then_switches() {
        let mut sticky = port("ns", "sticky", [10, 96, 0, 13], 80);
        sticky.affinity_timeout = Some(60);
        let a = entry(1, port("ns", "a", [10, 96, 0, 1], 80), vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n1")]);
        let b = entry(2, sticky, vec![ep([10, 88, 0, 7], "n1")]);
        let renders: Vec<Rendered> = [&a, &b].iter().map(|e| render_service(&ctx(), e)).collect();
        // a new table: everything but the fixed chains comes first, the fixed chains last
        let fresh = staged(&ctx(), None, renders.iter(), 2);
        assert!(fresh.declare.starts_with("table ip nodelet {\n\tcomment"), "{}", fresh.declare);
        assert!(fresh.declare.contains("\tmap service_ips {") && fresh.declare.contains("\tchain cluster_tcp_2 {"), "{}", fresh.declare);
        assert!(fresh.declare.contains("\tset sticky2_c_60_0a580007_8080 {") && !fresh.declare.contains("chain services"), "{}", fresh.declare);
        assert_eq!(fresh.elements.len(), 2);
        let elements = fresh.elements.concat();
        assert!(elements.contains("add element ip nodelet backends_tcp { 10.96.0.1 . 80 . 0 : 10.88.0.5 . 8080"), "{elements}");
        assert!(elements.contains("hairpin"), "{elements}");
        assert!(fresh.switch.starts_with("table ip nodelet {\n\tchain services {"), "{}", fresh.switch);
        assert_eq!(fresh.counts, full(&ctx(), &model(vec![a.clone(), b.clone()])).1);

        // a known table at generation 0: the new maps are the _b ones
        let existing = Existing {
            generation: 0,
            chains: ["cluster_tcp_2", "cluster_tcp_7", "aff2_c", "aff2_c_0a580007_8080"].map(String::from).into(),
            sticky: ["sticky2_c_60_0a580007_8080", "sticky9_c_60_0a580009_8080"].map(String::from).into(),
        };
        let next = staged(&ctx().at(1), Some(&existing), renders.iter(), 2);
        assert!(next.declare.contains("\tmap service_ips_b {") && !next.declare.contains("comment"), "{}", next.declare);
        assert!(!next.declare.contains("chain cluster_tcp_2") && !next.declare.contains("set sticky2"), "{}", next.declare);
        assert!(next.elements.concat().contains("add element ip nodelet backends_tcp_b {"));
        let switch: Vec<&str> = next.switch.lines().collect();
        for want in [
            "flush chain ip nodelet services",
            "flush chain ip nodelet cluster_tcp_7",
            "delete map ip nodelet service_ips",
            "delete set ip nodelet hairpin",
            "delete chain ip nodelet cluster_tcp_7",
            "delete set ip nodelet sticky9_c_60_0a580009_8080",
            "\t\tip daddr . meta l4proto . th dport vmap @service_ips_b",
            "\t\tdnat ip to ip daddr . tcp dport . numgen random mod 2 map @backends_tcp_b",
        ] {
            assert!(switch.contains(&want), "missing {want:?} in\n{}", next.switch);
        }
        // the sticky set that stays keeps its clients
        assert!(!next.switch.contains("delete set ip nodelet sticky2") && !next.switch.contains("set sticky2_c_60_0a580007_8080 {"), "{}", next.switch);
        let flushes = switch.iter().position(|l| l.starts_with("delete map")).unwrap();
        assert!(switch[..flushes].iter().all(|l| l.starts_with("flush chain")), "chains are emptied before the maps go: {}", next.switch);
    }

    #[test]
    fn an_ipv6_table_speaks_ip6() {
        let c = Context { table: "nodelet".into(), family: Family::V6, generation: 0, node_name: "n1".into(), pod_cidr: Some("fd00:88::/64".into()) };
        let mut p = port("ns", "six", [0; 4], 80);
        p.cluster_ips = vec!["fd00:96::10".parse().unwrap()];
        p.node_port = Some(30080);
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let eps = vec![Endpoint { ip: v6("fd00:88::5"), ..ep([0; 4], "n1") }];
        let plain = entry(1, p.clone(), eps.clone());
        p.affinity_timeout = Some(60);
        p.key.service.name = "six-sticky".into();
        let sticky = entry(2, p, eps);
        let (s, _) = full(&c, &model(vec![plain, sticky]));
        for want in [
            "add table ip6 nodelet\ndelete table ip6 nodelet\ntable ip6 nodelet {",
            "type ipv6_addr . inet_proto . inet_service : verdict",
            "ip6 daddr != ::1 fib daddr type local meta l4proto . th dport vmap @service_nodeports",
            "ct status dnat ip6 saddr . ip6 daddr @hairpin masquerade fully-random",
            "ip6 saddr != fd00:88::/64 meta mark set meta mark | 0x4000",
            "dnat ip6 to ip6 daddr . tcp dport . numgen random mod 1 map @backends_tcp",
            "meta l4proto tcp dnat ip6 to [fd00:88::5]:8080",
            "ip6 saddr @sticky2_c_60_fd000088000000000000000000000005_8080 goto aff2_c_fd000088000000000000000000000005_8080",
            "set sticky2_c_60_fd000088000000000000000000000005_8080 { typeof ip6 saddr; size 65535; flags timeout; timeout 60s;",
            "update @sticky2_c_60_fd000088000000000000000000000005_8080 { ip6 saddr }",
            "add element ip6 nodelet backends_tcp { fd00:96::10 . 80 . 0 : fd00:88::5 . 8080",
            "add element ip6 nodelet hairpin { fd00:88::5 . fd00:88::5 }",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(!s.contains(" ip saddr") && !s.contains(" ip daddr") && !s.contains("ipv4_addr"), "{s}");
        assert_eq!(delete_table(&c), "add table ip6 nodelet\ndelete table ip6 nodelet\n");
    }

    #[test]
    fn one_endpoint_change_touches_only_that_services_elements() {
        let c = ctx();
        let a = entry(1, port("ns", "a", [10, 96, 0, 1], 80), vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n1")]);
        let b = entry(2, port("ns", "b", [10, 96, 0, 2], 80), vec![ep([10, 88, 1, 5], "n1"), ep([10, 88, 1, 6], "n1")]);
        let mut a2 = a.clone();
        a2.endpoints[1].ip = [10, 88, 0, 7].into();
        let mut existing: BTreeSet<CountChain> = [(Path::Cluster, Protocol::Tcp, 2)].into();
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &a)), Some(&render_service(&c, &a2)), &mut existing, &mut s);
        assert_eq!(
            s,
            "delete element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 }\n\
             add element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 : 10.88.0.7 . 8080 }\n"
        );
        assert!(!s.contains("10.96.0.2") && !s.contains("service_ips"));
        // unchanged service: nothing at all
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &b)), Some(&render_service(&c, &b)), &mut existing, &mut s);
        assert_eq!(s, "");
    }

    #[test]
    fn growing_a_service_adds_a_count_chain_once_and_repoints_the_dispatch_element() {
        let c = ctx();
        let a = entry(1, port("ns", "a", [10, 96, 0, 1], 80), vec![ep([10, 88, 0, 5], "n1")]);
        let mut a3 = a.clone();
        a3.endpoints.extend([ep([10, 88, 0, 6], "n1"), ep([10, 88, 0, 7], "n1")]);
        let mut existing: BTreeSet<CountChain> = [(Path::Cluster, Protocol::Tcp, 1)].into();
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &a)), Some(&render_service(&c, &a3)), &mut existing, &mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines, vec![
            "add chain ip nodelet cluster_tcp_3",
            "add rule ip nodelet cluster_tcp_3 ip saddr != 10.88.0.0/16 meta mark set meta mark | 0x4000",
            "add rule ip nodelet cluster_tcp_3 dnat ip to ip daddr . tcp dport . numgen random mod 3 map @backends_tcp",
            "delete element ip nodelet service_ips { 10.96.0.1 . tcp . 80 }",
            "add element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 : 10.88.0.6 . 8080, 10.96.0.1 . 80 . 2 : 10.88.0.7 . 8080 }",
            "add element ip nodelet service_ips { 10.96.0.1 . tcp . 80 comment \"ns/a:http\" : goto cluster_tcp_3 }",
        ]);
        assert!(existing.contains(&(Path::Cluster, Protocol::Tcp, 3)));
    }

    #[test]
    fn removing_a_service_deletes_its_elements_chains_and_maps() {
        let c = ctx();
        let mut p = port("ns", "s", [10, 96, 0, 13], 80);
        p.affinity_timeout = Some(60);
        let e = entry(9, p, vec![ep([10, 88, 0, 5], "n1")]);
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &e)), None, &mut BTreeSet::new(), &mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines, vec![
            "delete element ip nodelet service_ips { 10.96.0.13 . tcp . 80 }",
            "delete chain ip nodelet aff9_c",
            "delete chain ip nodelet aff9_c_0a580005_8080",
            "delete set ip nodelet sticky9_c_60_0a580005_8080",
        ]);
    }

    #[test]
    fn affinity_endpoint_removal_forgets_only_that_endpoints_clients() {
        let c = ctx();
        let mut p = port("ns", "s", [10, 96, 0, 13], 80);
        p.affinity_timeout = Some(60);
        let e = entry(9, p, vec![ep([10, 88, 0, 5], "n1"), ep([10, 88, 0, 6], "n1")]);
        let mut e1 = e.clone();
        e1.endpoints.pop();
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &e)), Some(&render_service(&c, &e1)), &mut BTreeSet::new(), &mut s);
        assert!(s.contains("flush chain ip nodelet aff9_c\n"), "{s}");
        assert!(s.contains("delete chain ip nodelet aff9_c_0a580006_8080\n"), "{s}");
        assert!(s.ends_with("delete set ip nodelet sticky9_c_60_0a580006_8080\n"), "{s}");
        assert!(!s.contains("delete set ip nodelet sticky9_c_60_0a580005_8080"), "the other endpoint's clients stay: {s}");
        // adding an endpoint keeps the clients where they are
        let mut s = String::new();
        diff(&c, Some(&render_service(&c, &e1)), Some(&render_service(&c, &e)), &mut BTreeSet::new(), &mut s);
        assert!(!s.contains("delete set"), "{s}");
        assert!(s.contains("add set ip nodelet sticky9_c_60_0a580006_8080 "), "{s}");
        assert!(s.contains("add chain ip nodelet aff9_c_0a580006_8080\n"), "{s}");
    }

    #[test]
    fn comments_are_cleaned_and_bounded() {
        assert_eq!(comment_text("a\"b\\c"), "abc");
        assert_eq!(comment_text(&"x".repeat(300)).len(), COMMENT_MAX);
    }

    #[test]
    fn hairpin_changes() {
        let mut s = String::new();
        hairpin_diff(&ctx(), &[[10, 0, 0, 1].into()], &[[10, 0, 0, 2].into()], &mut s);
        assert_eq!(s, "delete element ip nodelet hairpin { 10.0.0.2 . 10.0.0.2 }\nadd element ip nodelet hairpin { 10.0.0.1 . 10.0.0.1 }\n");
    }
}
