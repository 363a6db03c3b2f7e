//! The plugin driven as containerd drives it, against the real kernel.
//! Needs root (CI runs as root).

mod common;

use common::{host_veth, in_netns, link_exists, sh, Fixture, PLUGIN};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Addresses of eth0 inside `ns`, via iproute2 (an independent observer).
fn ns_addrs(ns: &str) -> String {
    String::from_utf8(sh(&["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout).unwrap()
}

fn ns_default_route(ns: &str) -> String {
    String::from_utf8(sh(&["ip", "-n", ns, "-4", "route", "show", "default"]).stdout).unwrap()
}

/// TCP from `from` to `to_ip` in `to`: proves L2/L3 across the bridge
/// without depending on a ping binary being installed.
fn tcp_reaches(from: &str, to: &str, to_ip: std::net::Ipv4Addr) {
    let listener = in_netns(to, move || TcpListener::bind((to_ip, 0)).unwrap());
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        buf
    });
    let reply = in_netns(from, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&reply, b"pong");
    assert_eq!(&server.join().unwrap(), b"ping");
}

#[test]
fn add_check_del_lifecycle_and_connectivity() {
    let f = Fixture::new(1);
    let (ns1, ns2) = (f.netns("a"), f.netns("b"));

    let r1 = f.run("ADD", &f.cid("ctr-one"), Some(&ns1));
    assert!(r1.ok(), "ADD failed: {} {}", r1.stdout, r1.stderr);
    let r2 = f.run("ADD", &f.cid("ctr-two"), Some(&ns2));
    assert!(r2.ok(), "ADD failed: {} {}", r2.stdout, r2.stderr);
    let (ip1, ip2) = (r1.ip(), r2.ip());
    assert_ne!(ip1, ip2);

    // The result is a CNI 1.0.0 result naming the container interface.
    let v = r1.json();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["ips"][0]["address"], format!("{ip1}/24"));
    assert_eq!(v["ips"][0]["gateway"], f.addr(1).to_string());
    let idx = v["ips"][0]["interface"].as_u64().unwrap() as usize;
    assert_eq!(v["interfaces"][idx]["name"], "eth0");
    assert_eq!(v["interfaces"][idx]["sandbox"], Fixture::netns_path(&ns1));
    assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");

    // The kernel agrees: address, default route, lo up, veth on the bridge.
    assert!(ns_addrs(&ns1).contains(&format!("{ip1}/24")), "{}", ns_addrs(&ns1));
    assert!(ns_default_route(&ns1).contains(&format!("via {}", f.addr(1))));
    let lo = String::from_utf8(sh(&["ip", "-n", &ns1, "link", "show", "lo"]).stdout).unwrap();
    assert!(lo.contains("UP"), "{lo}");
    let veth1 = host_veth(&f.cid("ctr-one"), "eth0");
    let ports = String::from_utf8(sh(&["ip", "link", "show", "master", &f.bridge]).stdout).unwrap();
    assert!(ports.contains(&veth1), "{ports}");

    // Both directions across the bridge.
    tcp_reaches(&ns1, &ns2, ip2);
    tcp_reaches(&ns2, &ns1, ip1);

    // One masquerade rule for the subnet, however many ADDs.
    assert_eq!(f.masq_rule_count(), 1);

    // Allocation files name their owners.
    let allocs = f.allocations();
    assert_eq!(allocs.get(&ip1).map(String::as_str), Some(format!("{}\neth0", f.cid("ctr-one")).as_str()));
    assert_eq!(allocs.get(&ip2).map(String::as_str), Some(format!("{}\neth0", f.cid("ctr-two")).as_str()));

    // ADD again is idempotent: same address, still working.
    let again = f.run("ADD", &f.cid("ctr-one"), Some(&ns1));
    assert!(again.ok(), "{}", again.stdout);
    assert_eq!(again.ip(), ip1);
    assert_eq!(f.allocations().len(), 2);
    assert_eq!(f.masq_rule_count(), 1);

    let check = f.run("CHECK", &f.cid("ctr-one"), Some(&ns1));
    assert!(check.ok(), "CHECK failed: {} {}", check.stdout, check.stderr);
    assert_eq!(check.stdout, "");

    // DEL removes the veth and frees the address; twice is fine.
    let del = f.run("DEL", &f.cid("ctr-one"), Some(&ns1));
    assert!(del.ok(), "DEL failed: {}", del.stdout);
    assert!(!link_exists(&veth1));
    assert!(!f.allocations().contains_key(&ip1));
    assert!(f.run("DEL", &f.cid("ctr-one"), Some(&ns1)).ok());
    let gone = String::from_utf8(sh(&["ip", "-n", &ns1, "-o", "link"]).stdout).unwrap();
    assert!(!gone.contains("eth0"), "{gone}");

    // CHECK now fails with a CNI error.
    let check = f.run("CHECK", &f.cid("ctr-one"), Some(&ns1));
    assert!(!check.ok());
    let e = check.json();
    assert!(e["code"].as_u64().unwrap() >= 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains(&f.cid("ctr-one")), "{e}");

    assert!(f.run("DEL", &f.cid("ctr-two"), Some(&ns2)).ok());
    assert!(f.allocations().is_empty());
}

#[test]
fn check_detects_a_missing_route() {
    let f = Fixture::new(2);
    let ns = f.netns("a");
    assert!(f.run("ADD", &f.cid("ctr"), Some(&ns)).ok());
    sh(&["ip", "-n", &ns, "route", "del", "default"]);
    let check = f.run("CHECK", &f.cid("ctr"), Some(&ns));
    assert!(!check.ok());
    assert!(check.json()["msg"].as_str().unwrap().contains("default route"), "{}", check.stdout);
    assert!(f.run("DEL", &f.cid("ctr"), Some(&ns)).ok());
}

