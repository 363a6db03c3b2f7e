//! One task per running container instance and probe kind: waits out initialDelaySeconds, then
//! probes every periodSeconds (liveness and readiness only once the container has started),
//! records `Unhealthy`/`ProbeWarning` events and publishes results past their thresholds.

use super::action::Action;
use super::results::{Kill, Results};
use super::run::Effects;
use super::threshold::{Settings, Tracker};
use super::{Kind, Outcome};
use crate::events::Kind::Warning;
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where events go: the real recorder, or a list in unit tests.
pub trait EventSink: Send + Sync + 'static {
    fn warn(&self, pod: &Pod, container: &str, reason: &'static str, message: String);
}

impl EventSink for crate::events::Recorder {
    fn warn(&self, pod: &Pod, container: &str, reason: &'static str, message: String) {
        self.record(pod, Some(container), Warning, reason, message);
    }
}

pub struct Probing {
    pub kind: Kind,
    pub settings: Settings,
    /// The resolved action, or why it could not be (every run then fails with that).
    pub action: Result<Action, String>,
    pub pod: Arc<Pod>,
    pub uid: String,
    pub container: String,
    pub container_id: String,
    /// When the container instance started (initialDelaySeconds counts from there).
    pub started_at: SystemTime,
}

/// How long to wait before the first probe.
pub fn first_delay(started_at: SystemTime, initial_delay: Duration, now: SystemTime) -> Duration {
    (started_at + initial_delay).duration_since(now).unwrap_or_default()
}

pub async fn run<E: Effects, S: EventSink>(effects: Arc<E>, results: Results, events: Arc<S>, p: Probing) {
    let mut tracker = Tracker::new(p.kind, &p.settings);
    tokio::time::sleep(first_delay(p.started_at, p.settings.initial_delay, SystemTime::now())).await;
    let mut ticker = tokio::time::interval(p.settings.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(current) = results.get(&p.uid, &p.container).filter(|r| r.container_id == p.container_id) else { return };
        // Startup gates the other two: they wait for it, then probe at once (the kubelet
        // triggers the readiness probe when startup succeeds) and a period apart after that.
        if p.kind != Kind::Startup && !current.started {
            if !until_started(&results, &p).await {
                return;
            }
            ticker.reset();
        }
        let outcome = match &p.action {
            Ok(action) => effects.run(&p.container_id, action, p.settings.timeout).await,
            Err(e) => Outcome::Failure(e.clone()),
        };
        match &outcome {
            Outcome::Success => {}
            Outcome::Warning(m) => events.warn(&p.pod, &p.container, "ProbeWarning", format!("{} probe warning: {m}", p.kind.title())),
            Outcome::Failure(m) => events.warn(&p.pod, &p.container, "Unhealthy", format!("{} probe failed: {m}", p.kind.title())),
        }
        let Some(result) = tracker.record(outcome.is_success()) else { continue };
        let grace = p.settings.termination_grace;
        match (p.kind, result) {
            (Kind::Readiness, ready) => results.update(&p.uid, &p.container, &p.container_id, |r| r.ready = ready),
            (Kind::Startup, true) => {
                results.update(&p.uid, &p.container, &p.container_id, |r| r.started = true);
                return;
            }
            (Kind::Liveness, true) => {}
            // The container is to be killed: this instance is not probed again.
            (kind, false) => {
                results.update(&p.uid, &p.container, &p.container_id, |r| r.kill = Some(Kill { kind, grace }));
                return;
            }
        }
    }
}

/// How often a liveness or readiness probe looks whether startup has succeeded.
const STARTED_CHECK: Duration = Duration::from_millis(200);

