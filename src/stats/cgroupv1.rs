//! cgroup v1 accounting files: cpuacct.usage and the memory controller's usage and
//! memory.stat. Parsing is pure; `read` gathers one cgroup's figures from the mounts.

use super::cgroup::{CgroupUsage, MemoryUsage};
use std::path::Path;

/// The figures of memory.stat nodelet reads; the `total_` ones include the descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub total_inactive_file: u64,
    pub total_rss: u64,
    pub total_pgfault: u64,
    pub total_pgmajfault: u64,
}

/// A file holding one number, such as cpuacct.usage or memory.usage_in_bytes.
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

pub fn parse_memory_stat(text: &str) -> MemoryStat {
    let mut stat = MemoryStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<u64>() else { continue };
        match key {
            "total_inactive_file" => stat.total_inactive_file = value,
            "total_rss" => stat.total_rss = value,
            "total_pgfault" => stat.total_pgfault = value,
            "total_pgmajfault" => stat.total_pgmajfault = value,
            _ => {}
        }
    }
    stat
}

pub fn memory_usage(usage_bytes: u64, stat: &MemoryStat) -> MemoryUsage {
    MemoryUsage {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(stat.total_inactive_file),
        rss_bytes: stat.total_rss,
        page_faults: stat.total_pgfault,
        major_page_faults: stat.total_pgmajfault,
    }
}

/// The figures of the cgroup `relative` (e.g. "/nodelet/pod<uid>", or "/" for the whole
/// machine) under the cgroupfs mount `mount`; a missing controller leaves its part None.
pub fn read(mount: &Path, relative: &str) -> CgroupUsage {
    let relative = relative.trim_start_matches('/');
    let read_file = |controller: &str, file: &str| std::fs::read_to_string(mount.join(controller).join(relative).join(file)).ok();
    let cpu_nanos = read_file("cpuacct", "cpuacct.usage").as_deref().and_then(parse_number);
    let memory = read_file("memory", "memory.usage_in_bytes").as_deref().and_then(parse_number).map(|usage| {
        let stat = read_file("memory", "memory.stat").map(|t| parse_memory_stat(&t)).unwrap_or_default();
        memory_usage(usage, &stat)
    });
    CgroupUsage { cpu_nanos, memory }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY_STAT: &str = "cache 13205504\nrss 6680576\ninactive_file 249856\npgfault 39513\ntotal_cache 22983856128\ntotal_rss 190562304\ntotal_pgfault 16889108\ntotal_pgmajfault 1645\ntotal_inactive_file 16700809216\ntotal_active_file 3887104\n";

    #[test]
    fn memory_stat_uses_the_hierarchical_totals() {
        let stat = parse_memory_stat(MEMORY_STAT);
        assert_eq!(stat, MemoryStat { total_inactive_file: 16_700_809_216, total_rss: 190_562_304, total_pgfault: 16_889_108, total_pgmajfault: 1645 });
    }

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let stat = MemoryStat { total_inactive_file: 300, total_rss: 500, total_pgfault: 7, total_pgmajfault: 1 };
        let m = memory_usage(1000, &stat);
        assert_eq!((m.usage_bytes, m.working_set_bytes, m.rss_bytes, m.page_faults, m.major_page_faults), (1000, 700, 500, 7, 1));
        // Never below zero, when the counters race.
        assert_eq!(memory_usage(100, &stat).working_set_bytes, 0);
    }

    #[test]
    fn numbers_tolerate_the_newline() {
        assert_eq!(parse_number("508758790186\n"), Some(508_758_790_186));
        assert_eq!(parse_number("max\n"), None);
    }

    #[test]
    fn read_takes_a_cgroup_from_the_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("memory/nodelet/podu1");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::create_dir_all(dir.path().join("cpuacct/nodelet/podu1")).unwrap();
        std::fs::write(dir.path().join("cpuacct/nodelet/podu1/cpuacct.usage"), "1500\n").unwrap();
        std::fs::write(pod.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(pod.join("memory.stat"), "total_inactive_file 1024\ntotal_rss 2048\n").unwrap();
        std::fs::write(pod.join("cgroup.procs"), "").unwrap();
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        std::fs::write(pod.join("c1/cgroup.procs"), "4242\n4243\n").unwrap();
        let usage = read(dir.path(), "/nodelet/podu1");
        assert_eq!(usage.cpu_nanos, Some(1500));
        assert_eq!(usage.memory.unwrap().working_set_bytes, 3072);
        assert_eq!(super::super::cgroup::any_process(&dir.path().join("memory").join("nodelet/podu1")), Some(4242));
        assert_eq!(read(dir.path(), "/nodelet/gone"), CgroupUsage::default());
    }
}
