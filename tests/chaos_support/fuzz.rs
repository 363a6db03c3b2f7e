//! The fuzz passes of `make chaos` (e): mutated static pod manifests through nodelet's parser and
//! the pure pod-spec code after it, mutated CNI configs and environments through the real
//! nodelet-cni binary, and mutated HTTP requests and TLS handshakes against a live nodelet's
//! read-only and secure ports. Each pass returns its tally; the caller prints and asserts it.

use super::mutate::Mutator;
use crate::common::{cni_plugin_binary, Node, BUSYBOX};
use nodelet::podinfo::NodeContext;
use nodelet::pods::{admission, manifest, spec, status};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a pass saw: inputs, those still valid (accepted), those refused with a clear error, and
/// the failures: crashes (a panic, a signal, an unclear answer) and hangs, with examples.
#[derive(Default, Debug)]
pub struct Tally {
    pub inputs: usize,
    pub accepted: usize,
    pub refused: usize,
    pub crashes: usize,
    pub hangs: usize,
    pub examples: Vec<String>,
}

impl Tally {
    fn failure(&mut self, hang: bool, what: String, input: &[u8]) {
        if hang {
            self.hangs += 1;
        } else {
            self.crashes += 1;
        }
        if self.examples.len() < 5 {
            let shown: String = String::from_utf8_lossy(&input[..input.len().min(600)]).escape_debug().collect();
            self.examples.push(format!("{what}; input ({} bytes): \"{shown}\"", input.len()));
        }
    }

    pub fn add(&mut self, other: &Tally) {
        self.inputs += other.inputs;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.crashes += other.crashes;
        self.hangs += other.hangs;
        self.examples.extend(other.examples.iter().cloned());
    }

    pub fn figure(&self) -> String {
        format!("{} accepted {} refused {} crashes {} hangs {}", self.inputs, self.accepted, self.refused, self.crashes, self.hangs)
    }
}

// ---- manifests and pod specs (unit level) -------------------------------------------------

fn manifest_samples() -> Vec<String> {
    let rich = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: fuzz-rich
  namespace: chaos
  labels: {{app: fuzz, kubernetes.io/os: linux}}
  annotations:
    note: "a \"quoted\" value"
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  activeDeadlineSeconds: 600
  hostAliases:
  - ip: 10.1.2.3
    hostnames: [one.example, two.example]
  dnsPolicy: None
  dnsConfig:
    nameservers: [10.96.0.10]
    searches: [chaos.svc.cluster.local]
    options: [{{name: ndots, value: "2"}}]
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    sysctls: [{{name: net.ipv4.ip_local_port_range, value: "32768 60999"}}]
  nodeSelector: {{kubernetes.io/os: linux}}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - {{key: kubernetes.io/os, operator: In, values: [linux]}}
  volumes:
  - name: scratch
    emptyDir: {{medium: Memory, sizeLimit: 64Mi}}
  - name: info
    downwardAPI:
      items:
      - path: cpu
        resourceFieldRef: {{containerName: main, resource: limits.cpu, divisor: 1m}}
  initContainers:
  - name: init
    image: {BUSYBOX}
    command: [sh, -c, "true"]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo $(GREETING) && sleep 3600']
    workingDir: /tmp
    ports: [{{containerPort: 8080, hostPort: 18080, protocol: TCP, name: http}}]
    env:
    - {{name: GREETING, value: hello}}
    - name: NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    - name: LIMIT
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    resources:
      requests: {{cpu: 100m, memory: 32Mi, ephemeral-storage: 1Gi}}
      limits: {{cpu: "1.5", memory: 128Mi}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {{add: [NET_ADMIN], drop: [ALL]}}
      seccompProfile: {{type: RuntimeDefault}}
    livenessProbe:
      httpGet: {{path: /healthz, port: http, httpHeaders: [{{name: X-Probe, value: "1"}}]}}
      initialDelaySeconds: 3
      periodSeconds: 5
      timeoutSeconds: 1
      failureThreshold: 3
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
    lifecycle:
      preStop: {{sleep: {{seconds: 1}}}}
    volumeMounts:
    - {{name: scratch, mountPath: /scratch, subPathExpr: $(NODE)}}
    - {{name: info, mountPath: /info, readOnly: true}}
"#
    );
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "fuzz-json", "labels": {"a": "b"}},
        "spec": {
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                "env": [{"name": "A", "value": "1"}]}],
            "hostNetwork": false,
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]
        }
    });
    let plain = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fuzz-plain\nspec:\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    args: [sleep, \"3600\"]\n"
    );
    vec![rich, serde_json::to_string_pretty(&json).unwrap(), plain]
}

