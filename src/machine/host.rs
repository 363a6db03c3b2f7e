//! The thin layer that reads the host's files under a root directory and
//! hands their text to the parsers. Every fact here is optional: a missing or
//! unreadable file yields zero or empty, never an error.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::parse::{self, MountEntry};
use super::topology::{CacheFacts, CpuFacts, NodeFacts};
use super::{Cache, DiskInfo, FsInfo, HugePagesInfo, NetInfo};

/// Storage kind cAdvisor reports for an ordinary block-device filesystem.
const VFS_STORAGE_TYPE: &str = "vfs";
/// Block devices that are not disks, skipped as cAdvisor does.
const NON_DISK_PREFIXES: &[&str] = &["loop", "ram", "sr"];
/// Linux reports block device sizes in 512-byte sectors whatever the disk's
/// own sector size.
const SECTOR_BYTES: u64 = 512;

/// Maps an absolute host path into `root`.
pub fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

/// Reads a file's content without surrounding whitespace; None if it is
/// missing, unreadable or blank.
pub fn read_trimmed(root: &Path, absolute: &str) -> Option<String> {
    read_trimmed_at(&under(root, absolute))
}

fn read_trimmed_at(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

fn read_number_at<T: FromStr>(path: &Path) -> Option<T> {
    read_trimmed_at(path)?.parse().ok()
}

/// Names of the entries of a directory, sorted; empty if it is unreadable.
fn list_dir(path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries.filter_map(Result::ok).filter_map(|entry| entry.file_name().into_string().ok()).collect();
    names.sort();
    names
}

/// Numbers of the entries named `prefix<N>` ("cpu3", "node1", "index2"),
/// sorted numerically; "cpufreq" and the like are skipped.
fn numbered_entries(path: &Path, prefix: &str) -> Vec<u32> {
    let mut numbers: Vec<u32> = list_dir(path).iter().filter_map(|name| name.strip_prefix(prefix)?.parse().ok()).collect();
    numbers.sort_unstable();
    numbers
}

/// systemd's /etc/machine-id, or D-Bus's copy on hosts without systemd.
pub fn read_machine_id(root: &Path) -> String {
    read_trimmed(root, "/etc/machine-id").or_else(|| read_trimmed(root, "/var/lib/dbus/machine-id")).unwrap_or_default()
}

/// The nodename the kernel reports (what `hostname` prints), falling back
/// to /etc/hostname.
pub fn read_hostname(root: &Path) -> String {
    read_trimmed(root, "/proc/sys/kernel/hostname").or_else(|| read_trimmed(root, "/etc/hostname")).unwrap_or_default()
}

/// PRETTY_NAME of os-release, "Linux" when there is none (as the kubelet
/// reports then).
pub fn read_os_image(root: &Path) -> String {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .filter_map(|file| fs::read_to_string(under(root, file)).ok())
        .find_map(|text| parse::parse_os_release(&text).remove("PRETTY_NAME"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The maximum frequency cpufreq knows; cpuinfo's "cpu MHz" is the current
/// one and only a fallback for machines without cpufreq (most VMs).
pub fn read_cpu_frequency_khz(root: &Path, cpuinfo_mhz: Option<f64>) -> u64 {
    let max_khz = read_number_at::<u64>(&under(root, "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"));
    max_khz.or_else(|| cpuinfo_mhz.map(|mhz| (mhz * 1000.0).round() as u64)).unwrap_or(0)
}

/// Hugepage pools of a `hugepages` directory (global or per NUMA node).
pub fn read_hugepages(dir: &Path) -> Vec<HugePagesInfo> {
    let mut pools: Vec<HugePagesInfo> = list_dir(dir)
        .iter()
        .filter_map(|name| {
            let page_size = parse::parse_hugepages_dir_name(name)?;
            let num_pages = read_number_at(&dir.join(name).join("nr_hugepages")).unwrap_or(0);
            Some(HugePagesInfo { page_size, num_pages })
        })
        .collect();
    pools.sort_by_key(|pool| pool.page_size);
    pools
}

/// Online CPUs from /sys/devices/system/cpu; an offline CPU has no topology.
pub fn read_cpu_facts(root: &Path) -> Vec<CpuFacts> {
    let cpu_root = under(root, "/sys/devices/system/cpu");
    numbered_entries(&cpu_root, "cpu").into_iter().filter_map(|cpu| read_one_cpu(&cpu_root.join(format!("cpu{cpu}")), cpu)).collect()
}

fn read_one_cpu(dir: &Path, cpu: u32) -> Option<CpuFacts> {
    // cpu0 usually has no "online" file: it cannot be taken offline.
    if read_trimmed_at(&dir.join("online")).as_deref() == Some("0") {
        return None;
    }
    let topology = dir.join("topology");
    Some(CpuFacts {
        cpu,
        core_id: read_number_at(&topology.join("core_id"))?,
        socket_id: read_number_at(&topology.join("physical_package_id")).unwrap_or(0),
        caches: read_cpu_caches(&dir.join("cache")),
    })
}

fn read_cpu_caches(dir: &Path) -> Vec<CacheFacts> {
    numbered_entries(dir, "index").into_iter().filter_map(|index| read_one_cache(&dir.join(format!("index{index}")))).collect()
}

fn read_one_cache(dir: &Path) -> Option<CacheFacts> {
    let cache = Cache {
        // Older kernels have no cache "id"; cAdvisor leaves it 0 then.
        id: read_number_at(&dir.join("id")).unwrap_or(0),
        size: read_trimmed_at(&dir.join("size")).and_then(|s| parse::parse_cache_size(&s)).unwrap_or(0),
        cache_type: read_trimmed_at(&dir.join("type"))?,
        level: read_number_at(&dir.join("level"))?,
    };
    let shared_cpus = read_trimmed_at(&dir.join("shared_cpu_list")).map_or(1, |list| parse::parse_cpu_list(&list).len());
    Some(CacheFacts { cache, shared_cpus })
}

/// NUMA nodes from /sys/devices/system/node. A kernel without NUMA support
/// has no such directory; the whole machine is then one node 0, as in
/// cAdvisor.
pub fn read_node_facts(root: &Path, cpus: &[CpuFacts], memory_capacity: u64, hugepages: &[HugePagesInfo]) -> Vec<NodeFacts> {
    let node_root = under(root, "/sys/devices/system/node");
    let nodes: Vec<NodeFacts> =
        numbered_entries(&node_root, "node").into_iter().map(|id| read_one_node(&node_root.join(format!("node{id}")), id as i32)).collect();
    if !nodes.is_empty() {
        return nodes;
    }
    vec![NodeFacts { id: 0, memory: memory_capacity, hugepages: hugepages.to_vec(), cpus: cpus.iter().map(|c| c.cpu).collect(), distances: Vec::new() }]
}

fn read_one_node(dir: &Path, id: i32) -> NodeFacts {
    let meminfo = fs::read_to_string(dir.join("meminfo")).unwrap_or_default();
    NodeFacts {
        id,
        memory: parse::meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        hugepages: read_hugepages(&dir.join("hugepages")),
        cpus: read_trimmed_at(&dir.join("cpulist")).map(|l| parse::parse_cpu_list(&l)).unwrap_or_default(),
        distances: read_trimmed_at(&dir.join("distance")).map(|d| parse::parse_distances(&d)).unwrap_or_default(),
    }
}

/// Network interfaces backed by a device (PCI, virtio, USB...): those with a
/// /sys/class/net/X/device link. This drops lo, veth pairs, bridges (docker0,
/// cni0), tunnels and ifb, which cAdvisor drops by name prefix only; it also
/// drops bonds and VLANs, which carry no capacity of their own.
pub fn read_network_devices(root: &Path) -> Vec<NetInfo> {
    let net_root = under(root, "/sys/class/net");
    list_dir(&net_root)
        .into_iter()
        .filter(|name| net_root.join(name).join("device").exists())
        .map(|name| read_one_interface(&net_root.join(&name), name))
        .collect()
}

fn read_one_interface(dir: &Path, name: String) -> NetInfo {
    NetInfo {
        mac_address: read_trimmed_at(&dir.join("address")).unwrap_or_default(),
        // "speed" is unreadable or -1 while the link is down or for virtio.
        speed: read_number_at::<i64>(&dir.join("speed")).unwrap_or(0).max(0),
        mtu: read_number_at(&dir.join("mtu")).unwrap_or(0),
        name,
    }
}

/// Disks from /sys/block keyed by "major:minor", as cAdvisor's disk_map.
pub fn read_disk_map(root: &Path) -> BTreeMap<String, DiskInfo> {
    let block_root = under(root, "/sys/block");
    list_dir(&block_root)
        .into_iter()
        .filter(|name| !NON_DISK_PREFIXES.iter().any(|prefix| name.starts_with(prefix)))
        .filter_map(|name| read_one_disk(&block_root.join(&name), name))
        .map(|disk| (format!("{}:{}", disk.major, disk.minor), disk))
        .collect()
}

fn read_one_disk(dir: &Path, name: String) -> Option<DiskInfo> {
    let (major, minor) = parse::parse_device_number(&read_trimmed_at(&dir.join("dev"))?)?;
    let sectors: u64 = read_number_at(&dir.join("size")).unwrap_or(0);
    let scheduler = read_trimmed_at(&dir.join("queue/scheduler")).map_or_else(|| "none".to_string(), |s| parse::parse_scheduler(&s));
    Some(DiskInfo { name, major, minor, size: sectors * SECTOR_BYTES, scheduler })
}

/// Block-device filesystems of /proc/mounts with their size. Only /dev/
/// sources are statted, so a hung network mount cannot block us; a mount
/// point that cannot be statted (e.g. in a fake root) is skipped.
pub fn read_filesystems(root: &Path) -> Vec<FsInfo> {
    let Ok(text) = fs::read_to_string(under(root, "/proc/mounts")) else {
        return Vec::new();
    };
    parse::block_device_mounts(parse::parse_mounts(&text)).into_iter().filter_map(|mount| stat_filesystem(root, mount)).collect()
}

#[allow(clippy::unnecessary_cast)] // statvfs field widths differ across targets
fn stat_filesystem(root: &Path, mount: MountEntry) -> Option<FsInfo> {
    let stats = nix::sys::statvfs::statvfs(&under(root, &mount.mount_point)).ok()?;
    let inodes = stats.files() as u64;
    Some(FsInfo {
        device: mount.device,
        capacity: stats.blocks() as u64 * stats.fragment_size() as u64,
        fs_type: VFS_STORAGE_TYPE.to_string(),
        inodes,
        // Filesystems without a fixed inode table (btrfs) report 0.
        has_inodes: inodes > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `content` at `relative` under `root`, creating directories.
    fn write(root: &Path, relative: &str, content: &str) {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn write_cpu(root: &Path, cpu: u32, core_id: u32, l3_shared: &str) {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}");
        write(root, &format!("{dir}/topology/core_id"), &format!("{core_id}\n"));
        write(root, &format!("{dir}/topology/physical_package_id"), "0\n");
        for (index, level, kind, size, shared) in [(0, "1", "Data", "32K", cpu.to_string()), (3, "3", "Unified", "8192K", l3_shared.to_string())] {
            let cache = format!("{dir}/cache/index{index}");
            write(root, &format!("{cache}/level"), level);
            write(root, &format!("{cache}/type"), kind);
            write(root, &format!("{cache}/size"), size);
            write(root, &format!("{cache}/shared_cpu_list"), &shared);
        }
    }

    #[test]
    fn cpus_are_read_with_caches_and_offline_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_cpu(root, 0, 0, "0-1");
        write_cpu(root, 1, 1, "0-1");
        write_cpu(root, 2, 2, "2");
        write(root, "sys/devices/system/cpu/cpu2/online", "0\n");
        fs::create_dir_all(root.join("sys/devices/system/cpu/cpufreq")).unwrap();

        let cpus = read_cpu_facts(root);
        assert_eq!(cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(cpus[1].core_id, 1);
        assert_eq!(cpus[0].caches.len(), 2);
        assert_eq!(cpus[0].caches[0].cache, Cache { id: 0, size: 32 * 1024, cache_type: "Data".into(), level: 1 });
        assert_eq!(cpus[0].caches[1].shared_cpus, 2);
    }

    #[test]
    fn numa_nodes_are_read_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let node = "sys/devices/system/node/node1";
        write(root, &format!("{node}/meminfo"), "Node 1 MemTotal:  2048 kB\nNode 1 MemFree: 1 kB\n");
        write(root, &format!("{node}/cpulist"), "2-3\n");
        write(root, &format!("{node}/distance"), "21 10\n");
        write(root, &format!("{node}/hugepages/hugepages-2048kB/nr_hugepages"), "8\n");

        let nodes = read_node_facts(root, &[], 0, &[]);
        assert_eq!(
            nodes,
            vec![NodeFacts {
                id: 1,
                memory: 2048 * 1024,
                hugepages: vec![HugePagesInfo { page_size: 2048, num_pages: 8 }],
                cpus: vec![2, 3],
                distances: vec![21, 10],
            }]
        );
    }

    #[test]
    fn hugepage_pools_are_sorted_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "hp/hugepages-1048576kB/nr_hugepages", "1\n");
        write(root, "hp/hugepages-2048kB/nr_hugepages", "64\n");
        assert_eq!(
            read_hugepages(&root.join("hp")),
            vec![HugePagesInfo { page_size: 2048, num_pages: 64 }, HugePagesInfo { page_size: 1048576, num_pages: 1 },]
        );
        assert!(read_hugepages(&root.join("missing")).is_empty());
    }

    #[test]
    fn only_device_backed_interfaces_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/class/net/eth0/address", "02:fc:00:00:00:01\n");
        write(root, "sys/class/net/eth0/mtu", "1400\n");
        write(root, "sys/class/net/eth0/speed", "-1\n");
        fs::create_dir_all(root.join("sys/class/net/eth0/device")).unwrap();
        write(root, "sys/class/net/eno1/speed", "10000\n");
        fs::create_dir_all(root.join("sys/class/net/eno1/device")).unwrap();
        write(root, "sys/class/net/lo/mtu", "65536\n");
        write(root, "sys/class/net/veth1234/mtu", "1500\n");

        let devices = read_network_devices(root);
        assert_eq!(
            devices,
            vec![
                NetInfo { name: "eno1".into(), mac_address: String::new(), speed: 10000, mtu: 0 },
                NetInfo { name: "eth0".into(), mac_address: "02:fc:00:00:00:01".into(), speed: 0, mtu: 1400 },
            ]
        );
    }

    #[test]
    fn disks_are_keyed_by_device_number() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/block/vda/dev", "254:0\n");
        write(root, "sys/block/vda/size", "2048\n");
        write(root, "sys/block/vda/queue/scheduler", "[mq-deadline] none\n");
        write(root, "sys/block/loop0/dev", "7:0\n");

        let disks = read_disk_map(root);
        assert_eq!(disks.len(), 1);
        assert_eq!(disks["254:0"], DiskInfo { name: "vda".into(), major: 254, minor: 0, size: 2048 * 512, scheduler: "mq-deadline".into() });
    }

    #[test]
    fn filesystems_are_statted_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("data")).unwrap();
        write(root, "proc/mounts", "tmpfs /run tmpfs rw 0 0\n/dev/sdz1 /data ext4 rw 0 0\n/dev/sdz2 /gone ext4 rw 0 0\n");

        let filesystems = read_filesystems(root);
        assert_eq!(filesystems.len(), 1, "{filesystems:?}");
        assert_eq!(filesystems[0].device, "/dev/sdz1");
        assert_eq!(filesystems[0].fs_type, "vfs");
        assert!(filesystems[0].capacity > 0);
    }

    #[test]
    fn identity_files_are_trimmed_and_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "var/lib/dbus/machine-id", "0123abcd\n");
        write(root, "etc/hostname", "worker-1\n");
        write(root, "usr/lib/os-release", "NAME=Foo\nPRETTY_NAME=\"Foo Linux 1\"\n");
        assert_eq!(read_machine_id(root), "0123abcd");
        assert_eq!(read_hostname(root), "worker-1");
        assert_eq!(read_os_image(root), "Foo Linux 1");
    }

    #[test]
    fn cpu_frequency_prefers_cpufreq_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(read_cpu_frequency_khz(root, Some(2200.152)), 2_200_152);
        assert_eq!(read_cpu_frequency_khz(root, None), 0);
        write(root, "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "3500000\n");
        assert_eq!(read_cpu_frequency_khz(root, Some(2200.152)), 3_500_000);
    }
}
