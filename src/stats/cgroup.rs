//! One cgroup's cpu and memory figures, from cgroup v1's controllers (`cgroupv1`) or cgroup v2's
//! unified hierarchy (`cgroupv2`), in the same shape for `/stats/summary` and the eviction
//! manager.

use crate::cgroups::Version;
use std::path::{Path, PathBuf};

/// One cgroup's figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    pub memory: Option<MemoryUsage>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub usage_bytes: u64,
    /// usage less inactive file pages, which the kernel can drop first (as cAdvisor computes it).
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// Where cgroups are read from: the mount, its version, and /proc (v2's root has no
/// memory.current: /proc/meminfo stands in, as runc does).
#[derive(Debug, Clone)]
pub struct Reader {
    pub mount: PathBuf,
    pub version: Version,
    pub proc_root: PathBuf,
}

impl Reader {
    /// The figures of the cgroup at `relative` (such as "/kubepods/burstable/pod<uid>", or "/"
    /// for the whole machine); a missing controller or file leaves its part None.
    pub fn read(&self, relative: &str) -> CgroupUsage {
        match self.version {
            Version::V1 => super::cgroupv1::read(&self.mount, relative),
            Version::V2 => super::cgroupv2::read(&self.mount.join(relative.trim_start_matches('/')), &self.proc_root.join("meminfo")),
        }
    }

    /// A process of the cgroup or of one of its children (a pod's container), to look at the
    /// pod's network namespace through.
    pub fn any_process(&self, relative: &str) -> Option<u32> {
        let relative = relative.trim_start_matches('/');
        match self.version {
            Version::V1 => any_process(&self.mount.join("memory").join(relative)),
            Version::V2 => any_process(&self.mount.join(relative)),
        }
    }
}

/// The first process of the cgroup directory `dir`, else of one of its children.
pub fn any_process(dir: &Path) -> Option<u32> {
    let first_pid = |dir: &Path| std::fs::read_to_string(dir.join("cgroup.procs")).ok()?.lines().find_map(|l| l.trim().parse().ok());
    first_pid(dir).or_else(|| std::fs::read_dir(dir).ok()?.flatten().filter(|e| e.path().is_dir()).find_map(|e| first_pid(&e.path())))
}