fn node_context() -> NodeContext {
    NodeContext {
        node_name: "chaos".into(),
        cgroups: nodelet::cgroups::Layout::new(nodelet::cgroups::Driver::Cgroupfs, "/"),
        pod_pids_limit: None,
        pod_log_root: "/var/log/pods".into(),
        pod_data_root: "/var/lib/nodelet/pods".into(),
        cluster_dns: vec!["10.96.0.10".into()],
        cluster_domain: "cluster.local".into(),
        host_resolv_conf: "nameserver 127.0.0.53\nsearch lan\n".into(),
        host_ip: Some("127.0.0.1".into()),
        memory_capacity: 1 << 30,
        allocatable: Default::default(),
        seccomp_root: "/var/lib/nodelet/seccomp".into(),
        seccomp_default: false,
    }
}

/// What nodelet does with a manifest before anything runs: parse, validate, default, admit, and
/// turn it into the runtime's sandbox and container resources. Ok(true) for a pod it would run.
fn parse_and_plan(input: &[u8]) -> Result<bool, String> {
    let pod = manifest::parse_static_pod("fuzz.yaml", input, "chaos")?;
    let config = admission::AdmissionConfig::default();
    let admitted = admission::admit(&pod, &admission::Context { config: &config, admitted: &[] }).is_ok();
    let ctx = node_context();
    let _ = spec::sandbox_config(&ctx, &pod, 0);
    let _ = spec::dns_config(&ctx, &pod);
    let _ = spec::etc_hosts(&pod, Some("10.88.0.9"));
    let pod_spec = pod.spec.as_ref().ok_or("no spec after defaults")?;
    let _ = status::qos_class(pod_spec);
    let _ = admission::resources::pod_requests(&pod);
    for c in pod_spec.init_containers.iter().flatten().chain(&pod_spec.containers) {
        let _ = spec::container_hash(c);
        let _ = spec::linux_resources(&ctx, &pod, c);
    }
    Ok(admitted)
}

/// Each input on a thread of its own: a panic is a crash, more than a second is a hang (the
/// thread is left behind; the pass goes on).
pub fn manifests(mutator: &mut Mutator, count: usize) -> Tally {
    let samples = manifest_samples();
    let mut tally = Tally::default();
    for _ in 0..count {
        let input = mutator.mutate_any(&samples);
        tally.inputs += 1;
        let (tx, rx) = mpsc::channel();
        let copy = input.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| parse_and_plan(&copy));
            let _ = tx.send(outcome);
        });
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(Ok(_))) => tally.accepted += 1,
            Ok(Ok(Err(message))) if !message.trim().is_empty() => tally.refused += 1,
            Ok(Ok(Err(_))) => tally.failure(false, "refused with an empty message".into(), &input),
            Ok(Err(panic)) => {
                let why = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                tally.failure(false, format!("panicked: {why}"), &input)
            }
            Err(_) => tally.failure(true, "took more than 1 s".into(), &input),
        }
    }
    tally
}

// ---- nodelet-cni (the real binary, in network namespaces of the test's own) ---------------

/// Two network namespaces of the test's own: the plugin runs in `host` (so its bridge, veths,
/// nft table and sysctls live there) and gives `container` its interface. Deleted when dropped.
struct Namespaces {
    host: String,
    container: String,
}

impl Namespaces {
    fn new() -> Namespaces {
        let id = std::process::id();
        let ns = Namespaces { host: format!("chaos-h-{id}"), container: format!("chaos-c-{id}") };
        for name in [&ns.host, &ns.container] {
            let out = Command::new("ip").args(["netns", "add", name]).output().unwrap();
            assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.host, &self.container] {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        }
    }
}

struct PluginRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn run_plugin(ns: &Namespaces, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> PluginRun {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.host])
        .arg(cni_plugin_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_NETNS", format!("/var/run/netns/{}", ns.container))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nodelet-cni");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A plugin that stops reading early closes the pipe: not the test's failure.
    std::thread::spawn(move || drop(pipe.write_all(&input)));
    // Both pipes at once: a long message fills one while the other is being waited on.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let (out, err) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    PluginRun { code: status.code(), stdout, stderr, timed_out }
}

/// A CNI error as the spec shapes it: a JSON object with a numeric code and a message.
fn is_cni_error(stdout: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(stdout.trim()).is_ok_and(|v| v["code"].is_u64() && v["msg"].as_str().is_some_and(|m| !m.is_empty()))
}

