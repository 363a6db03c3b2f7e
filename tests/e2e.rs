//! The end-to-end suite: nodelet joins a cluster and runs the pods created through the API.
//! By default the cluster is the upstream control plane integration/cluster/up.sh runs on
//! loopback (each test a node of its own, with its own credentials and namespace; the outage
//! test a control plane of its own); with NODELET_E2E_KUBECONFIG (and optionally
//! NODELET_E2E_NODE_KUBECONFIG, NODELET_E2E_PROXY_KUBECONFIG) it is another cluster, and the
//! case that must stop the apiserver is skipped.

mod common;
mod e2e_support;

use common::*;
use e2e_support::*;
use serde_json::json;
use std::time::Duration;

/// A pod whose one container sleeps for an hour.
fn sleeping_pod(name: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"]}]}
    })
}

#[test]
fn the_node_registers_ready_and_renews_its_lease() {
    let e2e = E2e::start("node", &["--node-labels", "nodelet.io/e2e=yes", "--node-lease-duration-seconds", "4"]);
    let node = e2e.wait_node_ready();
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], e2e.node.name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["nodelet.io/e2e"], "yes");
    let status = &node["status"];
    assert!(status["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap().starts_with("containerd://"), "{status:#}");
    assert!(!status["nodeInfo"]["bootID"].as_str().unwrap().is_empty());
    assert!(status["capacity"]["cpu"].is_string() && status["allocatable"]["memory"].is_string());
    assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], e2e.node.secure_port);
    let conditions: Vec<&str> = status["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(conditions.contains(&kind), "{conditions:?}");
    }
    let first = e2e.lease_renew_time();
    eventually("the lease to be renewed", Duration::from_secs(15), || e2e.lease_renew_time() != first);
}

#[test]
fn under_memory_pressure_the_node_says_so_refuses_best_effort_pods_and_evicts_the_others() {
    // A threshold every machine crosses.
    let e2e = E2e::start("evict", &["--eviction-hard=memory.available<1000Ti"]);
    e2e.wait_node_ready();
    let memory_pressure = || {
        let node = e2e.get_node().unwrap_or_default();
        let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == "MemoryPressure").unwrap_or_default()
    };
    eventually("MemoryPressure True", Duration::from_secs(30), || memory_pressure()["status"] == "True");
    let condition = memory_pressure();
    assert_eq!((&condition["reason"], &condition["message"]), (&json!("KubeletHasInsufficientMemory"), &json!("kubelet has insufficient memory available")));
    // A BestEffort pod is refused at admission under memory pressure; a Burstable one is taken on, then evicted.
    e2e.create_pod(sleeping_pod("best-effort"));
    let refused = e2e.wait_pod("best-effort", "refused", |p| p["status"]["phase"] == "Failed");
    assert_eq!(
        (&refused["status"]["reason"], &refused["status"]["message"]),
        (&json!("Evicted"), &json!("Pod was rejected: The node had condition: [MemoryPressure]. "))
    );
    let mut hog = sleeping_pod("hog");
    hog["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "1Mi"}});
    e2e.create_pod(hog);
    let pod = e2e.wait_pod("hog", "Failed, Evicted", |p| p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted");
    let status = &pod["status"];
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with("The node was low on resource: memory. Threshold quantity: 1000Ti, available: "), "{status:#}");
    let target = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget").cloned().unwrap_or_default();
    assert_eq!((&target["status"], &target["reason"]), (&json!("True"), &json!("TerminationByKubelet")), "{status:#}");
    eventually("an Evicted event", Duration::from_secs(10), || e2e.event_reasons("hog").iter().any(|r| r == "Evicted"));
    if e2e.is_local_cluster() {
        // kube-controller-manager's node lifecycle controller taints the node from the condition.
        let tainted = || {
            let taints = e2e.get_node().unwrap_or_default()["spec"]["taints"].as_array().cloned().unwrap_or_default();
            taints.iter().any(|t| t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule")
        };
        eventually("the memory-pressure taint", Duration::from_secs(30), tainted);
    }
}

#[test]
fn a_pod_created_through_the_api_runs_and_reports_its_status() {
    let e2e = E2e::start("pod", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "web"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": BUSYBOX,
                "command": ["sh", "-c", "echo name=$POD_NAME ns=$POD_NS ip=$POD_IP node=$NODE; exec httpd -f -p 8080"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ]
            }]
        }
    }));
    let pod = e2e.wait_pod("web", "Running and ready", |p| p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true);
    let status = &pod["status"];
    let ip = status["podIP"].as_str().unwrap();
    // --pod-cidr's default, or the pod CIDR the cluster assigned the node.
    assert!(ip.starts_with("10.88.") || ip.starts_with("10.244."), "{status:#}");
    assert_eq!(status["podIPs"][0]["ip"], ip);
    assert!(status["hostIP"].is_string() && status["startTime"].is_string());
    let c = &status["containerStatuses"][0];
    assert!(c["containerID"].as_str().unwrap().starts_with("containerd://"));
    assert!(c["imageID"].as_str().unwrap().contains("sha256:"));
    assert_eq!((c["started"].clone(), c["restartCount"].clone()), (json!(true), json!(0)));
    assert!(c["state"]["running"]["startedAt"].is_string());
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready", "PodReadyToStartContainers"] {
        let cond = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind}: {status:#}"));
        assert_eq!(cond["status"], "True", "{kind}: {status:#}");
    }
    let log = e2e.container_log(&pod, "main");
    assert!(log.contains(&format!("name=web ns={} ip={ip} node={}", e2e.namespace, e2e.node.name)), "{log}");
}

