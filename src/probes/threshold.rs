//! One probe's settings and its threshold logic, as the kubelet's probe worker counts: a result
//! is published only after `successThreshold` successes or `failureThreshold` failures in a row.

use super::Kind;
use k8s_openapi::api::core::v1::Probe;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own terminationGracePeriodSeconds, for a kill it causes.
    pub termination_grace: Option<Duration>,
}

impl Settings {
    /// The API's defaults where a field is unset (or below its minimum).
    pub fn of(probe: &Probe) -> Settings {
        let secs = |v: Option<i32>, default: i32, min: i32| Duration::from_secs(v.unwrap_or(default).max(min) as u64);
        Settings {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            termination_grace: probe.termination_grace_period_seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
        }
    }
}

/// Consecutive results of one probe on one container.
#[derive(Debug, Clone)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
}

impl Tracker {
    pub fn new(kind: Kind, settings: &Settings) -> Tracker {
        // Liveness and startup decide on one success, whatever the spec says (the API enforces 1).
        let success_threshold = if kind == Kind::Readiness { settings.success_threshold } else { 1 };
        Tracker { success_threshold, failure_threshold: settings.failure_threshold, last: None, run: 0 }
    }

    /// Counts one result; Some(result) once its threshold is reached (and on every further one
    /// in the same run), None while the previous published result stands.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success { self.success_threshold } else { self.failure_threshold };
        (self.run >= threshold).then_some(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(success: i32, failure: i32) -> Settings {
        Settings::of(&Probe { success_threshold: Some(success), failure_threshold: Some(failure), ..Default::default() })
    }

    #[test]
    fn defaults_are_the_apis() {
        let s = Settings::of(&Probe::default());
        assert_eq!((s.initial_delay, s.period, s.timeout), (Duration::ZERO, Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((s.success_threshold, s.failure_threshold, s.termination_grace), (1, 3, None));
    }

    #[test]
    fn failures_count_only_in_a_row() {
        let mut t = Tracker::new(Kind::Liveness, &settings(1, 3));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn readiness_needs_its_success_threshold_and_liveness_one_success() {
        let mut ready = Tracker::new(Kind::Readiness, &settings(2, 1));
        assert_eq!(ready.record(true), None);
        assert_eq!(ready.record(true), Some(true));
        assert_eq!(ready.record(false), Some(false));
        let mut live = Tracker::new(Kind::Liveness, &settings(3, 1));
        assert_eq!(live.record(true), Some(true));
    }
}