#[test]
fn a_cluster_cidr_replaces_the_subnets_masquerade_rule() {
    let f = Fixture::new(7);
    let ns = f.netns("a");
    assert!(f.run("ADD", &f.cid("before"), Some(&ns)).ok());
    let listing = || String::from_utf8(sh(&["nft", "list", "table", "ip", &f.table]).stdout).unwrap();
    assert!(listing().contains(&format!("ip daddr != {} masquerade", f.subnet)), "{}", listing());
    // The node learns the cluster's pod network: traffic to it keeps the pods' addresses.
    let cluster = format!("10.{}.0.0/16", f.third_octet.0);
    let conf = f.config().replace("\"masqTable\"", &format!("\"clusterCIDR\":\"{cluster}\",\"masqTable\""));
    let ns2 = f.netns("b");
    let r = f.run_with("ADD", &f.cid("after"), Some(&ns2), &conf);
    assert!(r.ok(), "{}", r.stdout);
    assert_eq!(f.masq_rule_count(), 1, "{}", listing());
    assert!(listing().contains(&format!("ip saddr {} ip daddr != {cluster} masquerade", f.subnet)), "{}", listing());
    let ns3 = f.netns("c");
    assert!(f.run_with("ADD", &f.cid("again"), Some(&ns3), &conf).ok());
    assert_eq!(f.masq_rule_count(), 1, "{}", listing());
    for (c, n) in [("before", &ns), ("after", &ns2), ("again", &ns3)] {
        assert!(f.run_with("DEL", &f.cid(c), Some(n), &conf).ok());
    }
}

#[test]
fn del_without_add_or_netns_succeeds() {
    let f = Fixture::new(3);
    let r = f.run("DEL", &f.cid("never-added"), Some("nct-no-such-netns"));
    assert!(r.ok(), "{} {}", r.stdout, r.stderr);
    let r = f.run("DEL", &f.cid("never-added"), None);
    assert!(r.ok(), "{} {}", r.stdout, r.stderr);

    // And after the netns vanished under an ADDed container.
    let ns = f.netns("gone");
    let add = f.run("ADD", &f.cid("ctr"), Some(&ns));
    assert!(add.ok(), "{}", add.stdout);
    sh(&["ip", "netns", "del", &ns]);
    let r = f.run("DEL", &f.cid("ctr"), Some(&ns));
    assert!(r.ok(), "{} {}", r.stdout, r.stderr);
    assert!(f.allocations().is_empty());
    assert!(!link_exists(&host_veth(&f.cid("ctr"), "eth0")));
}

#[test]
fn version_reports_supported_versions() {
    let out = Command::new(PLUGIN).env_clear().env("CNI_COMMAND", "VERSION").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}));
}

#[test]
fn bad_input_gives_cni_errors() {
    let f = Fixture::new(4);
    let ns = f.netns("a");

    let r = f.run_with("ADD", &f.cid("c"), Some(&ns), "{not json");
    assert_eq!(r.code, Some(1));
    assert_eq!(r.json()["code"], 6);

    let bad_subnet = f.config().replace(&f.subnet, "10.1.2.3/8");
    let r = f.run_with("ADD", &f.cid("c"), Some(&ns), &bad_subnet);
    assert_eq!(r.code, Some(1));
    let e = r.json();
    assert_eq!(e["code"], 7);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("subnet") && msg.contains(&format!("container {} ", f.cid("c"))), "{msg}");

    let bad_mtu = f.config().replace("\"masqTable\"", "\"mtu\":\"big\",\"masqTable\"");
    let e = f.run_with("ADD", &f.cid("c"), Some(&ns), &bad_mtu).json();
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().contains("mtu"), "{e}");

    let old = f.config().replace("\"1.0.0\"", "\"0.1.0\"");
    assert_eq!(f.run_with("ADD", &f.cid("c"), Some(&ns), &old).json()["code"], 1);

    // Missing CNI_NETNS on ADD is an env error.
    let r = f.run("ADD", &f.cid("c"), None);
    assert_eq!(r.json()["code"], 4);

    // Nothing was allocated or created by any of these.
    assert!(f.allocations().is_empty());
    assert!(!link_exists(&host_veth(&f.cid("c"), "eth0")));
}

#[test]
fn exhausted_subnet_is_code_100_and_result_speaks_0_4_0() {
    let f = Fixture::new(5);
    // A /30 has two hosts: the gateway and exactly one container.
    let conf = f.config().replace(&f.subnet, &format!("{}/30", f.addr(0))).replace("\"1.0.0\"", "\"0.4.0\"");
    let (a, b) = (f.netns("a"), f.netns("b"));
    let r = f.run_with("ADD", &f.cid("first"), Some(&a), &conf);
    assert!(r.ok(), "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["ips"][0]["version"], "4");
    assert_eq!(r.ip(), f.addr(2));

    let r = f.run_with("ADD", &f.cid("second"), Some(&b), &conf);
    assert!(!r.ok());
    let e = r.json();
    assert_eq!(e["code"], 100, "{e}");
    assert_eq!(e["cniVersion"], "0.4.0");
    // The failed ADD left nothing behind.
    assert!(!link_exists(&host_veth(&f.cid("second"), "eth0")));
    assert_eq!(f.allocations().len(), 1);

    assert!(f.run_with("DEL", &f.cid("first"), Some(&a), &conf).ok());
    assert!(f.run_with("DEL", &f.cid("second"), Some(&b), &conf).ok());
}
