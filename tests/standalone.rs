//! Standalone mode against the real containerd, runc and nodelet-cni: static pods from a
//! directory run, get addresses, restart, stop and survive a restart of nodelet.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn ip_in_pod_cidr(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    ip.octets()[0] == 10 && ip.octets()[1] == 88
}

#[test]
fn static_pod_runs_with_an_ip_from_nodelet_cni_and_logs_in_cri_format() {
    let node = Node::start("run", &[]);
    node.write_manifest("web.yaml", &busybox_pod("web", "Always", 1, "echo started; exec httpd -f -p 8080"));
    let pod = node.wait_running("web");
    let ip = pod["status"]["podIP"].as_str().expect("a pod IP");
    assert!(ip_in_pod_cidr(ip), "pod IP {ip} is not in 10.88.0.0/16");
    assert_eq!(pod["metadata"]["name"], node.pod_name("web"));
    assert!(pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().starts_with("containerd://"));
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log = node.pod_logs().join(format!("default_{}_{uid}/main/0.log", node.pod_name("web")));
    eventually("the container's log", Duration::from_secs(10), || std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty()));
    let line = std::fs::read_to_string(&log).unwrap();
    let fields: Vec<&str> = line.splitn(4, ' ').collect();
    assert_eq!((fields[1], fields[2]), ("stdout", "F"), "CRI log format: {line}");
    assert!(fields[3].starts_with("started"), "{line}");
}

