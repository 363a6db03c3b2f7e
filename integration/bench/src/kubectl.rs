//! kubectl through the local kube-apiserver to nodelet: `kubectl exec POD -- true` latency, the
//! throughput of `kubectl logs -f` on a container writing as fast as it can, and nodelet's
//! memory while 20 `kubectl logs -f` streams are open.

use crate::api::ApiCluster;
use crate::{percentile, print, rss_mb, Process};
use nodelet::runtime::Cri;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXEC_RUNS: usize = 20;
const FOLLOW_STREAMS: usize = 20;
/// How long `kubectl logs -f` is read for the throughput figure.
const FOLLOW_READ: Duration = Duration::from_secs(5);

fn kubectl(cluster: &ApiCluster) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(cluster.admin_kubeconfig()).args(["--namespace", &cluster.namespace]).env_remove("KUBECONFIG");
    cmd
}

/// Starts `kubectl logs -f pod` with its output counted (bytes) by a reader thread.
fn follow(cluster: &ApiCluster, pod: &str) -> (Process, Arc<AtomicU64>) {
    let mut child =
        kubectl(cluster).args(["logs", "-f", pod]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("starting kubectl (is it on the PATH?)");
    let mut stdout = child.stdout.take().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    (Process(child), count)
}

pub async fn run(cri: &Cri) {
    assert!(
        Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success()),
        "kubectl is not on the PATH (integration/env/install-packages.sh installs one)"
    );
    let cluster = ApiCluster::start("kubectl").await;

    cluster.run_pod("shell", "exec sleep 3600").await;
    let mut times = Vec::new();
    for _ in 0..EXEC_RUNS {
        let started = Instant::now();
        let out = kubectl(&cluster).args(["exec", "shell", "--", "true"]).output().expect("running kubectl exec");
        assert!(out.status.success(), "kubectl exec failed: {}", String::from_utf8_lossy(&out.stderr));
        times.push(started.elapsed());
    }
    times.sort();
    print("kubectl_exec_p50", percentile(&times, 50.0).as_secs_f64(), "s");
    cluster.delete_pods(cri, &["shell".to_string()]).await;

    // Lines of 63 bytes as fast as `yes` writes them; the pod goes as soon as it is measured,
    // since its log grows by tens of MB a second.
    cluster.run_pod("writer", "exec yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").await;
    let (reader, bytes) = follow(&cluster, "writer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while bytes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "kubectl logs -f gave nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (from, start) = (bytes.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(FOLLOW_READ).await;
    let read = bytes.load(Ordering::Relaxed) - from;
    print("logs_follow_throughput", read as f64 / start.elapsed().as_secs_f64() / 1e6, "MB/s");
    drop(reader);
    cluster.delete_pods(cri, &["writer".to_string()]).await;

    cluster.run_pod("ticker", "while true; do echo tick; sleep 0.1; done").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    print("rss_before_follow_streams", rss_mb(cluster.nodelet.0.id()), "MB");
    let streams: Vec<_> = (0..FOLLOW_STREAMS).map(|_| follow(&cluster, "ticker")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while streams.iter().any(|(_, n)| n.load(Ordering::Relaxed) == 0) {
        assert!(Instant::now() < deadline, "not every kubectl logs -f stream started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    print("rss_20_follow_streams", rss_mb(cluster.nodelet.0.id()), "MB");
    drop(streams);
    cluster.delete_pods(cri, &["ticker".to_string()]).await;
}
