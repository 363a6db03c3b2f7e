//! The probes of one pod: the pod worker tells it what runs after each observation; it keeps one
//! worker per running container instance and probe kind, and answers with the results.

use super::action::probe_action;
use super::results::{ContainerResults, Kill, Results};
use super::run::Effects;
use super::threshold::Settings;
use super::worker::{self, EventSink, Probing};
use super::Kind;
use crate::runtime::observed::{nanos_to_system_time, ObservedPod, RunState};
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub struct PodProbes<E: Effects, S: EventSink> {
    effects: Arc<E>,
    events: Arc<S>,
    results: Results,
    uid: String,
    /// Container name -> the instance probed and its workers.
    running: HashMap<String, (String, Vec<JoinHandle<()>>)>,
    terminating: bool,
}

impl<E: Effects, S: EventSink> PodProbes<E, S> {
    pub fn new(effects: Arc<E>, events: Arc<S>, uid: String) -> Self {
        PodProbes { effects, events, results: Results::default(), uid, running: HashMap::new(), terminating: false }
    }

    /// Called after each observation: starts the workers of a container instance that now runs
    /// in the pod's sandbox, stops those of one that no longer does.
    pub fn sync(&mut self, pod: &Pod, observed: &ObservedPod, pod_ip: &str) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let sandbox = observed.ready_sandbox().map(|s| s.id.clone());
        let mut seen = Vec::new();
        // Sidecars (restartable init containers) are probed as the regular containers are.
        for c in spec.containers.iter().chain(crate::pods::plan::sidecars(pod)) {
            let live = sandbox.as_deref().and_then(|sb| observed.latest_in(&c.name, sb)).filter(|l| l.state == RunState::Running && !self.terminating);
            let Some(live) = live else { continue };
            seen.push(c.name.clone());
            if self.running.get(&c.name).is_some_and(|(id, _)| *id == live.id) {
                continue;
            }
            self.stop(&c.name);
            let initial =
                ContainerResults { container_id: live.id.clone(), started: c.startup_probe.is_none(), ready: c.readiness_probe.is_none(), kill: None };
            self.results.begin(&self.uid, &c.name, initial);
            let shared = Arc::new(pod.clone());
            let workers = Kind::ALL
                .iter()
                .filter_map(|kind| kind.of(c).map(|probe| (*kind, probe)))
                .map(|(kind, probe)| {
                    let probing = Probing {
                        kind,
                        settings: Settings::of(probe),
                        action: probe_action(probe, c, pod_ip),
                        pod: shared.clone(),
                        uid: self.uid.clone(),
                        container: c.name.clone(),
                        container_id: live.id.clone(),
                        started_at: nanos_to_system_time(live.started_at),
                    };
                    tokio::spawn(worker::run(self.effects.clone(), self.results.clone(), self.events.clone(), probing))
                })
                .collect();
            self.running.insert(c.name.clone(), (live.id.clone(), workers));
        }
        let gone: Vec<String> = self.running.keys().filter(|n| !seen.contains(n)).cloned().collect();
        for name in gone {
            self.stop(&name);
        }
    }

    fn stop(&mut self, container: &str) {
        if let Some((_, workers)) = self.running.remove(container) {
            workers.iter().for_each(JoinHandle::abort);
        }
        self.results.remove(&self.uid, container);
    }

    /// The pod is being stopped: no probe runs any more and nothing is ready. True the first time.
    pub fn terminating(&mut self) -> bool {
        let first = !std::mem::replace(&mut self.terminating, true);
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            self.stop(&name);
        }
        first
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating
    }

    /// Running containers a liveness or startup probe wants killed: (container id, name, kill).
    pub fn kills(&self) -> Vec<(String, String, Kill)> {
        self.running
            .iter()
            .filter_map(|(name, (id, _))| {
                self.results.get(&self.uid, name).filter(|r| r.container_id == *id).and_then(|r| r.kill).map(|k| (id.clone(), name.clone(), k))
            })
            .collect()
    }

    /// The results of the container instances now probed, by container name.
    pub fn view(&self) -> HashMap<String, ContainerResults> {
        self.running.keys().filter_map(|name| self.results.get(&self.uid, name).map(|r| (name.clone(), r))).collect()
    }

    /// Returns when a result changed: the pod worker syncs again.
    pub async fn changed(&self) {
        self.results.changed().await
    }
}

impl<E: Effects, S: EventSink> Drop for PodProbes<E, S> {
    fn drop(&mut self) {
        self.running.values().flat_map(|(_, w)| w.iter()).for_each(JoinHandle::abort);
    }
}
