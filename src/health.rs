//! Named health checks behind /healthz: the runtime answers and is ready, and the sync loop
//! keeps turning. Each failing check is reported by name with its reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Health {
    checks: RwLock<BTreeMap<&'static str, Result<(), String>>>,
    /// What a passing check adds to `/healthz?verbose` (e.g. when the proxy last synced).
    notes: RwLock<BTreeMap<&'static str, String>>,
    last_sync_loop_ms: AtomicU64,
    sync_loop_deadline: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Health {
    pub fn new(sync_loop_deadline: Duration) -> Self {
        Health { checks: RwLock::new(BTreeMap::new()), notes: RwLock::new(BTreeMap::new()), last_sync_loop_ms: AtomicU64::new(now_ms()), sync_loop_deadline }
    }

    pub fn set(&self, check: &'static str, result: Result<(), String>) {
        self.checks.write().expect("health poisoned").insert(check, result);
    }

    pub fn note(&self, check: &'static str, text: String) {
        self.notes.write().expect("health poisoned").insert(check, text);
    }

    /// Every check on a line of its own, as the kubelet's `/healthz?verbose`: `[+]name ok` or
    /// `[-]name failed: reason`; true when all pass.
    pub fn verbose(&self) -> (bool, String) {
        let notes = self.notes.read().expect("health poisoned");
        let mut out = String::new();
        for (name, result) in self.checks.read().expect("health poisoned").iter() {
            match (result, notes.get(name)) {
                (Ok(()), Some(note)) => out += &format!("[+]{name} ok: {note}\n"),
                (Ok(()), None) => out += &format!("[+]{name} ok\n"),
                (Err(e), _) => out += &format!("[-]{name} failed: {e}\n"),
            }
        }
        let stalled = self.sync_loop_stalled_secs();
        out += &match stalled {
            None => "[+]syncloop ok\n".to_string(),
            Some(secs) => format!("[-]syncloop failed: not run for {secs}s\n"),
        };
        let ok = stalled.is_none() && self.checks.read().expect("health poisoned").values().all(Result::is_ok);
        out += if ok { "healthz check passed\n" } else { "healthz check failed\n" };
        (ok, out)
    }

    /// How long the sync loop has not run, when that is past its deadline.
    fn sync_loop_stalled_secs(&self) -> Option<u64> {
        let idle = Duration::from_millis(now_ms().saturating_sub(self.last_sync_loop_ms.load(Ordering::Relaxed)));
        (idle > self.sync_loop_deadline).then_some(idle.as_secs())
    }

    pub fn sync_loop_ran(&self) {
        self.last_sync_loop_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Ok, or the failing checks as "name: reason" lines.
    pub fn report(&self) -> Result<(), Vec<String>> {
        self.report_excluding(&[])
    }

    /// What the node's Ready condition reflects: every check but the proxy's, as the kubelet's
    /// readiness does not depend on kube-proxy.
    pub fn node_readiness(&self) -> Result<(), Vec<String>> {
        self.report_excluding(&["proxy"])
    }

    fn report_excluding(&self, excluded: &[&str]) -> Result<(), Vec<String>> {
        let mut failures: Vec<String> = self
            .checks
            .read()
            .expect("health poisoned")
            .iter()
            .filter(|(name, _)| !excluded.contains(name))
            .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        if let Some(secs) = self.sync_loop_stalled_secs() {
            failures.push(format!("syncloop: the sync loop has not run for {secs}s"));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

/// Asks the runtime for its status every few seconds and records the answer as the "runtime" check.
pub async fn watch_runtime(cri: crate::runtime::Cri, health: std::sync::Arc<Health>, every: Duration) {
    let mut was_ok = None;
    loop {
        let result = match cri.readiness().await {
            Ok(r) if r.problems.is_empty() => Ok(()),
            Ok(r) => Err(r.problems.join("; ")),
            Err(e) => Err(e.to_string()),
        };
        if was_ok != Some(result.is_ok()) {
            match &result {
                Ok(()) => match cri.version().await {
                    Ok(v) => tracing::info!("container runtime is ready: {} {}", v.runtime_name, v.runtime_version),
                    Err(_) => tracing::info!("container runtime is ready"),
                },
                Err(e) => tracing::warn!("container runtime is not ready: {e}"),
            }
            was_ok = Some(result.is_ok());
        }
        health.set("runtime", result);
        tokio::time::sleep(every).await;
    }
}

/// The proxy's check: failing once several syncs in a row have failed.
pub async fn watch_proxy(proxiers: Vec<std::sync::Arc<crate::proxy::Proxier>>, health: std::sync::Arc<Health>, every: Duration) {
    loop {
        let mut failures = Vec::new();
        let mut notes = Vec::new();
        for p in &proxiers {
            let (family, h) = (p.config().family, p.health());
            failures.extend(h.refused.values().cloned());
            if h.consecutive_failures >= 3 {
                failures.push(format!("{family}: {} syncs in a row failed: {}", h.consecutive_failures, h.last_error.as_deref().unwrap_or_default()));
            }
            notes.push(proxy_note(family, &h, SystemTime::now()));
        }
        health.note("proxy", notes.join("; "));
        health.set("proxy", if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) });
        tokio::time::sleep(every).await;
    }
}

/// "IPv4 last sync 3s ago (full 40s ago), 15 rules, 111 elements", or that it has not synced yet.
fn proxy_note(family: crate::proxy::model::Family, h: &crate::proxy::ProxyHealth, now: SystemTime) -> String {
    let ago = |t: Option<SystemTime>| t.map(|t| format!("{}s ago", now.duration_since(t).unwrap_or_default().as_secs()));
    match ago(h.last_sync) {
        Some(last) => {
            format!("{family} last sync {last} (full {}), {} rules, {} elements", ago(h.last_full_sync).unwrap_or_else(|| "never".into()), h.rules, h.elements)
        }
        None => format!("{family} not synced yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_lists_every_check_with_its_note() {
        let health = Health::new(Duration::from_secs(60));
        health.set("runtime", Ok(()));
        health.set("proxy", Ok(()));
        let now = SystemTime::now();
        let h = crate::proxy::ProxyHealth {
            last_sync: Some(now - Duration::from_secs(3)),
            last_full_sync: Some(now - Duration::from_secs(40)),
            rules: 15,
            elements: 111,
            ..Default::default()
        };
        health.note("proxy", proxy_note(crate::proxy::model::Family::V4, &h, now));
        let (ok, text) = health.verbose();
        assert!(ok);
        assert_eq!(text, "[+]proxy ok: IPv4 last sync 3s ago (full 40s ago), 15 rules, 111 elements\n[+]runtime ok\n[+]syncloop ok\nhealthz check passed\n");
        health.set("runtime", Err("down".into()));
        assert_eq!(
            health.verbose(),
            (
                false,
                "[+]proxy ok: IPv4 last sync 3s ago (full 40s ago), 15 rules, 111 elements\n[-]runtime failed: down\n[+]syncloop ok\nhealthz check failed\n"
                    .into()
            )
        );
    }

    #[test]
    fn failing_checks_are_named() {
        let health = Health::new(Duration::from_secs(60));
        health.set("runtime", Err("not checked yet".into()));
        assert_eq!(health.report(), Err(vec!["runtime: not checked yet".to_string()]));
        health.set("runtime", Ok(()));
        assert_eq!(health.report(), Ok(()));
    }

    #[test]
    fn a_stalled_sync_loop_fails() {
        let health = Health::new(Duration::ZERO);
        health.set("runtime", Ok(()));
        health.last_sync_loop_ms.store(0, Ordering::Relaxed);
        let failures = health.report().unwrap_err();
        assert!(failures[0].starts_with("syncloop:"), "{failures:?}");
    }
}
