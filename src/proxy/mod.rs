//! The service proxy (kube-proxy's job, nftables mode): Services and EndpointSlices in,
//! one nftables table out. Changes are batched (a short debounce) and applied as one atomic
//! transaction that touches only the changed Services' elements; a periodic full resync
//! rewrites the whole table to repair drift: its maps are filled anew beside the live ones
//! (inert until used) and one transaction switches the rules over, so packets still see one
//! table and then the other (see `render::staged`). A table in a state the proxy does not
//! know is replaced in one transaction.
//!
//! - `model`: plain data; `convert`: apiserver objects -> model (pure, with warnings);
//! - `render`: model -> nft script, full and incremental (pure);
//! - `sync`: the incremental, full and fallback sync paths;
//! - `nftables`: what the proxier needs of nftables (a trait); `apply`: its libnftables side,
//!   `fake` (tests) an in-memory one; `conntrack`: UDP flow cleanup after endpoints go away;
//! - `watch`: the apiserver's Services and EndpointSlices in.

pub mod apply;
pub mod conntrack;
pub mod convert;
#[cfg(test)]
mod fake;
pub mod model;
pub mod nftables;
pub mod render;
mod sync;
#[cfg(test)]
mod tests;
pub mod watch;

use apply::{ApplyError, Netns, Nft};
use conntrack::Conntrack;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{join_endpoints, Family, Model, ServiceName, ServicePort, Slice};
use nftables::Nftables;
use render::Context;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use sync::Applied;

/// How the proxy is set up.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The nftables table the proxy owns, "nodelet" by default, and its family: a dual-stack
    /// node runs one proxier per family.
    pub table: String,
    pub family: Family,
    /// This node's name (endpoints with this nodeName are local).
    pub node_name: String,
    /// The pod network of the family, e.g. "10.88.0.0/16": ClusterIP traffic from outside it is
    /// masqueraded.
    pub pod_cidr: Option<String>,
    /// Where nftables and conntrack act (the caller's network namespace by default).
    pub netns: Netns,
    pub conntrack: PathBuf,
    /// How long changes are collected before they are applied together.
    pub debounce: Duration,
    /// How often the whole table is rewritten.
    pub resync_interval: Duration,
}

impl ProxyConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        ProxyConfig {
            table: "nodelet".into(),
            family: Family::V4,
            node_name: node_name.into(),
            pod_cidr: None,
            netns: Netns::default(),
            conntrack: "conntrack".into(),
            debounce: Duration::from_millis(50),
            resync_interval: Duration::from_secs(300),
        }
    }
}

/// What the proxy reports for /healthz and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyHealth {
    /// When a sync (incremental or full) last succeeded.
    pub last_sync: Option<SystemTime>,
    pub last_full_sync: Option<SystemTime>,
    pub last_sync_duration: Option<Duration>,
    pub last_full_sync_duration: Option<Duration>,
    /// Failed syncs since start, and in a row now (0 when the last sync succeeded).
    pub failed_syncs: u64,
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
    /// Service ports programmed, rules and set/map elements in the table.
    pub service_ports: usize,
    pub rules: usize,
    pub elements: usize,
    /// Inputs skipped as invalid since start.
    pub invalid_objects: u64,
    /// Permissions the apiserver refuses the proxy's watches, by resource (what to grant, and how).
    pub refused: BTreeMap<&'static str, String>,
}

/// A Service's ports joined with their endpoints.
type PortsWithEndpoints = Vec<(ServicePort, Vec<model::Endpoint>)>;

/// What the proxy was told: Services and slices as converted, and which Services changed.
#[derive(Default)]
struct Inputs {
    services: HashMap<ServiceName, Vec<ServicePort>>,
    slices: HashMap<ServiceName, Slice>,
    slices_of: HashMap<ServiceName, BTreeSet<ServiceName>>,
    dirty: BTreeSet<ServiceName>,
    node_names: model::NodeNames,
    /// Bumped by every change, so a sync knows whether it saw the latest.
    generation: u64,
}

impl Inputs {
    fn entries_of(&self, svc: &ServiceName) -> PortsWithEndpoints {
        let Some(ports) = self.services.get(svc) else { return Vec::new() };
        let slices: Vec<&Slice> = self.slices_of.get(svc).into_iter().flatten().filter_map(|n| self.slices.get(n)).collect();
        ports.iter().map(|p| (p.clone(), join_endpoints(p, slices.iter().copied()))).collect()
    }
}

