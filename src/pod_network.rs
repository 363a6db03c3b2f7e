//! The pod network while nodelet runs: which CIDR the node's pods get their addresses from
//! (the Node's `spec.podCIDR` once the cluster assigns one, else `--pod-cidr`), whether the
//! runtime has loaded the CNI config for it, and the gate that holds new pod sandboxes until
//! it has, as the kubelet holds pods while the network is not ready.
//!
//! ```text
//! start ──> NotReady("waiting for the node's pod CIDR")   (standalone: no CIDR to wait for)
//!             │ podCIDR assigned            │ none within CLUSTER_CIDR_WAIT
//!             v                             v
//!           switch: write conflist, wait until the runtime shows it, proxy follows ──> Ready
//!             ^                                                                         │
//!             └──────────────────────── podCIDR changes ────────────────────────────────┘
//! ```
//! Beside that, a runtime that reports NetworkReady=false while nodelet's config is in place
//! (containerd can miss a file event) gets the config written again, so it reloads it.
//!
//! With `--network-plugin=external` the pod network is a CNI the cluster brings (flannel,
//! Calico, Cilium): `RuntimeNetwork` writes and installs nothing, and the gate follows the
//! runtime's NetworkReady condition, as the kubelet's does.

use crate::network::CniInstall;
use crate::proxy::Proxier;
use crate::runtime::Cri;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a joining node waits for the cluster to assign it a pod CIDR before it uses
/// `--pod-cidr` (a cluster without `--allocate-node-cidrs` never assigns one).
pub const CLUSTER_CIDR_WAIT: Duration = Duration::from_secs(10);
/// How long the runtime gets to load a new network config before the gate opens anyway.
const RUNTIME_LOAD_WAIT: Duration = Duration::from_secs(15);
/// How often the runtime's NetworkReady condition is looked at.
const RUNTIME_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Rewriting the config to make the runtime reload it happens at most this often.
const REWRITE_AT_MOST_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkState {
    Ready,
    NotReady(String),
}

/// What pod workers ask before creating a sandbox on the pod network.
#[derive(Clone)]
pub struct NetworkGate(watch::Receiver<NetworkState>);

impl NetworkGate {
    /// A gate that never closes (hostNetwork-only uses, tests).
    pub fn always_ready() -> NetworkGate {
        NetworkGate(watch::channel(NetworkState::Ready).1)
    }

    /// Ok when new sandboxes may join the pod network, else why not.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.borrow() {
            NetworkState::Ready => Ok(()),
            NetworkState::NotReady(why) => Err(why.clone()),
        }
    }
}

/// Whether a runtime that reports its network not ready should get nodelet's config again.
pub fn should_rewrite(network_ready: bool, config_in_place: bool, last_rewrite: Option<Instant>, now: Instant) -> bool {
    !network_ready && config_in_place && last_rewrite.is_none_or(|at| now.duration_since(at) >= REWRITE_AT_MOST_EVERY)
}

/// True when the runtime's loaded CNI config (its verbose status) names the subnet.
pub fn runtime_has_subnet(loaded: &str, cidr: &str) -> bool {
    loaded.contains(&format!("\"{cidr}\"")) || loaded.contains(&format!("\\\"{cidr}\\\""))
}

pub struct PodNetwork {
    install: CniInstall,
    cri: Cri,
    state: watch::Sender<NetworkState>,
    /// The IPv4 proxiers, whose masquerade rules name the pod CIDR.
    proxiers: Vec<Arc<Proxier>>,
    last_rewrite: Option<Instant>,
}

impl PodNetwork {
    /// The gate starts closed: it opens once the runtime has the config (`cluster`: once the
    /// pod CIDR is known too, or CLUSTER_CIDR_WAIT has passed).
    pub fn new(install: CniInstall, cri: Cri, proxiers: Vec<Arc<Proxier>>, cluster: bool) -> (PodNetwork, NetworkGate) {
        let initial = NetworkState::NotReady(if cluster { "waiting for the node's pod CIDR from the cluster" } else { "installing the pod network" }.into());
        let (state, rx) = watch::channel(initial);
        (PodNetwork { install, cri, state, proxiers, last_rewrite: None }, NetworkGate(rx))
    }

