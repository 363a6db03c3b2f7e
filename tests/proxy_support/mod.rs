//! A small network of namespaces for the proxy's tests, all of it the test's own:
//! - "node": a default route, a bridge br0 (10.244.0.1/24 and fd00:244::1/64, the pod network)
//!   and a veth to the client (192.168.77.1/24 and fd00:77::1/64, the node's addresses); the
//!   proxiers' tables live here;
//! - "pods": one namespace each on br0 (10.244.0.<n>, fd00:244::<n>), running a TCP server
//!   (8080) and a UDP server (5353), both dual-stack, that answer "<name> <peer address>";
//! - "client": outside the pod network, routed through the node.
//!
//! Every name carries the test's pid and tag; Drop deletes the namespaces (and with them every
//! link and table in them), even when the test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
pub const BRIDGE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 0, 0, 0, 0, 0, 1);
pub const POD_CIDR6: &str = "fd00:244::/64";
pub const NODE_NAME: &str = "node-a";

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn sh_out(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `f` on a thread that has entered the namespace; sockets made there stay in it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = nodelet::proxy::apply::Netns::named(ns);
    std::thread::spawn(move || {
        netns.enter_here().unwrap_or_else(|e| panic!("entering {netns:?}: {e}"));
        f()
    })
    .join()
    .expect("thread in namespace")
}

pub struct Pod {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

pub struct Lab {
    pub tag: String,
    pub node: String,
    pub client: String,
    pub table: String,
    pub pods: Vec<Pod>,
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let mut lab = Lab {
            tag: tag.to_string(),
            node: format!("pxt{pid}-{tag}-node"),
            client: format!("pxt{pid}-{tag}-client"),
            table: format!("nodelet_{tag}"),
            pods: Vec::new(),
            namespaces: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let (node, client) = (lab.node.clone(), lab.client.clone());
        for ns in [&node, &client] {
            sh(&["ip", "netns", "add", ns]);
            lab.namespaces.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "netns", "exec", &node, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        sh(&["ip", "netns", "exec", &node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // the client's Service traffic leaves the node the way it came (the lab has one uplink):
        // ICMP redirects for it would use up the ICMP rate limit that rejects need
        for conf in ["all", "default"] {
            sh(&["ip", "netns", "exec", &node, "sysctl", "-qw", &format!("net.ipv4.conf.{conf}.send_redirects=0")]);
        }
        sh(&["ip", "-n", &node, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &node, "addr", "add", &format!("{BRIDGE_IP}/24"), "dev", "br0"]);
        sh(&["ip", "-n", &node, "addr", "add", &format!("{BRIDGE_IP6}/64"), "dev", "br0", "nodad"]);
        sh(&["ip", "-n", &node, "link", "set", "br0", "up"]);
        sh(&["ip", "-n", &node, "link", "add", "vclient", "type", "veth", "peer", "name", "eth0", "netns", &client]);
        sh(&["ip", "-n", &node, "addr", "add", &format!("{NODE_IP}/24"), "dev", "vclient"]);
        sh(&["ip", "-n", &node, "addr", "add", &format!("{NODE_IP6}/64"), "dev", "vclient", "nodad"]);
        sh(&["ip", "-n", &node, "link", "set", "vclient", "up"]);
        // a default route, as a real node has (to a gateway nobody answers for): Service
        // addresses are routable, so traffic to a Service without endpoints reaches the filter
        // hooks and is rejected there
        sh(&["ip", "-n", &node, "route", "add", "default", "via", "192.168.77.254"]);
        sh(&["ip", "-n", &node, "-6", "route", "add", "default", "via", "fd00:77::fe"]);
        sh(&["ip", "-n", &client, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"]);
        sh(&["ip", "-n", &client, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &client, "addr", "add", &format!("{CLIENT_IP6}/64"), "dev", "eth0", "nodad"]);
        sh(&["ip", "-n", &client, "route", "add", "default", "via", &NODE_IP.to_string()]);
        sh(&["ip", "-n", &client, "-6", "route", "add", "default", "via", &NODE_IP6.to_string()]);
        lab
    }

    /// A pod at 10.244.0.<last> with its servers running.
    pub fn add_pod(&mut self, name: &str, last: u8) -> Ipv4Addr {
        let ns = format!("pxt{}-{}-{name}", std::process::id(), self.tag);
        let ip = Ipv4Addr::new(10, 244, 0, last);
        sh(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let veth = format!("v{name}");
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &self.node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        sh(&["ip", "-n", &self.node, "link", "set", &veth, "master", "br0", "up"]);
        // with br_netfilter loaded, a pod reaching itself through a Service is bridged back out
        // of the port it came in on: the port needs hairpin mode (as kubelet's hairpin-veth)
        sh(&["ip", "-n", &self.node, "link", "set", &veth, "type", "bridge_slave", "hairpin", "on"]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "route", "add", "default", "via", &BRIDGE_IP.to_string()]);
        sh(&["ip", "-n", &ns, "addr", "add", &format!("fd00:244::{last:x}/64"), "dev", "eth0", "nodad"]);
        sh(&["ip", "-n", &ns, "-6", "route", "add", "default", "via", &BRIDGE_IP6.to_string()]);
        // [::] takes IPv4 too (as v4-mapped addresses, answered as plain IPv4 below)
        let (tcp, udp) = in_ns(&ns, || (TcpListener::bind("[::]:8080").expect("tcp bind"), UdpSocket::bind("[::]:5353").expect("udp bind")));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let (stop, me) = (self.stop.clone(), name.to_string());
        self.servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.write_all(format!("{me} {}\n", peer.ip().to_canonical()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        let (stop, me) = (self.stop.clone(), name.to_string());
        self.servers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{me} {}\n", peer.ip().to_canonical()).as_bytes(), peer);
                }
            }
        }));
        self.pods.push(Pod { name: name.to_string(), ns, ip });
        ip
    }

    pub fn pod_ns(&self, name: &str) -> String {
        self.pods.iter().find(|p| p.name == name).expect("pod").ns.clone()
    }

    /// nft in the node namespace.
    pub fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.node, "nft"];
        all.extend_from_slice(args);
        sh_out(&all)
    }

