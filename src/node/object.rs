//! The Node object nodelet registers and keeps fresh: labels, taints, addresses, capacity,
//! allocatable, nodeInfo and conditions, computed from plain inputs. Pure and unit-tested.

use crate::machine::HostFacts;
use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::BTreeMap;

/// What the node's status is made of, gathered by the agent.
#[derive(Debug, Clone)]
pub struct NodeInput {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub internal_ip: Option<String>,
    pub facts: HostFacts,
    pub runtime_version: String,
    pub kubelet_version: String,
    pub pod_cidr: Option<String>,
    pub max_pods: u32,
    /// System- plus kube-reserved: (cpu millicores, memory bytes).
    pub reserved_cpu_millis: i64,
    pub reserved_memory: i64,
    pub ephemeral_storage: u64,
    pub kubelet_port: i32,
    pub health: NodeHealth,
}

/// The facts behind the conditions; `None` means healthy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeHealth {
    pub runtime_problem: Option<String>,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
}

/// The labels every node carries, plus the operator's `--node-labels`.
pub fn node_labels(name: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let arch = go_arch(std::env::consts::ARCH);
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch.to_string()),
    ]);
    labels.extend(extra.clone());
    labels
}

/// Go's names for architectures, which Kubernetes uses.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node as first registered: metadata and spec from the configuration, and its status.
pub fn new_node(input: &NodeInput, now: &Time) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(input.name.clone()),
            labels: Some(node_labels(&input.name, &input.labels)),
            annotations: Some(BTreeMap::from([("volumes.kubernetes.io/controller-managed-attach-detach".to_string(), "true".to_string())])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: input.pod_cidr.clone(),
            pod_cidrs: input.pod_cidr.clone().map(|c| vec![c]),
            taints: (!input.taints.is_empty()).then(|| input.taints.clone()),
            ..Default::default()
        }),
        status: Some(node_status(input, &[], now)),
    }
}

