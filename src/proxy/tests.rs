//! The proxier against the in-memory nftables (no root): which transactions each sync path
//! runs, and what the table holds after them.

use super::fake::{FakeNftables, Table};
use super::model::Family;
use super::{Proxier, ProxyConfig};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const NODE: &str = "n1";

fn proxier() -> (Proxier, Arc<FakeNftables>) {
    let fake = Arc::new(FakeNftables::new());
    let mut config = ProxyConfig::new(NODE);
    config.pod_cidr = Some("10.88.0.0/16".into());
    // no UDP flows to clean here, and no conntrack program is run from unit tests
    config.conntrack = "/nonexistent/conntrack".into();
    (Proxier::with_nftables(config, Box::new(fake.clone())).expect("config"), fake)
}

fn service(name: &str, cluster_ip: &str, spec: Value) -> Service {
    let mut v = json!({"metadata": {"namespace": "ns", "name": name},
                       "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
    for (k, val) in spec.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// A slice for Service `svc` (port "http" 8080/TCP) with these endpoint addresses on this node.
fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": NODE})).collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{svc}-abcde"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn table(fake: &FakeNftables) -> Table {
    fake.table(Family::V4, "nodelet").expect("the proxy's table")
}

/// The live map's elements whose key starts with `prefix`.
fn elements(t: &Table, map: &str, prefix: &str) -> BTreeMap<String, Option<String>> {
    t.live(map).elements.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The table with its maps under their generation-free names, for comparing two generations.
fn contents(t: &Table) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    t.sets.iter().map(|(name, s)| (name.strip_suffix("_b").unwrap_or(name).to_string(), s.elements.clone())).collect()
}

/// Two Services with two endpoints each, synced once.
async fn two_services() -> (Proxier, Arc<FakeNftables>) {
    let (p, fake) = proxier();
    p.upsert_service(&service("a", "10.96.0.1", json!({})));
    p.upsert_slice(&slice("a", &["10.88.0.5", "10.88.0.6"]));
    p.upsert_service(&service("b", "10.96.0.2", json!({})));
    p.upsert_slice(&slice("b", &["10.88.1.5", "10.88.1.6"]));
    p.sync().await.expect("first sync");
    (p, fake)
}

#[tokio::test]
async fn the_first_sync_is_a_full_one_and_programs_cluster_ips() {
    let (p, fake) = two_services().await;
    let t = table(&fake);
    assert_eq!(t.value("service_ips", "10.96.0.1 . tcp . 80").as_deref(), Some("goto cluster_tcp_2"));
    assert_eq!(t.value("backends_tcp", "10.96.0.1 . 80 . 0").as_deref(), Some("10.88.0.5 . 8080"));
    assert_eq!(t.value("backends_tcp", "10.96.0.2 . 80 . 1").as_deref(), Some("10.88.1.6 . 8080"));
    assert_eq!(t.chains["cluster_tcp_2"].rules[0], "ip saddr != 10.88.0.0/16 meta mark set meta mark | 0x4000");
    assert!(t.live("hairpin").elements.contains_key("10.88.1.5 . 10.88.1.5"));
    // no table yet: staged (declare, elements, switch), all applied
    let log = fake.log();
    assert!(log.iter().all(|(_, ok)| *ok), "{log:?}");
    assert!(log[0].0.starts_with("table ip nodelet {") && log.last().unwrap().0.contains("chain services {"), "{log:?}");
    let h = p.health();
    assert!(h.last_full_sync.is_some() && h.failed_syncs == 0);
    assert_eq!((h.service_ports, h.elements), (2, 2 + 4 + 4));
}

#[tokio::test]
async fn one_endpoint_change_is_one_transaction_touching_only_that_service() {
    let (p, fake) = two_services().await;
    let before = table(&fake);
    let full_at = p.health().last_full_sync;
    fake.clear_log();
    p.upsert_slice(&slice("a", &["10.88.0.5", "10.88.0.7"]));
    p.sync().await.unwrap();
    let log = fake.log();
    assert_eq!(log.len(), 1, "{log:?}");
    let (script, ok) = &log[0];
    assert!(ok);
    assert_eq!(
        script,
        "delete element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 }\n\
         add element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 : 10.88.0.7 . 8080 }\n\
         delete element ip nodelet hairpin { 10.88.0.6 . 10.88.0.6 }\n\
         add element ip nodelet hairpin { 10.88.0.7 . 10.88.0.7 }\n"
    );
    let after = table(&fake);
    assert_eq!(after.value("backends_tcp", "10.96.0.1 . 80 . 1").as_deref(), Some("10.88.0.7 . 8080"));
    assert_eq!(elements(&after, "backends_tcp", "10.96.0.2"), elements(&before, "backends_tcp", "10.96.0.2"));
    assert_eq!(after.chains, before.chains);
    assert_eq!(p.health().last_full_sync, full_at, "no full sync");
    // nothing pending: no transaction at all
    p.sync().await.unwrap();
    assert_eq!(fake.log().len(), 1);
}

#[tokio::test]
async fn a_periodic_full_sync_fills_the_other_generation_and_switches() {
    let (p, fake) = two_services().await;
    let before = table(&fake);
    assert!(before.sets.contains_key("service_ips"));
    fake.clear_log();
    p.full_sync().await.unwrap();
    let after = table(&fake);
    assert!(after.sets.contains_key("service_ips_b") && !after.sets.contains_key("service_ips"), "{:?}", after.sets.keys());
    assert_eq!(contents(&after), contents(&before));
    assert_eq!(
        after.chains["services"].rules.last().unwrap(),
        "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service_nodeports_b"
    );
    // declare, the element parts (one per parallel context), switch: no table replacement
    let log = fake.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log.iter().all(|(s, ok)| *ok && !s.contains("delete table")), "{log:?}");
    // and back to the first generation
    p.full_sync().await.unwrap();
    let again = table(&fake);
    assert!(again.sets.contains_key("service_ips"));
    assert_eq!(contents(&again), contents(&before));
}

#[tokio::test]
async fn a_refused_incremental_transaction_is_followed_by_a_full_sync() {
    let (p, fake) = two_services().await;
    let before = table(&fake);
    // drift: someone removed an element the next incremental sync deletes, so nft refuses it
    fake.tamper("delete element ip nodelet backends_tcp { 10.96.0.1 . 80 . 1 }").unwrap();
    fake.clear_log();
    p.upsert_slice(&slice("a", &["10.88.0.5", "10.88.0.7"]));
    p.sync().await.expect("the full sync repairs it");
    let log = fake.log();
    assert!(!log[0].1 && log[0].0.starts_with("delete element ip nodelet backends_tcp"), "{log:?}");
    // the table is not what the proxy thought: replaced whole, in one transaction
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].1 && log[1].0.starts_with("add table ip nodelet\ndelete table ip nodelet\n"), "{log:?}");
    let after = table(&fake);
    assert_eq!(after.value("backends_tcp", "10.96.0.1 . 80 . 1").as_deref(), Some("10.88.0.7 . 8080"));
    assert_eq!(elements(&after, "backends_tcp", "10.96.0.2"), elements(&before, "backends_tcp", "10.96.0.2"));
    let h = p.health();
    assert_eq!((h.failed_syncs, h.consecutive_failures), (1, 0));
    assert!(h.last_error.unwrap().contains("No such file or directory"));
    // known again: the next change is incremental
    fake.clear_log();
    p.upsert_slice(&slice("a", &["10.88.0.5"]));
    p.sync().await.unwrap();
    assert_eq!(fake.log().len(), 1);
}

