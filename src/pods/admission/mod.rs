//! Pod admission: whether this node takes a new pod on at all, decided before anything is created
//! for it, as the kubelet's admit handlers do. Pure: `admit` runs every rule over the pod, the
//! node's settings and the pods already admitted, and returns the first rejection. A rejected pod
//! gets no worker: its status is phase Failed with the rule's reason and the kubelet's
//! "Pod was rejected: ..." message.
//!
//! Adding a rule: write `fn(&Pod, &Context) -> Result<(), Rejection>` (in a module of its own
//! when it has more than a few lines), give it a `RejectReason`, and list it in `RULES`.

pub mod affinity;
pub mod ports;
pub mod pressure;
pub mod resources;
pub mod sysctls;

use super::status::{qos_class, time};
use k8s_openapi::api::core::v1::{HostIP, Pod, PodStatus};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// What the rules need to know about the node.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    pub sysctls: sysctls::Allowlist,
    pub node: NodeFacts,
    /// The node's pressure as the eviction manager judges it (None: never under pressure).
    pub pressure: Option<tokio::sync::watch::Receiver<crate::eviction::NodePressure>>,
}

/// The node as the rules see it: its labels (those it registers with) and what pods may use.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory: i64,
}

impl Default for NodeFacts {
    /// A node without known limits but the kubelet's default maxPods.
    fn default() -> Self {
        NodeFacts { name: String::new(), labels: BTreeMap::new(), max_pods: 110, allocatable_cpu_millis: i64::MAX, allocatable_memory: i64::MAX }
    }
}

/// The input of every rule: the node and the pods it runs now (admitted and not yet finished).
pub struct Context<'a> {
    pub config: &'a AdmissionConfig,
    pub admitted: &'a [&'a Pod],
}

/// Why a pod was rejected, as the API's status.reason and the event's reason spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    SysctlForbidden,
    /// The pod's `kubernetes.io/os` label names another OS than the node's.
    PodOSSelectorNodeLabelDoesNotMatch,
    /// spec.os.name is not linux.
    PodOSNotSupported,
    OutOfPods,
    OutOfCpu,
    OutOfMemory,
    /// nodeSelector or required node affinity does not match the node's labels.
    NodeAffinity,
    /// A hostPort is taken by a pod already running here.
    NodePorts,
    /// The node is under memory or disk pressure (the eviction manager's admit handler).
    Evicted,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SysctlForbidden => "SysctlForbidden",
            RejectReason::PodOSSelectorNodeLabelDoesNotMatch => "PodOSSelectorNodeLabelDoesNotMatch",
            RejectReason::PodOSNotSupported => "PodOSNotSupported",
            RejectReason::OutOfPods => "OutOfpods",
            RejectReason::OutOfCpu => "OutOfcpu",
            RejectReason::OutOfMemory => "OutOfmemory",
            RejectReason::NodeAffinity => "NodeAffinity",
            RejectReason::NodePorts => "NodePorts",
            RejectReason::Evicted => "Evicted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

type Rule = fn(&Pod, &Context) -> Result<(), Rejection>;

/// The rules, in the order the kubelet runs its admit handlers (eviction, sysctls, then the
/// predicate handler: OS label, OS field, resources, node affinity, host ports).
const RULES: &[Rule] = &[pressure::admit, |pod, ctx| sysctls::admit(pod, ctx.config), os_label, os_field, resources::admit, affinity::admit, ports::admit];

/// Ok when the node takes the pod on; else the first rule's rejection.
pub fn admit(pod: &Pod, ctx: &Context) -> Result<(), Rejection> {
    RULES.iter().try_for_each(|rule| rule(pod, ctx))
}

/// The OS this node runs pods of.
const NODE_OS: &str = "linux";

/// A pod labelled for another OS (`kubernetes.io/os`) is refused, as the kubelet does.
fn os_label(pod: &Pod, _: &Context) -> Result<(), Rejection> {
    match pod.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/os")) {
        Some(os) if os != NODE_OS => Err(Rejection {
            reason: RejectReason::PodOSSelectorNodeLabelDoesNotMatch,
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label".into(),
        }),
        _ => Ok(()),
    }
}

/// spec.os names the OS the pod is for; only linux runs here.
fn os_field(pod: &Pod, _: &Context) -> Result<(), Rejection> {
    match pod.spec.as_ref().and_then(|s| s.os.as_ref()) {
        Some(os) if os.name != NODE_OS => {
            Err(Rejection { reason: RejectReason::PodOSNotSupported, message: "Failed to admit pod as the OS field doesn't match node OS".into() })
        }
        _ => Ok(()),
    }
}

/// The kubelet's message for a scheduler predicate that failed.
fn predicate_failed(reason: RejectReason, description: &str) -> Rejection {
    Rejection { reason, message: format!("Predicate {} failed: {description}", reason.as_str()) }
}

/// The status of a rejected pod: Failed, with the reason and message, as the kubelet writes it.
pub fn rejected_status(pod: &Pod, rejection: &Rejection, host_ip: Option<&str>, now: SystemTime) -> PodStatus {
    PodStatus {
        phase: Some("Failed".into()),
        reason: Some(rejection.reason.as_str().into()),
        message: Some(format!("Pod was rejected: {}", rejection.message)),
        host_ip: host_ip.map(String::from),
        host_ips: host_ip.map(|ip| vec![HostIP { ip: ip.into() }]),
        start_time: Some(time(now)),
        qos_class: Some(qos_class(&pod.spec.clone().unwrap_or_default()).into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::manifest::parse_static_pod;

    fn pod(yaml_spec: &str) -> Pod {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{yaml_spec}");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    #[test]
    fn a_plain_pod_is_admitted_and_a_forbidden_sysctl_rejected() {
        let config = AdmissionConfig::default();
        let ctx = Context { config: &config, admitted: &[] };
        assert_eq!(admit(&pod("  containers: [{name: c, image: i}]\n"), &ctx), Ok(()));
        let bad = pod("  securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}\n  containers: [{name: c, image: i}]\n");
        let rejection = admit(&bad, &ctx).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::SysctlForbidden);
        assert_eq!(rejection.message, "forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        let status = rejected_status(&bad, &rejection, Some("10.0.0.1"), SystemTime::UNIX_EPOCH);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("SysctlForbidden"));
        assert_eq!(status.message.as_deref(), Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"));
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        assert!(status.container_statuses.is_none());
    }

    #[test]
    fn a_pod_for_another_os_is_refused_by_its_field_or_its_label() {
        let config = AdmissionConfig::default();
        let ctx = Context { config: &config, admitted: &[] };
        assert_eq!(admit(&pod("  os: {name: linux}\n  containers: [{name: c, image: i}]\n"), &ctx), Ok(()));
        let windows = admit(&pod("  os: {name: windows}\n  containers: [{name: c, image: i}]\n"), &ctx).unwrap_err();
        assert_eq!((windows.reason.as_str(), windows.message.as_str()), ("PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"));
        let mut labelled = pod("  containers: [{name: c, image: i}]\n");
        labelled.metadata.labels = Some([("kubernetes.io/os".to_string(), "windows".to_string())].into());
        let rejection = admit(&labelled, &ctx).unwrap_err();
        assert_eq!(rejection.reason.as_str(), "PodOSSelectorNodeLabelDoesNotMatch");
        assert_eq!(rejection.message, "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label");
    }
}
