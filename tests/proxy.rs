//! The service proxy against the real kernel: its table lives in a "node" network namespace
//! the test creates, pods and a client are namespaces of their own (see proxy_support).
//! Needs root.

mod proxy_support;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use nodelet::proxy::apply::Netns;
use nodelet::proxy::model::Family;
use nodelet::proxy::{Proxier, ProxyConfig};
use proxy_support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn proxier(lab: &Lab) -> Proxier {
    let mut config = ProxyConfig::new(NODE_NAME);
    config.table = lab.table.clone();
    config.pod_cidr = Some(POD_CIDR.into());
    config.netns = Netns::named(&lab.node);
    config.debounce = Duration::from_millis(20);
    Proxier::new(config).expect("config")
}

fn service(name: &str, cluster_ip: &str, spec: Value) -> Service {
    let mut v = json!({"metadata": {"namespace": "default", "name": name},
                       "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip]}});
    for (k, val) in spec.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn tcp_service(name: &str, cluster_ip: &str) -> Service {
    service(name, cluster_ip, json!({"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}))
}

/// A slice for Service `svc` with the given (address, nodeName) endpoints, all ready.
fn slice(svc: &str, port_name: &str, port: u16, protocol: &str, eps: &[(Ipv4Addr, &str)]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps.iter().map(|(ip, node)| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": node})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{svc}-xyz"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": protocol}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn count_by_pod(answers: &[std::io::Result<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        let a = a.as_ref().expect("every connection answered");
        *counts.entry(who(a).to_string()).or_default() += 1;
    }
    counts
}

fn host_tables() -> String {
    sh_out(&["nft", "list", "tables"])
}

#[tokio::test]
async fn cluster_ip_reaches_every_endpoint_evenly_and_masquerades_outside_clients() {
    let mut lab = Lab::new("even");
    let p = proxier(&lab);
    let mut eps = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        eps.push((lab.add_pod(name, 10 + i as u8), NODE_NAME));
    }
    lab.add_pod("d", 20); // not an endpoint
    p.upsert_service(&tcp_service("web", "10.96.0.10"));
    p.upsert_slice(&slice("web", "http", 8080, "TCP", &eps));
    p.sync().await.expect("sync");
    let answers = tcp_ask_many(&lab.client, addr("10.96.0.10", 80), 300);
    let counts = count_by_pod(&answers);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n >= 60), "uneven: {counts:?}");
    // the client is outside the pod network: its traffic is masqueraded to the bridge address
    assert_eq!(seen_from(answers[0].as_ref().unwrap()), BRIDGE_IP.to_string());
    // a pod reaching the Service keeps its own address
    let from_pod = tcp_ask(&lab.pod_ns("d"), addr("10.96.0.10", 80)).unwrap();
    assert_eq!(seen_from(&from_pod), "10.244.0.20", "{from_pod}");
    let h = p.health();
    assert!(h.last_sync.is_some() && h.failed_syncs == 0, "{h:?}");
    assert_eq!(h.service_ports, 1);
    assert!(h.elements >= 5 && h.rules > 10, "{h:?}");
    let table = lab.list_table();
    assert!(table.contains("comment \"default/web:http\""), "{table}");
    // a resync fills the other generation's maps and switches over; twice brings the names back
    for want in ["service_ips_b", "service_ips "] {
        p.full_sync().await.expect("resync");
        assert!(lab.list_table().contains(&format!("map {want}")), "{}", lab.list_table());
        let counts = count_by_pod(&tcp_ask_many(&lab.client, addr("10.96.0.10", 80), 30));
        assert_eq!(counts.len(), 3, "after a resync: {counts:?}");
    }
    assert_eq!(p.health().failed_syncs, 0);
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn udp_follows_an_endpoint_change_through_conntrack_cleanup() {
    let mut lab = Lab::new("udp");
    let p = proxier(&lab);
    let a = lab.add_pod("a", 10);
    let b = lab.add_pod("b", 11);
    p.upsert_service(&service("dns", "10.96.0.53", json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]})));
    p.upsert_slice(&slice("dns", "dns", 5353, "UDP", &[(a, NODE_NAME), (b, NODE_NAME)]));
    p.sync().await.unwrap();
    let sock = udp_socket(&lab.client, addr("10.96.0.53", 53));
    let first = udp_ask(&sock).expect("UDP answer");
    for _ in 0..5 {
        assert_eq!(who(&udp_ask(&sock).unwrap()), who(&first), "one flow, one endpoint");
    }
    // remove the endpoint that answered; the same socket (the same flow) must move over
    let (gone, stays) = if who(&first) == "a" { (a, b) } else { (b, a) };
    let _ = gone;
    p.upsert_slice(&slice("dns", "dns", 5353, "UDP", &[(stays, NODE_NAME)]));
    p.sync().await.unwrap();
    let after = udp_ask(&sock).expect("UDP answer after the change");
    assert_ne!(who(&after), who(&first), "the flow still goes to the removed endpoint");
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn node_port_from_another_namespace_with_both_traffic_policies() {
    let mut lab = Lab::new("np");
    let p = proxier(&lab);
    let a = lab.add_pod("a", 10);
    let b = lab.add_pod("b", 11);
    p.upsert_service(&service(
        "np",
        "10.96.0.20",
        json!({"type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    ));
    p.upsert_slice(&slice("np", "http", 8080, "TCP", &[(a, NODE_NAME), (b, "node-b")]));
    p.upsert_service(&service(
        "local",
        "10.96.0.21",
        json!({"type": "NodePort", "externalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
    ));
    p.upsert_slice(&slice("local", "http", 8080, "TCP", &[(a, NODE_NAME), (b, "node-b")]));
    p.sync().await.unwrap();
    let answers = tcp_ask_many(&lab.client, SocketAddr::new(NODE_IP.into(), 30080), 40);
    let counts = count_by_pod(&answers);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(seen_from(answers[0].as_ref().unwrap()), BRIDGE_IP.to_string(), "Cluster policy masquerades");
    // Local: only this node's endpoint, and the client's own address
    let answers = tcp_ask_many(&lab.client, SocketAddr::new(NODE_IP.into(), 30081), 20);
    for a in &answers {
        let a = a.as_ref().unwrap();
        assert_eq!((who(a), seen_from(a)), ("a", CLIENT_IP.to_string().as_str()), "{a}");
    }
    // clients inside the cluster take the shortcut to every endpoint: a pod, and the node itself
    lab.add_pod("d", 20);
    let from_pod = count_by_pod(&tcp_ask_many(&lab.pod_ns("d"), SocketAddr::new(NODE_IP.into(), 30081), 40));
    assert_eq!(from_pod.len(), 2, "pods reach every endpoint of a Local node port: {from_pod:?}");
    let from_node = count_by_pod(&tcp_ask_many(&lab.node, SocketAddr::new(NODE_IP.into(), 30081), 40));
    assert_eq!(from_node.len(), 2, "the node reaches every endpoint of a Local node port: {from_node:?}");
    println!("{}", lab.list_table()); // shown with --nocapture: what an operator sees
                                      // a node port is not served on addresses that are not the node's
    assert!(tcp_ask(&lab.client, addr("10.96.0.99", 30080)).is_err());
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn session_affinity_sticks_to_one_endpoint() {
    let mut lab = Lab::new("aff");
    let p = proxier(&lab);
    let mut eps = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        eps.push((lab.add_pod(name, 10 + i as u8), NODE_NAME));
    }
    p.upsert_service(&service(
        "sticky",
        "10.96.0.30",
        json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "ports": [{"name": "http", "port": 80}]}),
    ));
    p.upsert_slice(&slice("sticky", "http", 8080, "TCP", &eps));
    p.sync().await.unwrap();
    let counts = count_by_pod(&tcp_ask_many(&lab.client, addr("10.96.0.30", 80), 30));
    assert_eq!(counts.len(), 1, "affinity broken: {counts:?}");
    // another endpoint goes away: the client keeps its endpoint
    let chosen = counts.keys().next().unwrap().clone();
    let others: Vec<(Ipv4Addr, &str)> = eps.iter().zip(["a", "b", "c"]).filter(|(_, n)| *n != chosen).map(|(e, _)| *e).collect();
    let mut kept = others.clone();
    kept.truncate(1);
    kept.push(*eps.iter().zip(["a", "b", "c"]).find(|(_, n)| *n == chosen).unwrap().0);
    p.upsert_slice(&slice("sticky", "http", 8080, "TCP", &kept));
    p.sync().await.unwrap();
    let counts = count_by_pod(&tcp_ask_many(&lab.client, addr("10.96.0.30", 80), 20));
    assert_eq!(counts.keys().collect::<Vec<_>>(), vec![&chosen], "the client lost its endpoint: {counts:?}");
    // a resync keeps the sticky sets, and so the client's endpoint
    p.full_sync().await.expect("resync");
    let counts = count_by_pod(&tcp_ask_many(&lab.client, addr("10.96.0.30", 80), 20));
    assert_eq!(counts.keys().collect::<Vec<_>>(), vec![&chosen], "a resync lost the client's endpoint: {counts:?}");
    // the remembered endpoint goes away: the client is sent to one of the others, and sticks
    let rest = others;
    p.upsert_slice(&slice("sticky", "http", 8080, "TCP", &rest));
    p.sync().await.unwrap();
    let counts = count_by_pod(&tcp_ask_many(&lab.client, addr("10.96.0.30", 80), 20));
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert!(!counts.contains_key(&chosen), "{counts:?}");
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn service_without_endpoints_rejects_at_once() {
    let lab = Lab::new("rej");
    let p = proxier(&lab);
    p.upsert_service(&tcp_service("empty", "10.96.0.40"));
    p.upsert_service(&service("emptyudp", "10.96.0.41", json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]})));
    p.sync().await.unwrap();
    let started = Instant::now();
    let err = tcp_ask(&lab.client, addr("10.96.0.40", 80)).expect_err("no endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let sock = udp_socket(&lab.client, addr("10.96.0.41", 53));
    let err = udp_ask(&sock).expect_err("no endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn hairpin_is_masqueraded_and_pod_to_pod_keeps_the_source() {
    let mut lab = Lab::new("hair");
    let p = proxier(&lab);
    let a = lab.add_pod("a", 10);
    lab.add_pod("b", 11);
    p.upsert_service(&tcp_service("self", "10.96.0.50"));
    p.upsert_slice(&slice("self", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.sync().await.unwrap();
    let own = tcp_ask(&lab.pod_ns("a"), addr("10.96.0.50", 80)).expect("a pod reaches itself through its Service");
    assert_eq!((who(&own), seen_from(&own)), ("a", BRIDGE_IP.to_string().as_str()), "{own}");
    let other = tcp_ask(&lab.pod_ns("b"), addr("10.96.0.50", 80)).unwrap();
    assert_eq!((who(&other), seen_from(&other)), ("a", "10.244.0.11"), "{other}");
    p.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_service_removes_its_rules_and_cleanup_removes_the_table() {
    let mut lab = Lab::new("rm");
    let p = Arc::new(proxier(&lab));
    let runner = tokio::spawn({
        let p = p.clone();
        async move { p.run().await }
    });
    let a = lab.add_pod("a", 10);
    p.upsert_service(&tcp_service("gone", "10.96.0.60"));
    p.upsert_slice(&slice("gone", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.upsert_service(&tcp_service("kept", "10.96.0.61"));
    p.upsert_slice(&slice("kept", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while tcp_ask(&lab.client, addr("10.96.0.60", 80)).is_err() {
        assert!(Instant::now() < deadline, "the run loop never programmed the Service");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lab.list_table().contains("10.96.0.60"));
    p.delete_service("default", "gone");
    p.delete_slice("default", "gone-xyz");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.list_table().contains("10.96.0.60") {
        assert!(Instant::now() < deadline, "the Service's rules stayed: {}", lab.list_table());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tcp_ask(&lab.client, addr("10.96.0.60", 80)).is_err());
    assert!(tcp_ask(&lab.client, addr("10.96.0.61", 80)).is_ok(), "the other Service is untouched");
    runner.abort();
    let _ = runner.await;
    p.cleanup().await.unwrap();
    let tables = lab.nft(&["list", "tables"]);
    assert!(!tables.contains(&lab.table), "{tables}");
    assert!(!host_tables().contains(&lab.table), "the host's ruleset was touched");
}

#[tokio::test]
async fn a_rejected_transaction_keeps_the_ruleset_and_is_repaired_by_a_full_sync() {
    let mut lab = Lab::new("drift");
    let p = proxier(&lab);
    let a = lab.add_pod("a", 10);
    p.upsert_service(&tcp_service("one", "10.96.0.70"));
    p.upsert_slice(&slice("one", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.upsert_service(&tcp_service("two", "10.96.0.71"));
    p.upsert_slice(&slice("two", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.sync().await.unwrap();
    // drift: someone removes an element behind the proxier's back; deleting it again fails
    lab.nft(&["delete", "element", "ip", &lab.table, "service_ips", "{ 10.96.0.70 . tcp . 80 }"]);
    p.delete_service("default", "one");
    p.upsert_service(&tcp_service("three", "10.96.0.72"));
    p.upsert_slice(&slice("three", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.sync().await.expect("the full sync after the failure succeeds");
    let h = p.health();
    assert_eq!((h.failed_syncs, h.consecutive_failures), (1, 0), "{h:?}");
    let err = h.last_error.unwrap();
    assert!(err.contains("delete element ip") && err.contains("10.96.0.70"), "the error names the line: {err}");
    assert!(tcp_ask(&lab.client, addr("10.96.0.71", 80)).is_ok());
    assert!(tcp_ask(&lab.client, addr("10.96.0.72", 80)).is_ok());
    assert!(!lab.list_table().contains("10.96.0.70"));
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn invalid_objects_are_skipped_and_the_rest_is_programmed() {
    let mut lab = Lab::new("bad");
    let p = proxier(&lab);
    let a = lab.add_pod("a", 10);
    p.upsert_service(&tcp_service("broken", "10.96.0.300"));
    p.upsert_service(&service(
        "badport",
        "10.96.0.81",
        json!({"ports": [
        {"name": "x", "port": 80, "protocol": "ICMP"}, {"name": "http", "port": 80}]}),
    ));
    p.upsert_slice(&slice("badport", "http", 8080, "TCP", &[(a, NODE_NAME)]));
    p.sync().await.unwrap();
    assert!(tcp_ask(&lab.client, addr("10.96.0.81", 80)).is_ok());
    assert_eq!(p.health().invalid_objects, 2);
    p.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_dual_stack_service_is_served_by_an_ip6_table_beside_the_ip_one() {
    let mut lab = Lab::new("dual");
    let v4 = proxier(&lab);
    let mut config = v4.config().clone();
    config.family = Family::V6;
    config.pod_cidr = Some(POD_CIDR6.into());
    let v6 = Proxier::new(config).expect("config");
    let (a, b) = (lab.add_pod("a", 10), lab.add_pod("b", 11));
    lab.add_pod("d", 20); // not an endpoint
    let svc = service(
        "dual",
        "10.96.0.60",
        json!({"type": "NodePort", "clusterIPs": ["10.96.0.60", "fd00:96::60"],
        "ipFamilies": ["IPv4", "IPv6"], "ports": [{"name": "http", "port": 80, "nodePort": 30060}]}),
    );
    let slice6: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "dual-v6", "labels": {"kubernetes.io/service-name": "dual"}},
        "addressType": "IPv6",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["fd00:244::a"], "nodeName": NODE_NAME}, {"addresses": ["fd00:244::b"], "nodeName": NODE_NAME}]
    }))
    .unwrap();
    // both proxiers get every object, as from the one watch; each takes its family's part
    for p in [&v4, &v6] {
        p.upsert_service(&svc);
        p.upsert_slice(&slice("dual", "http", 8080, "TCP", &[(a, NODE_NAME), (b, NODE_NAME)]));
        p.upsert_slice(&slice6);
        p.sync().await.expect("sync");
    }
    let answers = tcp_ask_many(&lab.client, addr("fd00:96::60", 80), 40);
    assert_eq!(count_by_pod(&answers).len(), 2, "{answers:?}");
    // the client is outside the IPv6 pod network too: masqueraded to the bridge's address
    assert_eq!(seen_from(answers[0].as_ref().unwrap()), BRIDGE_IP6.to_string());
    let from_node_port = tcp_ask(&lab.client, SocketAddr::new(NODE_IP6.into(), 30060)).expect("IPv6 node port");
    assert!(["a", "b"].contains(&who(&from_node_port)), "{from_node_port}");
    let from_v4 = tcp_ask(&lab.client, addr("10.96.0.60", 80)).expect("IPv4 ClusterIP");
    assert_eq!(seen_from(&from_v4), BRIDGE_IP.to_string());
    // a pod reaching the Service over IPv6 keeps its own address
    let from_pod = tcp_ask(&lab.pod_ns("d"), addr("fd00:96::60", 80)).unwrap();
    assert_eq!(seen_from(&from_pod), "fd00:244::14", "{from_pod}");
    let table = lab.list_table6();
    assert!(table.contains("fd00:96::60 . tcp . 80") && !lab.list_table().contains("fd00:"), "{table}");
    assert_eq!((v4.health().service_ports, v6.health().service_ports), (1, 1));
    for p in [&v4, &v6] {
        p.cleanup().await.unwrap();
    }
    assert!(!lab.nft(&["list", "tables"]).contains(&lab.table));
}