#[tokio::test]
async fn a_refused_staged_full_sync_replaces_the_table_and_a_failed_one_is_retried() {
    let (p, fake) = proxier();
    p.upsert_service(&service("a", "10.96.0.1", json!({})));
    p.upsert_slice(&slice("a", &["10.88.0.5"]));
    // the staged switch is refused: the table is replaced in one transaction instead
    fake.fail_next("chain services {");
    p.sync().await.unwrap();
    let log = fake.log();
    // declare, two element parts, the refused switch, the replacement
    assert_eq!(log.iter().map(|(_, ok)| *ok).collect::<Vec<_>>(), vec![true, true, true, false, true], "{log:?}");
    assert!(log[4].0.starts_with("add table ip nodelet\ndelete table"), "{log:?}");
    assert_eq!(table(&fake).value("service_ips", "10.96.0.1 . tcp . 80").as_deref(), Some("goto cluster_tcp_1"));
    // the incremental transaction and the full sync after it refused: the sync fails, a full
    // sync stays due, and the next one is that
    fake.clear_log();
    p.upsert_slice(&slice("a", &["10.88.0.6"]));
    fake.fail_next("10.88.0.6");
    fake.fail_next("10.88.0.6");
    assert!(p.sync().await.is_err());
    assert_eq!(p.health().consecutive_failures, 2, "the incremental and the full sync after it");
    p.sync().await.unwrap();
    let log = fake.log();
    assert!(log.last().unwrap().1 && log.last().unwrap().0.starts_with("add table ip nodelet\ndelete table"), "{log:?}");
    assert_eq!(table(&fake).value("backends_tcp", "10.96.0.1 . 80 . 0").as_deref(), Some("10.88.0.6 . 8080"));
    assert_eq!(p.health().consecutive_failures, 0);
}