#[test]
fn a_crashing_container_is_restarted_and_counted() {
    let e2e = E2e::start("restart", &["--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "2s"]);
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "crash"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "exit 7"]}]}
    }));
    let pod = e2e.wait_pod("crash", "two restarts", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2));
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 7, "{c:#}");
    eventually("the kubelet's events for the pod", Duration::from_secs(10), || {
        let reasons = e2e.event_reasons("crash");
        ["Pulled", "Created", "Started", "BackOff"].iter().all(|r| reasons.iter().any(|x| x == r))
    });
}

#[test]
fn a_deleted_pod_is_stopped_gracefully_and_removed() {
    let e2e = E2e::start("delete", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "polite"},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}]}
    }));
    e2e.wait_phase_running("polite");
    let started = std::time::Instant::now();
    e2e.delete_pod("polite", Some(30));
    e2e.wait_pod_gone("polite", Duration::from_secs(25));
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(e2e.event_reasons("polite").iter().any(|r| r == "Killing"), "{:?}", e2e.event_reasons("polite"));
    eventually("the runtime to let go of the pod", Duration::from_secs(20), || e2e.node.runtime_objects().0.is_empty());
}

#[test]
fn a_restarted_nodelet_adopts_api_pods() {
    let mut e2e = E2e::start("adopt", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(sleeping_pod("keep"));
    let before = e2e.wait_phase_running("keep")["status"]["containerStatuses"][0].clone();
    e2e.node.kill9();
    e2e.node.spawn();
    std::thread::sleep(Duration::from_secs(2));
    let after = e2e.wait_phase_running("keep")["status"]["containerStatuses"][0].clone();
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], 0);
}

