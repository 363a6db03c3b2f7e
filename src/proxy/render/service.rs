//! What one Service port contributes to the table: dispatch and backend elements, the shared
//! count chains it jumps to, ClientIP affinity chains and sticky sets, reject elements.

use super::*;

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
    let (ext_path, np_path) = if port.external_local { (Path::ExternalLocal, Path::NodePortLocal) } else { (Path::External, Path::NodePort) };
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
fn affinity_chains(ctx: &Context, out: &mut Rendered, chain: &str, path: Path, port: &ServicePort, eps: &[&Endpoint], timeout: u32, name: &str) {
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
            rules: vec![format!("update @{sticky} {{ {f} saddr }}"), format!("meta l4proto {proto} dnat {f} to {}", socket_text(e.ip, e.port))],
        });
        rules.push(format!("{f} saddr @{sticky} goto {ep_chain}"));
        gotos.push(format!("{i} : goto {ep_chain}"));
        out.sticky.push(StickySet { name: sticky, timeout, comment: format!("{name} {}", socket_text(e.ip, e.port)) });
    }
    rules.push(format!("numgen random mod {} vmap {{ {} }}", eps.len(), gotos.join(", ")));
    out.chains.push(Chain { name: chain.to_string(), comment: Some(comment_text(&format!("{name} {} ClientIP {timeout}s", path.name()))), rules });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::render::fixtures::*;

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
        assert_eq!(
            chains,
            vec![
                (Path::Cluster, Protocol::Tcp, 2),
                (Path::ExternalLocal, Protocol::Tcp, 1),
                (Path::NodePort, Protocol::Tcp, 2),
                (Path::NodePortLocal, Protocol::Tcp, 1)
            ]
        );
        assert_eq!(
            count_chain(&ctx(), (Path::NodePortLocal, Protocol::Udp, 1)).rules,
            vec!["dnat ip to udp dport . numgen random mod 1 map @np_local_backends_udp".to_string()]
        );
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
        assert_eq!(
            r.chains[0].rules,
            vec!["update @sticky7_c_600_0a580005_8080 { ip saddr }".to_string(), "meta l4proto tcp dnat ip to 10.88.0.5:8080".to_string()]
        );
        assert_eq!(
            r.chains[2].rules[1..],
            [
                "ip saddr @sticky7_c_600_0a580005_8080 goto aff7_c_0a580005_8080".to_string(),
                "ip saddr @sticky7_c_600_0a580006_8080 goto aff7_c_0a580006_8080".to_string(),
                "numgen random mod 2 vmap { 0 : goto aff7_c_0a580005_8080, 1 : goto aff7_c_0a580006_8080 }".to_string(),
            ]
        );
        assert_eq!(r.sticky[0].timeout, 600);
        assert!(r.count_chains.is_empty());
        let (s, _) = full(&ctx(), &model(vec![e]));
        assert!(
            s.contains(
                "\tset sticky7_c_600_0a580005_8080 { typeof ip saddr; size 65535; flags timeout; timeout 600s; comment \"ns/sticky:http 10.88.0.5:8080\"; }"
            ),
            "{s}"
        );
    }
}
