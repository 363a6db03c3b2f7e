//! 200 ADD/DEL cycles, several at once, with plugin processes SIGKILLed at
//! random points, as a crashing node or an impatient runtime would. Every
//! container is DELed afterwards, as the runtime does after a failed ADD.
//! Needs root (CI runs as root).

mod common;

use common::{host_veth, sh, Fixture};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CYCLES: usize = 200;
const WORKERS: usize = 4;

#[test]
fn add_del_cycles_with_killed_plugins() {
    let f = Fixture::new(9);
    let namespaces: Vec<String> = (0..WORKERS).map(|w| f.netns(&format!("w{w}"))).collect();
    let config = f.config();
    let next = AtomicUsize::new(0);
    let interrupted = AtomicUsize::new(0);
    let added = AtomicUsize::new(0);
    // ip -> container, for containers whose ADD succeeded and that are not yet DELed.
    let live: Mutex<HashMap<Ipv4Addr, String>> = Mutex::new(HashMap::new());
    let started = Instant::now();

    std::thread::scope(|s| {
        for ns in &namespaces {
            let (f, config, next, live) = (&f, &config, &next, &live);
            let (interrupted, added) = (&interrupted, &added);
            s.spawn(move || {
                let mut rng = rand::rng();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= CYCLES {
                        break;
                    }
                    let cid = f.cid(&format!("stress-{i}"));
                    let mut child = f.spawn("ADD", &cid, Some(ns), config);
                    let kill = rng.random_bool(0.5);
                    if kill {
                        std::thread::sleep(Duration::from_millis(rng.random_range(0..15)));
                        let _ = child.kill(); // SIGKILL; a no-op if it already exited
                    }
                    let out = child.wait_with_output().unwrap();
                    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                    if out.status.success() {
                        added.fetch_add(1, Ordering::SeqCst);
                        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                        let ip: Ipv4Addr = v["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().parse().unwrap();
                        record_live(f, &mut live.lock().unwrap(), ip, &cid);
                    } else {
                        assert!(kill, "ADD {cid} failed without being killed: {stdout}");
                        interrupted.fetch_add(1, Ordering::SeqCst);
                    }
                    // The runtime always DELs, whether ADD finished or not.
                    // DEL runs under the map lock so an address it frees
                    // cannot be recorded by another worker before it leaves
                    // the map.
                    let mut live = live.lock().unwrap();
                    let del = f.run_with("DEL", &cid, Some(ns), config);
                    assert!(del.ok(), "DEL {cid} failed: {} {}", del.stdout, del.stderr);
                    live.retain(|_, owner| *owner != cid);
                }
            });
        }
    });

    let elapsed = started.elapsed();
    eprintln!("{CYCLES} cycles in {elapsed:?}: {} ADDs completed, {} interrupted by SIGKILL", added.load(Ordering::SeqCst), interrupted.load(Ordering::SeqCst));
    assert!(interrupted.load(Ordering::SeqCst) > 0, "no ADD was actually interrupted");
    assert!(added.load(Ordering::SeqCst) > 0, "no ADD completed");

    // Everything was released and removed.
    assert!(f.allocations().is_empty(), "leaked allocations: {:?}", f.allocations());
    let links = String::from_utf8(sh(&["ip", "-o", "link", "show"]).stdout).unwrap();
    for i in 0..CYCLES {
        let veth = host_veth(&f.cid(&format!("stress-{i}")), "eth0");
        assert!(!links.contains(&veth), "veth {veth} of stress-{i} left behind");
    }
    let ports = String::from_utf8(sh(&["ip", "-o", "link", "show", "master", &f.bridge]).stdout).unwrap();
    assert!(ports.trim().is_empty(), "bridge still has ports: {ports}");
    assert_eq!(f.masq_rule_count(), 1, "masquerade rule duplicated or missing");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

/// An ADD returned `ip` for `cid`: check it against the other live
/// containers and against the allocation files on disk.
fn record_live(f: &Fixture, live: &mut HashMap<Ipv4Addr, String>, ip: Ipv4Addr, cid: &str) {
    let allocs = f.allocations();
    let owner = |c: &str| format!("{c}\neth0");
    assert_eq!(allocs.get(&ip), Some(&owner(cid)), "ADD gave {ip} to {cid} but its allocation file disagrees");
    if let Some(other) = live.insert(ip, cid.to_owned()) {
        panic!("{ip} handed to {cid} while {other} still holds it");
    }
    for (lip, lcid) in live.iter() {
        assert_eq!(allocs.get(lip), Some(&owner(lcid)), "live {lcid} lost its claim on {lip}");
    }
    let mut owners = HashSet::new();
    for (ip, o) in &allocs {
        assert!(owners.insert(o), "{o:?} holds two addresses (one is {ip})");
    }
}