#[test]
fn pods_keep_running_through_an_apiserver_outage() {
    let Some(mut e2e) =
        E2e::start_private("outage", &["--node-lease-duration-seconds", "4", "--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "2s"])
    else {
        eprintln!("skipped: the cluster's apiserver cannot be stopped by the suite");
        return;
    };
    e2e.wait_node_ready();
    e2e.create_pod(sleeping_pod("steady"));
    // Its container exits every few seconds: each new one takes its env (a configMap key and the
    // Service variables) from nodelet's watch-fed caches, so the outage does not stop it.
    e2e.create_namespaced::<k8s_openapi::api::core::v1::ConfigMap>(json!({"metadata": {"name": "outage-env"}, "data": {"color": "blue"}}));
    e2e.create_pod(json!({
        "metadata": {"name": "crasher"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "echo color=$COLOR api=$KUBERNETES_SERVICE_HOST; sleep 2; exit 1"],
            "env": [{"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "outage-env", "key": "color"}}}]}]}
    }));
    let before = e2e.wait_phase_running("steady")["status"]["containerStatuses"][0]["containerID"].clone();
    e2e.wait_pod("crasher", "a first restart", |p| p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1);
    let (mut sandboxes, _) = e2e.node.runtime_objects();
    sandboxes.sort();
    let containers_before = e2e.node.runtime_objects().1;
    let log_before = e2e.node.log().len();
    e2e.stop_apiserver();
    // The crash-loop back-off is 1 s (start_private's flags): several restarts fit in the outage.
    eventually("the crashing container to be restarted during the outage", Duration::from_secs(20), || {
        e2e.node.runtime_objects().1.iter().any(|id| !containers_before.contains(id))
    });
    let during = e2e.node.log()[log_before..].to_string();
    assert!(
        !during.contains("CreateContainerConfigError") && !during.contains("listing the services"),
        "a container could not be created during the outage:\n{during}"
    );
    let mut during_sandboxes = e2e.node.runtime_objects().0;
    during_sandboxes.sort();
    assert_eq!(during_sandboxes, sandboxes, "a pod's sandbox changed during the outage");
    assert!(e2e.node.is_running(), "nodelet exited during the outage:\n{}", e2e.node.log());
    e2e.start_apiserver();
    let first = e2e.lease_renew_time();
    eventually("the lease to be renewed after the outage", Duration::from_secs(30), || e2e.lease_renew_time() != first);
    let after = e2e.wait_phase_running("steady")["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(before, after);
}

#[test]
fn pods_get_env_from_configmaps_secrets_and_services_and_the_service_account_volume() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let e2e = E2e::start("env", &[]);
    e2e.wait_node_ready();
    e2e.create_namespaced::<ConfigMap>(json!({"metadata": {"name": "settings"}, "data": {"color": "blue", "size": "L"}}));
    e2e.create_namespaced::<Secret>(json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}));
    let script = "echo color=$COLOR size=$CFG_size password=$PASSWORD missing=${MISSING:-unset} api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; \
                  echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token=yes; \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo ca=yes; \
                  touch /var/run/secrets/kubernetes.io/serviceaccount/x 2>/dev/null || echo readonly=yes; \
                  grep -q \"$(hostname)\" /etc/hosts && echo hosts=yes; exec sleep 3600";
    e2e.create_pod(json!({
        "metadata": {"name": "env"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": BUSYBOX, "command": ["sh", "-c", script],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}}
            ]
        }]}
    }));
    let pod = e2e.wait_phase_running("env");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-")), "the apiserver added no token volume: {volumes:?}");
    eventually("the container's report", Duration::from_secs(10), || e2e.container_log(&pod, "main").contains("hosts=yes"));
    let log = e2e.container_log(&pod, "main");
    assert!(log.contains("color=blue size=L password=s3cret missing=unset api=10.96.0.1:443"), "{log}");
    assert!(log.contains(&format!("ns={}", e2e.namespace)), "{log}");
    for line in ["token=yes", "ca=yes", "readonly=yes", "hosts=yes"] {
        assert!(log.contains(line), "{line} missing from:\n{log}");
    }
}

#[test]
fn configmap_and_downward_api_volumes_follow_their_sources_in_a_running_pod() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let e2e = E2e::start("volupdate", &[]);
    e2e.wait_node_ready();
    e2e.create_namespaced::<ConfigMap>(json!({"metadata": {"name": "live"}, "data": {"key": "value-1"}}));
    let script = "while true; do echo cm=$(cat /cm/key) late=$(cat /late/key 2>/dev/null || echo none) labels=$(cat /info/labels); sleep 1; done";
    e2e.create_pod(json!({
        "metadata": {"name": "watcher", "labels": {"app": "v1"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [
                {"name": "cm", "configMap": {"name": "live"}},
                {"name": "late", "projected": {"sources": [{"configMap": {"name": "late", "optional": true}}]}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ],
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "cm", "mountPath": "/cm"}, {"name": "late", "mountPath": "/late"}, {"name": "info", "mountPath": "/info"}]}]}
    }));
    let pod = e2e.wait_phase_running("watcher");
    let shows = |want: &str, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = e2e.container_log(&pod, "main");
            if log.contains(want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{want:?} not shown within {within:?}:\n{log}\nnodelet log:\n{}", e2e.node.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    shows("cm=value-1 late=none labels=app=\"v1\"", Duration::from_secs(15));
    e2e.apply_namespaced::<ConfigMap>(json!({"metadata": {"name": "live"}, "data": {"key": "value-2"}}));
    e2e.create_namespaced::<ConfigMap>(json!({"metadata": {"name": "late"}, "data": {"key": "arrived"}}));
    e2e.kubectl().ok(&["label", "pod", "watcher", "app=v2", "--overwrite"]);
    // Well inside the kubelet's sync period (the conformance specs wait minutes).
    shows("cm=value-2 late=arrived labels=app=\"v2\"", Duration::from_secs(45));
    let after = e2e.wait_phase_running("watcher");
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0, "the container was not restarted for it");
}

