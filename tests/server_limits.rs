//! The servers' and the manifest source's limits against a real nodelet: half requests and idle
//! keep-alives are closed on both ports, a flood of connections leaves /healthz answering and
//! memory back near where it was, and a deeply nested or alias-bomb manifest is refused at once
//! while the other pods keep running and SIGTERM still stops nodelet.

mod common;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"))
}

/// How long until the server closes `stream` (reading and discarding what it sends), or None if
/// it is still open after `wait`.
fn closed_within(stream: &mut impl Read, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(_) => return Some(start.elapsed()), // reset, or TLS closed without close_notify
        }
    }
    None
}

/// Reads one response on a keep-alive connection (nodelet's answers here carry a
/// content-length): its status code.
fn read_response(stream: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if got.len() >= end + 4 + length {
                return head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
        let n = stream.read(&mut buf).expect("reading a response");
        assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// Waits until the runtime has answered nodelet and /healthz says ok.
fn wait_healthy(node: &Node) {
    eventually("/healthz ok", Duration::from_secs(30), || node.get("/healthz").0 == 200);
}

fn tls_client(node: &Node) -> Arc<rustls::ClientConfig> {
    let ca = node.dir.path().join("root/pki/nodelet.crt");
    eventually("the serving certificate", Duration::from_secs(10), || ca.exists());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

const HALF_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[test]
fn half_requests_and_idle_keep_alives_are_closed_on_both_ports() {
    let node = Node::start("limits-idle", &[]);
    wait_healthy(&node);
    let (port, secure_port) = (node.port, node.secure_port);
    let tls = tls_client(&node);
    let mut checks: Vec<(&str, std::thread::JoinHandle<Option<Duration>>, Duration)> = Vec::new();

    let half = std::thread::spawn(move || {
        let mut s = connect(port);
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s.write_all(HALF_REQUEST).unwrap();
        closed_within(&mut s, Duration::from_secs(90))
    });
    checks.push(("half a request on the read-only port", half, Duration::from_secs(60)));

    let idle = std::thread::spawn(move || {
        let mut s = connect(port);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s), 200);
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        closed_within(&mut s, Duration::from_secs(150))
    });
    checks.push(("an idle keep-alive on the read-only port", idle, Duration::from_secs(120)));

    let handshake = std::thread::spawn(move || {
        let mut s = connect(secure_port);
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        // the start of a TLS record, never finished
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        closed_within(&mut s, Duration::from_secs(90))
    });
    checks.push(("an unfinished TLS handshake on the secure port", handshake, Duration::from_secs(60)));

    let tls_half = std::thread::spawn(move || {
        let tcp = connect(secure_port);
        tcp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let conn = rustls::ClientConnection::new(tls, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(HALF_REQUEST).unwrap();
        s.flush().unwrap();
        closed_within(&mut s, Duration::from_secs(90))
    });
    checks.push(("half a request over TLS on the secure port", tls_half, Duration::from_secs(60)));

    for (what, check, limit) in checks {
        match check.join().unwrap() {
            Some(after) => assert!(after <= limit, "{what}: closed after {after:?}, more than {limit:?}"),
            None => panic!("{what}: still open; nodelet log:\n{}", node.log()),
        }
    }
    assert_eq!(node.get("/healthz"), (200, "ok".into()));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

/// Lifts the test process's open-file limit to its hard limit: the flood holds thousands of sockets.
fn raise_open_files(need: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    assert!(limit.rlim_max >= need, "RLIMIT_NOFILE {} is below the {need} descriptors this test needs", limit.rlim_max);
    if limit.rlim_cur < need {
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
}

#[test]
fn a_connection_flood_leaves_healthz_answering_and_memory_returns() {
    raise_open_files(4096);
    let node = Node::start("limits-flood", &[]);
    let port = node.port;
    wait_healthy(&node);
    for _ in 0..20 {
        assert_eq!(node.get("/healthz").0, 200);
    }
    std::thread::sleep(Duration::from_secs(2));
    let baseline = rss_kib(node.pid());

    // A client connected before the flood keeps its answers.
    let mut healthy = connect(port);
    healthy.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut healthy), 200);

    let pad = vec![b'a'; 300 << 10];
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut s = connect(port);
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(HALF_REQUEST).and_then(|_| s.write_all(&pad));
        flood.push(s);
    }
    for _ in 0..2000 {
        // beyond the limit nodelet closes at once; a refused connect is just as fine
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            flood.push(s);
        }
    }
    let mut peak = 0;
    for _ in 0..10 {
        healthy.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut healthy), 200, "the established client during the flood");
        peak = peak.max(rss_kib(node.pid()));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(node.log().contains("connection limit reached"), "the flood met the connection limit:\n{}", node.log());
    drop(flood);
    drop(healthy);

    eventually("/healthz on a new connection after the flood", Duration::from_secs(10), || node.get("/healthz").0 == 200);
    let mut after = 0;
    let settled = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        after = rss_kib(node.pid());
        after <= baseline + 8 * 1024
    });
    eprintln!("RSS: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB");
    assert!(settled, "RSS did not come back near its baseline: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB");
}

fn alias_bomb() -> String {
    let mut text = String::from("apiVersion: v1\nkind: Pod\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    text
}

#[test]
fn nested_and_alias_bomb_manifests_are_refused_while_pods_keep_running() {
    let mut node = Node::start("limits-manifests", &[]);
    node.write_manifest("keep.yaml", &busybox_pod("keep", "Always", 1, "sleep 3600"));
    let keep = node.wait_running("keep");

    let start = Instant::now();
    node.write_manifest("nested.json", &"[".repeat(400 << 10));
    node.write_manifest("bomb.yaml", &alias_bomb());
    let refused = |file: &str, cause: &str| node.log().lines().any(|l| l.contains("invalid static pod manifest") && l.contains(file) && l.contains(cause));
    eventually("both bad manifests refused", Duration::from_secs(5), || refused("nested.json", "nested deeper") && refused("bomb.yaml", "aliases"));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "refusing the bad manifests took {took:?}");
    assert_eq!(node.get("/healthz"), (200, "ok".into()));

    let still = node.pod("keep").expect("the good pod is still there");
    assert_eq!(still["status"]["phase"], "Running");
    assert_eq!(still["metadata"]["uid"], keep["metadata"]["uid"]);
    node.write_manifest("later.yaml", &busybox_pod("later", "Always", 1, "sleep 3600"));
    node.wait_running("later");

    let pid = nix::unistd::Pid::from_raw(node.pid() as i32);
    let stopping = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    eventually("nodelet to stop on SIGTERM", Duration::from_secs(10), || !node.is_running());
    eprintln!("refused in {took:?}; stopped {:?} after SIGTERM", stopping.elapsed());
}
