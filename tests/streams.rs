//! The secure port's streams against the real containerd: exec (stdin, exit codes, tty and
//! resize), attach, port-forward and logs (previous, follow ending with the container), spoken
//! to nodelet's secure port with the websocket protocols kubectl uses.

mod common;

use common::kubestream::{self, Channels, PortForward, CHANNEL_PROTOCOL, STDOUT};
use common::{busybox_pod, eventually, Node, BUSYBOX};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A node that lets anonymous clients in (AlwaysAllow), with one running pod.
fn node_with(test: &str, pod: &str, manifest: &str) -> (Node, String) {
    let node = Node::start(test, &["--anonymous-auth=true"]);
    node.write_manifest(&format!("{pod}.yaml"), manifest);
    node.wait_running(pod);
    let name = node.pod_name(pod);
    (node, name)
}

async fn open_exec(node: &Node, pod: &str, command: &[&str], flags: &str) -> Channels {
    let path = kubestream::exec_path("default", pod, "main", command, flags);
    kubestream::open(node, &path, CHANNEL_PROTOCOL).await.unwrap_or_else(|r| panic!("exec {command:?} refused: {r:?}"))
}

/// The exec processes named `name` still running in the pod's container.
async fn processes_named(node: &Node, pod: &str, name: &str) -> usize {
    let out = kubestream::exec(node, pod, "main", &["ps", "-o", "comm"]).await;
    out.stdout.lines().filter(|l| l.trim() == name).count()
}

#[test]
fn exec_reports_exit_codes_and_output_channels() {
    let (node, pod) = node_with("exec-codes", "box", &busybox_pod("box", "Always", 1, "exec sleep 3600"));
    runtime().block_on(async {
        let out = kubestream::exec(&node, &pod, "main", &["sh", "-c", "echo hello; echo oops >&2; exit 3"]).await;
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("hello\n", "oops\n"), "{out:?}");
        assert_eq!(out.exit_code(), Some(3), "{out:?}");
        let status = out.status.unwrap();
        assert_eq!((status["status"].as_str(), status["reason"].as_str()), (Some("Failure"), Some("NonZeroExitCode")));
        let out = kubestream::exec(&node, &pod, "main", &["hostname"]).await;
        assert_eq!(out.stdout.trim(), pod);
        assert_eq!(out.exit_code(), Some(0), "{out:?}");
        // A command the container lacks is the runtime's error, still on the error channel.
        let out = kubestream::exec(&node, &pod, "main", &["no-such-command"]).await;
        assert_ne!(out.exit_code(), Some(0), "{out:?}");
        assert!(out.status.is_some(), "{out:?}");
    });
}

#[test]
fn exec_with_stdin_echoes_through_cat_and_ends_when_the_client_closes() {
    let (node, pod) = node_with("exec-stdin", "box", &busybox_pod("box", "Always", 1, "exec sleep 3600"));
    runtime().block_on(async {
        let mut cat = open_exec(&node, &pod, &["cat"], "stdin=1&stdout=1&stderr=1").await;
        assert_eq!(cat.protocol, CHANNEL_PROTOCOL);
        cat.stdin("hello\n").await;
        assert_eq!(cat.read_until(STDOUT, "hello\n").await, "hello\n");
        cat.stdin("second line\n").await;
        assert_eq!(cat.read_until(STDOUT, "second line\n").await, "second line\n");
        assert_eq!(processes_named(&node, &pod, "cat").await, 1);
        // v4 closes stdin with the socket: cat reads its end and exits.
        cat.close().await;
        until_no_process(&node, &pod, "cat").await;
        // stdin read to the end of a line, and the exit code after it.
        let mut sh = open_exec(&node, &pod, &["sh", "-c", "read line; echo \"got $line\"; exit 4"], "stdin=1&stdout=1&stderr=1").await;
        sh.stdin("it\n").await;
        let out = sh.finish().await;
        assert_eq!(out.stdout, "got it\n");
        assert_eq!(out.exit_code(), Some(4), "{out:?}");
    });
}

/// Whether `line` is what `stty size` prints: two numbers.
fn is_stty_size(line: &str) -> bool {
    let numbers: Vec<&str> = line.split(' ').collect();
    numbers.len() == 2 && numbers.iter().all(|n| n.parse::<u32>().is_ok())
}