#[test]
fn a_volume_that_cannot_be_prepared_says_why_in_an_event_and_the_status() {
    let e2e = E2e::start("failmount", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "nomount"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "cm", "configMap": {"name": "never-made"}}],
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"], "volumeMounts": [{"name": "cm", "mountPath": "/cm"}]}]}
    }));
    let pod = e2e.wait_pod("nomount", "ContainerCreating with a message", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
            && p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().is_some_and(|m| m.contains("never-made"))
    });
    let message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("volume \"cm\"") && message.contains("not found"), "{message}");
    eventually("a FailedMount event", Duration::from_secs(20), || e2e.event_reasons("nomount").iter().any(|r| r == "FailedMount"));
}

#[test]
fn a_missing_configmap_is_reported_in_the_pod_status() {
    let e2e = E2e::start("badenv", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "bad"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sleep", "3600"],
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]}]}
    }));
    let pod = e2e
        .wait_pod("bad", "CreateContainerConfigError", |p| p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError");
    let message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("absent"), "{message}");
}

/// Deletes the cluster-scoped RuntimeClasses a test made, even when it fails.
struct RuntimeClasses<'a>(&'a e2e_support::kubectl::Kubectl, Vec<String>);

impl Drop for RuntimeClasses<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.run(&["delete", "runtimeclass", name, "--ignore-not-found"], b"");
        }
    }
}

#[test]
fn a_runtime_class_picks_the_handler_and_one_the_runtime_lacks_is_said_in_an_event() {
    let e2e = E2e::start("rtclass", &[]);
    let kubectl = e2e.kubectl();
    e2e.wait_node_ready();
    let (known, unknown) = (format!("{}-runc", e2e.namespace), format!("{}-missing", e2e.namespace));
    let _cleanup = RuntimeClasses(&kubectl, vec![known.clone(), unknown.clone()]);
    let classes = format!(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {{name: {known}}}\nhandler: runc\n---\n\
         apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {{name: {unknown}}}\nhandler: no-such-handler\n"
    );
    let applied = kubectl.run(&["apply", "-f", "-"], classes.as_bytes());
    assert!(applied.status.success(), "{applied:?}");
    let with_class = |name: &str, class: &str| {
        let mut pod = sleeping_pod(name);
        pod["spec"]["runtimeClassName"] = json!(class);
        pod
    };
    e2e.create_pod(with_class("known", &known));
    e2e.wait_phase_running("known");
    e2e.create_pod(with_class("unknown", &unknown));
    let pod = e2e.wait_pod("unknown", "a waiting container that says why", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().is_some_and(|m| m.contains("no-such-handler"))
    });
    assert_eq!(pod["status"]["phase"], "Pending");
    eventually("a FailedCreatePodSandBox event", Duration::from_secs(30), || e2e.event_reasons("unknown").iter().any(|r| r == "FailedCreatePodSandBox"));
}

