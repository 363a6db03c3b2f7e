//! Several nodes, one cluster: nodes-up.sh makes three nodes on this machine (network
//! namespaces joined by a bridge, each with its own containerd and nodelet, one control plane of
//! the test's own), and the tests check what a user of such a cluster would: nodelet's routes
//! to the other nodes' pod CIDRs in each node, pods reaching pods on other nodes by IP over TCP
//! and UDP with their own address as the source, a ClusterIP Service whose endpoint is on
//! another node, a Deployment whose node stops coming back Running on another one, the stopped
//! node on its return removing what was deleted meanwhile, routes removed with a Node, and
//! nothing left after cluster-down. A node with `--network-plugin=external` leaves the CNI to the
//! runtime's own config and follows its NetworkReady.

mod common;
mod e2e_support;
mod multinode_support;

use common::on_runtime_at;
use multinode_support::{eventually_value, wait_for, Cluster, Settings};
use nodelet::runtime::labels;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const BUSYBOX: &str = common::BUSYBOX;

/// A busybox pod bound to `node`, running `script`.
fn pod(name: &str, node: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sh", "-c", script]}]
        }
    })
}

/// An httpd whose /cgi-bin/ip answers the client address it sees.
const WHO_AM_I_SERVER: &str = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip \
    && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www";

/// What `cli` gets from http://<addr>/cgi-bin/ip (the address the server saw), tried a few times.
fn seen_by_server(cluster: &Cluster, addr: &str) -> String {
    let script = format!("for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} && exit 0; sleep 1; done; exit 1");
    let out = cluster.kubectl(&["exec", "cli", "--", "sh", "-c", &script]);
    assert!(
        out.status.success(),
        "no answer from {addr}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

/// The network namespace of a pod's sandbox on node i (from its containerd).
fn pod_netns(cluster: &Cluster, i: usize, pod: &str) -> String {
    let socket = cluster.runtime_socket(i);
    let name = pod.to_string();
    let sandbox = on_runtime_at(&socket, move |cri| async move {
        let selector = HashMap::from([(labels::POD_NAME.to_string(), name)]);
        cri.list_sandboxes(selector).await.unwrap().into_iter().find(|s| s.state == 0).map(|s| s.id)
    })
    .unwrap_or_else(|| panic!("no ready sandbox of pod {pod} on node {i}"));
    let out = Command::new("ctr").arg("--address").arg(&socket).args(["-n", "k8s.io", "containers", "info", &sandbox]).output().unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ctr containers info {sandbox}: {e}"));
    let namespaces = info["Spec"]["linux"]["namespaces"].as_array().cloned().unwrap_or_default();
    namespaces.iter().find(|n| n["type"] == "network").and_then(|n| n["path"].as_str()).expect("the sandbox's network namespace").to_string()
}

/// Listens on UDP `port` inside the network namespace at `netns` (a thread of its own); the
/// source address of the first datagram, as the server sees it.
fn udp_source_seen_in(netns: String, port: u16) -> std::thread::JoinHandle<Option<std::net::SocketAddr>> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        bound_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        socket.recv_from(&mut buf).ok().map(|(_, from)| from)
    });
    bound_rx.recv_timeout(Duration::from_secs(10)).expect("the UDP listener bound");
    handle
}

fn node_cidr(cluster: &Cluster, i: usize) -> String {
    let node = cluster.get("node", &cluster.node_name(i)).unwrap();
    node["spec"]["podCIDR"].as_str().unwrap_or_default().to_string()
}

/// The containers node i's runtime has for pod `pod`.
fn containers_of(cluster: &Cluster, i: usize, pod: &str) -> usize {
    let name = pod.to_string();
    on_runtime_at(&cluster.runtime_socket(i), move |cri| async move {
        let selector = HashMap::from([(labels::POD_NAME.to_string(), name)]);
        cri.list_containers(selector.clone()).await.unwrap().len() + cri.list_sandboxes(selector).await.unwrap().len()
    })
}

/// Sets a Node's InternalIP (its status, as its kubelet would).
fn set_node_address(cluster: &Cluster, node: &str, ip: &str) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.admin_kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let nodes: Api<Node> = Api::all(kube::Client::try_from(config).unwrap());
        let patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    });
}

