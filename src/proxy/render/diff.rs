//! The incremental sync's commands: what turns one Service port's part of the table into
//! another's, and the hairpin set's changes.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::render::fixtures::*;

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
        assert_eq!(
            lines,
            vec![
                "add chain ip nodelet cluster_tcp_3",
                "add rule ip nodelet cluster_tcp_3 ip saddr != 10.88.0.0/16 meta mark set meta mark | 0x4000",
                "add rule ip nodelet cluster_tcp_3 dnat ip to ip daddr . tcp dport . numgen random mod 3 map @backends_tcp",
                "delete element ip nodelet service_ips { 10.96.0.1 . tcp . 80 }",
                "add element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 : 10.88.0.6 . 8080, 10.96.0.1 . 80 . 2 : 10.88.0.7 . 8080 }",
                "add element ip nodelet service_ips { 10.96.0.1 . tcp . 80 comment \"ns/a:http\" : goto cluster_tcp_3 }",
            ]
        );
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
        assert_eq!(
            lines,
            vec![
                "delete element ip nodelet service_ips { 10.96.0.13 . tcp . 80 }",
                "delete chain ip nodelet aff9_c",
                "delete chain ip nodelet aff9_c_0a580005_8080",
                "delete set ip nodelet sticky9_c_60_0a580005_8080",
            ]
        );
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
    fn hairpin_changes() {
        let mut s = String::new();
        hairpin_diff(&ctx(), &[[10, 0, 0, 1].into()], &[[10, 0, 0, 2].into()], &mut s);
        assert_eq!(s, "delete element ip nodelet hairpin { 10.0.0.2 . 10.0.0.2 }\nadd element ip nodelet hairpin { 10.0.0.1 . 10.0.0.1 }\n");
    }
}
