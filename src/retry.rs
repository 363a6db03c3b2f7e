//! The one retry helper: an operation is tried again with back-off (200 ms doubling to 10 s)
//! until it succeeds, each failure logged with what was being done; `Backoff` is the same
//! doubling for loops that retry on their own schedule (the pod worker, the node lease, the
//! containerd event stream, the service proxy's sync).

use std::time::Duration;

/// Waits that double with each failure, from `initial` up to `max`, until `reset`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, failures: 0 }
    }

    /// Counts one more failure and says how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        let wait = self.initial.saturating_mul(1 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// A success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

pub async fn until_ok<T, E, F, Fut>(what: &str, mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                let delay = backoff.fail();
                tracing::warn!("{what} failed: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| backoff.fail().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.fail(), Duration::from_millis(200));
        // Many failures never overflow.
        let mut long = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!((0..100).map(|_| long.fail()).last(), Some(Duration::from_secs(10)));
    }
}