#[test]
fn three_nodes_route_pods_to_each_other_and_outlive_a_lost_node() {
    let started = Instant::now();
    // A silent node is NotReady after 16 s (the default is 40 s), its Lease renewed every 2 s.
    let settings = Settings { nodes: 3, nodelet_args: &["--node-lease-duration-seconds=8"], node_monitor_grace_period: Some("16s"), ..Default::default() };
    let mut cluster = Cluster::start(0, settings);
    eprintln!("multinode: 3 nodes Ready in {:?}", started.elapsed());

    // Each node has a route to the two others' pod CIDRs via their addresses, and only those.
    let cidrs: Vec<String> = (1..=3).map(|i| node_cidr(&cluster, i)).collect();
    for i in 1..=3 {
        let want: Vec<String> = {
            let mut w: Vec<String> = (1..=3).filter(|j| *j != i).map(|j| format!("{} via {}", cidrs[j - 1], cluster.node_ip(j))).collect();
            w.sort();
            w
        };
        let mut seen = Vec::new();
        let found = eventually_value("routes", Duration::from_secs(20), || {
            seen = cluster.node_routes(i);
            (seen == want).then_some(())
        });
        assert!(found.is_some(), "node {i}: routes {seen:?}, want {want:?}\n{}", cluster.logs());
        // The pods' interface MTU is the uplink's.
        let conflist = std::fs::read_to_string(cluster.node_dir(i).join("cni/net.d/10-nodelet.conflist")).unwrap();
        assert!(conflist.contains("\"clusterCIDR\": \"10.244.0.0/16\"") && conflist.contains("\"mtu\": 1500"), "{conflist}");
    }

    // A server on node 2, a client on node 1.
    cluster.apply(&pod("srv", &cluster.node_name(2), WHO_AM_I_SERVER));
    cluster.apply(&pod("cli", &cluster.node_name(1), "exec sleep 3600"));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "srv"},
        "spec": {"selector": {"app": "srv"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    let srv_ip = cluster.wait_running("srv")["status"]["podIP"].as_str().unwrap().to_string();
    let cli_ip = cluster.wait_running("cli")["status"]["podIP"].as_str().unwrap().to_string();
    let t = Instant::now();
    // TCP by the pod's IP: the server sees the client pod's own address.
    assert_eq!(seen_by_server(&cluster, &format!("{srv_ip} 8080")), format!("[::ffff:{cli_ip}]"));
    // Through the ClusterIP: DNAT on node 1 to the pod on node 2, routed there, source kept.
    let cluster_ip = cluster.get("service", "srv").unwrap()["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_eq!(seen_by_server(&cluster, &format!("{cluster_ip} 80")), format!("[::ffff:{cli_ip}]"));
    // UDP: a listener in the server pod's namespace sees the client pod's address.
    let listener = udp_source_seen_in(pod_netns(&cluster, 2, "srv"), 5353);
    let out = cluster.kubectl(&["exec", "cli", "--", "sh", "-c", &format!("for i in 1 2 3; do nslookup -timeout=1 -retry=1 probe {srv_ip}:5353; done; true")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from = listener.join().unwrap().unwrap_or_else(|| panic!("no UDP datagram reached the server\n{}", cluster.logs()));
    assert_eq!(from.ip().to_string(), cli_ip, "UDP source address as the server saw it");
    eprintln!("multinode: pod to pod (TCP, ClusterIP, UDP) checked in {:?}", t.elapsed());

    // Node failure: a Deployment that tolerates an unreachable node for 5 s, and a bare pod, on
    // the same node; that node's nodelet stops.
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
    cluster.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [toleration("node.kubernetes.io/unreachable"), toleration("node.kubernetes.io/not-ready")],
                    "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]
                }
            }
        }
    }));
    let running_web = |cluster: &Cluster| {
        cluster
            .pods("app=web")
            .into_iter()
            .find(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null() && p["status"]["containerStatuses"][0]["ready"] == true)
    };
    let first =
        eventually_value("web Running", Duration::from_secs(90), || running_web(&cluster)).unwrap_or_else(|| panic!("web not Running\n{}", cluster.logs()));
    let (first_name, first_node) = (first["metadata"]["name"].as_str().unwrap().to_string(), first["spec"]["nodeName"].as_str().unwrap().to_string());
    let lost = (1..=3).find(|i| cluster.node_name(*i) == first_node).unwrap();
    cluster.apply(&pod("bare", &first_node, "exec sleep 3600"));
    cluster.wait_running("bare");
    let t = Instant::now();
    cluster.stop_nodelet(lost);
    wait_for("the stopped node to be NotReady", Duration::from_secs(60), || cluster.ready(lost) == "Unknown");
    eprintln!("multinode: node {lost} NotReady {:?} after its nodelet stopped", t.elapsed());
    let moved =
        eventually_value("web Running elsewhere", Duration::from_secs(90), || running_web(&cluster).filter(|p| p["spec"]["nodeName"] != first_node.as_str()))
            .unwrap_or_else(|| panic!("web did not come back on another node: {:#?}", cluster.pods("app=web")));
    eprintln!("multinode: web Running on {} {:?} after node {lost} stopped", moved["spec"]["nodeName"], t.elapsed());
    // Deleted while its node is away: gone from the API at once.
    cluster.kubectl_ok(&["delete", "pod", "bare", "--grace-period=0", "--force"]);
    assert!(containers_of(&cluster, lost, "bare") > 0, "the lost node's runtime still runs the bare pod");

    // The node returns: it removes the pod deleted meanwhile and the evicted one.
    let t = Instant::now();
    cluster.start_node(lost);
    wait_for("the bare pod's containers removed from the returned node", Duration::from_secs(60), || containers_of(&cluster, lost, "bare") == 0);
    wait_for("the evicted web pod removed", Duration::from_secs(60), || cluster.get("pod", &first_name).is_none());
    assert_eq!(containers_of(&cluster, lost, &first_name), 0, "the evicted pod's containers are gone from the returned node");
    eprintln!("multinode: returned node {lost} cleaned up in {:?}", t.elapsed());

    // A node on another L2 segment gets no route: said once per node, in the log and as an event.
    let far = format!("{}-far", cluster.prefix);
    cluster.apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": far}, "spec": {"podCIDR": "10.244.250.0/24"}}));
    set_node_address(&cluster, &far, "192.0.2.7");
    let events = || {
        let out = cluster.kubectl_ok(&["get", "events", "-n", "default", "--field-selector", "reason=NodeNotDirectlyReachable", "-o", "json"]);
        let items = serde_json::from_str::<Value>(&out).unwrap()["items"].as_array().cloned().unwrap_or_default();
        items.iter().filter(|e| e["message"].as_str().unwrap_or_default().contains(&far)).count()
    };
    wait_for("a NodeNotDirectlyReachable event from each node", Duration::from_secs(30), || events() == 3);
    for i in 1..=3 {
        assert!(!cluster.node_routes(i).iter().any(|r| r.starts_with("10.244.250.0/24")), "node {i} routes to the far node");
        assert_eq!(cluster.log(i).matches("192.0.2.7 is on no subnet").count(), 1, "node {i} says it once");
    }
    cluster.kubectl_ok(&["delete", "node", &far]);

    // A Node that goes takes its route with it on the others.
    let gone = if lost == 3 { 2 } else { 3 };
    let gone_cidr = node_cidr(&cluster, gone);
    let t = Instant::now();
    cluster.remove_node(gone);
    for i in (1..=3).filter(|i| *i != gone) {
        wait_for(&format!("node {i} to drop the route to {gone_cidr}"), Duration::from_secs(30), || {
            !cluster.node_routes(i).iter().any(|r| r.starts_with(&format!("{gone_cidr} ")))
        });
        assert_eq!(cluster.node_routes(i).len(), 1, "node {i} keeps the route to the one other node");
    }
    eprintln!("multinode: routes to the removed node gone in {:?}", t.elapsed());

    // cluster-down leaves nothing.
    let t = Instant::now();
    let left = cluster.remove();
    assert!(left.is_empty(), "left after nodes-down.sh: {left:#?}");
    eprintln!("multinode: removed in {:?}; whole case {:?}", t.elapsed(), started.elapsed());
}