/// The service proxy. Feed it objects from the watch; `run` applies them.
pub struct Proxier {
    /// The rendering context; only its pod CIDR changes (when the cluster assigns the node one).
    ctx: std::sync::RwLock<Context>,
    config: ProxyConfig,
    nft: Box<dyn Nftables>,
    conntrack: Conntrack,
    inputs: Mutex<Inputs>,
    applied: tokio::sync::Mutex<Applied>,
    health: Mutex<ProxyHealth>,
    changed: tokio::sync::Notify,
}

fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && name.len() <= 64
}

fn valid_cidr(cidr: &str, family: Family) -> bool {
    let Some((ip, len)) = cidr.split_once('/') else { return false };
    let len = len.parse::<u8>();
    match family {
        Family::V4 => ip.parse::<Ipv4Addr>().is_ok() && len.is_ok_and(|l| l <= 32),
        Family::V6 => ip.parse::<Ipv6Addr>().is_ok() && len.is_ok_and(|l| l <= 128),
    }
}

impl Proxier {
    pub fn new(config: ProxyConfig) -> anyhow::Result<Self> {
        // parsing a full sync's elements is most of its time: one thread per core shares it
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let nft = Nft::new(&config.netns, threads)?;
        Self::with_nftables(config, Box::new(nft))
    }

