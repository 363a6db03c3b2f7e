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
//! - `apply`: applies scripts through libnftables; `conntrack`: UDP flow cleanup after
//!   endpoints go away.

pub mod apply;
pub mod conntrack;
pub mod convert;
pub mod model;
pub mod render;
pub mod watch;

use apply::{ApplyError, Netns, Nft};
use conntrack::{Conntrack, Flow};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use model::{join_endpoints, Family, Model, ServiceEntry, ServiceKey, ServiceName, ServicePort, Slice};
use render::{Context, CountChain, Rendered};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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
    /// Bumped by every change, so a sync knows whether it saw the latest.
    generation: u64,
}

impl Inputs {
    fn entries_of(&self, svc: &ServiceName) -> PortsWithEndpoints {
        let Some(ports) = self.services.get(svc) else { return Vec::new() };
        let slices: Vec<&Slice> =
            self.slices_of.get(svc).into_iter().flatten().filter_map(|n| self.slices.get(n)).collect();
        ports.iter().map(|p| (p.clone(), join_endpoints(p, slices.iter().copied()))).collect()
    }
}

/// What is in the kernel (as far as the proxy knows).
#[derive(Default)]
struct Applied {
    entries: BTreeMap<ServiceKey, (ServiceEntry, Rendered)>,
    by_service: HashMap<ServiceName, BTreeSet<ServiceKey>>,
    ids: HashMap<ServiceKey, u32>,
    next_id: u32,
    count_chains: BTreeSet<CountChain>,
    hairpin: HashMap<IpAddr, usize>,
    /// Rules and elements of the Services' own parts (not the fixed chains, count chains, hairpin).
    service_rules: usize,
    service_elements: usize,
    /// A full sync is due: at start, after a failure, or on request.
    need_full: bool,
    /// The generation of the table's maps (see `render::Context::map`).
    generation: u32,
    /// The table in the kernel is as this says (after a successful sync); false at start and
    /// after a failure, when only the whole table's replacement is safe.
    known: bool,
}

impl Applied {
    fn id_for(&mut self, key: &ServiceKey) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        self.next_id += 1;
        self.ids.insert(key.clone(), self.next_id);
        self.next_id
    }
}

/// The kernel's table as a full sync finds it.
enum TableState {
    Known(render::Existing),
    Absent,
    Unknown,
}

/// The service proxy. Feed it objects from the watch; `run` applies them.
pub struct Proxier {
    /// The rendering context; only its pod CIDR changes (when the cluster assigns the node one).
    ctx: std::sync::RwLock<Context>,
    config: ProxyConfig,
    nft: Nft,
    conntrack: Conntrack,
    inputs: Mutex<Inputs>,
    applied: tokio::sync::Mutex<Applied>,
    health: Mutex<ProxyHealth>,
    changed: tokio::sync::Notify,
}

fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
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
        // parsing a full sync's elements is most of its time: one context per core shares it
        let contexts = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let nft = Nft::new(&config.netns, contexts)?;
        let conntrack = Conntrack { program: config.conntrack.clone(), family: config.family, netns: config.netns.clone() };
        let applied = Applied { need_full: true, ..Default::default() };
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
        let converted = convert::slice(slice, self.config.family);
        self.warn_all(&converted.warnings);
        let Some(name) = convert::slice_name(slice) else { return };
        let mut inputs = self.inputs.lock().unwrap();
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

    /// What is currently programmed (or about to be, before a failed sync is repaired).
    pub async fn model(&self) -> Model {
        let applied = self.applied.lock().await;
        applied.entries.iter().map(|(k, (e, _))| (k.clone(), e.clone())).collect()
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

    /// Applies the pending changes now: incrementally, or as a full sync when one is due.
    /// A rejected incremental transaction is logged and retried as a full sync.
    pub async fn sync(&self) -> Result<(), ApplyError> {
        let mut applied = self.applied.lock().await;
        if applied.need_full {
            return self.full_sync_locked(&mut applied).await;
        }
        let started = Instant::now();
        let (dirty, wanted): (Vec<ServiceName>, Vec<PortsWithEndpoints>) = {
            let mut inputs = self.inputs.lock().unwrap();
            let dirty: Vec<ServiceName> = std::mem::take(&mut inputs.dirty).into_iter().collect();
            let wanted = dirty.iter().map(|s| inputs.entries_of(s)).collect();
            (dirty, wanted)
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let mut script = String::new();
        let live = self.ctx().at(applied.generation);
        let ctx = self.ctx();
        let mut count_chains = applied.count_chains.clone();
        let mut flows: Vec<Flow> = Vec::new();
        let mut hairpin_delta: HashMap<IpAddr, isize> = HashMap::new();
        let mut changes: Vec<(ServiceKey, Option<(ServiceEntry, Rendered)>)> = Vec::new();
        let mut new_ids: Vec<ServiceKey> = Vec::new();
        for (svc, entries) in dirty.iter().zip(wanted) {
            let old_keys = applied.by_service.get(svc).cloned().unwrap_or_default();
            let mut new_entries: BTreeMap<ServiceKey, ServiceEntry> = BTreeMap::new();
            for (port, endpoints) in entries {
                let key = port.key.clone();
                if !applied.ids.contains_key(&key) {
                    new_ids.push(key.clone());
                }
                let id = applied.id_for(&key);
                new_entries.insert(key, ServiceEntry { id, port, endpoints });
            }
            let keys: BTreeSet<ServiceKey> = old_keys.iter().cloned().chain(new_entries.keys().cloned()).collect();
            for key in keys {
                let old = applied.entries.get(&key);
                let new = new_entries.remove(&key);
                if old.map(|(e, _)| e) == new.as_ref() {
                    continue;
                }
                let rendered = new.as_ref().map(|e| render::render_service(&ctx, e));
                render::diff(&live, old.map(|(_, r)| r), rendered.as_ref(), &mut count_chains, &mut script);
                flows.extend(conntrack::stale_flows(old.map(|(e, _)| e), new.as_ref(), &self.config.node_name));
                for ip in old.iter().flat_map(|(_, r)| r.endpoint_ips.iter()) {
                    *hairpin_delta.entry(*ip).or_default() -= 1;
                }
                for ip in rendered.iter().flat_map(|r| r.endpoint_ips.iter()) {
                    *hairpin_delta.entry(*ip).or_default() += 1;
                }
                changes.push((key, new.zip(rendered)));
            }
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (ip, d) in &hairpin_delta {
            let before = applied.hairpin.get(ip).copied().unwrap_or(0) as isize;
            let after = before + d;
            if before == 0 && after > 0 {
                added.push(*ip);
            } else if before > 0 && after == 0 {
                removed.push(*ip);
            }
        }
        added.sort();
        removed.sort();
        render::hairpin_diff(&live, &added, &removed, &mut script);
        if script.is_empty() {
            for (key, new) in changes {
                self.commit_entry(&mut applied, key, new);
            }
            return Ok(());
        }
        tracing::debug!(table = %self.ctx().table_ref(), services = dirty.len(), bytes = script.len(), "applying incremental sync");
        match self.nft.apply(&script).await {
            Ok(()) => {
                for (key, new) in changes {
                    self.commit_entry(&mut applied, key, new);
                }
                for (ip, d) in hairpin_delta {
                    let n = applied.hairpin.entry(ip).or_default();
                    *n = (*n as isize + d).max(0) as usize;
                    if *n == 0 {
                        applied.hairpin.remove(&ip);
                    }
                }
                applied.count_chains = count_chains;
                self.record_success(&applied, started.elapsed(), false);
                drop(applied);
                self.conntrack.delete(&flows).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(table = %self.ctx().table_ref(), error = %e, "incremental sync failed; the previous ruleset stays; retrying with a full sync");
                self.record_failure(&e);
                // the table is not what the proxy thought: replace it whole
                applied.known = false;
                for key in new_ids {
                    applied.ids.remove(&key);
                }
                self.full_sync_locked(&mut applied).await
            }
        }
    }

    fn commit_entry(&self, applied: &mut Applied, key: ServiceKey, new: Option<(ServiceEntry, Rendered)>) {
        if let Some((_, r)) = applied.entries.remove(&key) {
            applied.service_rules -= r.rule_count();
            applied.service_elements -= r.element_count();
        }
        let svc = key.service.clone();
        match new {
            Some((e, r)) => {
                applied.service_rules += r.rule_count();
                applied.service_elements += r.element_count();
                applied.by_service.entry(svc).or_default().insert(key.clone());
                applied.entries.insert(key, (e, r));
            }
            None => {
                applied.ids.remove(&key);
                if let Some(keys) = applied.by_service.get_mut(&svc) {
                    keys.remove(&key);
                    if keys.is_empty() {
                        applied.by_service.remove(&svc);
                    }
                }
            }
        }
    }

    /// Rewrites the whole table in one transaction.
    pub async fn full_sync(&self) -> Result<(), ApplyError> {
        let mut applied = self.applied.lock().await;
        self.full_sync_locked(&mut applied).await
    }

    async fn full_sync_locked(&self, applied: &mut Applied) -> Result<(), ApplyError> {
        let started = Instant::now();
        let wanted: PortsWithEndpoints = {
            let mut inputs = self.inputs.lock().unwrap();
            inputs.dirty.clear();
            let mut names: Vec<&ServiceName> = inputs.services.keys().collect();
            names.sort();
            names.iter().flat_map(|n| inputs.entries_of(n)).collect()
        };
        let mut entries: BTreeMap<ServiceKey, (ServiceEntry, Rendered)> = BTreeMap::new();
        let mut ids = HashMap::new();
        let ctx = self.ctx();
        for (port, endpoints) in wanted {
            let key = port.key.clone();
            let id = applied.id_for(&key);
            ids.insert(key.clone(), id);
            let entry = ServiceEntry { id, port, endpoints };
            let rendered = render::render_service(&ctx, &entry);
            entries.insert(key, (entry, rendered));
        }
        let generation = match self.write_table(applied, &entries).await {
            Ok(generation) => generation,
            Err(e) => {
                tracing::error!(table = %self.ctx().table_ref(), error = %e, "full sync failed; the previous ruleset stays; will retry");
                self.record_failure(&e);
                applied.need_full = true;
                applied.known = false;
                return Err(e);
            }
        };
        let mut flows = Vec::new();
        for (key, (old, _)) in &applied.entries {
            flows.extend(conntrack::stale_flows(Some(old), entries.get(key).map(|(e, _)| e), &self.config.node_name));
        }
        for (key, (new, _)) in &entries {
            if !applied.entries.contains_key(key) {
                flows.extend(conntrack::stale_flows(None, Some(new), &self.config.node_name));
            }
        }
        let mut fresh = Applied { ids, next_id: applied.next_id, generation, known: true, ..Default::default() };
        for (key, (e, r)) in entries {
            fresh.count_chains.extend(r.count_chains.iter().copied());
            for ip in &r.endpoint_ips {
                *fresh.hairpin.entry(*ip).or_default() += 1;
            }
            self.commit_entry(&mut fresh, key, Some((e, r)));
        }
        *applied = fresh;
        self.record_success(applied, started.elapsed(), true);
        self.conntrack.delete(&flows).await;
        Ok(())
    }

    /// Writes the whole table for `entries`; returns the generation of its maps. A table the
    /// proxy knows (or that does not exist yet) is filled in stages, its elements parsed side by
    /// side; otherwise, or when a stage fails, the table is replaced in one transaction.
    async fn write_table(&self, applied: &Applied, entries: &BTreeMap<ServiceKey, (ServiceEntry, Rendered)>) -> Result<u32, ApplyError> {
        let table = self.ctx().table_ref();
        let existing = match self.table_state(applied).await {
            TableState::Known(existing) => Some(existing),
            TableState::Absent => None,
            TableState::Unknown => return self.replace_table(entries).await,
        };
        let generation = existing.as_ref().map_or(0, render::Existing::next_generation);
        let ctx = self.ctx().at(generation);
        let staged = render::staged(&ctx, existing.as_ref(), entries.values().map(|(_, r)| r), self.nft.contexts());
        tracing::debug!(%table, service_ports = entries.len(), elements = staged.counts.elements, "applying full sync in stages");
        let result = async {
            self.nft.apply(&staged.declare).await?;
            self.nft.apply_all(&staged.elements).await?;
            self.nft.apply(&staged.switch).await
        }
        .await;
        match result {
            Ok(()) => Ok(generation),
            Err(e) => {
                tracing::warn!(%table, error = %e, "staged full sync failed; replacing the whole table instead");
                self.replace_table(entries).await
            }
        }
    }

    /// What the kernel's table is to the proxy: known from the last sync, absent (a cheap
    /// listing of the family's tables tells), or there in a state it does not know.
    async fn table_state(&self, applied: &Applied) -> TableState {
        if applied.known {
            let count_chains = applied.count_chains.iter().map(|(path, proto, n)| render::count_chain_name(*path, *proto, *n));
            let own_chains = applied.entries.values().flat_map(|(_, r)| r.chains.iter().map(|c| c.name.clone()));
            return TableState::Known(render::Existing {
                generation: applied.generation,
                chains: count_chains.chain(own_chains).collect(),
                sticky: applied.entries.values().flat_map(|(_, r)| r.sticky.iter().map(|m| m.name.clone())).collect(),
            });
        }
        let line = format!("table {}", self.ctx().table_ref());
        match self.nft.run(&format!("list tables {}", self.config.family.nft())).await {
            Ok(listing) if !listing.lines().any(|l| l.trim() == line) => TableState::Absent,
            _ => TableState::Unknown,
        }
    }

    /// Replaces the table in one transaction, at generation 0.
    async fn replace_table(&self, entries: &BTreeMap<ServiceKey, (ServiceEntry, Rendered)>) -> Result<u32, ApplyError> {
        let (script, counts) = render::full_from_rendered(&self.ctx().at(0), entries.values().map(|(_, r)| r));
        tracing::debug!(table = %self.ctx().table_ref(), service_ports = entries.len(), elements = counts.elements, "applying full sync as one transaction");
        self.nft.apply(&script).await?;
        Ok(0)
    }

    fn totals(&self, applied: &Applied) -> (usize, usize) {
        let ctx = self.ctx();
        let count_rules: usize = applied.count_chains.iter().map(|c| render::count_chain(&ctx, *c).rules.len()).sum();
        (render::skeleton_rules(&ctx) + count_rules + applied.service_rules, applied.service_elements + applied.hairpin.len())
    }

    fn record_success(&self, applied: &Applied, took: Duration, full: bool) {
        let (rules, elements) = self.totals(applied);
        let mut h = self.health.lock().unwrap();
        let now = SystemTime::now();
        h.last_sync = Some(now);
        h.last_sync_duration = Some(took);
        if full {
            h.last_full_sync = Some(now);
            h.last_full_sync_duration = Some(took);
        }
        h.consecutive_failures = 0;
        h.service_ports = applied.entries.len();
        h.rules = rules;
        h.elements = elements;
        crate::metrics::global().proxy_synced(self.config.family.slice_address_type(), took, rules, elements);
        tracing::debug!(table = %self.ctx().table_ref(), full, took_ms = took.as_secs_f64() * 1e3, rules, elements, "proxy sync done");
    }

    fn record_failure(&self, e: &ApplyError) {
        let mut h = self.health.lock().unwrap();
        h.failed_syncs += 1;
        h.consecutive_failures += 1;
        h.last_error = Some(e.to_string());
        crate::metrics::global().proxy_sync_failed();
    }

    /// Applies changes as they come (after the debounce) and resyncs periodically, forever.
    /// A failed sync is retried with a growing delay (up to 30 s).
    pub async fn run(&self) {
        let mut next_full = Instant::now();
        let mut retry = Duration::from_millis(500);
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
                    retry = Duration::from_millis(500);
                    if full_due {
                        next_full = Instant::now() + self.config.resync_interval;
                    }
                }
                Err(_) => retry = (retry * 2).min(Duration::from_secs(30)),
            }
        }
    }

    /// Deletes the proxy's table (the proxy's rules stop applying at once).
    pub async fn cleanup(&self) -> Result<(), ApplyError> {
        let mut applied = self.applied.lock().await;
        self.nft.apply(&render::delete_table(&self.ctx())).await?;
        *applied = Applied { need_full: true, next_id: applied.next_id, ..Default::default() };
        Ok(())
    }
}