/// The status to report; conditions keep their transition time while their status holds.
pub fn node_status(input: &NodeInput, previous: &[NodeCondition], now: &Time) -> NodeStatus {
    let m = &input.facts.machine;
    let cpu_millis = m.num_cores as i64 * 1000;
    let memory = m.memory_capacity as i64;
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(m.num_cores.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", memory / 1024))),
        ("pods".to_string(), Quantity(input.max_pods.to_string())),
        ("ephemeral-storage".to_string(), Quantity(format!("{}Ki", input.ephemeral_storage / 1024))),
    ]);
    for page in &m.hugepages {
        capacity.insert(format!("hugepages-{}", hugepage_size_name(page.page_size)), Quantity((page.page_size * 1024 * page.num_pages).to_string()));
    }
    let mut allocatable = capacity.clone();
    allocatable.insert("cpu".into(), Quantity(format!("{}m", (cpu_millis - input.reserved_cpu_millis).max(0))));
    allocatable.insert("memory".into(), Quantity(format!("{}Ki", ((memory - input.reserved_memory).max(0)) / 1024)));

    let mut addresses = Vec::new();
    if let Some(ip) = &input.internal_ip {
        addresses.push(NodeAddress { type_: "InternalIP".into(), address: ip.clone() });
    }
    addresses.push(NodeAddress { type_: "Hostname".into(), address: input.name.clone() });

    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(addresses),
        conditions: Some(conditions(&input.health, previous, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: input.kubelet_port }) }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch(std::env::consts::ARCH).into(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: input.runtime_version.clone(),
            kernel_version: input.facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: input.kubelet_version.clone(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: input.facts.os_image.clone(),
            system_uuid: m.system_uuid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn hugepage_size_name(kib: u64) -> String {
    if kib.is_multiple_of(1024 * 1024) {
        format!("{}Gi", kib / (1024 * 1024))
    } else if kib.is_multiple_of(1024) {
        format!("{}Mi", kib / 1024)
    } else {
        format!("{kib}Ki")
    }
}

/// The four conditions the kubelet reports, with its reasons and messages (pkg/kubelet/nodestatus).
pub fn conditions(health: &NodeHealth, previous: &[NodeCondition], now: &Time) -> Vec<NodeCondition> {
    // Memory and PID say "(in)sufficient ... available", disk "has (no) disk pressure".
    let sufficient = |kind: &str, under: bool, what: &str, noun: &str| {
        let (reason, message) = if under {
            (format!("KubeletHasInsufficient{what}"), format!("kubelet has insufficient {noun} available"))
        } else {
            (format!("KubeletHasSufficient{what}"), format!("kubelet has sufficient {noun} available"))
        };
        (kind.to_string(), under, reason, message)
    };
    let memory = sufficient("MemoryPressure", health.memory_pressure, "Memory", "memory");
    let disk = if health.disk_pressure {
        ("DiskPressure".to_string(), true, "KubeletHasDiskPressure".to_string(), "kubelet has disk pressure".to_string())
    } else {
        ("DiskPressure".to_string(), false, "KubeletHasNoDiskPressure".to_string(), "kubelet has no disk pressure".to_string())
    };
    let pid = sufficient("PIDPressure", health.pid_pressure, "PID", "PID");
    let ready = match &health.runtime_problem {
        None => ("Ready".to_string(), true, "KubeletReady".to_string(), "kubelet is posting ready status".to_string()),
        Some(problem) => ("Ready".to_string(), false, "KubeletNotReady".to_string(), problem.clone()),
    };
    [memory, disk, pid, ready]
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_string();
            let transition =
                previous.iter().find(|c| c.type_ == kind && c.status == status).and_then(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: kind,
                status,
                reason: Some(reason),
                message: Some(message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// Whether two statuses differ in anything but heartbeat times: only then is a patch due early.
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s.images = None;
        s
    };
    strip(old) != strip(new)
}

/// Whether the Node's conditions in the apiserver say something else than `ours` (type, status,
/// reason, message): the node controller marks them Unknown when the Lease goes stale (an
/// apiserver outage), and only a patch sets them right again, as the kubelet's check of the
/// Node it reads back before each update does.
/// Conditions of other types (another component's) are not ours to compare.
pub fn conditions_overwritten(in_api: &NodeStatus, ours: &NodeStatus) -> bool {
    let theirs = in_api.conditions.as_deref().unwrap_or_default();
    ours.conditions.iter().flatten().any(|c| {
        let same = |a: &&NodeCondition| a.type_ == c.type_ && a.status == c.status && a.reason == c.reason && a.message == c.message;
        !theirs.iter().any(|a| same(&a))
    })
}

/// Parses `key=value:Effect` taints as `--register-with-taints` takes them.
pub fn parse_taint(text: &str) -> Result<Taint, String> {
    let (kv, effect) = text.rsplit_once(':').ok_or_else(|| format!("{text:?}: a taint is key[=value]:Effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!("{text:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(format!("{text:?}: the taint's key is empty"));
    }
    Ok(Taint { key: key.into(), value, effect: effect.into(), time_added: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{HugePagesInfo, MachineInfo};
    use k8s_openapi::jiff::Timestamp;

    fn input() -> NodeInput {
        let machine = MachineInfo {
            num_cores: 2,
            memory_capacity: 4 << 30,
            machine_id: "mid".into(),
            boot_id: "bid".into(),
            hugepages: vec![HugePagesInfo { page_size: 2048, num_pages: 0 }],
            ..Default::default()
        };
        NodeInput {
            name: "n1".into(),
            labels: BTreeMap::from([("role".to_string(), "worker".to_string())]),
            taints: vec![parse_taint("dedicated=e2e:NoSchedule").unwrap()],
            internal_ip: Some("192.0.2.2".into()),
            facts: HostFacts { machine, kernel_version: "6.18".into(), os_image: "Debian".into(), hostname: "n1".into() },
            runtime_version: "containerd://1.6.20".into(),
            kubelet_version: crate::version::KUBELET.into(),
            pod_cidr: Some("10.88.0.0/16".into()),
            max_pods: 110,
            reserved_cpu_millis: 100,
            reserved_memory: 256 << 20,
            ephemeral_storage: 10 << 30,
            kubelet_port: 10250,
            health: NodeHealth::default(),
        }
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn a_new_node_has_labels_taints_capacity_and_info() {
        let node = new_node(&input(), &at(0));
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["role"], "worker");
        assert_eq!(node.spec.as_ref().unwrap().taints.as_ref().unwrap()[0].key, "dedicated");
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        let alloc = status.allocatable.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(alloc["cpu"].0, "1900m");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(alloc["memory"].0, "3932160Ki");
        assert_eq!(cap["hugepages-2Mi"].0, "0");
        assert_eq!(cap["pods"].0, "110");
        let info = status.node_info.unwrap();
        assert_eq!((info.machine_id.as_str(), info.container_runtime_version.as_str()), ("mid", "containerd://1.6.20"));
        assert_eq!(status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 10250);
        assert_eq!(status.addresses.unwrap()[0].address, "192.0.2.2");
    }

    #[test]
    fn conditions_keep_their_transition_time_and_name_the_runtime_problem() {
        let mut inp = input();
        let first = conditions(&inp.health, &[], &at(10));
        let ready = first.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
        let later = conditions(&inp.health, &first, &at(20));
        let ready = later.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.last_transition_time.clone(), ready.last_heartbeat_time.clone()), (Some(at(10)), Some(at(20))));
        inp.health.runtime_problem = Some("container runtime network not ready".into());
        let down = conditions(&inp.health, &later, &at(30));
        let ready = down.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(at(30)));
        assert!(ready.message.as_ref().unwrap().contains("network"));
        assert!(status_changed(&node_status(&input(), &first, &at(10)), &node_status(&inp, &first, &at(30))));
        assert!(!status_changed(&node_status(&input(), &first, &at(10)), &node_status(&input(), &first, &at(40))));
    }

    #[test]
    fn pressure_conditions_carry_the_kubelets_reasons_and_messages() {
        let reasons = |health: &NodeHealth| -> Vec<(String, String, String, String)> {
            conditions(health, &[], &at(0))
                .into_iter()
                .filter(|c| c.type_ != "Ready")
                .map(|c| (c.type_, c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
                .collect()
        };
        let row = |a: &str, b: &str, c: &str, d: &str| (a.to_string(), b.to_string(), c.to_string(), d.to_string());
        assert_eq!(
            reasons(&NodeHealth::default()),
            [
                row("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                row("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                row("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ]
        );
        assert_eq!(
            reasons(&NodeHealth { memory_pressure: true, disk_pressure: true, pid_pressure: true, ..Default::default() }),
            [
                row("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                row("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
                row("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
            ]
        );
    }

    #[test]
    fn taints_parse_as_the_flag_takes_them() {
        let t = parse_taint("a=b:NoExecute").unwrap();
        assert_eq!((t.key.as_str(), t.value.as_deref(), t.effect.as_str()), ("a", Some("b"), "NoExecute"));
        assert_eq!(parse_taint("k:NoSchedule").unwrap().value, None);
        assert!(parse_taint("k=v").unwrap_err().contains("key[=value]:Effect"));
        assert!(parse_taint("k=v:Sometimes").unwrap_err().contains("effect"));
    }

    #[test]
    fn conditions_set_unknown_by_the_node_controller_are_overwritten_ones() {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let ours = node_status(&input(), &[], &now);
        let mut in_api = ours.clone();
        for c in in_api.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        assert!(!conditions_overwritten(&in_api, &ours), "heartbeat times alone are no change");
        let other = NodeCondition { type_: "NetworkUnavailable".into(), status: "False".into(), ..Default::default() };
        in_api.conditions.as_mut().unwrap().push(other);
        assert!(!conditions_overwritten(&in_api, &ours), "another component's condition is not ours");
        for c in in_api.conditions.iter_mut().flatten() {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
        }
        assert!(conditions_overwritten(&in_api, &ours));
        assert!(conditions_overwritten(&NodeStatus::default(), &ours), "a Node without conditions needs ours");
    }
}