    /// A proxier that programs `nft` (the real one, or a fake in tests).
    pub fn with_nftables(config: ProxyConfig, nft: Box<dyn Nftables>) -> anyhow::Result<Self> {
        anyhow::ensure!(valid_table_name(&config.table), "invalid nftables table name {:?}", config.table);
        if let Some(cidr) = &config.pod_cidr {
            anyhow::ensure!(valid_cidr(cidr, config.family), "invalid {} pod CIDR {cidr:?}", config.family);
        }
        let ctx = Context {
            table: config.table.clone(),
            family: config.family,
            generation: 0,
            node_name: config.node_name.clone(),
            pod_cidr: config.pod_cidr.clone(),
        };
        let conntrack = Conntrack { program: config.conntrack.clone(), family: config.family, netns: config.netns.clone() };
        let applied = Applied::unknown(0);
        Ok(Proxier {
            ctx: std::sync::RwLock::new(ctx),
            config,
            nft,
            conntrack,
            inputs: Mutex::new(Inputs::default()),
            applied: tokio::sync::Mutex::new(applied),
            health: Mutex::new(ProxyHealth::default()),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    fn ctx(&self) -> Context {
        self.ctx.read().unwrap().clone()
    }

    /// The pod network's CIDR changed (the cluster assigned this node one): the masquerade rules
    /// that tell pod traffic from outside traffic follow at the next sync, a whole-table rewrite.
    pub async fn set_pod_cidr(&self, cidr: &str) -> anyhow::Result<()> {
        anyhow::ensure!(valid_cidr(cidr, self.config.family), "invalid {} pod CIDR {cidr:?}", self.config.family);
        if self.ctx.read().unwrap().pod_cidr.as_deref() == Some(cidr) {
            return Ok(());
        }
        self.ctx.write().unwrap().pod_cidr = Some(cidr.to_string());
        let mut applied = self.applied.lock().await;
        applied.need_full = true;
        // Not a staged sync: the table's fixed chains change too.
        applied.known = false;
        drop(applied);
        self.changed.notify_one();
        tracing::info!(table = %self.ctx().table_ref(), pod_cidr = %cidr, "proxy follows the node's pod CIDR");
        Ok(())
    }

    fn warn_all(&self, warnings: &[String]) {
        for w in warnings {
            tracing::warn!(table = %self.ctx().table_ref(), "{w}");
        }
        if !warnings.is_empty() {
            self.health.lock().unwrap().invalid_objects += warnings.len() as u64;
        }
    }

    fn mark_dirty(&self, inputs: &mut Inputs, svc: ServiceName) {
        inputs.dirty.insert(svc);
        inputs.generation += 1;
        self.changed.notify_one();
    }

    /// A Service was added or changed.
    pub fn upsert_service(&self, svc: &Service) {
        let converted = convert::service(svc, self.config.family);
        self.warn_all(&converted.warnings);
        let Some(name) = convert::service_name(svc) else { return };
        let mut inputs = self.inputs.lock().unwrap();
        if inputs.services.get(&name) == Some(&converted.value) {
            return;
        }
        inputs.services.insert(name.clone(), converted.value);
        self.mark_dirty(&mut inputs, name);
    }

    /// A Service was deleted.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        let name = ServiceName::new(namespace, name);
        let mut inputs = self.inputs.lock().unwrap();
        if inputs.services.remove(&name).is_some() {
            self.mark_dirty(&mut inputs, name);
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn upsert_slice(&self, slice: &EndpointSlice) {
        let mut inputs = self.inputs.lock().unwrap();
        let converted = convert::slice(slice, self.config.family, &mut inputs.node_names);
        self.warn_all(&converted.warnings);
        let Some(name) = convert::slice_name(slice) else { return };
        let old = inputs.slices.get(&name).map(|s| s.service.clone());
        if let Some(old_svc) = &old {
            if converted.value.as_ref() == inputs.slices.get(&name) {
                return;
            }
            inputs.slices_of.entry(old_svc.clone()).or_default().remove(&name);
            inputs.slices.remove(&name);
            self.mark_dirty(&mut inputs, old_svc.clone());
        }
        if let Some(s) = converted.value {
            let svc = s.service.clone();
            inputs.slices_of.entry(svc.clone()).or_default().insert(name.clone());
            inputs.slices.insert(name, s);
            self.mark_dirty(&mut inputs, svc);
        }
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        let name = ServiceName::new(namespace, name);
        let mut inputs = self.inputs.lock().unwrap();
        if let Some(old) = inputs.slices.remove(&name) {
            if let Some(set) = inputs.slices_of.get_mut(&old.service) {
                set.remove(&name);
                if set.is_empty() {
                    inputs.slices_of.remove(&old.service);
                }
            }
            self.mark_dirty(&mut inputs, old.service);
        }
    }

    /// The full list of Services (after a watch's list or relist): each is upserted, and those
    /// the proxier has that the list lacks are deleted, so an outage leaves no stale rules.
    pub fn replace_services<'a>(&self, all: impl IntoIterator<Item = &'a Service>) {
        let mut present = BTreeSet::new();
        for svc in all {
            self.upsert_service(svc);
            present.extend(convert::service_name(svc));
        }
        let gone: Vec<ServiceName> = self.inputs.lock().unwrap().services.keys().filter(|n| !present.contains(*n)).cloned().collect();
        for n in gone {
            self.delete_service(&n.namespace, &n.name);
        }
    }

    /// As `replace_services`, for EndpointSlices.
    pub fn replace_slices<'a>(&self, all: impl IntoIterator<Item = &'a EndpointSlice>) {
        let mut present = BTreeSet::new();
        for slice in all {
            self.upsert_slice(slice);
            present.extend(convert::slice_name(slice));
        }
        let gone: Vec<ServiceName> = self.inputs.lock().unwrap().slices.keys().filter(|n| !present.contains(*n)).cloned().collect();
        for n in gone {
            self.delete_slice(&n.namespace, &n.name);
        }
    }

    /// What is currently programmed (or about to be, before a failed sync is repaired).
    pub async fn model(&self) -> Model {
        let applied = self.applied.lock().await;
        applied.entries.iter().map(|(k, a)| (k.clone(), a.entry.clone())).collect()
    }

    /// The apiserver refuses (Some) or grants again (None) what watching `resource` needs.
    pub fn set_refused(&self, resource: &'static str, why: Option<String>) {
        let mut h = self.health.lock().unwrap();
        match why {
            Some(why) => h.refused.insert(resource, why),
            None => h.refused.remove(resource),
        };
    }

    pub fn health(&self) -> ProxyHealth {
        self.health.lock().unwrap().clone()
    }

    /// Applies changes as they come (after the debounce) and resyncs periodically, forever.
    /// A failed sync is retried with a growing delay (500 ms doubling up to 30 s).
    pub async fn run(&self) {
        let mut next_full = Instant::now();
        let mut backoff = crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut retry = Duration::ZERO;
        loop {
            let failing = self.health().consecutive_failures > 0;
            let wake = if failing { Instant::now() + retry } else { next_full };
            tokio::select! {
                _ = self.changed.notified() => tokio::time::sleep(self.config.debounce).await,
                _ = tokio::time::sleep_until(wake.into()) => {
                    if !failing {
                        self.applied.lock().await.need_full = true;
                    }
                }
            }
            let full_due = self.applied.lock().await.need_full;
            match self.sync().await {
                Ok(()) => {
                    backoff.reset();
                    if full_due {
                        next_full = Instant::now() + self.config.resync_interval;
                    }
                }
                Err(_) => retry = backoff.fail(),
            }
        }
    }

    /// Deletes the proxy's table (the proxy's rules stop applying at once).
    pub async fn cleanup(&self) -> Result<(), ApplyError> {
        let mut applied = self.applied.lock().await;
        self.nft.apply(&render::delete_table(&self.ctx())).await?;
        *applied = Applied::unknown(applied.next_id);
        Ok(())
    }
}
