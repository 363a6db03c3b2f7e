//! The Node object nodelet registers and keeps fresh: labels, taints, addresses, capacity,
//! allocatable, nodeInfo and conditions, computed from plain inputs, and the strategic-merge
//! patch that writes nodelet's part of the status and leaves other components' conditions be.
//! Pure and unit-tested.

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
    /// spec.providerID, set when the Node is registered (`--provider-id`).
    pub provider_id: Option<String>,
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
            provider_id: input.provider_id.clone(),
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

/// The condition types nodelet sets on its Node. Any other (NetworkUnavailable from a CNI or the
/// route controller, node-problem-detector's KernelDeadlock...) is another component's: never
/// compared, copied or written by nodelet.
pub const OWN_CONDITIONS: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

pub fn is_own_condition(condition: &NodeCondition) -> bool {
    OWN_CONDITIONS.contains(&condition.type_.as_str())
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
/// Only nodelet's own conditions count (in any order): another component's condition is no
/// change of nodelet's, whichever side has it.
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        let mut own: Vec<NodeCondition> = s.conditions.take().unwrap_or_default().into_iter().filter(is_own_condition).collect();
        for c in &mut own {
            c.last_heartbeat_time = None;
        }
        own.sort_by(|a, b| a.type_.cmp(&b.type_));
        s.conditions = Some(own);
        s.images = None;
        s
    };
    strip(old) != strip(new)
}

/// The body of the strategic-merge patch of the Node's status subresource that writes `ours`,
/// as the kubelet's `PatchNodeStatus` (pkg/util/node) does:
/// - `conditions` are merged by their `type`: the patch carries nodelet's own conditions only,
///   so a condition another component set is left as it is;
/// - `capacity` and `allocatable` are maps, merged by key (a resource someone else advertised
///   stays, as the kubelet keeps the keys it does not set);
/// - `addresses` is declared merged by `type` too, which is wrong when two addresses share a
///   type (dual-stack InternalIPs) and never removes one: like the kubelet, addresses that
///   differ from the Node's (`in_api`, None when unknown) are sent whole with a
///   `{"$patch": "replace"}` directive, and left out when they are the same.
///
/// Nothing nodelet does not set (images, volumes, phase) is in the patch.
pub fn status_patch(ours: &NodeStatus, in_api: Option<&NodeStatus>) -> serde_json::Value {
    let mut status = ours.clone();
    status.conditions = Some(status.conditions.take().unwrap_or_default().into_iter().filter(is_own_condition).collect());
    let addresses = status.addresses.take().unwrap_or_default();
    let mut body = serde_json::to_value(&status).expect("a NodeStatus serializes");
    let same_addresses = in_api.is_some_and(|api| api.addresses.as_deref().unwrap_or_default() == addresses.as_slice());
    if !same_addresses {
        let mut list = serde_json::to_value(&addresses).expect("NodeAddresses serialize");
        list.as_array_mut().expect("a list").push(serde_json::json!({ "$patch": "replace" }));
        body["addresses"] = list;
    }
    serde_json::json!({ "status": body })
}

/// What registering does about spec.providerID when it takes over an existing Node: the
/// apiserver lets it go from empty to set, never change once set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderIdTakeOver {
    /// Nothing to do: no `--provider-id`, or the Node already has it.
    Keep,
    /// The Node has none: set ours.
    Set(String),
    /// The Node has another one, which stays (to be warned about).
    Differs { in_api: String, ours: String },
}

