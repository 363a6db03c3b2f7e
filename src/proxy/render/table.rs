//! The table as a whole: the fixed skeleton (maps, sets, hooked chains), the script that
//! replaces it in one transaction, and the staged full sync beside the live generation.

use super::*;

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

pub(super) fn sticky_decl(family: Family, m: &StickySet) -> String {
    let f = family.nft();
    format!("{{ typeof {f} saddr; size 65535; flags timeout; timeout {}s; comment \"{}\"; }}", m.timeout, comment_text(&m.comment))
}

pub(super) fn write_element(s: &mut String, key: &str, v: &ElementValue) {
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
pub(super) fn hairpin_key(ip: IpAddr) -> String {
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

/// The script that removes the table (it need not exist).
pub fn delete_table(ctx: &Context) -> String {
    let t = ctx.table_ref();
    format!("add table {t}\ndelete table {t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::render::fixtures::*;

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
}
