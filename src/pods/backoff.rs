//! The kubelet's restart back-off: a per-key delay that starts at `initial`, doubles on every
//! restart up to `max`, and is forgotten once a key has been quiet for twice `max`.
//! Pure: the caller passes the clock, so the rules are unit-tested without waiting.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: SystemTime,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), entries: HashMap::new() }
    }

    /// Records a restart now and returns the delay that the next restart must wait.
    pub fn next(&mut self, key: &str, now: SystemTime) -> Duration {
        let delay = match self.live_entry(key, now) {
            Some(entry) => (entry.delay * 2).min(self.max),
            None => self.initial,
        };
        self.entries.insert(key.to_string(), Entry { delay, last_update: now });
        delay
    }

    /// How long `key` must still wait when its last run ended at `event_time`; None when a
    /// restart may happen now. The first failure of a key is never delayed, as in the kubelet.
    pub fn remaining(&self, key: &str, event_time: SystemTime, now: SystemTime) -> Option<Duration> {
        let entry = self.live_entry(key, now)?;
        let ready_at = event_time + entry.delay;
        ready_at.duration_since(now).ok().filter(|d| !d.is_zero())
    }

    /// The delay currently held for `key`, for messages such as "back-off 20s".
    pub fn current_delay(&self, key: &str, now: SystemTime) -> Option<Duration> {
        self.live_entry(key, now).map(|e| e.delay)
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn live_entry(&self, key: &str, now: SystemTime) -> Option<Entry> {
        let entry = *self.entries.get(key)?;
        let quiet = now.duration_since(entry.last_update).unwrap_or_default();
        (quiet <= self.max * 2).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + S(secs)
    }

    #[test]
    fn first_failure_restarts_at_once_then_doubles_to_the_cap() {
        let mut b = Backoff::new(S(10), S(300));
        assert_eq!(b.remaining("c", at(100), at(100)), None);
        let delays: Vec<u64> = (0..8).map(|i| b.next("c", at(100 + i)).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn remaining_counts_from_the_end_of_the_last_run() {
        let mut b = Backoff::new(S(10), S(300));
        b.next("c", at(100));
        assert_eq!(b.remaining("c", at(104), at(106)), Some(S(8)));
        assert_eq!(b.remaining("c", at(104), at(114)), None);
        assert_eq!(b.remaining("other", at(104), at(106)), None);
    }

    #[test]
    fn a_quiet_key_is_forgotten_after_twice_the_cap() {
        let mut b = Backoff::new(S(10), S(300));
        for i in 0..5 {
            b.next("c", at(i));
        }
        assert_eq!(b.current_delay("c", at(10)), Some(S(160)));
        assert_eq!(b.current_delay("c", at(10 + 601)), None);
        assert_eq!(b.next("c", at(10 + 601)), S(10));
    }

    #[test]
    fn a_shorter_configuration_is_honoured() {
        let mut b = Backoff::new(Duration::from_millis(100), S(1));
        let delays: Vec<u128> = (0..6).map(|i| b.next("c", at(i)).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