#[test]
fn a_node_with_an_external_cni_follows_the_runtimes_network() {
    let settings = Settings { nodes: 1, nodelet_args: &["--network-plugin=external"], wait_ready: false, ..Default::default() };
    let mut cluster = Cluster::start(1, settings);
    let node = cluster.node_name(1);
    // No CNI config in containerd's directory: the runtime's network, so the node, is not ready.
    let mut last = Value::Null;
    let not_ready = eventually_value("the node NotReady for the network", Duration::from_secs(60), || {
        last = cluster.get("node", &node).unwrap_or_default();
        let conditions = last["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == "Ready" && c["status"] == "False" && c["message"].as_str().unwrap_or_default().contains("NetworkReady"))
    });
    assert!(not_ready.is_some(), "last seen {last:#}\n{}", cluster.logs());
    cluster.apply(&pod("p", &node, "exec sleep 3600"));
    std::thread::sleep(Duration::from_secs(3));
    let p = cluster.get("pod", "p").unwrap();
    assert!(p["status"]["podIP"].is_null(), "no sandbox before the network is ready: {p:#}");
    // nodelet wrote and installed nothing, made no bridge and no routes.
    let dir = cluster.node_dir(1);
    assert_eq!(std::fs::read_dir(dir.join("cni/net.d")).unwrap().count(), 0);
    assert!(!dir.join("cni/bin/nodelet-cni").exists());
    assert!(!cluster.ip(1, &["link"]).contains("nodelet0"));
    assert!(cluster.node_routes(1).is_empty());

    // The cluster's own CNI arrives (here the reference bridge and host-local plugins).
    let cidr = node_cidr(&cluster, 1);
    for plugin in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{plugin}"), dir.join("cni/bin").join(plugin)).unwrap();
    }
    let conflist = json!({
        "cniVersion": "0.4.0", "name": "ext",
        "plugins": [{"type": "bridge", "bridge": "ext0", "isGateway": true, "ipMasq": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "dataDir": dir.join("ipam")}}]
    });
    std::fs::write(dir.join("cni/net.d/10-ext.conflist"), conflist.to_string()).unwrap();
    wait_for("the node Ready with the runtime's network", Duration::from_secs(60), || cluster.ready(1) == "True");
    let p = cluster.wait_running("p");
    let ip = p["status"]["podIP"].as_str().unwrap();
    let prefix = cidr.rsplit_once('.').unwrap().0;
    assert!(ip.starts_with(prefix), "pod IP {ip} from the CNI's range {cidr}");
    assert!(cluster.ip(1, &["link"]).contains("ext0") && !cluster.ip(1, &["link"]).contains("nodelet0"));
    assert_eq!(std::fs::read_dir(dir.join("cni/net.d")).unwrap().count(), 1, "nodelet added no config of its own");
    let left = cluster.remove();
    assert!(left.is_empty(), "left after nodes-down.sh: {left:#?}");
}