pub fn provider_id_on_take_over(in_api: Option<&str>, ours: Option<&str>) -> ProviderIdTakeOver {
    match (in_api.filter(|id| !id.is_empty()), ours.filter(|id| !id.is_empty())) {
        (_, None) => ProviderIdTakeOver::Keep,
        (None, Some(ours)) => ProviderIdTakeOver::Set(ours.to_string()),
        (Some(theirs), Some(ours)) if theirs == ours => ProviderIdTakeOver::Keep,
        (Some(theirs), Some(ours)) => ProviderIdTakeOver::Differs { in_api: theirs.to_string(), ours: ours.to_string() },
    }
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
            provider_id: None,
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

    fn foreign(kind: &str, reason: &str) -> NodeCondition {
        NodeCondition {
            type_: kind.into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(format!("set by another component: {reason}")),
            last_heartbeat_time: Some(at(5)),
            last_transition_time: Some(at(5)),
        }
    }

    #[test]
    fn the_status_patch_carries_only_nodelets_conditions_merged_by_type() {
        let mut ours = node_status(&input(), &[], &at(100));
        // Were a foreign condition ever in the computed status, it is still not written back.
        ours.conditions.as_mut().unwrap().push(foreign("KernelDeadlock", "KernelHasNoDeadlock"));
        let mut in_api = ours.clone();
        in_api.conditions.as_mut().unwrap().push(foreign("NetworkUnavailable", "RouteCreated"));
        let patch = status_patch(&ours, Some(&in_api));
        let status = &patch["status"];
        let types: Vec<&str> = status["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(types, OWN_CONDITIONS);
        assert!(status["conditions"].as_array().unwrap().iter().all(|c| c.get("$patch").is_none()), "no directive on conditions: {patch}");
        assert_eq!(status["conditions"][3]["lastHeartbeatTime"], "1970-01-01T00:01:40Z");
        assert_eq!(status["capacity"]["cpu"], "2");
        assert_eq!(status["allocatable"]["cpu"], "1900m");
        assert_eq!(status["nodeInfo"]["machineID"], "mid");
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        for absent in ["images", "phase", "volumesInUse", "volumesAttached"] {
            assert!(status.get(absent).is_none(), "{absent} is not nodelet's to write: {patch}");
        }
        // The Node has our addresses: the patch leaves them out, as the kubelet's does.
        assert!(status.get("addresses").is_none(), "{patch}");
        assert_eq!(patch.as_object().unwrap().keys().collect::<Vec<_>>(), ["status"]);
    }

    #[test]
    fn addresses_that_differ_from_the_nodes_are_replaced_whole() {
        let ours = node_status(&input(), &[], &at(100));
        let replaced = serde_json::json!([
            {"type": "InternalIP", "address": "192.0.2.2"},
            {"type": "Hostname", "address": "n1"},
            {"$patch": "replace"}
        ]);
        // Two InternalIPs (merged by type they would collapse, and the stale one would stay).
        let mut in_api = ours.clone();
        in_api.addresses = Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: "192.0.2.2".into() },
            NodeAddress { type_: "InternalIP".into(), address: "192.0.2.9".into() },
            NodeAddress { type_: "Hostname".into(), address: "n1".into() },
        ]);
        assert_eq!(status_patch(&ours, Some(&in_api))["status"]["addresses"], replaced);
        // A changed address, none at all, or a Node not read: the same replacement.
        in_api.addresses = Some(vec![NodeAddress { type_: "InternalIP".into(), address: "192.0.2.3".into() }]);
        assert_eq!(status_patch(&ours, Some(&in_api))["status"]["addresses"], replaced);
        in_api.addresses = None;
        assert_eq!(status_patch(&ours, Some(&in_api))["status"]["addresses"], replaced);
        assert_eq!(status_patch(&ours, None)["status"]["addresses"], replaced);
    }

    #[test]
    fn foreign_conditions_are_no_change_of_the_status() {
        let first = node_status(&input(), &[], &at(10));
        let mut with_foreign = node_status(&input(), &first.conditions.clone().unwrap(), &at(20));
        assert!(!status_changed(&first, &with_foreign));
        with_foreign.conditions.as_mut().unwrap().insert(0, foreign("NetworkUnavailable", "RouteCreated"));
        assert!(!status_changed(&first, &with_foreign), "a foreign condition on the new side");
        assert!(!status_changed(&with_foreign, &first), "a foreign condition on the old side");
        let mut flipped = with_foreign.clone();
        flipped.conditions.as_mut().unwrap()[0].status = "True".into();
        assert!(!status_changed(&with_foreign, &flipped), "a foreign condition's change");
        let ready = flipped.conditions.as_mut().unwrap().iter_mut().find(|c| c.type_ == "Ready").unwrap();
        ready.status = "False".into();
        assert!(status_changed(&with_foreign, &flipped), "Ready's change is one");
        // Computed from conditions that include foreign ones, the status has only nodelet's.
        let previous = with_foreign.conditions.clone().unwrap();
        let next = node_status(&input(), &previous, &at(30));
        let types: Vec<&str> = next.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, OWN_CONDITIONS);
    }

    #[test]
    fn the_provider_id_is_registered_and_set_on_take_over_only_where_empty() {
        let mut inp = input();
        assert_eq!(new_node(&inp, &at(0)).spec.unwrap().provider_id, None);
        inp.provider_id = Some("nodelet://n1".into());
        assert_eq!(new_node(&inp, &at(0)).spec.unwrap().provider_id.as_deref(), Some("nodelet://n1"));
        use ProviderIdTakeOver::*;
        assert_eq!(provider_id_on_take_over(None, Some("a://1")), Set("a://1".into()));
        assert_eq!(provider_id_on_take_over(Some(""), Some("a://1")), Set("a://1".into()));
        assert_eq!(provider_id_on_take_over(Some("a://1"), Some("a://1")), Keep);
        assert_eq!(provider_id_on_take_over(Some("b://2"), None), Keep);
        assert_eq!(provider_id_on_take_over(None, Some("")), Keep);
        assert_eq!(provider_id_on_take_over(Some("b://2"), Some("a://1")), Differs { in_api: "b://2".into(), ours: "a://1".into() });
    }
}