/// Mutated configs and CNI_* variables for VERSION, ADD and DEL. Every ADD that succeeds is
/// undone with a DEL of the sample config, so the pool never fills up.
pub fn cni(mutator: &mut Mutator, count: usize) -> Tally {
    let ns = Namespaces::new();
    let state = tempfile::Builder::new().prefix("nodelet-chaos-cni-").tempdir().unwrap();
    let data_dir = state.path().to_str().unwrap().to_string();
    let config = |version: &str, extra: serde_json::Value| {
        let mut conf = serde_json::json!({"cniVersion": version, "name": "chaos", "type": "nodelet-cni", "bridge": "chaosbr0",
            "subnet": "10.199.0.0/22", "gateway": "10.199.0.1", "dataDir": data_dir, "mtu": 1400, "ipMasq": true, "masqTable": "chaos_cni"});
        conf.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::to_string_pretty(&conf).unwrap()
    };
    let samples = [
        config("1.0.0", serde_json::json!({})),
        config("0.4.0", serde_json::json!({"prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.199.0.9/22"}]}})),
        config(
            "1.0.0",
            serde_json::json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}, "args": {"cni": {"ips": ["10.199.0.7"]}}}),
        ),
    ];
    let sample_config = samples[0].clone();
    // The plugin writes under dataDir: only run an input that keeps the test's own (or is not a
    // JSON object at all, which the plugin refuses before any effect), never the host's default.
    let safe = |input: &[u8]| match serde_json::from_slice::<serde_json::Value>(input) {
        Ok(serde_json::Value::Object(map)) => map.get("dataDir").and_then(|d| d.as_str()) == Some(data_dir.as_str()),
        _ => true,
    };
    let mut tally = Tally::default();
    for i in 0..count {
        let command = *mutator.pick(&["ADD", "ADD", "ADD", "ADD", "ADD", "ADD", "DEL", "DEL", "VERSION", "CHECK"]);
        let mut input = mutator.mutate_any(&samples);
        while !safe(&input) {
            input = mutator.mutate_any(&samples);
        }
        let container_id = format!("chaos-{}-{i}", std::process::id());
        let mut ifname = "eth0".to_string();
        let mut cid = container_id.clone();
        // Now and then the environment is the malformed part.
        match mutator.below(10) {
            0 => ifname = String::from_utf8_lossy(&mutator.mutate(b"eth0")).into_owned().replace('\0', ""),
            1 => cid = String::from_utf8_lossy(&mutator.mutate(container_id.as_bytes())).into_owned().replace('\0', ""),
            _ => {}
        }
        tally.inputs += 1;
        let run = run_plugin(&ns, command, &[("CNI_CONTAINERID", &cid), ("CNI_IFNAME", &ifname)], &input);
        let panicked = run.stderr.contains("panicked");
        if run.timed_out {
            let cid_shown: String = cid.chars().take(80).collect();
            tally.failure(
                true,
                format!("CNI {command} (CNI_IFNAME {ifname:?} CNI_CONTAINERID {cid_shown:?}) ran more than 10 s: {} {}", run.stdout, run.stderr),
                &input,
            );
        } else if panicked || run.code.is_none() {
            tally.failure(false, format!("CNI {command} crashed (exit {:?}): {}", run.code, run.stderr.trim()), &input);
        } else if run.code == Some(0) {
            tally.accepted += 1;
        } else if is_cni_error(&run.stdout) {
            tally.refused += 1;
        } else {
            tally.failure(false, format!("CNI {command} failed (exit {:?}) without a CNI error on stdout: {:?}", run.code, run.stdout), &input);
        }
        if command == "ADD" && run.code == Some(0) {
            let undo = run_plugin(&ns, "DEL", &[("CNI_CONTAINERID", &cid), ("CNI_IFNAME", &ifname)], sample_config.as_bytes());
            assert_eq!(undo.code, Some(0), "DEL after a fuzzed ADD failed: {} {}", undo.stdout, undo.stderr);
        }
    }
    tally
}

// ---- live HTTP on the read-only and secure ports ------------------------------------------