#[test]
fn static_pods_get_mirror_pods_in_the_apiserver() {
    let e2e = E2e::start("mirror", &[]);
    e2e.wait_node_ready();
    let manifest = busybox_pod("static-web", "Always", 1, "exec sleep 3600").replace("metadata:\n", &format!("metadata:\n  namespace: {}\n", e2e.namespace));
    e2e.node.write_manifest("web.yaml", &manifest);
    let name = e2e.node.pod_name("static-web");
    let mirror = e2e.wait_pod(&name, "a Running mirror pod", |p| p["status"]["phase"] == "Running");
    assert!(mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(), "{mirror:#}");
    assert_eq!(mirror["spec"]["nodeName"], e2e.node.name.as_str());
    e2e.node.remove_manifest("web.yaml");
    e2e.wait_pod_gone(&name, Duration::from_secs(30));
}

/// One HTTP GET through TCP, answering the body (the test's servers answer their pod's name).
fn http_body(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string())
}

/// The address of nodelet's bridge (nodelet0) in the network of pod address `pod_ip`.
fn bridge_address_for(pod_ip: &str) -> String {
    let pod: std::net::Ipv4Addr = pod_ip.parse().unwrap();
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "nodelet0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let found = text.lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1)).find(|cidr| {
        let Some((addr, len)) = cidr.split_once('/') else { return false };
        let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else { return false };
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        u32::from(addr) & mask == u32::from(pod) & mask
    });
    found.and_then(|c| c.split('/').next()).unwrap_or_else(|| panic!("nodelet0 has no address in the network of pod IP {pod_ip}: {text}")).to_string()
}

/// Routes the test's Service addresses onto nodelet's own bridge, so a packet to one is either
/// DNATed to a pod or left unanswered on the bridge, never sent off the machine (a blackhole
/// route would refuse the node's own connections before nat output could rewrite them).
struct ServiceRangeGuard(Option<&'static str>);

impl ServiceRangeGuard {
    fn install(range: &'static str) -> ServiceRangeGuard {
        let added = std::process::Command::new("ip").args(["route", "add", range, "dev", "nodelet0"]).status().unwrap().success();
        ServiceRangeGuard(added.then_some(range))
    }
}

impl Drop for ServiceRangeGuard {
    fn drop(&mut self) {
        if let Some(range) = self.0 {
            let _ = std::process::Command::new("ip").args(["route", "del", range, "dev", "nodelet0"]).status();
        }
    }
}

#[test]
fn services_reach_their_endpoints_through_cluster_ip_and_node_port() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let table = format!("nodelet_e2e_{}", std::process::id());
    let e2e = E2e::start("svc", &["--proxy-table", &table]);
    let node = e2e.wait_node_ready();
    assert!(node["status"]["addresses"].as_array().unwrap().iter().any(|a| a["type"] == "InternalIP"));
    let mut ips = Vec::new();
    for name in ["a", "b"] {
        e2e.create_pod(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX,
                "command": ["sh", "-c", format!("mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www")]}]}
        }));
        ips.push(e2e.wait_phase_running(name)["status"]["podIP"].as_str().unwrap().to_string());
    }
    // NodePorts answer on every local address; the test uses the bridge's own (the pod network's
    // gateway), so its traffic stays on nodelet's network rather than the machine's uplink address.
    let node_ip = bridge_address_for(&ips[0]);
    // No selector: the test writes the EndpointSlice itself, so no controller's timing matters.
    let service = json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    });
    // After the pods run, so the bridge exists.
    let _range = e2e.is_local_cluster().then(|| ServiceRangeGuard::install(LOCAL_SERVICE_CIDR));
    e2e.apply_namespaced::<Service>(service);
    let service = e2e.get_service("web");
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let slice = |addresses: &[&String]| {
        json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": addresses.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": e2e.node.name})).collect::<Vec<_>>()
        })
    };
    e2e.apply_namespaced::<EndpointSlice>(slice(&[&ips[0], &ips[1]]));
    let rules = || String::from_utf8_lossy(&std::process::Command::new("nft").args(["list", "table", "ip", &table]).output().unwrap().stdout).into_owned();
    // Traffic starts only once the rules are there.
    eventually("the proxy's rules for the service", Duration::from_secs(20), || rules().contains(&cluster_ip) && rules().contains(&ips[1]));

    let cluster = format!("{cluster_ip}:80");
    let nodeport = format!("{node_ip}:{node_port}");
    for target in [&cluster, &nodeport] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            seen.extend(http_body(target));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"], "from the node to {target}");
    }
    // From a pod, through the ClusterIP.
    let script = format!("for i in $(seq 1 30); do wget -qO- http://{cluster_ip}/; done");
    e2e.create_pod(json!({
        "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script]}]}
    }));
    let client = e2e.wait_pod("client", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    let log = e2e.container_log(&client, "main");
    assert!(log.lines().any(|l| l == "a") && log.lines().any(|l| l == "b"), "{log}");

    // Hairpin: a pod reaching itself through a Service that has only it as endpoint.
    let own = json!({"metadata": {"name": "own"}, "spec": {"ports": [{"name": "http", "port": 81, "targetPort": 8080, "protocol": "TCP"}]}});
    e2e.apply_namespaced::<Service>(own);
    let own_ip = e2e.get_service("own")["spec"]["clusterIP"].as_str().unwrap().to_string();
    let script = format!("mkdir -p /www && echo self > /www/index.html && httpd -p 8080 -h /www; for i in $(seq 1 40); do timeout 2 wget -qO- http://{own_ip}:81/ && exit 0; sleep 0.25; done; exit 1");
    e2e.create_pod(json!({
        "metadata": {"name": "selfie"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script]}]}
    }));
    let selfie_ip = e2e.wait_pod("selfie", "an IP", |p| p["status"]["podIP"].is_string())["status"]["podIP"].as_str().unwrap().to_string();
    e2e.apply_namespaced::<EndpointSlice>(json!({
        "metadata": {"name": "own-1", "labels": {"kubernetes.io/service-name": "own"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [selfie_ip], "conditions": {"ready": true}, "nodeName": e2e.node.name}]
    }));
    let selfie = e2e.wait_pod("selfie", "Succeeded or Failed", |p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed");
    assert_eq!(selfie["status"]["phase"], "Succeeded", "the pod could not reach itself through its Service");

    // One endpoint goes away while a client keeps connecting: it only reaches the other.
    e2e.apply_namespaced::<EndpointSlice>(slice(&[&ips[0]]));
    eventually("the removed endpoint to leave the rules", Duration::from_secs(20), || !rules().contains(&ips[1]));
    for _ in 0..20 {
        assert_eq!(http_body(&cluster).as_deref(), Some("a"));
    }
}

