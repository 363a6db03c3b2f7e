//! The reasons a container waits, ended or is killed, as types: decisions compare variants, and
//! the API's strings are written only here (`as_str`), as the kubelet's constants are.

use std::time::Duration;

/// The grace period a pod gets when neither its deletion nor its spec names one (the API's default).
pub const DEFAULT_GRACE_PERIOD_SECS: i64 = 30;

/// `DEFAULT_GRACE_PERIOD_SECS` as a duration, for callers that stop things.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(DEFAULT_GRACE_PERIOD_SECS as u64);

/// Why a container is not running: its `state.waiting.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitingReason {
    ContainerCreating,
    PodInitializing,
    CrashLoopBackOff,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    CreateContainerConfigError,
    CreateContainerError,
    RunContainerError,
}

impl WaitingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingReason::ContainerCreating => "ContainerCreating",
            WaitingReason::PodInitializing => "PodInitializing",
            WaitingReason::CrashLoopBackOff => "CrashLoopBackOff",
            WaitingReason::ErrImagePull => "ErrImagePull",
            WaitingReason::ImagePullBackOff => "ImagePullBackOff",
            WaitingReason::ErrImageNeverPull => "ErrImageNeverPull",
            WaitingReason::CreateContainerConfigError => "CreateContainerConfigError",
            WaitingReason::CreateContainerError => "CreateContainerError",
            WaitingReason::RunContainerError => "RunContainerError",
        }
    }

    /// The reason shown while a failed start waits out its back-off (a failed pull becomes
    /// ImagePullBackOff; other failures keep their own reason, as in the kubelet).
    pub fn backing_off(self) -> WaitingReason {
        match self {
            WaitingReason::ErrImagePull => WaitingReason::ImagePullBackOff,
            other => other,
        }
    }

    /// The Warning event's text for a back-off this reason shows, if it is one.
    pub fn backoff_event(self, container: &str, pod: &str) -> Option<String> {
        let what = match self {
            WaitingReason::CrashLoopBackOff => "restarting failed container",
            WaitingReason::ImagePullBackOff => "pulling image",
            _ => return None,
        };
        Some(format!("Back-off {what} {container} in pod {pod}"))
    }
}

impl std::fmt::Display for WaitingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a container ended, when the runtime does not say: its `state.terminated.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TerminatedReason {
    Completed,
    Error,
    OOMKilled,
    ContainerStatusUnknown,
    DeadlineExceeded,
}

impl TerminatedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminatedReason::Completed => "Completed",
            TerminatedReason::Error => "Error",
            TerminatedReason::OOMKilled => "OOMKilled",
            TerminatedReason::ContainerStatusUnknown => "ContainerStatusUnknown",
            TerminatedReason::DeadlineExceeded => "DeadlineExceeded",
        }
    }

    /// The reason of a plain exit: Completed for 0, Error otherwise.
    pub fn of_exit(exit_code: i32) -> TerminatedReason {
        if exit_code == 0 {
            TerminatedReason::Completed
        } else {
            TerminatedReason::Error
        }
    }
}

impl std::fmt::Display for TerminatedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the worker stops a running container (the kubelet's containerKillReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KillReason {
    /// The container's spec changed: it is replaced by one from the new spec.
    SpecChanged,
    /// The pod has finished or is being deleted.
    PodFinished,
    /// The liveness probe failed (for the prober).
    LivenessFailed,
    /// The startup probe failed (for the prober).
    StartupFailed,
    /// The container's postStart hook failed.
    PostStartHookFailed,
}

impl KillReason {
    /// The `Killing` event's message for a container stopped for this reason.
    pub fn message(self, container: &str) -> String {
        match self {
            KillReason::SpecChanged => format!("Container {container} definition changed, will be restarted"),
            KillReason::PodFinished => format!("Stopping container {container}"),
            KillReason::LivenessFailed => format!("Container {container} failed liveness probe, will be restarted"),
            KillReason::StartupFailed => format!("Container {container} failed startup probe, will be restarted"),
            KillReason::PostStartHookFailed => "FailedPostStartHook".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_render_the_api_strings() {
        assert_eq!(WaitingReason::CrashLoopBackOff.to_string(), "CrashLoopBackOff");
        assert_eq!(WaitingReason::ErrImagePull.backing_off(), WaitingReason::ImagePullBackOff);
        assert_eq!(WaitingReason::CreateContainerConfigError.backing_off(), WaitingReason::CreateContainerConfigError);
        assert_eq!(TerminatedReason::of_exit(0).as_str(), "Completed");
        assert_eq!(TerminatedReason::of_exit(137).as_str(), "Error");
        assert_eq!(KillReason::SpecChanged.message("a"), "Container a definition changed, will be restarted");
        assert_eq!(WaitingReason::RunContainerError.backoff_event("a", "ns/p"), None);
        assert_eq!(WaitingReason::ImagePullBackOff.backoff_event("a", "ns/p").as_deref(), Some("Back-off pulling image a in pod ns/p"));
    }
}
