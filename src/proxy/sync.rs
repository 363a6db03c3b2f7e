//! The proxier's sync paths: incremental (only the changed Services' elements and chains), full
//! (the whole table, staged beside the live one when the proxy knows it, else replaced in one
//! transaction), and the fallback from a refused incremental transaction to a full sync.

use super::apply::ApplyError;
use super::conntrack::{self, Flow};
use super::model::{ServiceEntry, ServiceKey, ServiceName};
use super::render::{self, CountChain, Rendered};
use super::{PortsWithEndpoints, Proxier};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// What is in the kernel (as far as the proxy knows).
#[derive(Default)]
pub(super) struct Applied {
    pub(super) entries: BTreeMap<ServiceKey, AppliedEntry>,
    by_service: HashMap<ServiceName, BTreeSet<ServiceKey>>,
    ids: HashMap<ServiceKey, u32>,
    pub(super) next_id: u32,
    count_chains: BTreeSet<CountChain>,
    hairpin: HashMap<IpAddr, usize>,
    /// Rules and elements of the Services' own parts (not the fixed chains, count chains, hairpin).
    service_rules: usize,
    service_elements: usize,
    /// A full sync is due: at start, after a failure, or on request.
    pub(super) need_full: bool,
    /// The generation of the table's maps (see `render::Context::map`).
    generation: u32,
    /// The table in the kernel is as this says (after a successful sync); false at start and
    /// after a failure, when only the whole table's replacement is safe.
    pub(super) known: bool,
}

impl Applied {
    /// Nothing known to be in the kernel: a full sync is due. `next_id` carries on the ids.
    pub(super) fn unknown(next_id: u32) -> Applied {
        Applied { need_full: true, next_id, ..Default::default() }
    }

    fn id_for(&mut self, key: &ServiceKey) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        self.next_id += 1;
        self.ids.insert(key.clone(), self.next_id);
        self.next_id
    }
}

/// A Service port as applied: its inputs, and what of its rendering the rest of the table
/// needs. Its elements (the bulk of the table: 111,000 strings at 10,000 Services) are not
/// kept: a change renders the old entry again to diff against (rendering is pure, and a change
/// of the context that would render it otherwise, the pod CIDR, forces a full sync).
pub(super) struct AppliedEntry {
    pub(super) entry: ServiceEntry,
    rules: usize,
    elements: usize,
    chains: Vec<String>,
    sticky: Vec<String>,
}

impl AppliedEntry {
    fn new(entry: ServiceEntry, rendered: &Rendered) -> Self {
        AppliedEntry {
            entry,
            rules: rendered.rule_count(),
            elements: rendered.element_count(),
            chains: rendered.chains.iter().map(|c| c.name.clone()).collect(),
            sticky: rendered.sticky.iter().map(|m| m.name.clone()).collect(),
        }
    }
}

/// The kernel's table as a full sync finds it.
enum TableState {
    Known(render::Existing),
    Absent,
    Unknown,
}

impl Proxier {
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
        let mut changes: Vec<(ServiceKey, Option<AppliedEntry>)> = Vec::new();
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
                let old = applied.entries.get(&key).map(|a| &a.entry);
                let new = new_entries.remove(&key);
                if old == new.as_ref() {
                    continue;
                }
                let old_rendered = old.map(|e| render::render_service(&ctx, e));
                let rendered = new.as_ref().map(|e| render::render_service(&ctx, e));
                render::diff(&live, old_rendered.as_ref(), rendered.as_ref(), &mut count_chains, &mut script);
                flows.extend(conntrack::stale_flows(old, new.as_ref(), &self.config.node_name));
                for ip in old_rendered.iter().flat_map(|r| r.endpoint_ips.iter()) {
                    *hairpin_delta.entry(*ip).or_default() -= 1;
                }
                for ip in rendered.iter().flat_map(|r| r.endpoint_ips.iter()) {
                    *hairpin_delta.entry(*ip).or_default() += 1;
                }
                changes.push((key, new.zip(rendered).map(|(e, r)| AppliedEntry::new(e, &r))));
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

    fn commit_entry(&self, applied: &mut Applied, key: ServiceKey, new: Option<AppliedEntry>) {
        if let Some(old) = applied.entries.remove(&key) {
            applied.service_rules -= old.rules;
            applied.service_elements -= old.elements;
        }
        let svc = key.service.clone();
        match new {
            Some(entry) => {
                applied.service_rules += entry.rules;
                applied.service_elements += entry.elements;
                applied.by_service.entry(svc).or_default().insert(key.clone());
                applied.entries.insert(key, entry);
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
        for (key, old) in &applied.entries {
            flows.extend(conntrack::stale_flows(Some(&old.entry), entries.get(key).map(|(e, _)| e), &self.config.node_name));
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
            self.commit_entry(&mut fresh, key, Some(AppliedEntry::new(e, &r)));
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
        let staged = render::staged(&ctx, existing.as_ref(), entries.values().map(|(_, r)| r), self.nft.parallelism());
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
            let own_chains = applied.entries.values().flat_map(|a| a.chains.iter().cloned());
            return TableState::Known(render::Existing {
                generation: applied.generation,
                chains: count_chains.chain(own_chains).collect(),
                sticky: applied.entries.values().flat_map(|a| a.sticky.iter().cloned()).collect(),
            });
        }
        match self.nft.list_tables(self.config.family).await {
            Ok(tables) if !tables.contains(&self.config.table) => TableState::Absent,
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
}