#[test]
fn two_pods_on_the_bridge_reach_each_other_by_ip() {
    let node = Node::start("reach", &[]);
    node.write_manifest("server.yaml", &busybox_pod("server", "Always", 1, "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www"));
    let server_ip = node.wait_running("server")["status"]["podIP"].as_str().unwrap().to_string();
    let script = format!("for i in 1 2 3 4 5; do timeout 3 wget -qO- http://{server_ip}:8080/ && exit 0; sleep 0.5; done; exit 1");
    node.write_manifest("client.yaml", &busybox_pod("client", "Never", 1, &script));
    let client = node.wait_phase("client", "Succeeded");
    assert_eq!(client["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    let uid = client["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(node.pod_logs().join(format!("default_{}_{uid}/main/0.log", node.pod_name("client")))).unwrap();
    assert!(log.contains("pong"), "{log}");
}

#[test]
fn exited_containers_follow_the_restart_policy_with_backoff() {
    let node = Node::start("restart", &["--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "4s"]);
    node.write_manifest("crash.yaml", &busybox_pod("crash", "Always", 1, "exit 3"));
    node.write_manifest("done.yaml", &busybox_pod("done", "OnFailure", 1, "exit 0"));
    node.write_manifest("fail.yaml", &busybox_pod("fail", "Never", 1, "exit 2"));

    let done = node.wait_phase("done", "Succeeded");
    assert_eq!(done["status"]["containerStatuses"][0]["restartCount"], 0);
    let failed = node.wait_phase("fail", "Failed");
    assert_eq!(failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
    assert_eq!(failed["status"]["containerStatuses"][0]["restartCount"], 0);

    // Record when each restart shows up: the gaps must grow as the back-off doubles.
    let mut seen_backoff = false;
    let mut restarts: Vec<(i64, Instant)> = Vec::new();
    node.wait_pod("crash", "four restarts", Duration::from_secs(60), |p| {
        let status = &p["status"]["containerStatuses"][0];
        seen_backoff |= status["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        let count = status["restartCount"].as_i64().unwrap_or(0);
        if restarts.last().is_none_or(|(c, _)| *c < count) {
            restarts.push((count, Instant::now()));
        }
        (count >= 4).then_some(())
    });
    assert!(seen_backoff, "the crashing container was never shown in CrashLoopBackOff");
    let crash = node.pod("crash").unwrap();
    let last = &crash["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 3, "{crash:#}");
    let gaps: Vec<Duration> = restarts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let longest = gaps.iter().max().unwrap();
    assert!(*longest >= Duration::from_millis(1500), "restarts were not held back: gaps {gaps:?}");
}

#[test]
fn removing_a_manifest_stops_the_pod_within_its_grace_period() {
    let node = Node::start("delete", &[]);
    // One container leaves on SIGTERM; the other ignores it and must be killed after the grace period.
    node.write_manifest("polite.yaml", &busybox_pod("polite", "Always", 30, "trap 'exit 0' TERM; while true; do sleep 0.1; done"));
    node.write_manifest("stubborn.yaml", &busybox_pod("stubborn", "Always", 2, "trap '' TERM; while true; do sleep 0.1; done"));
    node.wait_running("polite");
    node.wait_running("stubborn");

    let start = Instant::now();
    node.remove_manifest("polite.yaml");
    node.wait_gone("polite", Duration::from_secs(15));
    let polite = start.elapsed();
    assert!(polite < Duration::from_secs(10), "a pod that honours SIGTERM took {polite:?}");

    let start = Instant::now();
    node.remove_manifest("stubborn.yaml");
    node.wait_gone("stubborn", Duration::from_secs(20));
    let stubborn = start.elapsed();
    assert!(stubborn >= Duration::from_secs(2), "SIGKILL came before the 2 s grace period: {stubborn:?}");
    let (sandboxes, containers) = node.runtime_objects();
    assert!(sandboxes.is_empty() && containers.is_empty(), "left in the runtime: {sandboxes:?} {containers:?}");
}

#[test]
fn a_restarted_nodelet_adopts_running_pods_and_removes_vanished_ones() {
    let mut node = Node::start("adopt", &[]);
    node.write_manifest("keep.yaml", &busybox_pod("keep", "Always", 1, "exec sleep 3600"));
    node.write_manifest("drop.yaml", &busybox_pod("drop", "Always", 1, "exec sleep 3600"));
    let before = node.wait_running("keep")["status"]["containerStatuses"][0].clone();
    node.wait_running("drop");

    node.kill9();
    node.remove_manifest("drop.yaml");
    node.spawn();

    let after = node.wait_running("keep")["status"]["containerStatuses"][0].clone();
    assert_eq!(after["containerID"], before["containerID"], "the container was recreated");
    assert_eq!(after["state"]["running"]["startedAt"], before["state"]["running"]["startedAt"]);
    assert_eq!(after["restartCount"], 0);
    eventually("the vanished pod's sandbox to be removed", Duration::from_secs(20), || node.runtime_objects().0.len() == 1);
}

#[test]
fn bad_manifests_and_missing_images_are_reported_and_contained() {
    let node = Node::start("bad", &["--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "2s"]);
    node.write_manifest("good.yaml", &busybox_pod("good", "Always", 1, "exec sleep 3600"));
    node.write_manifest("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n");
    node.write_manifest("noimage.yaml", &busybox_pod("noimage", "Always", 1, "true").replace(BUSYBOX, "localhost:5000/nodelet/does-not-exist:1"));
    node.wait_running("good");
    eventually("the broken file named in the log", Duration::from_secs(10), || node.log().contains("broken.yaml"));

    let mut reasons = Vec::new();
    node.wait_pod("noimage", "ErrImagePull then ImagePullBackOff", Duration::from_secs(30), |p| {
        let reason = p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str().unwrap_or("").to_string();
        if reasons.last() != Some(&reason) {
            reasons.push(reason);
        }
        (reasons.contains(&"ErrImagePull".to_string()) && reasons.contains(&"ImagePullBackOff".to_string())).then_some(())
    });
    let pod = node.pod("noimage").unwrap();
    assert_eq!(pod["status"]["phase"], "Pending");
    let good = node.pod("good").unwrap();
    assert_eq!(good["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[test]
fn read_only_port_serves_healthz_pods_and_spec() {
    let node = Node::start("http", &[]);
    eventually("/healthz ok", Duration::from_secs(30), || node.get("/healthz") == (200, "ok".to_string()));
    let (code, body) = node.get("/spec");
    assert_eq!(code, 200);
    let spec: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(spec["num_cores"].as_u64().unwrap() >= 1);
    assert!(spec["memory_capacity"].as_u64().unwrap() > 0);
    assert!(!spec["boot_id"].as_str().unwrap().is_empty());
    let pods = node.pods();
    assert_eq!((pods["kind"].as_str(), pods["apiVersion"].as_str()), (Some("PodList"), Some("v1")));
    assert_eq!(node.get("/nope").0, 404);
    assert_eq!(http_request(node.port, "POST", "/pods").0, 405);
}

#[test]
fn healthz_names_an_unreachable_runtime_and_nodelet_keeps_running() {
    let mut node = Node::start("noruntime", &["--container-runtime-endpoint", "unix:///nonexistent/containerd.sock"]);
    let (code, body) = node.get("/healthz");
    assert_eq!(code, 500);
    assert!(body.contains("runtime"), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.is_running(), "nodelet exited:\n{}", node.log());
}

#[test]
fn invalid_flags_fail_at_start_naming_the_option() {
    let out = std::process::Command::new(nodelet_binary()).args(["--pod-cidr", "300.1.0.0/16"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--pod-cidr"), "{stderr}");
}

#[test]
fn init_containers_volumes_env_and_limits_reach_the_containers() {
    let node = Node::start("init", &[]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: init}}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: first
    image: {BUSYBOX}
    command: [sh, -c, "echo one > /shared/order"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: second
    image: {BUSYBOX}
    command: [sh, -c, "echo two >> /shared/order"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: nonroot
    image: {BUSYBOX}
    securityContext: {{runAsUser: 1000}}
    command: [sh, -c, "touch /shared/written-by-1000"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c]
    args: ["cat /shared/order; echo greeting=$(GREETING) pod=$POD; exec sleep 3600"]
    workingDir: /shared
    env:
    - {{name: WHO, value: world}}
    - {{name: GREETING, value: "hello $(WHO)"}}
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    resources: {{limits: {{memory: 48Mi, cpu: 250m}}}}
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    );
    node.write_manifest("init.yaml", &manifest);
    let pod = node.wait_running("init");
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    // The last one runs as uid 1000: an emptyDir is writable by any user, as the kubelet makes it.
    assert!(inits.iter().all(|s| s["state"]["terminated"]["exitCode"] == 0), "{inits:?}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log_path = node.pod_logs().join(format!("default_{}_{uid}/main/0.log", node.pod_name("init")));
    eventually("the main container's output", Duration::from_secs(10), || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("greeting=")));
    let log: String = std::fs::read_to_string(&log_path).unwrap().lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string() + "\n").collect();
    assert_eq!(log, format!("one\ntwo\ngreeting=hello world pod={}\n", node.pod_name("init")));

    // The limits reach the container's cgroup (cgroup v1, cgroupfs driver, the kubelet's layout).
    let id = pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().trim_start_matches("containerd://");
    let cgroup = common::pod_cgroup_dir("memory", uid).unwrap().join(id).join("memory.limit_in_bytes");
    assert_eq!(std::fs::read_to_string(&cgroup).unwrap().trim(), (48u64 << 20).to_string(), "{}", cgroup.display());
    let quota = common::pod_cgroup_dir("cpu", uid).unwrap().join(id).join("cpu.cfs_quota_us");
    assert_eq!(std::fs::read_to_string(&quota).unwrap().trim(), "25000", "{}", quota.display());
}

/// A sidecar (an init container with `restartPolicy: Always`) starts before the next init
/// container, keeps running beside the app, is restarted when it ends even in a Never pod, and
/// is stopped once the app has finished, the pod Succeeded.
#[test]
fn a_sidecar_serves_the_init_sequence_and_the_app_and_ends_with_them() {
    let node = Node::start("sidecar", &["--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "2s"]);
    // The sidecar fails once, 3 s into its first run; the app ends once it has seen the second.
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: sidecar}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: side
    image: {BUSYBOX}
    restartPolicy: Always
    command: [sh, -c, "echo run >> /shared/side-runs; touch /shared/up; [ $(wc -l < /shared/side-runs) -ge 2 ] && exec sleep 3600; sleep 3; exit 1"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: after-side
    image: {BUSYBOX}
    command: [sh, -c, "test -e /shared/up"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, "until [ $(wc -l < /shared/side-runs) -ge 2 ]; do sleep 0.2; done; echo saw $(wc -l < /shared/side-runs) sidecar runs"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    );
    node.write_manifest("sidecar.yaml", &manifest);
    let running = node.wait_pod("sidecar", "the app running beside the sidecar", Duration::from_secs(60), |p| {
        (p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then(|| p.clone())
    });
    let inits = running["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits[1]["state"]["terminated"]["exitCode"], 0, "the init container after the sidecar: {inits:?}");

    let pod = node.wait_phase("sidecar", "Succeeded");
    let side = &pod["status"]["initContainerStatuses"][0];
    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(side["restartCount"], 1, "restarted once although the pod's policy is Never: {side:#}");
    assert!(side["state"]["terminated"].is_object(), "stopped with the pod: {side:#}");
    assert_eq!((&main["restartCount"], &main["state"]["terminated"]["exitCode"]), (&0.into(), &0.into()), "{main:#}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log_path = node.pod_logs().join(format!("default_{}_{uid}/main/0.log", node.pod_name("sidecar")));
    assert!(std::fs::read_to_string(&log_path).unwrap().contains("saw 2 sidecar runs"));
}

#[test]
fn downward_api_volume_and_env_carry_resources_and_a_memory_empty_dir_is_a_sized_tmpfs() {
    let node = Node::start("downres", &[]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: downres, labels: {{tier: web}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: cpu_limit, resourceFieldRef: {{containerName: main, resource: limits.cpu, divisor: 1m}}}}
      - {{path: cpu_limit_cores, resourceFieldRef: {{containerName: main, resource: limits.cpu}}}}
      - {{path: memory_request, resourceFieldRef: {{containerName: main, resource: requests.memory, divisor: 1Mi}}}}
      - {{path: memory_limit, resourceFieldRef: {{containerName: main, resource: limits.memory}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  - name: scratch
    emptyDir: {{medium: Memory, sizeLimit: 8Mi}}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c]
    args: ["for f in cpu_limit cpu_limit_cores memory_request memory_limit labels; do echo $f=$(cat /info/$f); done; echo env_cpu=$CPU; grep ' /scratch ' /proc/mounts; stat -c mode=%a /scratch; echo done; exec sleep 3600"]
    env: [{{name: CPU, valueFrom: {{resourceFieldRef: {{resource: limits.cpu, divisor: 1m}}}}}}]
    resources: {{limits: {{cpu: 1250m}}, requests: {{cpu: 250m, memory: 32Mi}}}}
    volumeMounts: [{{name: info, mountPath: /info}}, {{name: scratch, mountPath: /scratch}}]
"#
    );
    node.write_manifest("downres.yaml", &manifest);
    let pod = node.wait_running("downres");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let log_path = node.pod_logs().join(format!("default_{}_{uid}/main/0.log", node.pod_name("downres")));
    eventually("the container's report", Duration::from_secs(10), || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("done")));
    let log: String = std::fs::read_to_string(&log_path).unwrap().lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string() + "\n").collect();
    for line in ["cpu_limit=1250\n", "cpu_limit_cores=2\n", "memory_request=32\n", "labels=tier=\"web\"\n", "env_cpu=1250\n", "mode=777\n"] {
        assert!(log.contains(line), "{line:?} missing from:\n{log}");
    }
    // No memory limit: the node's allocatable memory, a positive byte count.
    let memory_limit: u64 = log.lines().find_map(|l| l.strip_prefix("memory_limit=")).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{log}"));
    assert!(memory_limit > 0, "{log}");
    let scratch = log.lines().find(|l| l.contains(" /scratch ")).unwrap_or_else(|| panic!("no /scratch mount in:\n{log}"));
    assert!(scratch.starts_with("tmpfs ") && scratch.contains("size=8192k"), "{scratch}");
}

#[test]
fn a_finished_pod_gives_its_volumes_back_and_keeps_its_logs() {
    let node = Node::start("finishedvol", &["--anonymous-auth=true"]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: finished}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: disk, emptyDir: {{}}}}
  - {{name: memory, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, "head -c 1048576 /dev/zero > /disk/f; head -c 1048576 /dev/zero > /memory/f; echo wrote"]
    volumeMounts: [{{name: disk, mountPath: /disk}}, {{name: memory, mountPath: /memory}}]
"#
    );
    node.write_manifest("finished.yaml", &manifest);
    let pod = node.wait_phase("finished", "Succeeded");
    let volumes = node.dir.path().join("root/pods").join(pod["metadata"]["uid"].as_str().unwrap()).join("volumes");
    let mounted = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.contains(volumes.to_str().unwrap()));
    // As the kubelet for a terminated pod: the emptyDir's disk and the tmpfs's memory come back.
    eventually("the finished pod's volumes torn down", Duration::from_secs(20), || !volumes.exists() && !mounted());
    let logs = curl_secure(node.secure_port, &format!("/containerLogs/default/{}/main", node.pod_name("finished")));
    assert_eq!(logs, ("200".to_string(), "wrote\n".to_string()), "the logs of a finished pod stay");
    assert_eq!(node.pod("finished").unwrap()["status"]["phase"], "Succeeded");
}

#[test]
fn changing_a_manifest_replaces_the_pod() {
    let node = Node::start("change", &[]);
    node.write_manifest("web.yaml", &busybox_pod("web", "Always", 1, "echo v1; exec sleep 3600"));
    let first = node.wait_running("web");
    let first_uid = first["metadata"]["uid"].as_str().unwrap().to_string();
    node.write_manifest("web.yaml", &busybox_pod("web", "Always", 1, "echo v2; exec sleep 3600"));
    let second = node.wait_pod("web", "the replacement pod", Duration::from_secs(30), |p| {
        (p["metadata"]["uid"] != first_uid.as_str() && p["status"]["phase"] == "Running").then(|| p.clone())
    });
    assert_ne!(second["status"]["containerStatuses"][0]["containerID"], first["status"]["containerStatuses"][0]["containerID"]);
    eventually("the old pod's sandbox to go", Duration::from_secs(20), || node.runtime_objects().0.len() == 1);
}

#[test]
fn pull_policy_never_without_the_image_waits_with_err_image_never_pull() {
    let node = Node::start("never", &[]);
    let manifest = busybox_pod("never", "Always", 1, "true")
        .replace(BUSYBOX, "localhost:5000/nodelet/not-pulled:1")
        .replace("    command:", "    imagePullPolicy: Never\n    command:");
    node.write_manifest("never.yaml", &manifest);
    let waiting = node.wait_pod("never", "ErrImageNeverPull", Duration::from_secs(30), |p| {
        let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (w["reason"] == "ErrImageNeverPull").then(|| w.clone())
    });
    assert!(waiting["message"].as_str().unwrap().contains("not-pulled"), "{waiting}");
}

fn curl_secure(port: u16, path: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", &format!("https://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl (make setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

#[test]
fn the_secure_port_refuses_anonymous_requests() {
    let node = Node::start("secure", &[]);
    eventually("the secure port", Duration::from_secs(10), || curl_secure(node.secure_port, "/healthz").0 != "000");
    assert_eq!(curl_secure(node.secure_port, "/healthz").0, "401");
    assert_eq!(curl_secure(node.secure_port, "/containerLogs/default/x/y").0, "401");
}

#[test]
fn the_secure_port_serves_container_logs() {
    let node = Node::start("logs", &["--anonymous-auth=true"]);
    node.write_manifest("talk.yaml", &busybox_pod("talk", "Always", 1, "echo one; echo two; echo three; exec sleep 3600"));
    node.wait_running("talk");
    let path = format!("/containerLogs/default/{}/main", node.pod_name("talk"));
    eventually("the container's output", Duration::from_secs(10), || curl_secure(node.secure_port, &path).1.contains("three"));
    assert_eq!(curl_secure(node.secure_port, &path), ("200".to_string(), "one\ntwo\nthree\n".to_string()));
    assert_eq!(curl_secure(node.secure_port, &format!("{path}?tailLines=1")).1, "three\n");
    let (code, body) = curl_secure(node.secure_port, &format!("{path}?tailLines=x"));
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("tailLines"), "{body}");
    assert_eq!(curl_secure(node.secure_port, "/containerLogs/default/nope/main").0, "404");
}
