//! The eviction signals and the pods' use, read from the same Summary `/stats/summary` serves
//! (as the kubelet's eviction manager reads its summary provider): memory.available is the
//! node's memory capacity less the root cgroup's working set, nodefs is nodelet's root dir's
//! file system, imagefs the runtime's image file system (CRI ImageFsInfo). Pure.

use super::decide::{ContainerUsage, Observation, Observations, PodUsage};
use super::thresholds::Signal;
use crate::stats::summary::{FsStats, PodStats, Summary};
use std::collections::HashMap;

/// The signals the summary has figures for.
pub fn observations(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    if let Some(m) = &node.memory {
        if let (Some(available), Some(working_set)) = (m.available_bytes, m.working_set_bytes) {
            out.insert(Signal::MemoryAvailable, Observation { available, capacity: available + working_set });
        }
    }
    let mut fs = |fs: Option<&FsStats>, bytes: Signal, inodes: Signal| {
        let Some(fs) = fs else { return };
        if let (Some(available), Some(capacity)) = (fs.available_bytes, fs.capacity_bytes) {
            out.insert(bytes, Observation { available, capacity });
        }
        if let (Some(available), Some(capacity)) = (fs.inodes_free, fs.inodes) {
            out.insert(inodes, Observation { available, capacity });
        }
    };
    fs(node.fs.as_ref(), Signal::NodefsAvailable, Signal::NodefsInodesFree);
    fs(node.runtime.as_ref().and_then(|r| r.image_fs.as_ref()), Signal::ImagefsAvailable, Signal::ImagefsInodesFree);
    out
}

/// memory.available from /proc/meminfo (MemAvailable of MemTotal), for when the root cgroup's
/// figures cannot be read (not cgroup v1): what the node's MemoryPressure was judged on before.
pub fn memory_from_meminfo(meminfo: &str) -> Option<Observation> {
    let total = crate::machine::parse::meminfo_bytes(meminfo, "MemTotal")?;
    let available = crate::machine::parse::meminfo_bytes(meminfo, "MemAvailable")?;
    Some(Observation { available: available.min(total), capacity: total })
}

/// Each pod's use by UID: its cgroup's working set, its ephemeral storage (writable layers, logs,
/// volumes) and inodes, and its containers' figures for the message.
pub fn pod_usage(summary: &Summary) -> HashMap<String, PodUsage> {
    summary.pods.iter().map(|p| (p.pod_ref.uid.clone(), usage(p))).collect()
}

fn usage(p: &PodStats) -> PodUsage {
    PodUsage {
        memory: p.memory.as_ref().and_then(|m| m.working_set_bytes),
        ephemeral_storage: p.ephemeral_storage.as_ref().and_then(|e| e.used_bytes),
        inodes: p.ephemeral_storage.as_ref().and_then(|e| e.inodes_used),
        containers: p
            .containers
            .iter()
            .map(|c| ContainerUsage {
                name: c.name.clone(),
                memory: c.memory.as_ref().and_then(|m| m.working_set_bytes),
                rootfs: c.rootfs.as_ref().and_then(|f| f.used_bytes),
                logs: c.logs.as_ref().and_then(|f| f.used_bytes),
            })
            .collect(),
        volumes: p.volume.iter().filter_map(|v| Some((v.name.clone(), v.fs.used_bytes?))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::*;

    #[test]
    fn signals_come_from_the_node_figures() {
        let fs = |available, capacity, free, inodes| FsStats {
            available_bytes: Some(available),
            capacity_bytes: Some(capacity),
            inodes_free: Some(free),
            inodes: Some(inodes),
            ..Default::default()
        };
        let summary = Summary {
            node: NodeStats {
                memory: Some(MemoryStats { available_bytes: Some(300), working_set_bytes: Some(700), ..Default::default() }),
                fs: Some(fs(10, 100, 5, 50)),
                runtime: Some(RuntimeStats { image_fs: Some(fs(20, 200, 6, 60)) }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference { uid: "u1".into(), ..Default::default() },
                memory: Some(MemoryStats { working_set_bytes: Some(42), ..Default::default() }),
                ephemeral_storage: Some(FsStats { used_bytes: Some(7), inodes_used: Some(3), ..Default::default() }),
                containers: vec![ContainerStats {
                    name: "c".into(),
                    rootfs: Some(FsStats { used_bytes: Some(4), ..Default::default() }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let o = observations(&summary);
        assert_eq!(o[&Signal::MemoryAvailable], Observation { available: 300, capacity: 1000 });
        assert_eq!(o[&Signal::NodefsAvailable], Observation { available: 10, capacity: 100 });
        assert_eq!(o[&Signal::NodefsInodesFree], Observation { available: 5, capacity: 50 });
        assert_eq!(o[&Signal::ImagefsAvailable], Observation { available: 20, capacity: 200 });
        assert_eq!(o[&Signal::ImagefsInodesFree], Observation { available: 6, capacity: 60 });
        let u = &pod_usage(&summary)["u1"];
        assert_eq!((u.memory, u.ephemeral_storage, u.inodes), (Some(42), Some(7), Some(3)));
        assert_eq!(u.containers, vec![ContainerUsage { name: "c".into(), rootfs: Some(4), ..Default::default() }]);
        assert!(observations(&Summary::default()).is_empty());
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    300 kB\n";
        assert_eq!(memory_from_meminfo(meminfo), Some(Observation { available: 300 << 10, capacity: 1000 << 10 }));
        assert_eq!(memory_from_meminfo("MemTotal: 1000 kB\n"), None);
    }
}
