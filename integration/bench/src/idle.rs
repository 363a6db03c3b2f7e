//! CRI calls per second at 30 idle static pods: nodelet's own runtime call counters
//! (`kubelet_runtime_operations_duration_seconds_count`, all operations) read from its
//! `/metrics` twice, a quiet interval apart, once every pod runs and has settled.

use super::{print, remove_all, start_nodelet_serving, write_and_time};
use nodelet::runtime::Cri;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const PODS: usize = 30;
const SETTLE: Duration = Duration::from_secs(15);
const INTERVAL: Duration = Duration::from_secs(30);

pub async fn run(cri: &Cri) {
    let port = free_port();
    let node = start_nodelet_serving(port);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let names: Vec<String> = (0..PODS).map(|i| format!("idle{i}")).collect();
    write_and_time(cri, &node, &names).await;
    // Past the start-up: the workers' first syncs and the image checks are done.
    tokio::time::sleep(SETTLE).await;
    let (before, at) = (runtime_calls(port), Instant::now());
    tokio::time::sleep(INTERVAL).await;
    let after = runtime_calls(port);
    let seconds = at.elapsed().as_secs_f64();
    let calls: f64 = after.values().sum::<f64>() - before.values().sum::<f64>();
    print("cri_calls_per_second_30_idle_pods", calls / seconds, "calls/s");
    // Which calls they are, to see where the load comes from.
    let per_operation: Vec<String> = after
        .iter()
        .map(|(op, n)| (op, (n - before.get(op).unwrap_or(&0.0)) / seconds))
        .filter(|(_, rate)| *rate > 0.0)
        .map(|(op, rate)| format!("{op} {rate:.2}"))
        .collect();
    eprintln!("cri calls per second by operation: {}", per_operation.join(", "));
    remove_all(cri, &node, &names).await;
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nodelet's runtime call counts by operation.
fn runtime_calls(port: u16) -> std::collections::BTreeMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting to nodelet's read-only port");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("kubelet_runtime_operations_duration_seconds_count"))
        .filter_map(|l| {
            let operation = l.split("operation_type=\"").nth(1)?.split('"').next()?;
            Some((operation.to_string(), l.rsplit(' ').next()?.parse::<f64>().ok()?))
        })
        .fold(Default::default(), |mut by_op, (op, n)| {
            *by_op.entry(op).or_insert(0.0) += n;
            by_op
        })
}