#[test]
fn a_pod_deleted_while_nodelet_was_down_is_cleaned_up_when_it_returns() {
    let mut e2e = E2e::start("downdelete", &[]);
    e2e.wait_node_ready();
    e2e.create_pod(sleeping_pod("gone"));
    e2e.wait_phase_running("gone");
    e2e.node.kill9();
    // Bound to a node, the pod only gets a deletionTimestamp: the node must finish the job.
    e2e.delete_pod("gone", Some(1));
    assert!(e2e.get_pod("gone").is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string()));
    e2e.node.spawn();
    e2e.wait_pod_gone("gone", Duration::from_secs(30));
    eventually("the runtime to let go of the pod", Duration::from_secs(20), || e2e.node.runtime_objects().0.is_empty());
}

#[test]
fn kubectl_logs_follows_tails_and_shows_the_previous_run() {
    let e2e = E2e::start("klogs", &["--crash-loop-backoff-initial", "1s", "--crash-loop-backoff-max", "2s"]);
    let kubectl = e2e.kubectl();
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "lines"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 3; echo end"]}]}
    }));
    e2e.wait_pod("lines", "Running", |p| p["status"]["phase"] == "Running" || p["status"]["phase"] == "Succeeded");
    // -f follows the container to its end, then kubectl ends by itself.
    let mut follow = kubectl.spawn(&["logs", "-f", "lines"]);
    let (status, lines) = follow.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "kubectl logs -f: {status}");
    assert_eq!(lines, ["line 1", "line 2", "line 3", "line 4", "line 5", "end"]);
    e2e.wait_pod("lines", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(kubectl.ok(&["logs", "lines", "--tail", "2"]), "line 5\nend\n");
    // The node's refusal reaches kubectl with its message.
    let none = kubectl.run(&["logs", "lines", "--previous"], b"");
    assert!(!none.status.success() && String::from_utf8_lossy(&none.stderr).contains("previous terminated container"), "{none:?}");
    let wrong = kubectl.run(&["logs", "lines", "-c", "nope"], b"");
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("container nope is not valid for pod lines"), "{wrong:?}");

    // A container that fails once: --previous shows the first run, the default the current one.
    let script = "n=$(( $(cat /data/n 2>/dev/null || echo 0) + 1 )); echo $n > /data/n; echo run $n; [ $n -ge 2 ] && exec sleep 3600; exit 1";
    e2e.create_pod(json!({
        "metadata": {"name": "again"},
        "spec": {"terminationGracePeriodSeconds": 1, "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", script], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
    }));
    e2e.wait_pod("again", "a restart and the second run", |p| {
        let c = &p["status"]["containerStatuses"][0];
        c["restartCount"].as_i64() >= Some(1) && c["state"]["running"].is_object()
    });
    assert_eq!(kubectl.ok(&["logs", "again"]), "run 2\n");
    assert_eq!(kubectl.ok(&["logs", "again", "--previous"]), "run 1\n");
}

