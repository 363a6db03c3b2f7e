//! Named health checks behind /healthz: the runtime answers and is ready, and the sync loop
//! keeps turning. Each failing check is reported by name with its reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Health {
    checks: RwLock<BTreeMap<&'static str, Result<(), String>>>,
    last_sync_loop_ms: AtomicU64,
    sync_loop_deadline: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Health {
    pub fn new(sync_loop_deadline: Duration) -> Self {
        Health { checks: RwLock::new(BTreeMap::new()), last_sync_loop_ms: AtomicU64::new(now_ms()), sync_loop_deadline }
    }

    pub fn set(&self, check: &'static str, result: Result<(), String>) {
        self.checks.write().expect("health poisoned").insert(check, result);
    }

    pub fn sync_loop_ran(&self) {
        self.last_sync_loop_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Ok, or the failing checks as "name: reason" lines.
    pub fn report(&self) -> Result<(), Vec<String>> {
        let mut failures: Vec<String> = self
            .checks
            .read()
            .expect("health poisoned")
            .iter()
            .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        let idle = Duration::from_millis(now_ms().saturating_sub(self.last_sync_loop_ms.load(Ordering::Relaxed)));
        if idle > self.sync_loop_deadline {
            failures.push(format!("syncloop: the sync loop has not run for {}s", idle.as_secs()));
        }
        if failures.is_empty() { Ok(()) } else { Err(failures) }
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
        let failures: Vec<String> = proxiers
            .iter()
            .filter_map(|p| {
                let h = p.health();
                (h.consecutive_failures >= 3).then(|| {
                    format!("{}: {} syncs in a row failed: {}", p.config().family, h.consecutive_failures, h.last_error.unwrap_or_default())
                })
            })
            .collect();
        health.set("proxy", if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) });
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
