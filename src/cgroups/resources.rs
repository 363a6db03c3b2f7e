//! The resource settings of a cgroup nodelet manages (a pod's, a QoS level's, kubepods), in the
//! kubelet's terms (cpu shares, CFS quota, memory and pids limits), and how each driver and
//! cgroup version writes them: cgroupfs files (v1 `cpu.shares`, v2 `cpu.weight`) or systemd unit
//! properties (`CPUShares`/`CPUWeight`, `CPUQuotaPerSecUSec`, `MemoryLimit`/`MemoryMax`,
//! `TasksMax`). Pure.

pub const CPU_PERIOD_US: u64 = 100_000;
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// The smallest quota the kernel takes (1 ms per period).
pub const MIN_QUOTA_US: i64 = 1_000;

/// What to set; None leaves a setting as the cgroup has it (unlimited when new).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    /// CFS quota per `cpu_period_us`, in microseconds; -1 for none.
    pub cpu_quota_us: Option<i64>,
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// The cgroup version the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// cpu shares from millicores, as the kubelet's MilliCPUToShares.
pub fn millis_to_shares(millis: i64) -> u64 {
    if millis <= 0 {
        return MIN_SHARES;
    }
    ((millis as u128 * 1024 / 1000) as u64).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota (µs per 100 ms period) from millicores, as MilliCPUToQuota; at least 1 ms.
pub fn millis_to_quota(millis: i64) -> i64 {
    if millis <= 0 {
        return -1;
    }
    (i128::from(millis) * i128::from(CPU_PERIOD_US as i64) / 1000).clamp(MIN_QUOTA_US as i128, i64::MAX as i128) as i64
}

/// cgroup v2's cpu.weight for v1 shares, as runc converts them (2..262144 to 1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

/// One write to a cgroupfs file: (controller for v1, file, value). v2 has no controller dirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
}

impl ResourceConfig {
    /// The files to write, in order, for this cgroup version.
    pub fn files(&self, version: Version) -> Vec<FileWrite> {
        let w = |controller, file, value: String| FileWrite { controller, file, value };
        let mut out = Vec::new();
        match version {
            Version::V1 => {
                if let Some(shares) = self.cpu_shares {
                    out.push(w("cpu", "cpu.shares", shares.to_string()));
                }
                if let Some(quota) = self.cpu_quota_us {
                    out.push(w("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                    out.push(w("cpu", "cpu.cfs_quota_us", quota.to_string()));
                }
                if let Some(limit) = self.memory_limit {
                    out.push(w("memory", "memory.limit_in_bytes", if limit > 0 { limit.to_string() } else { "-1".into() }));
                }
                if let Some(pids) = self.pids_limit {
                    out.push(w("pids", "pids.max", if pids > 0 { pids.to_string() } else { "max".into() }));
                }
            }
            Version::V2 => {
                if let Some(shares) = self.cpu_shares {
                    out.push(w("", "cpu.weight", shares_to_weight(shares).to_string()));
                }
                if let Some(quota) = self.cpu_quota_us {
                    let quota = if quota > 0 { quota.to_string() } else { "max".into() };
                    out.push(w("", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
                }
                if let Some(limit) = self.memory_limit {
                    out.push(w("", "memory.max", if limit > 0 { limit.to_string() } else { "max".into() }));
                }
                if let Some(pids) = self.pids_limit {
                    out.push(w("", "pids.max", if pids > 0 { pids.to_string() } else { "max".into() }));
                }
            }
        }
        out
    }

    /// The systemd unit properties that set it (as runc's systemd driver sets them), with the
    /// accounting that makes the slice's controllers available.
    pub fn unit_properties(&self, version: Version) -> Vec<(&'static str, UnitValue)> {
        use UnitValue::{Bool, U64};
        let mut out = vec![("CPUAccounting", Bool(true)), ("MemoryAccounting", Bool(true)), ("TasksAccounting", Bool(true))];
        if let Some(shares) = self.cpu_shares {
            out.push(match version {
                Version::V1 => ("CPUShares", U64(shares)),
                Version::V2 => ("CPUWeight", U64(shares_to_weight(shares))),
            });
        }
        if let Some(quota) = self.cpu_quota_us {
            // µs of CPU per second of wall time; "infinity" (u64::MAX) lifts the quota
            let per_sec = if quota > 0 { (quota as u64 * 1_000_000).div_ceil(CPU_PERIOD_US).div_ceil(10_000) * 10_000 } else { u64::MAX };
            out.push(("CPUQuotaPerSecUSec", U64(per_sec)));
        }
        if let Some(limit) = self.memory_limit {
            let limit = if limit > 0 { limit as u64 } else { u64::MAX };
            out.push(match version {
                Version::V1 => ("MemoryLimit", U64(limit)),
                Version::V2 => ("MemoryMax", U64(limit)),
            });
        }
        if let Some(pids) = self.pids_limit {
            out.push(("TasksMax", U64(if pids > 0 { pids as u64 } else { u64::MAX })));
        }
        out
    }
}

/// A systemd unit property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitValue {
    Bool(bool),
    U64(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_follow_the_kubelet_and_runc() {
        assert_eq!((millis_to_shares(0), millis_to_shares(1), millis_to_shares(250), millis_to_shares(1000)), (2, 2, 256, 1024));
        assert_eq!(millis_to_shares(1_000_000), MAX_SHARES);
        assert_eq!((millis_to_quota(500), millis_to_quota(5), millis_to_quota(0)), (50_000, 1_000, -1));
        assert_eq!((shares_to_weight(2), shares_to_weight(1024), shares_to_weight(262_144)), (1, 39, 10_000));
    }

    #[test]
    fn files_per_version() {
        let r = ResourceConfig { cpu_shares: Some(512), cpu_quota_us: Some(50_000), memory_limit: Some(64 << 20), pids_limit: Some(100) };
        let v1: Vec<_> = r.files(Version::V1).into_iter().map(|w| (w.controller, w.file, w.value)).collect();
        assert_eq!(
            v1,
            [
                ("cpu", "cpu.shares", "512".to_string()),
                ("cpu", "cpu.cfs_period_us", "100000".into()),
                ("cpu", "cpu.cfs_quota_us", "50000".into()),
                ("memory", "memory.limit_in_bytes", "67108864".into()),
                ("pids", "pids.max", "100".into())
            ]
        );
        let v2: Vec<_> = r.files(Version::V2).into_iter().map(|w| (w.file, w.value)).collect();
        assert_eq!(v2, [("cpu.weight", "20".to_string()), ("cpu.max", "50000 100000".into()), ("memory.max", "67108864".into()), ("pids.max", "100".into())]);
        let unlimited = ResourceConfig { cpu_quota_us: Some(-1), memory_limit: Some(0), ..Default::default() };
        let v2: Vec<_> = unlimited.files(Version::V2).into_iter().map(|w| w.value).collect();
        assert_eq!(v2, ["max 100000", "max"]);
    }

    #[test]
    fn unit_properties_per_version() {
        let r = ResourceConfig { cpu_shares: Some(1024), cpu_quota_us: Some(50_000), memory_limit: Some(1 << 30), pids_limit: None };
        let props = r.unit_properties(Version::V2);
        assert!(props.contains(&("CPUWeight", UnitValue::U64(39))));
        assert!(props.contains(&("CPUQuotaPerSecUSec", UnitValue::U64(500_000))));
        assert!(props.contains(&("MemoryMax", UnitValue::U64(1 << 30))));
        assert!(r.unit_properties(Version::V1).contains(&("MemoryLimit", UnitValue::U64(1 << 30))));
    }
}