#[tokio::test]
async fn node_ports_and_services_without_endpoints() {
    let (p, fake) = proxier();
    p.upsert_service(&service("np", "10.96.0.20", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]})));
    p.sync().await.unwrap();
    // no endpoints: both frontends are rejected
    let t = table(&fake);
    assert!(t.live("no_endpoints").elements.contains_key("10.96.0.20 . tcp . 80"));
    assert!(t.live("no_endpoint_nodeports").elements.contains_key("tcp . 30080"));
    assert!(t.live("service_nodeports").elements.is_empty());
    // endpoints arrive: the reject elements go, the dispatch ones come, in one transaction
    fake.clear_log();
    p.upsert_slice(&slice("np", &["10.88.0.5"]));
    p.sync().await.unwrap();
    assert_eq!(fake.log().len(), 1);
    let t = table(&fake);
    assert!(t.live("no_endpoints").elements.is_empty() && t.live("no_endpoint_nodeports").elements.is_empty());
    assert_eq!(t.value("service_nodeports", "tcp . 30080").as_deref(), Some("goto nodeport_tcp_1"));
    assert_eq!(t.value("np_backends_tcp", "30080 . 0").as_deref(), Some("10.88.0.5 . 8080"));
    assert_eq!(t.chains["nodeport_tcp_1"].rules[0], "meta mark set meta mark | 0x4000");
    // the slice goes: rejected again
    p.delete_slice("ns", "np-abcde");
    p.sync().await.unwrap();
    let t = table(&fake);
    assert!(t.live("no_endpoint_nodeports").elements.contains_key("tcp . 30080") && t.live("np_backends_tcp").elements.is_empty());
    // the Service goes: nothing of it is left
    p.delete_service("ns", "np");
    p.sync().await.unwrap();
    let t = table(&fake);
    assert!(t.sets.values().all(|s| s.elements.is_empty()), "{:?}", t.sets);
    assert_eq!(p.health().service_ports, 0);
}

#[tokio::test]
async fn session_affinity_chains_and_sticky_sets_follow_the_endpoints() {
    let (p, fake) = proxier();
    p.upsert_service(&service("sticky", "10.96.0.30", json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}})));
    p.upsert_slice(&slice("sticky", &["10.88.0.5", "10.88.0.6"]));
    p.sync().await.unwrap();
    let t = table(&fake);
    assert_eq!(t.value("service_ips", "10.96.0.30 . tcp . 80").as_deref(), Some("goto aff1_c"));
    assert!(t.sets.contains_key("sticky1_c_600_0a580005_8080") && t.sets.contains_key("sticky1_c_600_0a580006_8080"), "{:?}", t.sets.keys());
    assert_eq!(t.chains["aff1_c_0a580006_8080"].rules[1], "meta l4proto tcp dnat ip to 10.88.0.6:8080");
    // one endpoint goes: its chain and clients go, the other endpoint's stay
    p.upsert_slice(&slice("sticky", &["10.88.0.5"]));
    p.sync().await.unwrap();
    let t = table(&fake);
    assert!(t.sets.contains_key("sticky1_c_600_0a580005_8080") && !t.sets.contains_key("sticky1_c_600_0a580006_8080"));
    assert!(!t.chains.contains_key("aff1_c_0a580006_8080"));
    assert_eq!(t.chains["aff1_c"].rules.last().unwrap(), "numgen random mod 1 vmap { 0 : goto aff1_c_0a580005_8080 }");
    // a full sync keeps the sticky set that stays (and its clients)
    let log_len = fake.log().len();
    p.full_sync().await.unwrap();
    assert!(fake.log()[log_len..].iter().all(|(s, ok)| *ok && !s.contains("delete set ip nodelet sticky1_c_600_0a580005_8080")));
    assert!(table(&fake).sets.contains_key("sticky1_c_600_0a580005_8080"));
}

#[tokio::test]
async fn a_relisted_world_deletes_what_vanished_meanwhile() {
    let (p, fake) = two_services().await;
    // the watch relists after an outage: only "a" is left
    p.replace_services([&service("a", "10.96.0.1", json!({}))]);
    p.replace_slices([&slice("a", &["10.88.0.5", "10.88.0.6"])]);
    p.sync().await.unwrap();
    let t = table(&fake);
    assert!(elements(&t, "backends_tcp", "10.96.0.2").is_empty() && t.value("service_ips", "10.96.0.2 . tcp . 80").is_none());
    assert_eq!(elements(&t, "backends_tcp", "10.96.0.1").len(), 2);
    assert_eq!(p.health().service_ports, 1);
}

#[tokio::test]
async fn a_new_pod_cidr_rewrites_the_whole_table() {
    let (p, fake) = two_services().await;
    fake.clear_log();
    p.set_pod_cidr("10.244.0.0/16").await.unwrap();
    p.sync().await.unwrap();
    let log = fake.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].0.starts_with("add table ip nodelet\ndelete table ip nodelet\n"));
    assert_eq!(table(&fake).chains["cluster_tcp_2"].rules[0], "ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x4000");
}

#[tokio::test]
async fn cleanup_deletes_the_table_and_the_next_sync_is_full() {
    let (p, fake) = two_services().await;
    p.cleanup().await.unwrap();
    assert!(fake.table(Family::V4, "nodelet").is_none());
    p.sync().await.unwrap();
    assert_eq!(table(&fake).value("service_ips", "10.96.0.2 . tcp . 80").as_deref(), Some("goto cluster_tcp_2"));
}
