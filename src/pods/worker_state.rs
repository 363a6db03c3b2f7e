//! The pod worker's states and their transitions, as the kubelet's pod worker has them (syncing,
//! terminating, terminated), pure: the worker's loop carries out what each state asks. Also the
//! two ends a worker is reached by: its handle (the manager reads the state) and its inbox.

use super::worker::WorkerMsg;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodWorkerState {
    /// The pod is wanted: the runtime is brought in line with its spec.
    Syncing,
    /// The pod is being stopped; its containers get until `deadline` (SIGTERM, then SIGKILL).
    Terminating { deadline: Instant },
    /// Nothing of the pod runs any more; what is left on disk is removed next, then the worker ends.
    Terminated,
}

impl PodWorkerState {
    /// A stop with `grace` is asked for: Syncing starts terminating; a terminating pod's
    /// deadline only moves earlier (a shorter grace wins, a longer one is ignored).
    pub fn terminate(self, grace: Duration, now: Instant) -> Self {
        let asked = now + grace;
        match self {
            PodWorkerState::Syncing => PodWorkerState::Terminating { deadline: asked },
            PodWorkerState::Terminating { deadline } => PodWorkerState::Terminating { deadline: deadline.min(asked) },
            PodWorkerState::Terminated => PodWorkerState::Terminated,
        }
    }

    /// Every container and sandbox is stopped: a terminating pod is terminated (a syncing one
    /// cannot be: only a stop ends its containers for good).
    pub fn stopped(self) -> Self {
        match self {
            PodWorkerState::Syncing => PodWorkerState::Syncing,
            PodWorkerState::Terminating { .. } | PodWorkerState::Terminated => PodWorkerState::Terminated,
        }
    }

    /// Whether containers of the pod may still be running (the kubelet's CouldHaveRunningContainers).
    pub fn could_be_running(self) -> bool {
        self != PodWorkerState::Terminated
    }

    /// The grace a stop begun at `now` gets: what is left to the deadline in whole seconds,
    /// rounded up (CRI's timeout counts seconds, and 0.9 s must not become an instant SIGKILL).
    pub fn grace_left(self, now: Instant) -> Option<Duration> {
        let PodWorkerState::Terminating { deadline } = self else { return None };
        let left = deadline.saturating_duration_since(now);
        Some(Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0)))
    }
}

/// What the manager keeps of a worker besides its channel: where it is in the pod's life.
pub struct WorkerHandle {
    state: watch::Receiver<PodWorkerState>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    pub(super) fn new(state: watch::Receiver<PodWorkerState>, task: tokio::task::JoinHandle<()>) -> Self {
        WorkerHandle { state, task }
    }

    /// Whether the pod's containers or sandbox may still be in the runtime (its worker has not
    /// reached Terminated, and has not ended some other way).
    pub fn could_be_running(&self) -> bool {
        !self.task.is_finished() && self.state.borrow().could_be_running()
    }

    pub fn state(&self) -> PodWorkerState {
        *self.state.borrow()
    }

    /// Ends the worker's task where it stands (unit tests; nodelet itself always terminates).
    #[cfg(test)]
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The worker's messages; the manager going away reads as one Terminate with the pod's own grace.
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    open: bool,
}

impl Inbox {
    pub(super) fn new(rx: mpsc::UnboundedReceiver<WorkerMsg>) -> Self {
        Inbox { rx, open: true }
    }

    pub(super) async fn next(&mut self) -> WorkerMsg {
        if !self.open {
            return std::future::pending().await;
        }
        self.rx.recv().await.unwrap_or_else(|| self.closed())
    }

    /// A message already waiting, without waiting for one.
    pub(super) fn try_next(&mut self) -> Option<WorkerMsg> {
        match self.rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(mpsc::error::TryRecvError::Disconnected) if self.open => Some(self.closed()),
            Err(_) => None,
        }
    }

    fn closed(&mut self) -> WorkerMsg {
        self.open = false;
        WorkerMsg::Terminate { grace: None, done: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_terminating_grace_only_shrinks() {
        let now = Instant::now();
        let state = PodWorkerState::Syncing.terminate(S(30), now);
        assert_eq!(state, PodWorkerState::Terminating { deadline: now + S(30) });
        assert_eq!(state.terminate(S(60), now + S(1)), state, "a longer grace is ignored");
        let shorter = state.terminate(S(5), now + S(1));
        assert_eq!(shorter, PodWorkerState::Terminating { deadline: now + S(6) });
        assert_eq!(shorter.grace_left(now + S(1)), Some(S(5)));
        assert_eq!(shorter.grace_left(now + S(1) + Duration::from_millis(100)), Some(S(5)), "rounded up");
        assert_eq!(shorter.grace_left(now + S(10)), Some(S(0)));
    }

    #[test]
    fn only_a_stopped_termination_ends_the_containers() {
        let now = Instant::now();
        assert_eq!(PodWorkerState::Syncing.stopped(), PodWorkerState::Syncing);
        assert!(PodWorkerState::Syncing.could_be_running());
        let terminating = PodWorkerState::Syncing.terminate(S(1), now);
        assert!(terminating.could_be_running());
        let done = terminating.stopped();
        assert_eq!(done, PodWorkerState::Terminated);
        assert!(!done.could_be_running());
        assert_eq!(done.terminate(S(1), now), PodWorkerState::Terminated);
        assert_eq!(done.grace_left(now), None);
    }
}