/// Sends newlines to a shell loop printing `stty size` per line until it prints `want` (a
/// resize reaches the tty on its own path, so the first answer may still be the old size).
async fn tty_size_becomes(shell: &mut Channels, want: &str) {
    let mut seen = String::new();
    for _ in 0..20 {
        shell.stdin("\n").await;
        // Wait a little for the answer before asking again; output in a tty ends with \r\n.
        while let Some(Some((channel, data))) = shell.recv_within(Duration::from_secs(2)).await {
            if channel != STDOUT {
                continue;
            }
            seen.push_str(&String::from_utf8_lossy(&data));
            let last = seen.split("\r\n").map(str::trim).filter(|l| is_stty_size(l)).last().map(str::to_string);
            if last.as_deref() == Some(want) {
                return;
            }
            if last.is_some() && seen.ends_with("\r\n") {
                seen.clear();
                break;
            }
        }
    }
    panic!("stty size never printed {want:?}; the tty printed {seen:?}");
}

#[test]
fn exec_with_a_tty_follows_resize_messages() {
    let (node, pod) = node_with("exec-tty", "box", &busybox_pod("box", "Always", 1, "exec sleep 3600"));
    runtime().block_on(async {
        let mut shell = open_exec(&node, &pod, &["sh", "-c", "while read x; do stty size; done"], "stdin=1&stdout=1&tty=1").await;
        shell.resize(100, 30).await;
        tty_size_becomes(&mut shell, "30 100").await;
        shell.resize(132, 43).await;
        tty_size_becomes(&mut shell, "43 132").await;
        shell.close().await;
        // With a tty (as `kubectl exec -it` asks) the exit code still arrives. (containerd 1.6
        // sends no output for a tty without stdin, which kubectl never asks for.)
        let out = open_exec(&node, &pod, &["sh", "-c", "tty; exit 5"], "stdin=1&stdout=1&tty=1").await.finish().await;
        assert!(out.stdout.starts_with("/dev/pts/"), "{out:?}");
        assert_eq!(out.exit_code(), Some(5), "{out:?}");
    });
}

