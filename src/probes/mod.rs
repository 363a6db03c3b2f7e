//! Probes and lifecycle hooks, as the kubelet's prober and lifecycle handlers: what a probe or
//! hook does (`action`), running it (`run`, over the `Effects` trait), the threshold logic of one
//! probe (`threshold`), one task per container and probe kind (`worker`), the results the pod
//! worker reads (`results`), the per-pod set of workers (`pod`), how the results shape the pod's
//! status (`status`) and the postStart/preStop hooks (`hooks`).

pub mod action;
pub mod grpc;
pub mod hooks;
pub mod http;
pub mod pod;
pub mod results;
pub mod run;
pub mod status;
pub mod threshold;
pub mod worker;

/// The three kinds of probe a container may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    /// As the kubelet names it in its events ("Liveness probe failed: ...").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    pub fn of(self, c: &k8s_openapi::api::core::v1::Container) -> Option<&k8s_openapi::api::core::v1::Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// What one run of a probe or hook came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Counts as success, with a `ProbeWarning` event (a redirect to another host).
    Warning(String),
    Failure(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failure(_))
    }
}
