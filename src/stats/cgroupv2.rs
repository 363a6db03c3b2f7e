//! cgroup v2 accounting files: cpu.stat's usage_usec, memory.current and memory.stat (anon,
//! inactive_file, page faults). The working set is usage less inactive file pages, as cAdvisor
//! computes it. The root cgroup has no memory.current: its usage is MemTotal less MemFree from
//! /proc/meminfo, as runc reads it. Parsing is pure; `read` gathers one cgroup's figures.

use super::cgroup::{CgroupUsage, MemoryUsage};
use std::path::Path;

/// A `key value` file such as cpu.stat or memory.stat: the value of `key`.
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The figures of memory.stat nodelet reads (hierarchical in v2).
pub fn memory_usage(usage_bytes: u64, stat: &str) -> MemoryUsage {
    let get = |key| field(stat, key).unwrap_or(0);
    MemoryUsage {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(get("inactive_file")),
        rss_bytes: get("anon"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
    }
}

/// The cgroup at `dir`; `meminfo` is /proc/meminfo, for the root.
pub fn read(dir: &Path, meminfo: &Path) -> CgroupUsage {
    let read_file = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let cpu_nanos = read_file("cpu.stat").as_deref().and_then(|t| field(t, "usage_usec")).map(|us| us.saturating_mul(1000));
    let stat = read_file("memory.stat");
    let usage = match read_file("memory.current") {
        Some(text) => text.trim().parse().ok(),
        // the root: what is not free
        None => std::fs::read_to_string(meminfo).ok().and_then(|m| {
            let total = crate::machine::parse::meminfo_bytes(&m, "MemTotal")?;
            let free = crate::machine::parse::meminfo_bytes(&m, "MemFree")?;
            Some(total.saturating_sub(free))
        }),
    };
    let memory = usage.map(|u| memory_usage(u, stat.as_deref().unwrap_or_default()));
    CgroupUsage { cpu_nanos, memory }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY_STAT: &str = "anon 5242880\nfile 10485760\nkernel 1048576\ninactive_anon 0\nactive_anon 5242880\ninactive_file 4194304\nactive_file 6291456\npgfault 1234\npgmajfault 7\n";

    #[test]
    fn a_pod_cgroup_is_read_from_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "16777216\n").unwrap();
        std::fs::write(dir.path().join("memory.stat"), MEMORY_STAT).unwrap();
        let usage = read(dir.path(), Path::new("/nonexistent"));
        assert_eq!(usage.cpu_nanos, Some(2_500_000));
        let m = usage.memory.unwrap();
        assert_eq!((m.usage_bytes, m.working_set_bytes, m.rss_bytes, m.page_faults, m.major_page_faults), (16_777_216, 12_582_912, 5_242_880, 1234, 7));
    }

    #[test]
    fn the_root_takes_its_usage_from_meminfo() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 10\n").unwrap();
        std::fs::write(dir.path().join("memory.stat"), "inactive_file 1024\n").unwrap();
        let meminfo = dir.path().join("meminfo");
        std::fs::write(&meminfo, "MemTotal:       16 kB\nMemFree:         4 kB\nMemAvailable:   10 kB\n").unwrap();
        let m = read(dir.path(), &meminfo).memory.unwrap();
        assert_eq!((m.usage_bytes, m.working_set_bytes), (12 * 1024, 11 * 1024));
        assert_eq!(read(&dir.path().join("gone"), &meminfo).cpu_nanos, None);
    }
}
