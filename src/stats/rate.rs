//! CPU usage as a rate: cgroups count CPU time, the Summary API also reports nanocores, which
//! takes two samples. The last sample of each cgroup is kept between requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSample {
    pub at: SystemTime,
    /// Cumulative CPU time in nanoseconds.
    pub usage_nanos: u64,
}

/// Nanocores (billionths of a core) used between two samples; None without time between them
/// or when the counter went back (the cgroup was recreated).
pub fn usage_nano_cores(previous: CpuSample, current: CpuSample) -> Option<u64> {
    let elapsed = current.at.duration_since(previous.at).ok()?.as_nanos();
    let used = current.usage_nanos.checked_sub(previous.usage_nanos)? as u128;
    (elapsed > 0).then(|| (used * 1_000_000_000 / elapsed) as u64)
}

/// The previous sample of each cgroup, by path.
#[derive(Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, CpuSample>>,
}

impl CpuRates {
    /// Records `current` for `cgroup` and gives the rate since the sample before it.
    pub fn observe(&self, cgroup: &str, current: CpuSample) -> Option<u64> {
        let previous = self.last.lock().expect("cpu rates poisoned").insert(cgroup.to_string(), current);
        previous.and_then(|p| usage_nano_cores(p, current))
    }

    /// Forgets the cgroups not in `seen` (pods gone), so the map does not grow forever.
    pub fn retain(&self, seen: &std::collections::HashSet<String>) {
        self.last.lock().expect("cpu rates poisoned").retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, usage: u64) -> CpuSample {
        CpuSample { at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs), usage_nanos: usage }
    }

    #[test]
    fn rate_between_two_samples() {
        // Half a core: 5 s of CPU over 10 s.
        assert_eq!(usage_nano_cores(at(10, 0), at(20, 5_000_000_000)), Some(500_000_000));
        assert_eq!(usage_nano_cores(at(10, 7), at(10, 9)), None);
        assert_eq!(usage_nano_cores(at(10, 9), at(20, 7)), None);
        assert_eq!(usage_nano_cores(at(20, 0), at(10, 7)), None);
    }

    #[test]
    fn the_first_sample_has_no_rate_and_gone_cgroups_are_forgotten() {
        let rates = CpuRates::default();
        assert_eq!(rates.observe("/a", at(1, 0)), None);
        assert_eq!(rates.observe("/a", at(2, 250_000_000)), Some(250_000_000));
        rates.retain(&Default::default());
        assert_eq!(rates.observe("/a", at(3, 300_000_000)), None);
    }
}
