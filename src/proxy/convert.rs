//! Pure conversion of the apiserver's Service and EndpointSlice objects into the proxy's model.
//! Bad parts are skipped with a warning that names the object and the cause; the rest stays.

use super::model::{Family, NodeNames, Protocol, ServiceKey, ServiceName, ServicePort, Slice, SliceEndpoint, SlicePort};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::IpAddr;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default for sessionAffinityConfig.clientIP.timeoutSeconds.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// A conversion's result and what was wrong with the input (each warning names the object).
#[derive(Debug, Default, PartialEq)]
pub struct Converted<T> {
    pub value: T,
    pub warnings: Vec<String>,
}

/// The Service's name, or None when the object has none (it cannot be programmed or deleted).
pub fn service_name(svc: &Service) -> Option<ServiceName> {
    Some(ServiceName::new(svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()), svc.metadata.name.clone()?))
}

/// Address parsing: Some for an address of `family`, None for one of the other family (the
/// other family's table programs it), an error for garbage.
fn parse_ip(s: &str, family: Family) -> Result<Option<IpAddr>, String> {
    match s.trim().parse::<IpAddr>() {
        Ok(ip) if Family::of(&ip) == family => Ok(Some(ip)),
        Ok(_) => Ok(None),
        Err(_) => Err(format!("invalid IP address {s:?}")),
    }
}

fn parse_port(what: &str, p: i32) -> Result<u16, String> {
    u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| format!("invalid {what} {p}"))
}

/// The ports of a Service the proxy programs in the table of `family`, with that family's
/// addresses. Headless (clusterIP None) and ExternalName Services, and Services without a
/// clusterIP of the family, have none. A bad address or port skips the Service (or that port)
/// with a warning.
pub fn service(svc: &Service, family: Family) -> Converted<Vec<ServicePort>> {
    let mut out = Converted::default();
    let Some(name) = service_name(svc) else {
        out.warnings.push("Service without a name skipped".into());
        return out;
    };
    let Some(spec) = &svc.spec else { return out };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return out;
    }
    let mut raw_cluster_ips: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).collect();
    if raw_cluster_ips.is_empty() {
        raw_cluster_ips.extend(spec.cluster_ip.as_deref());
    }
    if raw_cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("none")) || raw_cluster_ips.iter().all(|ip| ip.is_empty()) {
        return out; // headless, or not allocated yet
    }
    let mut cluster_ips = Vec::new();
    for raw in raw_cluster_ips {
        match parse_ip(raw, family) {
            Ok(Some(ip)) => cluster_ips.push(ip),
            Ok(None) => {}
            Err(e) => {
                out.warnings.push(format!("Service {name} skipped: clusterIP: {e}"));
                return out;
            }
        }
    }
    if cluster_ips.is_empty() {
        return out; // of the other family only
    }
    let mut addresses = |what: &str, raws: &mut dyn Iterator<Item = &String>| -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for raw in raws {
            match parse_ip(raw, family) {
                Ok(Some(ip)) => ips.push(ip),
                Ok(None) => {}
                Err(e) => out.warnings.push(format!("Service {name}: {what} {raw:?} skipped: {e}")),
            }
        }
        ips.sort();
        ips.dedup();
        ips
    };
    let external_ips = addresses("externalIP", &mut spec.external_ips.iter().flatten());
    let lb_ips = if kind == "LoadBalancer" {
        let status = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        // ipMode Proxy means the load balancer sends traffic to the node, not to the IP.
        let ingress = status.into_iter().flatten().filter(|i| i.ip_mode.as_deref() != Some("Proxy"));
        addresses("load balancer ingress IP", &mut ingress.filter_map(|i| i.ip.as_ref()))
    } else {
        Vec::new()
    };
    let affinity_timeout = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let t = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
            match t {
                None => Some(DEFAULT_AFFINITY_TIMEOUT),
                Some(t) if (1..=86400).contains(&t) => Some(t as u32),
                Some(t) => {
                    out.warnings.push(format!("Service {name}: session affinity timeout {t} out of range 1..86400, using {DEFAULT_AFFINITY_TIMEOUT}"));
                    Some(DEFAULT_AFFINITY_TIMEOUT)
                }
            }
        }
        _ => None,
    };
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let with_node_ports = matches!(kind, "NodePort" | "LoadBalancer");
    let mut seen = std::collections::BTreeSet::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let what = format!("Service {name} port {port_name:?}");
        let protocol = match Protocol::parse(p.protocol.as_deref()) {
            Ok(proto) => proto,
            Err(e) => {
                out.warnings.push(format!("{what} skipped: {e}"));
                continue;
            }
        };
        let port = match parse_port("port", p.port) {
            Ok(port) => port,
            Err(e) => {
                out.warnings.push(format!("{what} skipped: {e}"));
                continue;
            }
        };
        let node_port = match p.node_port.filter(|_| with_node_ports) {
            None => None,
            Some(np) => match parse_port("nodePort", np) {
                Ok(np) => Some(np),
                Err(e) => {
                    out.warnings.push(format!("{what} skipped: {e}"));
                    continue;
                }
            },
        };
        let key = ServiceKey { service: name.clone(), port_name: port_name.into(), protocol };
        if !seen.insert(key.clone()) {
            out.warnings.push(format!("{what} skipped: duplicate port name and protocol"));
            continue;
        }
        out.value.push(ServicePort {
            key,
            protocol,
            port,
            node_port,
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            lb_ips: lb_ips.clone(),
            affinity_timeout,
            external_local,
            internal_local,
        });
    }
    // Held for as long as the Service exists: no spare capacity.
    out.value.shrink_to_fit();
    out
}

