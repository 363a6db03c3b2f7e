//! Resource pressure for the node's MemoryPressure, DiskPressure and PIDPressure conditions,
//! judged against the kubelet's default hard eviction thresholds (memory.available < 100Mi,
//! nodefs.available < 10%, nodefs.inodesFree < 5%) and, for PIDs, fewer than 5% left.
//! Pure judgement over figures read from /proc and statvfs.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub memory_available: u64,
    pub disk_available: u64,
    pub disk_total: u64,
    pub inodes_free: u64,
    pub inodes_total: u64,
    pub pids_used: u64,
    pub pid_max: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;

pub fn judge(f: &Figures) -> Pressure {
    let below = |have: u64, total: u64, percent: u64| total > 0 && have * 100 < total * percent;
    Pressure {
        memory: f.memory_available > 0 && f.memory_available < MEMORY_AVAILABLE_MIN,
        disk: below(f.disk_available, f.disk_total, 10) || below(f.inodes_free, f.inodes_total, 5),
        pid: below(f.pid_max.saturating_sub(f.pids_used), f.pid_max, 5),
    }
}

/// MemAvailable in bytes from /proc/meminfo text.
pub fn mem_available(meminfo: &str) -> u64 {
    meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).map_or(0, |kb| kb * 1024)
}

/// The number of processes and threads, the fourth field of /proc/loadavg ("running/total").
pub fn pids_used(loadavg: &str) -> u64 {
    loadavg.split_whitespace().nth(3).and_then(|f| f.split('/').nth(1)?.parse().ok()).unwrap_or(0)
}

/// Reads the figures; what cannot be read counts as no pressure.
pub fn read(root_dir: &Path) -> Figures {
    let fs = nix::sys::statvfs::statvfs(root_dir).ok();
    let frag = |s: &nix::sys::statvfs::Statvfs| s.fragment_size();
    Figures {
        memory_available: mem_available(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        disk_available: fs.as_ref().map_or(0, |s| s.blocks_available() * frag(s)),
        disk_total: fs.as_ref().map_or(0, |s| s.blocks() * frag(s)),
        inodes_free: fs.as_ref().map_or(0, |s| s.files_available()),
        inodes_total: fs.as_ref().map_or(0, |s| s.files()),
        pids_used: pids_used(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
        pid_max: std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Figures {
        Figures { memory_available: 4 << 30, disk_available: 50, disk_total: 100, inodes_free: 50, inodes_total: 100, pids_used: 100, pid_max: 4_194_304 }
    }

    #[test]
    fn thresholds_follow_the_kubelet_defaults() {
        assert_eq!(judge(&healthy()), Pressure::default());
        assert!(judge(&Figures { memory_available: 99 << 20, ..healthy() }).memory);
        assert!(judge(&Figures { disk_available: 9, ..healthy() }).disk);
        assert!(judge(&Figures { inodes_free: 4, ..healthy() }).disk);
        assert!(judge(&Figures { pids_used: 4_000_000, ..healthy() }).pid);
        assert_eq!(judge(&Figures::default()), Pressure::default(), "unknown figures are no pressure");
    }

    #[test]
    fn proc_figures_parse() {
        assert_eq!(mem_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n"), 2 << 20);
        assert_eq!(pids_used("0.10 0.20 0.30 2/345 6789\n"), 345);
    }
}
