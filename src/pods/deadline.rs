//! activeDeadlineSeconds: a pod active on the node longer than its deadline (counted from its
//! startTime; the apiserver lets the deadline be lowered while the pod runs) is ended: its
//! containers killed, phase Failed with the kubelet's reason and message (`end`). Pure: when it is due.

use k8s_openapi::api::core::v1::Pod;
use std::time::{Duration, SystemTime};

pub const REASON: &str = "DeadlineExceeded";
pub const MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The pod has no activeDeadlineSeconds.
    None,
    /// Not yet: look again after this long.
    In(Duration),
    Passed,
}

/// Where the pod stands against its deadline at `now`, having started at `start`.
pub fn check(pod: &Pod, start: SystemTime, now: SystemTime) -> Deadline {
    let Some(seconds) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else { return Deadline::None };
    let deadline = start + Duration::from_secs(seconds.max(0) as u64);
    match deadline.duration_since(now) {
        Ok(left) if !left.is_zero() => Deadline::In(left),
        _ => Deadline::Passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::manifest::parse_static_pod;

    fn pod(deadline: Option<i64>) -> Pod {
        let line = deadline.map(|d| format!("  activeDeadlineSeconds: {d}\n")).unwrap_or_default();
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{line}  containers: [{{name: c, image: i}}]\n");
        parse_static_pod("f", text.as_bytes(), "n1").unwrap()
    }

    #[test]
    fn the_deadline_counts_from_the_start_and_says_when_to_look_again() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(check(&pod(None), start, start + Duration::from_secs(99999)), Deadline::None);
        assert_eq!(check(&pod(Some(5)), start, start + Duration::from_secs(2)), Deadline::In(Duration::from_secs(3)));
        assert_eq!(check(&pod(Some(5)), start, start + Duration::from_secs(5)), Deadline::Passed);
        assert_eq!(check(&pod(Some(5)), start, start + Duration::from_secs(60)), Deadline::Passed);
        // Lowered while running: already past.
        assert_eq!(check(&pod(Some(1)), start, start + Duration::from_secs(2)), Deadline::Passed);
        // A clock behind the start time waits the whole deadline.
        assert_eq!(check(&pod(Some(5)), start, start - Duration::from_secs(1)), Deadline::In(Duration::from_secs(6)));
    }
}