#[test]
fn attach_reaches_a_container_reading_stdin() {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: talker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    stdin: true\n    command: [sh, -c, 'echo ready; while read line; do echo \"heard $line\"; done']\n  - name: once\n    image: {BUSYBOX}\n    stdin: true\n    stdinOnce: true\n    command: [sh, -c, 'while read line; do echo \"once $line\"; done; echo closed; exec sleep 3600']\n"
    );
    let (node, pod) = node_with("attach", "talker", &manifest);
    runtime().block_on(async {
        let path = format!("/attach/default/{pod}/main?stdin=1&stdout=1&stderr=1");
        let mut first = kubestream::open(&node, &path, CHANNEL_PROTOCOL).await.expect("attach");
        first.stdin("one\n").await;
        first.read_until(STDOUT, "heard one\n").await;
        first.close().await;
        // Without stdinOnce the container's stdin outlives a client: a second one is heard too.
        let mut second = kubestream::open(&node, &path, CHANNEL_PROTOCOL).await.expect("attach again");
        second.stdin("two\n").await;
        second.read_until(STDOUT, "heard two\n").await;
        second.close().await;

        // With stdinOnce the first client leaving closes the container's stdin.
        let once = format!("/attach/default/{pod}/once?stdin=1&stdout=1&stderr=1");
        let mut client = kubestream::open(&node, &once, CHANNEL_PROTOCOL).await.expect("attach to once");
        client.stdin("hi\n").await;
        client.read_until(STDOUT, "once hi\n").await;
        client.close().await;
        let logs = format!("/containerLogs/default/{pod}/once");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let body = kubestream::get(&node, &logs).await.1;
            if body.contains("closed\n") {
                assert_eq!(body, "once hi\nclosed\n");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "stdin of the stdinOnce container was not closed; its log: {body:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn port_forward_reaches_a_pod_port() {
    let script = "mkdir -p /www && echo forwarded-body > /www/index.html && exec httpd -f -p 8080 -h /www";
    let (node, pod) = node_with("port-forward", "web", &busybox_pod("web", "Always", 1, script));
    runtime().block_on(async {
        for _ in 0..2 {
            let mut forward = PortForward::open(&node, "default", &pod, 8080).await.expect("port-forward");
            forward.send(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n").await;
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("forwarded-body\n") {
                match forward.recv().await {
                    Ok(Some(data)) => got.extend(data),
                    other => panic!("port-forward ended with {other:?}; got {:?}", String::from_utf8_lossy(&got)),
                }
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
        }
        // Nothing listens on 9: the runtime says so on the error channel.
        let mut closed = PortForward::open(&node, "default", &pod, 9).await.expect("port-forward to a closed port");
        closed.send(b"hello").await;
        let err = closed.read_to_end().await.expect_err("an error from the runtime");
        assert!(err.contains('9'), "{err}");
        // A websocket port-forward must name its port.
        let refused = kubestream::open(&node, &format!("/portForward/default/{pod}"), CHANNEL_PROTOCOL).await.err().expect("refused");
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(refused.body.contains("\"port\" is required"), "{refused:?}");
    });
}

#[test]
fn logs_of_the_previous_run_and_follow_ending_with_the_container() {
    let ctl = tempfile::tempdir().unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: runs\nspec:\n  restartPolicy: OnFailure\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: data\n    emptyDir: {{}}\n  - name: ctl\n    hostPath: {{path: {ctl}}}\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    volumeMounts: [{{name: data, mountPath: /data}}, {{name: ctl, mountPath: /ctl}}]\n    command: [sh, -c, 'if [ -f /data/ran ]; then echo second run; while [ ! -f /ctl/stop ]; do sleep 0.1; done; echo bye; else touch /data/ran; echo first run; exit 1; fi']\n",
        ctl = ctl.path().display()
    );
    let node = Node::start("logs-runs", &["--anonymous-auth=true"]);
    node.write_manifest("runs.yaml", &manifest);
    node.wait_pod("runs", "a restart", Duration::from_secs(90), |p| {
        let c = &p["status"]["containerStatuses"][0];
        (c["restartCount"].as_i64() >= Some(1) && c["state"]["running"].is_object()).then_some(())
    });
    let pod = node.pod_name("runs");
    let path = format!("/containerLogs/default/{pod}/main");
    runtime().block_on(async {
        assert_eq!(kubestream::get(&node, &format!("{path}?previous=true")).await, (200, "first run\n".to_string()));
        let (status, mut follow) = kubestream::get_stream(&node, &format!("{path}?follow=true")).await;
        assert_eq!(status, 200);
        let mut got = String::new();
        follow.read_until(&mut got, "second run\n").await;
        std::fs::write(ctl.path().join("stop"), "").unwrap();
        // The container ends: the stream sends its last line and ends too.
        follow.read_to_end(&mut got).await;
        assert_eq!(got, "second run\nbye\n");
        assert_eq!(
            kubestream::get(&node, &format!("{path}?previous=true&timestamps=true")).await.1.split_once(' ').map(|(_, l)| l.to_string()),
            Some("first run\n".to_string())
        );
    });
    node.wait_phase("runs", "Succeeded");
}

/// Open file descriptors and threads of a process.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    (fds, threads)
}

/// Opens `count` log follows (16 at a time), reads their first bytes and drops the connection.
async fn abort_log_follows(node: &Node, pod: &str, count: usize) {
    use futures::StreamExt;
    let path = format!("/containerLogs/default/{pod}/main?follow=true");
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |_| async {
            let (status, mut body) = kubestream::get_stream(node, &path).await;
            assert_eq!(status, 200);
            body.next_chunk().await.expect("the log so far");
        })
        .await;
}

/// The exec, attach and port-forward connections nodelet relays to the runtime, from /metrics.
fn relayed_streams(node: &Node) -> usize {
    let (code, metrics) = node.get("/metrics");
    assert_eq!(code, 200, "{metrics}");
    metrics.lines().find_map(|l| l.strip_prefix("nodelet_secure_port_streams{kind=\"relay\"} ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Waits up to a minute until no process named `name` runs in the pod's container.
async fn until_no_process(node: &Node, pod: &str, name: &str) {
    if let Err(left) = processes_end(node, pod, name).await {
        panic!("{left} {name} processes still run in the pod");
    }
}

/// How many processes named `name` still run in the pod after a minute, if any do.
async fn processes_end(node: &Node, pod: &str, name: &str) -> Result<(), usize> {
    let started = std::time::Instant::now();
    loop {
        let left = processes_named(node, pod, name).await;
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the aborted execs' `cat`s end. One that outlives its stream by a minute while
/// nodelet relays nothing is the runtime's: containerd 1.6 now and then misses the end of an
/// exec's stdin among hundreds (once in a CI run), every connection closed on nodelet's side.
/// That one is reported and killed; a stream nodelet still relays fails the test.
async fn until_aborted_cats_end(node: &Node, pod: &str) {
    let Err(left) = processes_end(node, pod, "cat").await else { return };
    let relayed = relayed_streams(node);
    assert_eq!(relayed, 0, "{left} cat processes still run in the pod and nodelet still relays {relayed} streams");
    eprintln!("warning: the runtime left {left} cat processes running after nodelet closed their streams; killing them");
    let out = kubestream::exec(node, pod, "main", &["ps", "-o", "pid,comm"]).await;
    for pid in out.stdout.lines().filter_map(|l| l.trim().strip_suffix("cat")).map(str::trim) {
        kubestream::exec(node, pod, "main", &["kill", "-9", pid]).await;
    }
    until_no_process(node, pod, "cat").await;
}

/// Opens `count` interactive execs of `cat`, waits until each is streaming and drops the
/// connection without a websocket close; cat then reads the end of its stdin and exits. They
/// go in batches that containerd finishes before the next: its shim times out on a backlog of
/// hundreds of exec processes to start and remove.
async fn abort_execs(node: &Node, pod: &str, count: usize) {
    use futures::StreamExt;
    const BATCH: usize = 20;
    for batch in (0..count).collect::<Vec<_>>().chunks(BATCH) {
        futures::stream::iter(batch)
            .for_each_concurrent(4, |_| async {
                let mut cat = open_exec(node, pod, &["cat"], "stdin=1&stdout=1").await;
                cat.recv().await.expect("the stream's opening message");
                drop(cat.into_socket());
            })
            .await;
        until_aborted_cats_end(node, pod).await;
    }
}

#[test]
fn a_thousand_aborted_streams_leave_no_fd_thread_or_process_behind() {
    let count: usize = std::env::var("NODELET_ABORTED_STREAMS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let (node, pod) = node_with("stream-leaks", "ticker", &busybox_pod("ticker", "Always", 1, "while true; do echo tick; sleep 1; done"));
    let pid = node.pid();
    runtime().block_on(async {
        // A few of each first, so that what nodelet keeps between streams (pooled connections
        // to containerd, idle blocking threads) is part of the baseline.
        abort_log_follows(&node, &pod, 4).await;
        abort_execs(&node, &pod, 4).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let baseline = fds_and_threads(pid);

        let started = std::time::Instant::now();
        abort_log_follows(&node, &pod, count).await;
        let logs_took = started.elapsed();
        let after_logs = fds_and_threads(pid);
        let started = std::time::Instant::now();
        abort_execs(&node, &pod, count).await;
        let execs_took = started.elapsed();
        let after_execs = fds_and_threads(pid);

        // Idle blocking threads linger 10 s in tokio: wait for them rather than assert a time.
        const FD_SLACK: usize = 8;
        const THREAD_SLACK: usize = 4;
        let started = std::time::Instant::now();
        let mut now = fds_and_threads(pid);
        while now.0 > baseline.0 + FD_SLACK || now.1 > baseline.1 + THREAD_SLACK {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "nodelet holds {} fds and {} threads after {count} aborted log follows and execs, {} and {} before",
                now.0,
                now.1,
                baseline.0,
                baseline.1
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            now = fds_and_threads(pid);
        }
        let settle_took = started.elapsed();
        eprintln!(
            "aborted streams: {count} log follows in {logs_took:.1?} ({:.0}/s), {count} execs in {execs_took:.1?} ({:.0}/s); nodelet fds/threads: baseline {baseline:?}, after the follows {after_logs:?}, after the execs {after_execs:?}, settled {now:?} after {settle_took:.1?}",
            count as f64 / logs_took.as_secs_f64(),
            count as f64 / execs_took.as_secs_f64()
        );
    });
}

#[test]
fn streams_refuse_anonymous_clients() {
    let node = Node::start("streams-anon", &[]);
    eventually("the secure port", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", node.secure_port)).is_ok());
    runtime().block_on(async {
        for path in ["/exec/default/any/main?command=true&stdout=1", "/attach/default/any/main?stdout=1", "/portForward/default/any?port=80"] {
            let refused = kubestream::open(&node, path, CHANNEL_PROTOCOL).await.err().unwrap_or_else(|| panic!("{path} let an anonymous client in"));
            assert_eq!((refused.status, refused.body.as_str()), (401, "Unauthorized\n"), "{path}");
        }
    });
}