    /// Installs the plugin and config, then follows the assigned pod CIDRs (None: standalone)
    /// and the runtime's network readiness, forever.
    pub async fn run(mut self, assigned: Option<impl Stream<Item = Option<String>> + Unpin>) {
        if let Err(e) = self.install.install() {
            tracing::error!("installing the pod network: {e:#}");
        }
        let mut assigned = assigned;
        let cidr_wait = tokio::time::sleep(if assigned.is_some() { CLUSTER_CIDR_WAIT } else { Duration::ZERO });
        tokio::pin!(cidr_wait);
        let mut waited = false;
        let mut check = tokio::time::interval(RUNTIME_CHECK_EVERY);
        loop {
            tokio::select! {
                Some(cidr) = async { match assigned.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    if let Some(cidr) = cidr {
                        waited = true;
                        self.switch_to(cidr).await;
                    }
                }
                _ = &mut cidr_wait, if !waited => {
                    waited = true;
                    if *self.state.borrow() != NetworkState::Ready {
                        if assigned.is_some() {
                            tracing::info!(pod_cidr = %self.install.pod_cidr, "the cluster assigned this node no pod CIDR; using --pod-cidr");
                        }
                        self.open().await;
                    }
                }
                _ = check.tick() => self.reload_if_missed().await,
            }
        }
    }

    /// Moves the pod network to `cidr`: new sandboxes wait until the runtime has the new config.
    async fn switch_to(&mut self, cidr: String) {
        if cidr == self.install.pod_cidr && *self.state.borrow() == NetworkState::Ready {
            return;
        }
        if let Err(e) = crate::config::parse_cidr(&cidr) {
            tracing::error!(pod_cidr = %cidr, "the node's spec.podCIDR cannot be used: {e}; keeping {}", self.install.pod_cidr);
            self.open().await;
            return;
        }
        tracing::info!(pod_cidr = %cidr, previous = %self.install.pod_cidr, "using the pod CIDR the cluster assigned");
        if let Some(cluster) = self.install.cluster_cidr.as_deref().filter(|c| !crate::network::contains(c, &cidr)) {
            tracing::warn!(pod_cidr = %cidr, cluster_cidr = %cluster, "the node's pod CIDR is not inside --cluster-cidr: its pods' traffic to other nodes' pods is masqueraded");
        }
        self.state.send_replace(NetworkState::NotReady(format!("switching the pod network to {cidr}")));
        self.install.pod_cidr = cidr;
        if let Err(e) = self.install.install() {
            tracing::error!("installing the pod network for {}: {e:#}", self.install.pod_cidr);
        }
        self.open().await;
    }

