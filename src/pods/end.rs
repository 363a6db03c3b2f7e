//! Why nodelet ended a pod itself (its containers killed, phase Failed, never restarted): its
//! activeDeadlineSeconds passed, or the eviction manager evicted it. The reason is the pod's
//! status reason, and is written beside the pod's volumes, so it holds across a restart of
//! nodelet for static pods too (an API pod's status says it as well).

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use std::path::Path;
use std::time::{Duration, SystemTime};

pub const EVICTED: &str = "Evicted";
/// The condition the kubelet adds to a pod it ends for disruption (>= 1.26).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
pub const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";
/// The file in the pod's directory that remembers the reason.
const FILE: &str = "ended";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    DeadlineExceeded,
    /// `grace` is what the eviction allows the containers (None once read back: they are stopped).
    Evicted {
        message: String,
        grace: Option<Duration>,
    },
}

impl EndReason {
    pub fn reason(&self) -> &'static str {
        match self {
            EndReason::DeadlineExceeded => super::deadline::REASON,
            EndReason::Evicted { .. } => EVICTED,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            EndReason::DeadlineExceeded => super::deadline::MESSAGE,
            EndReason::Evicted { message, .. } => message,
        }
    }

    /// The grace the containers get; None: the pod's own.
    pub fn grace(&self) -> Option<Duration> {
        match self {
            EndReason::DeadlineExceeded => None,
            EndReason::Evicted { grace, .. } => *grace,
        }
    }

    /// A pod's status that says nodelet (or a kubelet before it) ended the pod.
    pub fn from_status(status: Option<&PodStatus>) -> Option<EndReason> {
        let status = status?;
        match status.reason.as_deref()? {
            super::deadline::REASON => Some(EndReason::DeadlineExceeded),
            EVICTED if status.phase.as_deref() == Some("Failed") => {
                Some(EndReason::Evicted { message: status.message.clone().unwrap_or_default(), grace: None })
            }
            _ => None,
        }
    }

    /// The status of a pod ended for this reason: Failed, with the reason and message; an
    /// evicted pod also gets the DisruptionTarget condition.
    pub fn mark(&self, status: &mut PodStatus, now: SystemTime) {
        status.phase = Some("Failed".into());
        status.reason = Some(self.reason().into());
        status.message = Some(self.message().into());
        if let EndReason::Evicted { message, .. } = self {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != DISRUPTION_TARGET);
            conditions.push(PodCondition {
                type_: DISRUPTION_TARGET.into(),
                status: "True".into(),
                reason: Some(TERMINATION_BY_KUBELET.into()),
                message: Some(message.clone()),
                last_transition_time: Some(super::status::time(now)),
                ..Default::default()
            });
        }
    }

    fn to_text(&self) -> String {
        serde_json::json!({ "reason": self.reason(), "message": self.message() }).to_string()
    }

    fn from_text(text: &str) -> Option<EndReason> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let status = PodStatus {
            phase: Some("Failed".into()),
            reason: value["reason"].as_str().map(String::from),
            message: value["message"].as_str().map(String::from),
            ..Default::default()
        };
        EndReason::from_status(Some(&status))
    }
}

/// Remembers the reason in the pod's directory (created if need be).
pub async fn record(pod_dir: &Path, reason: &EndReason) -> std::io::Result<()> {
    tokio::fs::create_dir_all(pod_dir).await?;
    tokio::fs::write(pod_dir.join(FILE), reason.to_text()).await
}

/// The reason remembered in the pod's directory, if any.
pub fn recorded(pod_dir: &Path) -> Option<EndReason> {
    EndReason::from_text(&std::fs::read_to_string(pod_dir.join(FILE)).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_pod_is_failed_with_the_reason_and_an_evicted_one_a_disruption_target() {
        let mut status = PodStatus { phase: Some("Running".into()), ..Default::default() };
        EndReason::DeadlineExceeded.mark(&mut status, SystemTime::now());
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("DeadlineExceeded")));
        assert_eq!(status.message.as_deref(), Some(super::super::deadline::MESSAGE));
        assert!(status.conditions.is_none());
        let evicted = EndReason::Evicted { message: "The node was low on resource: memory. ".into(), grace: Some(Duration::from_secs(2)) };
        let mut status = PodStatus::default();
        evicted.mark(&mut status, SystemTime::now());
        evicted.mark(&mut status, SystemTime::now());
        assert_eq!((status.phase.as_deref(), status.reason.as_deref()), (Some("Failed"), Some("Evicted")));
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!((conditions[0].type_.as_str(), conditions[0].reason.as_deref()), ("DisruptionTarget", Some("TerminationByKubelet")));
        assert_eq!(conditions[0].message.as_deref(), Some("The node was low on resource: memory. "));
    }

    #[test]
    fn the_reason_is_read_back_from_the_status_or_the_pods_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded(dir.path()), None);
        let evicted = EndReason::Evicted { message: "low".into(), grace: Some(Duration::from_secs(2)) };
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(record(&dir.path().join("pod"), &evicted)).unwrap();
        assert_eq!(recorded(&dir.path().join("pod")), Some(EndReason::Evicted { message: "low".into(), grace: None }));
        let status = |phase: &str, reason: &str| PodStatus { phase: Some(phase.into()), reason: Some(reason.into()), ..Default::default() };
        assert_eq!(EndReason::from_status(Some(&status("Failed", "DeadlineExceeded"))), Some(EndReason::DeadlineExceeded));
        assert_eq!(EndReason::from_status(Some(&status("Running", "Evicted"))), None);
        assert_eq!(EndReason::from_status(Some(&status("Failed", "OutOfpods"))), None);
        assert_eq!(EndReason::from_status(None), None);
    }
}
