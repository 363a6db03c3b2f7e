//! What directory trees (pod volumes, container log directories) hold, cached as the kubelet
//! caches volume figures: a request only reads the last measurement and names the trees due
//! for another; walking them is the background's job, each at most once per `max_age`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes on disk and inodes.
pub type Usage = (u64, u64);

/// The kubelet refreshes volume figures about once a minute (volumeStatsAggPeriod).
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// A tree nobody asked about for this long (a removed pod's volume) is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

struct Entry {
    /// When it was last measured and what it held (None: the directory was missing).
    measured: Option<(Instant, Option<Usage>)>,
    asked: Instant,
    /// Handed out for measuring and not recorded yet.
    measuring: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    /// Trees to measure, in the order they were found due.
    due: Vec<PathBuf>,
}

pub struct UsageCache {
    state: Mutex<State>,
    max_age: Duration,
}

impl UsageCache {
    pub fn new(max_age: Duration) -> UsageCache {
        UsageCache { state: Mutex::new(State::default()), max_age }
    }

    /// The last measurement of `dir`, if any; a tree never measured or measured more than
    /// `max_age` ago is queued for measuring (once, until its figure is recorded).
    pub fn lookup(&self, dir: &Path, now: Instant) -> Option<Usage> {
        let mut state = self.state.lock().expect("usage cache poisoned");
        let state = &mut *state;
        let entry = state.entries.entry(dir.to_path_buf()).or_insert(Entry { measured: None, asked: now, measuring: false });
        entry.asked = now;
        let fresh = entry.measured.is_some_and(|(at, _)| now.duration_since(at) < self.max_age);
        if !fresh && !entry.measuring {
            entry.measuring = true;
            state.due.push(dir.to_path_buf());
        }
        entry.measured.and_then(|(_, usage)| usage)
    }

    /// The trees due for measuring, handed out once; forgets trees no longer asked about.
    pub fn take_due(&self, now: Instant) -> Vec<PathBuf> {
        let mut state = self.state.lock().expect("usage cache poisoned");
        state.entries.retain(|_, e| e.measuring || now.duration_since(e.asked) < FORGET_AFTER);
        std::mem::take(&mut state.due)
    }

    pub fn record(&self, dir: &Path, usage: Option<Usage>, now: Instant) {
        let mut state = self.state.lock().expect("usage cache poisoned");
        if let Some(entry) = state.entries.get_mut(dir) {
            entry.measured = Some((now, usage));
            entry.measuring = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_measured_once_then_again_when_stale() {
        let cache = UsageCache::new(Duration::from_secs(60));
        let t = Instant::now();
        let dir = Path::new("/v/a");
        assert_eq!(cache.lookup(dir, t), None, "nothing measured yet");
        assert_eq!(cache.lookup(dir, t), None);
        assert_eq!(cache.take_due(t), vec![dir.to_path_buf()], "queued once");
        assert!(cache.take_due(t).is_empty());
        cache.lookup(dir, t + Duration::from_secs(1));
        assert!(cache.take_due(t).is_empty(), "not queued again while being measured");

        cache.record(dir, Some((4096, 2)), t + Duration::from_secs(2));
        assert_eq!(cache.lookup(dir, t + Duration::from_secs(30)), Some((4096, 2)));
        assert!(cache.take_due(t + Duration::from_secs(30)).is_empty(), "fresh");
        assert_eq!(cache.lookup(dir, t + Duration::from_secs(63)), Some((4096, 2)), "a stale figure is still answered");
        assert_eq!(cache.take_due(t + Duration::from_secs(63)), vec![dir.to_path_buf()], "and measured again");
        cache.record(dir, None, t + Duration::from_secs(64));
        assert_eq!(cache.lookup(dir, t + Duration::from_secs(65)), None, "the directory went away");
    }

    #[test]
    fn trees_nobody_asks_about_are_forgotten() {
        let cache = UsageCache::new(Duration::from_secs(60));
        let t = Instant::now();
        cache.lookup(Path::new("/v/gone"), t);
        cache.take_due(t);
        cache.record(Path::new("/v/gone"), Some((1, 1)), t);
        cache.take_due(t + FORGET_AFTER + Duration::from_secs(1));
        assert!(cache.state.lock().unwrap().entries.is_empty());
        cache.record(Path::new("/v/gone"), Some((1, 1)), t);
        assert!(cache.state.lock().unwrap().entries.is_empty(), "a late figure for a forgotten tree is dropped");
    }
}
