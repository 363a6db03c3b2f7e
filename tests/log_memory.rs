//! `/containerLogs` keeps nodelet's memory bounded whatever the log: a 200 MB single-line log
//! (a long run of partial entries, then one huge entry without newline) read with limitBytes and
//! with tailLines, four requests of each at once, against a real nodelet and containerd.

mod common;

use common::{busybox_pod, kubestream, Node};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The peak nodelet may reach while serving the requests (its own baseline is ~15-20 MB).
const PEAK_LIMIT: u64 = 64 << 20;
const PARTIALS: usize = 6400;
const PARTIAL: usize = 16 << 10;
const LAST_ENTRY: usize = 100 << 20;

/// A field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// A short first line, then one line of 200 MB: PARTIALS partial entries of PARTIAL bytes (as
/// containerd splits a long line) and a last entry of LAST_ENTRY bytes that never ends.
fn write_huge_log(path: &std::path::Path) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    f.write_all(b"2024-05-01T10:00:00Z stdout F small\n").unwrap();
    let piece = vec![b'p'; PARTIAL];
    for _ in 0..PARTIALS {
        f.write_all(b"2024-05-01T10:00:01Z stdout P ").unwrap();
        f.write_all(&piece).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.write_all(b"2024-05-01T10:00:02Z stdout F ").unwrap();
    let block = vec![b'f'; 1 << 20];
    for _ in 0..LAST_ENTRY >> 20 {
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
}

/// Reads a log request's body to its end, keeping only its length and first and last bytes.
async fn fetch(node: &Node, path: &str) -> (usize, Vec<u8>, Vec<u8>) {
    let (status, mut body) = kubestream::get_stream(node, path).await;
    assert_eq!(status, 200, "GET {path}");
    let (mut len, mut head, mut tail) = (0, Vec::new(), Vec::new());
    while let Some(chunk) = body.next_chunk().await {
        len += chunk.len();
        if head.len() < 16 {
            head.extend(chunk.iter().take(16 - head.len()));
        }
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(16)..]);
        tail.drain(..tail.len().saturating_sub(16));
    }
    (len, head, tail)
}

#[test]
fn a_huge_single_line_log_is_served_in_bounded_memory() {
    let node = Node::start("log-memory", &["--anonymous-auth=true"]);
    node.write_manifest("big.yaml", &busybox_pod("big", "Never", 1, "echo small"));
    let pod = node.wait_phase("big", "Succeeded");
    let name = node.pod_name("big");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    write_huge_log(&node.pod_logs().join(format!("default_{name}_{uid}")).join("main/0.log"));
    let pid = node.pid();
    // Starting the pod (pulls, CRI) peaks higher than serving should: reset the peak to now.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting nodelet's VmHWM");
    let baseline = vm(pid, "VmHWM");

    // VmHWM is the peak; VmRSS sampled meanwhile shows it was reached while serving.
    let done = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max_rss) = (done.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                max_rss.fetch_max(vm(pid, "VmRSS"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let line = PARTIALS * PARTIAL + LAST_ENTRY;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let limited = format!("/containerLogs/default/{name}/main?limitBytes=10");
        let tailed = format!("/containerLogs/default/{name}/main?tailLines=1");
        let limits = futures::future::join_all((0..4).map(|_| fetch(&node, &limited))).await;
        for (len, head, _) in limits {
            assert_eq!((len, head.as_slice()), (10, b"small\npppp".as_slice()));
        }
        let tails = futures::future::join_all((0..4).map(|_| fetch(&node, &tailed))).await;
        for (len, head, tail) in tails {
            // The last line whole (closed by a newline at the end of the log), not the first.
            assert_eq!(len, line + 1);
            assert_eq!(head, vec![b'p'; 16]);
            assert_eq!(tail, [vec![b'f'; 15], vec![b'\n']].concat());
        }
    });
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let (peak, rss) = (vm(pid, "VmHWM"), max_rss.load(Ordering::SeqCst));
    println!(
        "nodelet memory: before {} MB, peak while serving {} MB (VmHWM), highest VmRSS sampled {} MB, now {} MB",
        baseline >> 20,
        peak >> 20,
        rss >> 20,
        vm(pid, "VmRSS") >> 20
    );
    assert!(peak > 0, "no VmHWM for nodelet (pid {pid})");
    assert!(peak < PEAK_LIMIT, "nodelet peaked at {} MB serving a 200 MB single-line log (limit {} MB)", peak >> 20, PEAK_LIMIT >> 20);
}