    /// Opens the gate once the runtime shows the config's subnet (or after RUNTIME_LOAD_WAIT),
    /// and points the proxy at the CIDR.
    async fn open(&mut self) {
        let cidr = self.install.pod_cidr.clone();
        let started = Instant::now();
        loop {
            match self.cri.loaded_network_config().await {
                Ok(loaded) if runtime_has_subnet(&loaded, &cidr) => break,
                // A runtime that does not show its config: nothing to wait for.
                Ok(loaded) if loaded.is_empty() && started.elapsed() > Duration::from_secs(1) => break,
                _ => {}
            }
            if started.elapsed() > RUNTIME_LOAD_WAIT {
                tracing::warn!(pod_cidr = %cidr, "the runtime has not shown the new pod network config after {RUNTIME_LOAD_WAIT:?}; going on");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for proxier in &self.proxiers {
            if let Err(e) = proxier.set_pod_cidr(&cidr).await {
                tracing::error!("the proxy cannot follow the pod CIDR: {e:#}");
            }
        }
        tracing::info!(pod_cidr = %cidr, waited_ms = started.elapsed().as_millis() as u64, "pod network ready");
        self.state.send_replace(NetworkState::Ready);
    }

    async fn reload_if_missed(&mut self) {
        let Ok(readiness) = self.cri.readiness().await else { return };
        if should_rewrite(readiness.network_ready, self.install.config_in_place(), self.last_rewrite, Instant::now()) {
            self.last_rewrite = Some(Instant::now());
            match self.install.rewrite_config() {
                Ok(()) => {
                    tracing::info!(file = %self.install.conflist_path().display(), "the runtime reports NetworkReady=false with nodelet's CNI config in place: wrote it again so the runtime reloads it")
                }
                Err(e) => tracing::error!("rewriting the CNI config: {e:#}"),
            }
        }
    }
}

/// The gate of a pod network another CNI provides: open while the runtime reports
/// NetworkReady, closed with the runtime's own words otherwise (or when it does not answer).
pub fn runtime_network_state(readiness: Result<&crate::runtime::RuntimeReadiness, String>) -> NetworkState {
    match readiness {
        Ok(r) if r.network_ready => NetworkState::Ready,
        Ok(r) => {
            let why = r.problems.iter().find(|p| p.starts_with("NetworkReady")).cloned().unwrap_or_else(|| "NetworkReady is false".into());
            NetworkState::NotReady(format!("the container runtime's network is not ready: {why}"))
        }
        Err(e) => NetworkState::NotReady(format!("the container runtime does not answer: {e}")),
    }
}

/// A pod network nodelet does not set up (`--network-plugin=external`): the gate follows the
/// runtime's NetworkReady, the proxy the node's pod CIDR.
pub struct RuntimeNetwork {
    cri: Cri,
    state: watch::Sender<NetworkState>,
    proxiers: Vec<Arc<Proxier>>,
}

impl RuntimeNetwork {
    pub fn new(cri: Cri, proxiers: Vec<Arc<Proxier>>) -> (RuntimeNetwork, NetworkGate) {
        let (state, rx) = watch::channel(NetworkState::NotReady("waiting for the container runtime's network (NetworkReady)".into()));
        (RuntimeNetwork { cri, state, proxiers }, NetworkGate(rx))
    }

    /// Follows the runtime's NetworkReady and the assigned pod CIDRs (None: standalone), forever.
    pub async fn run(self, assigned: Option<impl Stream<Item = Option<String>> + Unpin>) {
        tracing::info!("the pod network is the runtime's CNI (--network-plugin=external): nodelet writes no CNI config and installs no plugin");
        let mut assigned = assigned;
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                Some(cidr) = async { match assigned.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    for proxier in self.proxiers.iter().filter(|_| cidr.is_some()) {
                        if let Err(e) = proxier.set_pod_cidr(cidr.as_deref().unwrap_or_default()).await {
                            tracing::error!("the proxy cannot follow the pod CIDR: {e:#}");
                        }
                    }
                }
                _ = check.tick() => {
                    let readiness = self.cri.readiness().await.map_err(|e| e.to_string());
                    let state = runtime_network_state(readiness.as_ref().map_err(Clone::clone));
                    if *self.state.borrow() != state {
                        match &state {
                            NetworkState::Ready => tracing::info!("the container runtime's network is ready"),
                            NetworkState::NotReady(why) => tracing::warn!("{why}"),
                        }
                        self.state.send_replace(state);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_network_is_ready_when_the_runtime_says_so() {
        use crate::runtime::RuntimeReadiness;
        let ready = RuntimeReadiness { problems: vec![], network_ready: true };
        assert_eq!(runtime_network_state(Ok(&ready)), NetworkState::Ready);
        let not = RuntimeReadiness {
            problems: vec!["NetworkReady is false: NetworkPluginNotReady Network plugin returns error: cni plugin not initialized".into()],
            network_ready: false,
        };
        match runtime_network_state(Ok(&not)) {
            NetworkState::NotReady(why) => assert!(why.contains("cni plugin not initialized"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(runtime_network_state(Err("connection refused".into())), NetworkState::NotReady(w) if w.contains("connection refused")));
    }

    #[test]
    fn the_config_is_rewritten_only_when_the_runtime_misses_it_and_not_too_often() {
        let now = Instant::now();
        assert!(should_rewrite(false, true, None, now));
        assert!(!should_rewrite(true, true, None, now), "the runtime has a network");
        assert!(!should_rewrite(false, false, None, now), "the config is not nodelet's: nothing to reload");
        assert!(!should_rewrite(false, true, Some(now - Duration::from_secs(3)), now));
        assert!(should_rewrite(false, true, Some(now - REWRITE_AT_MOST_EVERY), now));
    }

    #[test]
    fn the_runtime_shows_a_subnet_in_its_loaded_config() {
        let loaded = r#"{"Networks":[{"Config":{"Name":"nodelet","Source":"{\"plugins\":[{\"subnet\": \"10.244.3.0/24\"}]}"}}]}"#;
        assert!(runtime_has_subnet(loaded, "10.244.3.0/24"));
        assert!(!runtime_has_subnet(loaded, "10.244.3.0/2"));
        assert!(!runtime_has_subnet(loaded, "10.88.0.0/16"));
    }

    #[test]
    fn the_gate_tells_why_it_is_closed() {
        let (tx, rx) = watch::channel(NetworkState::NotReady("waiting".into()));
        let gate = NetworkGate(rx);
        assert_eq!(gate.check(), Err("waiting".into()));
        tx.send_replace(NetworkState::Ready);
        assert_eq!(gate.check(), Ok(()));
        assert_eq!(NetworkGate::always_ready().check(), Ok(()));
    }
}
