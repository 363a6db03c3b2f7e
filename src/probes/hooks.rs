//! Lifecycle hooks: postStart runs right after the container started and before it counts as
//! running (a failure kills it); preStop runs inside the grace period before the stop signal,
//! and the stop gets what is left of the grace (at least two seconds, as the kubelet gives).

use super::action::{hook_action, Action};
use super::run::Effects;
use super::Outcome;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use std::time::{Duration, Instant};

/// The kubelet's floor for what StopContainer gets after a preStop hook.
pub const MIN_STOP_GRACE: Duration = Duration::from_secs(2);
/// postStart has no deadline of its own in the API; nodelet's pod worker waits this long at most.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one hook; Err is the kubelet's message for the Failed*Hook event.
pub async fn run_hook<E: Effects>(
    effects: &E,
    pod: &Pod,
    c: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    let pod_name = crate::pods::spec::pod_ref(pod);
    let action = hook_action(handler, c, pod_ip).map_err(|e| format!("lifecycle hook for Container {:?} in Pod {pod_name:?} failed - error: {e}", c.name))?;
    if let Action::Tcp { .. } = action {
        // Deprecated in hooks and not run by the kubelet.
        return Ok(());
    }
    let outcome = tokio::time::timeout(timeout, effects.run(container_id, &action, timeout))
        .await
        .unwrap_or_else(|_| Outcome::Failure(format!("timed out after {}s", timeout.as_secs())));
    let Outcome::Failure(message) = outcome else { return Ok(()) };
    Err(match &action {
        Action::Exec { command } => format!(
            "Exec lifecycle hook ({command:?}) for Container {:?} in Pod {pod_name:?} failed - error: command {:?} exited with error, message: {message:?}",
            c.name,
            command.join(" ")
        ),
        Action::Http(target) => format!("HTTP lifecycle hook ({}) for Container {:?} in Pod {pod_name:?} failed - error: {message}", target.path, c.name),
        _ => format!("lifecycle hook for Container {:?} in Pod {pod_name:?} failed - error: {message}", c.name),
    })
}

/// postStart, if the container has one; Err carries the `FailedPostStartHook` event's message.
pub async fn post_start<E: Effects>(effects: &E, pod: &Pod, c: &Container, container_id: &str, pod_ip: &str) -> Result<(), String> {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else { return Ok(()) };
    run_hook(effects, pod, c, container_id, handler, pod_ip, POST_START_TIMEOUT).await
}

/// Runs the container's preStop hook, bounded by `grace`, before it is stopped. Returns the
/// hook's failure (for `FailedPreStopHook`) and the grace StopContainer gets: what is left.
pub async fn pre_stop<E: Effects>(
    effects: &E,
    pod: &Pod,
    c: Option<&Container>,
    container_id: &str,
    pod_ip: &str,
    grace: Duration,
) -> (Option<String>, Duration) {
    let started = Instant::now();
    let Some((c, handler)) = c.and_then(|c| c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).map(|h| (c, h))) else { return (None, grace) };
    if grace.is_zero() {
        return (None, grace);
    }
    let failure = run_hook(effects, pod, c, container_id, handler, pod_ip, grace).await.err();
    (failure, grace.saturating_sub(started.elapsed()).max(MIN_STOP_GRACE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, SleepAction};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Effects for Log {
        async fn run(&self, id: &str, action: &Action, _timeout: Duration) -> Outcome {
            self.0.lock().unwrap().push(format!("hook {id} {action:?}"));
            match action {
                Action::Sleep(d) => {
                    tokio::time::sleep(*d).await;
                    Outcome::Success
                }
                Action::Exec { command } if command[0] == "false" => Outcome::Failure("it failed\n".into()),
                _ => Outcome::Success,
            }
        }
    }

    fn container(pre_stop: Option<LifecycleHandler>, post_start: Option<LifecycleHandler>) -> Container {
        Container { name: "c".into(), lifecycle: Some(Lifecycle { pre_stop, post_start, ..Default::default() }), ..Default::default() }
    }

    fn exec(cmd: &str) -> LifecycleHandler {
        LifecycleHandler { exec: Some(ExecAction { command: Some(vec![cmd.into()]) }), ..Default::default() }
    }

    #[tokio::test]
    async fn pre_stop_takes_its_time_from_the_grace_the_stop_gets() {
        let log = Log::default();
        let sleep = LifecycleHandler { sleep: Some(SleepAction { seconds: 1 }), ..Default::default() };
        let c = container(Some(sleep), None);
        let (failure, left) = pre_stop(&log, &Pod::default(), Some(&c), "id1", "10.0.0.1", Duration::from_secs(10)).await;
        assert_eq!(failure, None);
        let log = log.0.into_inner().unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].starts_with("hook id1 Sleep"), "{log:?}");
        assert_eq!(left.as_secs(), 8, "the second spent in preStop is taken from the grace");
    }

    #[tokio::test]
    async fn a_failed_pre_stop_is_reported_and_leaves_the_stop_at_least_the_minimum_grace() {
        let log = Log::default();
        let c = container(Some(exec("false")), None);
        let (failure, left) = pre_stop(&log, &Pod::default(), Some(&c), "id1", "10.0.0.1", Duration::from_secs(1)).await;
        assert!(failure.unwrap().starts_with("Exec lifecycle hook ([\"false\"]) for Container \"c\""));
        assert_eq!(left, MIN_STOP_GRACE);
        let log = Log::default();
        let (failure, left) = pre_stop(&log, &Pod::default(), Some(&container(None, None)), "id2", "10.0.0.1", Duration::from_secs(30)).await;
        assert_eq!((failure, left), (None, Duration::from_secs(30)));
        assert!(log.0.into_inner().unwrap().is_empty());
    }

    #[tokio::test]
    async fn post_start_failure_carries_the_kubelets_message() {
        let log = Log::default();
        assert_eq!(post_start(&log, &Pod::default(), &container(None, Some(exec("true"))), "id1", "10.0.0.1").await, Ok(()));
        let err = post_start(&log, &Pod::default(), &container(None, Some(exec("false"))), "id1", "10.0.0.1").await.unwrap_err();
        assert!(err.contains("message: \"it failed\\n\""), "{err}");
    }
}