/// The slice's namespace/name, or None when the object has no name.
pub fn slice_name(slice: &EndpointSlice) -> Option<ServiceName> {
    Some(ServiceName::new(slice.metadata.namespace.clone().unwrap_or_else(|| "default".into()), slice.metadata.name.clone()?))
}

/// An EndpointSlice as the proxy's table of `family` uses it: None when it does not belong to a
/// Service or is of another address type. Bad ports or addresses are skipped with a warning
/// naming the slice.
pub fn slice(slice: &EndpointSlice, family: Family, node_names: &mut NodeNames) -> Converted<Option<Slice>> {
    let mut out = Converted { value: None, warnings: Vec::new() };
    let Some(name) = slice_name(slice) else {
        out.warnings.push("EndpointSlice without a name skipped".into());
        return out;
    };
    if slice.address_type != family.slice_address_type() {
        return out;
    }
    let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
        return out;
    };
    let mut ports = Vec::new();
    for p in slice.ports.iter().flatten() {
        let pname = p.name.clone().unwrap_or_default();
        let protocol = match Protocol::parse(p.protocol.as_deref()) {
            Ok(proto) => proto,
            Err(e) => {
                out.warnings.push(format!("EndpointSlice {name} port {pname:?} skipped: {e}"));
                continue;
            }
        };
        let Some(port) = p.port else { continue }; // "all ports": nothing the proxy can use
        match parse_port("port", port) {
            Ok(port) => ports.push(SlicePort { name: pname, port, protocol }),
            Err(e) => out.warnings.push(format!("EndpointSlice {name} port {pname:?} skipped: {e}")),
        }
    }
    let mut endpoints = Vec::new();
    for e in &slice.endpoints {
        // kube-proxy uses the first address only; the others are the same pod.
        let Some(raw) = e.addresses.first() else { continue };
        let ip = match parse_ip(raw, family) {
            Ok(Some(ip)) => ip,
            Ok(None) => {
                out.warnings.push(format!("EndpointSlice {name}: endpoint {raw:?} skipped: not an address of the slice's type {}", slice.address_type));
                continue;
            }
            Err(e) => {
                out.warnings.push(format!("EndpointSlice {name}: endpoint skipped: {e}"));
                continue;
            }
        };
        let c = e.conditions.as_ref();
        // Unset ready means ready; unset serving follows ready; unset terminating means not.
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(SliceEndpoint { ip, node_name: e.node_name.as_deref().map(|n| node_names.get(n)), ready, serving, terminating });
    }
    // Held for as long as the slice exists: no spare capacity.
    ports.shrink_to_fit();
    endpoints.shrink_to_fit();
    out.value = Some(Slice { service: ServiceName::new(name.namespace, service.clone()), ports, endpoints });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_ip_service_with_two_ports() {
        let s = svc(json!({
            "metadata": {"namespace": "web", "name": "front"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }));
        let c = service(&s, Family::V4);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.value.len(), 2);
        let http = &c.value[0];
        assert_eq!(http.key.to_string(), "web/front:http/tcp");
        assert_eq!((http.protocol, http.port, http.node_port), (Protocol::Tcp, 80, None));
        assert_eq!(http.cluster_ips, vec![IpAddr::from([10, 96, 0, 10])]);
        assert_eq!(c.value[1].protocol, Protocol::Udp);
        assert_eq!(http.affinity_timeout, None);
    }

    #[test]
    fn load_balancer_with_everything() {
        let s = svc(json!({
            "metadata": {"namespace": "ns", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11", "externalIPs": ["192.0.2.7", "2001:db8::1"],
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"port": 443, "nodePort": 30443, "protocol": "SCTP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "x.example"}]}}
        }));
        let c = service(&s, Family::V4);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let p = &c.value[0];
        assert_eq!(&*p.key.port_name, "");
        assert_eq!(p.node_port, Some(30443));
        assert_eq!(p.protocol, Protocol::Sctp);
        assert_eq!(p.external_ips, vec![IpAddr::from([192, 0, 2, 7])]);
        assert_eq!(p.lb_ips, vec![IpAddr::from([198, 51, 100, 1])]);
        assert_eq!(p.affinity_timeout, Some(60));
        assert!(p.external_local && p.internal_local);
    }

    #[test]
    fn headless_and_external_name_are_skipped_silently() {
        let h = svc(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert_eq!(service(&h, Family::V4), Converted::default());
        let e = svc(json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.example"}}));
        assert_eq!(service(&e, Family::V4), Converted::default());
    }

    #[test]
    fn bad_input_is_skipped_with_a_warning_naming_the_object() {
        let s = svc(json!({"metadata": {"namespace": "ns", "name": "bad"}, "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}}));
        let c = service(&s, Family::V4);
        assert!(c.value.is_empty());
        assert!(c.warnings[0].contains("ns/bad") && c.warnings[0].contains("10.96.0.300"), "{:?}", c.warnings);

        let s = svc(json!({"metadata": {"namespace": "ns", "name": "mixed"}, "spec": {"clusterIP": "10.96.0.3", "ports": [
            {"name": "a", "port": 80, "protocol": "ICMP"}, {"name": "b", "port": 70000}, {"name": "c", "port": 81}]}}));
        let c = service(&s, Family::V4);
        assert_eq!(c.value.len(), 1);
        assert_eq!(&*c.value[0].key.port_name, "c");
        assert_eq!(c.warnings.len(), 2);
        assert!(c.warnings.iter().all(|w| w.contains("ns/mixed")));
        assert!(c.warnings[0].contains("ICMP") && c.warnings[1].contains("70000"), "{:?}", c.warnings);
    }

    #[test]
    fn node_port_only_for_node_port_and_load_balancer_types() {
        let s = svc(json!({"metadata": {"name": "n"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.4",
            "ports": [{"port": 80, "nodePort": 30080}]}}));
        assert_eq!(service(&s, Family::V4).value[0].node_port, Some(30080));
        let s = svc(json!({"metadata": {"name": "n"}, "spec": {"clusterIP": "10.96.0.4", "ports": [{"port": 80, "nodePort": 30080}]}}));
        assert_eq!(service(&s, Family::V4).value[0].node_port, None);
    }

    #[test]
    fn endpoint_slice_conditions_ports_and_bad_addresses() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "web", "name": "front-abc", "labels": {SERVICE_NAME_LABEL: "front"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "x", "port": 0}],
            "endpoints": [
                {"addresses": ["10.88.0.5"], "nodeName": "n1"},
                {"addresses": ["10.88.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["not-an-ip"]}
            ]
        }))
        .unwrap();
        let c = slice(&s, Family::V4, &mut NodeNames::default());
        let v = c.value.unwrap();
        assert_eq!(v.service, ServiceName::new("web", "front"));
        assert_eq!(v.ports, vec![SlicePort { name: "http".into(), port: 8080, protocol: Protocol::Tcp }]);
        assert_eq!(v.endpoints.len(), 2);
        assert!(v.endpoints[0].ready && v.endpoints[0].serving && !v.endpoints[0].terminating);
        assert_eq!(v.endpoints[0].node_name.as_deref(), Some("n1"));
        assert!(!v.endpoints[1].ready && v.endpoints[1].serving && v.endpoints[1].terminating);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings.iter().all(|w| w.contains("web/front-abc")));
    }

    #[test]
    fn slices_without_service_label_or_of_other_families_are_ignored() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "x"}, "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert_eq!(slice(&s, Family::V4, &mut NodeNames::default()).value, None);
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "x", "labels": {SERVICE_NAME_LABEL: "s"}}, "addressType": "IPv6", "endpoints": []
        }))
        .unwrap();
        assert_eq!(slice(&s, Family::V4, &mut NodeNames::default()).value, None);
    }

    #[test]
    fn a_dual_stack_service_gives_each_family_its_addresses() {
        let s = svc(json!({
            "metadata": {"namespace": "ns", "name": "dual"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12", "fd00:96::12"],
                "externalIPs": ["192.0.2.7", "2001:db8::1"], "ports": [{"port": 80, "nodePort": 30080}]}
        }));
        let v4 = service(&s, Family::V4).value;
        let v6 = service(&s, Family::V6).value;
        assert_eq!(v4[0].cluster_ips, vec![IpAddr::from([10, 96, 0, 12])]);
        assert_eq!(v6[0].cluster_ips, vec!["fd00:96::12".parse::<IpAddr>().unwrap()]);
        assert_eq!(v6[0].external_ips, vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
        assert_eq!((v4[0].node_port, v6[0].node_port), (Some(30080), Some(30080)));
        let single = svc(json!({"metadata": {"name": "v4only"}, "spec": {"clusterIP": "10.96.0.13", "ports": [{"port": 80}]}}));
        assert!(service(&single, Family::V6).value.is_empty());

        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "dual-v6", "labels": {SERVICE_NAME_LABEL: "dual"}}, "addressType": "IPv6",
            "ports": [{"port": 8080}], "endpoints": [{"addresses": ["fd00:88::5"]}, {"addresses": ["10.88.0.5"]}]
        }))
        .unwrap();
        let c = slice(&s, Family::V6, &mut NodeNames::default());
        assert_eq!(c.value.unwrap().endpoints[0].ip, "fd00:88::5".parse::<IpAddr>().unwrap());
        assert!(c.warnings[0].contains("10.88.0.5"), "{:?}", c.warnings);
    }
}