    pub fn list_table(&self) -> String {
        self.nft(&["list", "table", "ip", &self.table])
    }

    pub fn list_table6(&self) -> String {
        self.nft(&["list", "table", "ip6", &self.table])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        for family in ["ip", "ip6"] {
            let _ = Command::new("ip").args(["netns", "exec", &self.node, "nft", "delete", "table", family, &self.table]).output();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// One TCP exchange from namespace `ns`: the server's answer, or the error.
pub fn tcp_ask(ns: &str, to: SocketAddr) -> std::io::Result<String> {
    in_ns(ns, move || tcp_ask_here(to))
}

/// A TCP exchange on the current thread (already in a namespace).
pub fn tcp_ask_here(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

/// `n` TCP exchanges from namespace `ns`.
pub fn tcp_ask_many(ns: &str, to: SocketAddr, n: usize) -> Vec<std::io::Result<String>> {
    in_ns(ns, move || (0..n).map(|_| tcp_ask_here(to)).collect())
}

/// A UDP socket in namespace `ns`, connected to `to`.
pub fn udp_socket(ns: &str, to: SocketAddr) -> UdpSocket {
    let s = in_ns(ns, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("udp bind");
        s.connect(to).expect("udp connect");
        s
    });
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s
}

pub fn udp_ask(s: &UdpSocket) -> std::io::Result<String> {
    s.send(b"hello")?;
    let mut buf = [0u8; 512];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// The name part of an answer.
pub fn who(answer: &str) -> &str {
    answer.split_whitespace().next().unwrap_or("")
}

/// The peer-address part of an answer: the source address the server saw.
pub fn seen_from(answer: &str) -> &str {
    answer.split_whitespace().nth(1).unwrap_or("")
}