/// Waits for the container's startup to succeed; false when the instance is gone meanwhile.
async fn until_started(results: &Results, p: &Probing) -> bool {
    loop {
        match results.get(&p.uid, &p.container).filter(|r| r.container_id == p.container_id) {
            None => return false,
            Some(r) if r.started => return true,
            Some(_) => tokio::time::sleep(STARTED_CHECK).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::results::ContainerResults;
    use std::sync::Mutex;

    /// Answers from a script, then the last answer forever; counts the runs.
    struct Scripted(Mutex<Vec<Outcome>>, Mutex<u32>);

    impl Effects for Scripted {
        async fn run(&self, _id: &str, _action: &Action, _timeout: Duration) -> Outcome {
            *self.1.lock().unwrap() += 1;
            let mut script = self.0.lock().unwrap();
            if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            }
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<(String, String)>>);

    impl EventSink for Events {
        fn warn(&self, _pod: &Pod, _container: &str, reason: &'static str, message: String) {
            self.0.lock().unwrap().push((reason.into(), message));
        }
    }

    fn settings(failure: u32) -> Settings {
        Settings {
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: failure,
            termination_grace: Some(Duration::from_secs(5)),
        }
    }

    fn probing(kind: Kind, settings: Settings) -> Probing {
        Probing {
            kind,
            settings,
            action: Ok(Action::Sleep(Duration::ZERO)),
            pod: Arc::new(Pod::default()),
            uid: "u".into(),
            container: "c".into(),
            container_id: "id1".into(),
            started_at: SystemTime::now(),
        }
    }

    fn start(results: &Results, started: bool) {
        results.begin("u", "c", ContainerResults { container_id: "id1".into(), started, ready: false, kill: None });
    }

    #[tokio::test]
    async fn liveness_kills_after_failure_threshold_with_its_grace_and_events() {
        let (results, events) = (Results::default(), Arc::new(Events::default()));
        start(&results, true);
        let effects = Arc::new(Scripted(Mutex::new(vec![Outcome::Failure("boom".into())]), Mutex::new(0)));
        tokio::time::timeout(Duration::from_secs(5), run(effects.clone(), results.clone(), events.clone(), probing(Kind::Liveness, settings(3))))
            .await
            .expect("the worker ends after the kill");
        assert_eq!(results.get("u", "c").unwrap().kill, Some(Kill { kind: Kind::Liveness, grace: Some(Duration::from_secs(5)) }));
        assert_eq!(*effects.1.lock().unwrap(), 3);
        let events = events.0.lock().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], ("Unhealthy".to_string(), "Liveness probe failed: boom".to_string()));
    }

    #[tokio::test]
    async fn readiness_waits_for_startup_then_flips_ready() {
        let (results, events) = (Results::default(), Arc::new(Events::default()));
        start(&results, false);
        let effects = Arc::new(Scripted(Mutex::new(vec![Outcome::Success]), Mutex::new(0)));
        let worker = tokio::spawn(run(effects.clone(), results.clone(), events.clone(), probing(Kind::Readiness, settings(3))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(*effects.1.lock().unwrap(), 0, "no readiness probe before the container started");
        assert!(!results.get("u", "c").unwrap().ready);
        results.update("u", "c", "id1", |r| r.started = true);
        tokio::time::sleep(STARTED_CHECK * 2).await;
        assert!(results.get("u", "c").unwrap().ready);
        // A new instance replaces the entry: the old instance's worker ends.
        results.begin("u", "c", ContainerResults { container_id: "id2".into(), ..Default::default() });
        tokio::time::timeout(Duration::from_secs(1), worker).await.expect("worker of a replaced instance ends").unwrap();
    }

    #[tokio::test]
    async fn readiness_runs_as_soon_as_startup_succeeds_not_a_period_later() {
        let (results, events) = (Results::default(), Arc::new(Events::default()));
        start(&results, false);
        let effects = Arc::new(Scripted(Mutex::new(vec![Outcome::Success]), Mutex::new(0)));
        let mut slow = settings(3);
        slow.period = Duration::from_secs(60);
        let worker = tokio::spawn(run(effects.clone(), results.clone(), events, probing(Kind::Readiness, slow)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        results.update("u", "c", "id1", |r| r.started = true);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(results.get("u", "c").unwrap().ready, "ready within a moment of startup, though the period is 60 s");
        assert_eq!(*effects.1.lock().unwrap(), 1, "one probe, the next a period later");
        worker.abort();
    }

    #[tokio::test]
    async fn startup_success_starts_and_a_warning_counts_as_success_with_an_event() {
        let (results, events) = (Results::default(), Arc::new(Events::default()));
        start(&results, false);
        let effects = Arc::new(Scripted(
            Mutex::new(vec![Outcome::Failure("not yet".into()), Outcome::Warning("Probe terminated redirects, Response body: ".into())]),
            Mutex::new(0),
        ));
        tokio::time::timeout(Duration::from_secs(5), run(effects, results.clone(), events.clone(), probing(Kind::Startup, settings(3))))
            .await
            .expect("startup ends on success");
        assert!(results.get("u", "c").unwrap().started);
        let events = events.0.lock().unwrap();
        assert_eq!(events[1], ("ProbeWarning".to_string(), "Startup probe warning: Probe terminated redirects, Response body: ".to_string()));
    }

    #[test]
    fn initial_delay_counts_from_the_container_start() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(first_delay(t0, Duration::from_secs(30), t0 + Duration::from_secs(10)), Duration::from_secs(20));
        assert_eq!(first_delay(t0, Duration::from_secs(5), t0 + Duration::from_secs(10)), Duration::ZERO);
    }
}