#[test]
fn kubectl_exec_passes_stdin_output_and_the_exit_code() {
    let e2e = E2e::start("kexec", &[]);
    let kubectl = e2e.kubectl();
    e2e.wait_node_ready();
    e2e.create_pod(sleeping_pod("shell"));
    e2e.wait_phase_running("shell");
    let echoed = kubectl.run(&["exec", "-i", "shell", "--", "cat"], b"through the apiserver\n");
    assert!(echoed.status.success(), "{echoed:?}");
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "through the apiserver\n");
    let failed = kubectl.run(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 7"], b"");
    assert_eq!(failed.status.code(), Some(7), "{failed:?}");
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "out\n");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("err"), "{failed:?}");
    // An error found on the way comes back with its message.
    let unknown = kubectl.run(&["exec", "shell", "-c", "nope", "--", "true"], b"");
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("nope"), "{unknown:?}");

    // An ephemeral container (kubectl debug) runs in the pod and takes exec and logs like the others.
    kubectl.ok(&["debug", "shell", "--image", BUSYBOX, "-c", "debugger", "--", "sh", "-c", "echo polo; exec sleep 3600"]);
    e2e.wait_pod("shell", "the ephemeral container running", |p| p["status"]["ephemeralContainerStatuses"][0]["state"]["running"].is_object());
    assert_eq!(kubectl.ok(&["exec", "shell", "-c", "debugger", "--", "echo", "marco"]), "marco\n");
    assert_eq!(kubectl.ok(&["logs", "shell", "-c", "debugger"]), "polo\n");
}

#[test]
fn kubectl_attach_streams_the_containers_output() {
    let e2e = E2e::start("kattach", &[]);
    let kubectl = e2e.kubectl();
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "ticker"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]}]}
    }));
    e2e.wait_phase_running("ticker");
    let mut attach = kubectl.spawn(&["attach", "ticker"]);
    attach.wait_line("a tick from the attached container", Duration::from_secs(30), |l| l.starts_with("tick "));
}

#[test]
fn kubectl_port_forward_reaches_a_pod_port() {
    let e2e = E2e::start("kforward", &[]);
    let kubectl = e2e.kubectl();
    e2e.wait_node_ready();
    e2e.create_pod(json!({
        "metadata": {"name": "web"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": BUSYBOX,
            "command": ["sh", "-c", "mkdir -p /www && echo forwarded > /www/index.html && httpd -p 8080 -h /www && echo serving; exec sleep 3600"]}]}
    }));
    e2e.wait_phase_running("web");
    // kubectl port-forward ends at the first refused connection: start once httpd listens.
    eventually("httpd to listen", Duration::from_secs(20), || kubectl.ok(&["logs", "web"]).contains("serving"));
    let mut forward = kubectl.spawn(&["port-forward", "--address", "127.0.0.1", "pod/web", ":8080"]);
    let line = forward.wait_line("the forwarded port", Duration::from_secs(30), |l| l.starts_with("Forwarding from 127.0.0.1:"));
    let port = line.trim_start_matches("Forwarding from 127.0.0.1:").split_whitespace().next().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(http_body(&format!("127.0.0.1:{port}")).as_deref(), Some("forwarded"));
    }
}