const PLAIN_REQUESTS: &[&str] = &[
    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /healthz?verbose HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\nUser-Agent: chaos\r\n\r\n",
    "GET /pods HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n\r\n",
    "GET /stats/summary?only_cpu_and_memory=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /metrics/resource HTTP/1.0\r\n\r\n",
    "GET /spec/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\nGET /configz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "POST /pods HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"kind\":\"Pod\"}\r\n",
    "PUT /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];

const SECURE_REQUESTS: &[&str] = &[
    "GET /containerLogs/default/no-such-pod/main?tailLines=10&timestamps=true&sinceSeconds=5&limitBytes=100 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "GET /containerLogs/default/no-such-pod/main?previous=true&sinceTime=2026-01-01T00:00:00Z HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "POST /exec/default/no-such-pod/main?command=ls&command=-l&stdout=1&stderr=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    "GET /exec/default/no-such-pod/main?command=sh&stdin=1&tty=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
    "GET /portForward/default/no-such-pod?port=80 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "POST /attach/default/no-such-pod/main?stdout=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer not-a-token\r\nContent-Length: 0\r\n\r\n",
    "GET /pods HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic Og==\r\n\r\n",
];

/// What a connection gave back before it closed: a status code, nothing (closed), or no end
/// within the deadline (a hang).
enum Answer {
    Status(u16),
    Closed,
    Hang,
}

fn read_answer(stream: &mut impl Read, deadline: Instant) -> Answer {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if Instant::now() > deadline {
            return Answer::Hang;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(_) => break, // reset, or TLS ended without close_notify
        }
    }
    let status = (got.starts_with(b"HTTP/1.") && got.len() >= 12).then(|| String::from_utf8_lossy(&got[9..12]).parse().ok()).flatten();
    status.map_or(Answer::Closed, Answer::Status)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Trusts any certificate (the probes' client config): the fuzzer talks to nodelet's
/// self-signed one and checks nothing.
fn tls_config() -> Arc<rustls::ClientConfig> {
    nodelet::probes::http::insecure_tls()
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap()
}

/// The bytes a TLS client opens with, to mutate.
fn client_hello(tls: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(tls.clone(), server_name()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One mutated request on the read-only port: sent, then the write side closed, so a server
/// waiting for more of a request sees its end at once.
fn plain_request(port: u16, input: &[u8]) -> Answer {
    let mut s = connect(port);
    let _ = s.write_all(input);
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_answer(&mut s, Instant::now() + ANSWER_WITHIN)
}

/// A mutated request inside a TLS session on the secure port (a failed handshake counts as the
/// server closing).
fn tls_request(port: u16, tls: &Arc<rustls::ClientConfig>, input: &[u8]) -> Answer {
    let conn = rustls::ClientConnection::new(tls.clone(), server_name()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, connect(port));
    if s.write_all(input).and_then(|()| s.flush()).is_err() {
        return Answer::Closed;
    }
    s.conn.send_close_notify();
    let _ = s.flush();
    read_answer(&mut s, Instant::now() + ANSWER_WITHIN)
}

/// Mutated TLS handshakes, mutated requests over TLS and in the clear: every one must be
/// answered or closed within 10 s, and nodelet must keep running and say ok on /healthz.
pub fn http(node: &mut Node, mutator: &mut Mutator, count: usize) -> Tally {
    let tls = tls_config();
    let hello = client_hello(&tls);
    let secure: Vec<&str> = SECURE_REQUESTS.iter().chain(PLAIN_REQUESTS).copied().collect();
    let mut tally = Tally::default();
    for i in 0..count {
        let (what, input, answer) = match i % 5 {
            0 | 1 => {
                let input = mutator.mutate_any(PLAIN_REQUESTS);
                let answer = plain_request(node.port, &input);
                ("read-only port", input, answer)
            }
            2 | 3 => {
                let input = mutator.mutate_any(&secure);
                let answer = tls_request(node.secure_port, &tls, &input);
                ("secure port over TLS", input, answer)
            }
            _ => {
                let input = mutator.mutate(&hello);
                let answer = plain_request(node.secure_port, &input);
                ("secure port, TLS handshake", input, answer)
            }
        };
        tally.inputs += 1;
        match answer {
            Answer::Status(code) if code >= 400 => tally.refused += 1,
            Answer::Status(_) => tally.accepted += 1,
            Answer::Closed => tally.refused += 1,
            Answer::Hang => tally.failure(true, format!("{what}: no answer and no close within {ANSWER_WITHIN:?}"), &input),
        }
        if i % 25 == 24 && !node.is_running() {
            tally.failure(false, format!("nodelet exited during the HTTP pass:\n{}", node.log()), &input);
            break;
        }
    }
    if node.is_running() && node.get("/healthz").0 != 200 {
        tally.failure(false, "/healthz is not ok after the HTTP pass".into(), b"");
    }
    if node.log().contains("panicked at") {
        tally.failure(false, "nodelet's log shows a panic".into(), b"");
    }
    tally
}
