//! Pod admission: whether this node takes a new pod on at all, decided before anything is created
//! for it, as the kubelet's admit handlers do. Pure: `admit` runs every rule over the pod and the
//! node's settings and returns the first rejection. A rejected pod gets no worker: its status is
//! phase Failed with the rule's reason and the kubelet's "Pod was rejected: ..." message.
//!
//! Adding a rule: write `fn(&Pod, &AdmissionConfig) -> Result<(), Rejection>` (in a module of its
//! own when it has more than a few lines), give it a `RejectReason`, and list it in `RULES`.

pub mod sysctls;

use super::status::{qos_class, time};
use k8s_openapi::api::core::v1::{HostIP, Pod, PodStatus};
use std::time::SystemTime;

/// What the rules need to know about the node.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    pub sysctls: sysctls::Allowlist,
}

/// Why a pod was rejected, as the API's status.reason and the event's reason spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    SysctlForbidden,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SysctlForbidden => "SysctlForbidden",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

type Rule = fn(&Pod, &AdmissionConfig) -> Result<(), Rejection>;

/// The rules, in the order the kubelet runs its admit handlers.
const RULES: &[Rule] = &[sysctls::admit];

/// Ok when the node takes the pod on; else the first rule's rejection.
pub fn admit(pod: &Pod, config: &AdmissionConfig) -> Result<(), Rejection> {
    RULES.iter().try_for_each(|rule| rule(pod, config))
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
        assert_eq!(admit(&pod("  containers: [{name: c, image: i}]\n"), &config), Ok(()));
        let bad = pod("  securityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}\n  containers: [{name: c, image: i}]\n");
        let rejection = admit(&bad, &config).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::SysctlForbidden);
        assert_eq!(rejection.message, "forbidden sysctl: \"kernel.msgmax\" not allowlisted");
        let status = rejected_status(&bad, &rejection, Some("10.0.0.1"), SystemTime::UNIX_EPOCH);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("SysctlForbidden"));
        assert_eq!(status.message.as_deref(), Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted"));
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        assert!(status.container_statuses.is_none());
    }
}
