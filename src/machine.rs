//! Machine facts: what `GET /spec` serves and what fills the Node's
//! capacity and nodeInfo.
//!
//! The JSON shape is cAdvisor's `info/v1.MachineInfo`, so tools that read a
//! kubelet's `/spec` read ours too. Parsing is split from reading: the
//! `parse` and `topology` submodules are pure functions over text and plain
//! structs, and `host` is the thin layer that reads files under a root
//! directory (normally "/", a fake tree in tests).

mod host;
pub(crate) mod parse;
pub(crate) mod timestamp;
mod topology;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// cAdvisor's defaults when no cloud provider is detected; we never detect one.
const UNKNOWN_CLOUD_PROVIDER: &str = "Unknown";
const UNKNOWN_INSTANCE_TYPE: &str = "Unknown";
const UNKNOWN_INSTANCE_ID: &str = "None";

/// Machine facts in the JSON shape of cAdvisor's `MachineInfo`.
///
/// Collections serialize as `[]`/`{}` where Go would write `null` for an
/// empty one; readers of cAdvisor's JSON accept both.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MachineInfo {
    /// When the facts were read, RFC 3339 in UTC.
    pub timestamp: String,
    pub vendor_id: String,
    /// Logical CPUs (hardware threads).
    pub num_cores: u32,
    pub num_physical_cores: u32,
    pub num_sockets: u32,
    pub cpu_frequency_khz: u64,
    /// Bytes.
    pub memory_capacity: u64,
    /// Bytes.
    pub swap_capacity: u64,
    pub memory_by_type: BTreeMap<String, MemoryInfo>,
    pub nvm: NvmInfo,
    pub hugepages: Vec<HugePagesInfo>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub filesystems: Vec<FsInfo>,
    /// Keyed by "major:minor".
    pub disk_map: BTreeMap<String, DiskInfo>,
    pub network_devices: Vec<NetInfo>,
    pub topology: Vec<Node>,
    pub cloud_provider: String,
    pub instance_type: String,
    pub instance_id: String,
}

/// Memory of one kind (e.g. "Unbuffered-DDR4"); we do not read DIMM data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MemoryInfo {
    pub capacity: u64,
    pub dimm_count: u32,
}

/// Non-volatile memory; always zero as we do not query NVDIMMs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NvmInfo {
    pub memory_mode_capacity: u64,
    pub app_direct_mode_capacity: u64,
    pub avg_power_budget: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HugePagesInfo {
    /// Page size in kB, as in the sysfs directory name.
    pub page_size: u64,
    pub num_pages: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FsInfo {
    pub device: String,
    /// Bytes.
    pub capacity: u64,
    /// cAdvisor's storage kind, "vfs" for an ordinary block-device filesystem.
    #[serde(rename = "type")]
    pub fs_type: String,
    pub inodes: u64,
    pub has_inodes: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DiskInfo {
    pub name: String,
    pub major: u64,
    pub minor: u64,
    /// Bytes.
    pub size: u64,
    pub scheduler: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetInfo {
    pub name: String,
    pub mac_address: String,
    /// Mbit/s; 0 when the link reports none.
    pub speed: i64,
    pub mtu: i64,
}

/// One NUMA node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Node {
    pub node_id: i32,
    /// Bytes.
    pub memory: u64,
    pub hugepages: Vec<HugePagesInfo>,
    pub cores: Vec<Core>,
    /// Caches shared by every core of the node (usually L3).
    pub caches: Vec<Cache>,
    /// NUMA distances to every node, from the node's sysfs `distance` file.
    pub distances: Vec<u64>,
}

/// One physical core and its hardware threads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Core {
    pub core_id: i32,
    pub thread_ids: Vec<u32>,
    /// Caches private to this core (L1, L2).
    pub caches: Vec<Cache>,
    /// Caches above L2 shared by some but not all cores of the node.
    pub uncore_caches: Vec<Cache>,
    pub socket_id: i32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cache {
    pub id: i32,
    /// Bytes.
    pub size: u64,
    /// "Data", "Instruction" or "Unified".
    #[serde(rename = "type")]
    pub cache_type: String,
    pub level: u32,
}

/// Everything the node agent reports about its host: the `/spec` document
/// plus the nodeInfo strings that cAdvisor keeps elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub machine: MachineInfo,
    /// Kernel release, e.g. "6.1.0-18-amd64".
    pub kernel_version: String,
    /// PRETTY_NAME of os-release, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os_image: String,
    pub hostname: String,
}

/// Reads the facts from a root directory (normally "/"), so tests can point
/// it at a fake tree.
///
/// Only an unreadable `/proc/cpuinfo` or `/proc/meminfo` is an error; any
/// other missing file leaves its fact zero or empty.
pub fn read_host_facts(root: &Path) -> anyhow::Result<HostFacts> {
    let cpuinfo_text = read_required(root, "/proc/cpuinfo")?;
    let meminfo_text = read_required(root, "/proc/meminfo")?;
    let cpuinfo = parse::parse_cpuinfo(&cpuinfo_text);
    let meminfo = parse::parse_meminfo(&meminfo_text);

    let cpus = host::read_cpu_facts(root);
    let hugepages = host::read_hugepages(&host::under(root, "/sys/kernel/mm/hugepages"));
    let nodes = host::read_node_facts(root, &cpus, meminfo.memory_capacity, &hugepages);

    let machine = MachineInfo {
        timestamp: timestamp::rfc3339_now(),
        vendor_id: cpuinfo.vendor_id.clone(),
        num_cores: count_logical_cpus(&cpuinfo, &cpus),
        num_physical_cores: count_physical_cores(&cpuinfo, &cpus),
        num_sockets: count_sockets(&cpuinfo, &cpus),
        cpu_frequency_khz: host::read_cpu_frequency_khz(root, cpuinfo.mhz),
        memory_capacity: meminfo.memory_capacity,
        swap_capacity: meminfo.swap_capacity,
        memory_by_type: BTreeMap::new(),
        nvm: NvmInfo::default(),
        hugepages,
        machine_id: host::read_machine_id(root),
        system_uuid: host::read_trimmed(root, "/sys/class/dmi/id/product_uuid").unwrap_or_default(),
        boot_id: host::read_trimmed(root, "/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        filesystems: host::read_filesystems(root),
        disk_map: host::read_disk_map(root),
        network_devices: host::read_network_devices(root),
        topology: topology::build_topology(&cpus, &nodes),
        cloud_provider: UNKNOWN_CLOUD_PROVIDER.to_string(),
        instance_type: UNKNOWN_INSTANCE_TYPE.to_string(),
        instance_id: UNKNOWN_INSTANCE_ID.to_string(),
    };

    Ok(HostFacts {
        machine,
        kernel_version: host::read_trimmed(root, "/proc/sys/kernel/osrelease").unwrap_or_default(),
        os_image: host::read_os_image(root),
        hostname: host::read_hostname(root),
    })
}

fn read_required(root: &Path, file: &str) -> anyhow::Result<String> {
    let path = host::under(root, file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// cpuinfo lists the online CPUs; sysfs is the fallback for kernels whose
/// cpuinfo format we do not recognise.
fn count_logical_cpus(cpuinfo: &parse::CpuInfoSummary, cpus: &[topology::CpuFacts]) -> u32 {
    if cpuinfo.logical_cpus > 0 {
        cpuinfo.logical_cpus
    } else {
        cpus.len() as u32
    }
}

/// sysfs topology is authoritative (cpuinfo lacks "core id" on ARM); a
/// machine that shows neither is counted as one thread per core.
fn count_physical_cores(cpuinfo: &parse::CpuInfoSummary, cpus: &[topology::CpuFacts]) -> u32 {
    let from_sysfs = topology::count_physical_cores(cpus);
    if from_sysfs > 0 {
        from_sysfs
    } else if cpuinfo.physical_cores > 0 {
        cpuinfo.physical_cores
    } else {
        count_logical_cpus(cpuinfo, cpus)
    }
}

fn count_sockets(cpuinfo: &parse::CpuInfoSummary, cpus: &[topology::CpuFacts]) -> u32 {
    let from_sysfs = topology::count_sockets(cpus);
    if from_sysfs > 0 {
        from_sysfs
    } else {
        cpuinfo.sockets.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_machine() -> MachineInfo {
        let cache = Cache { id: 0, size: 32768, cache_type: "Data".into(), level: 1 };
        let hugepages = vec![HugePagesInfo { page_size: 2048, num_pages: 0 }];
        let mut memory_by_type = BTreeMap::new();
        memory_by_type.insert("Unbuffered-DDR4".to_string(), MemoryInfo { capacity: 1, dimm_count: 1 });
        let mut disk_map = BTreeMap::new();
        disk_map.insert("8:0".to_string(), DiskInfo { name: "sda".into(), major: 8, minor: 0, size: 512, scheduler: "none".into() });
        MachineInfo {
            timestamp: "2024-01-02T03:04:05Z".into(),
            vendor_id: "GenuineIntel".into(),
            num_cores: 2,
            num_physical_cores: 1,
            num_sockets: 1,
            cpu_frequency_khz: 2_400_000,
            memory_capacity: 1 << 30,
            swap_capacity: 0,
            memory_by_type,
            nvm: NvmInfo::default(),
            hugepages: hugepages.clone(),
            machine_id: "abc".into(),
            system_uuid: "uuid".into(),
            boot_id: "boot".into(),
            filesystems: vec![FsInfo { device: "/dev/sda1".into(), capacity: 10, fs_type: "vfs".into(), inodes: 5, has_inodes: true }],
            disk_map,
            network_devices: vec![NetInfo { name: "eth0".into(), mac_address: "02:00:00:00:00:01".into(), speed: 1000, mtu: 1500 }],
            topology: vec![Node {
                node_id: 0,
                memory: 1 << 30,
                hugepages,
                cores: vec![Core { core_id: 0, thread_ids: vec![0, 1], caches: vec![cache.clone()], uncore_caches: vec![], socket_id: 0 }],
                caches: vec![cache],
                distances: vec![10],
            }],
            cloud_provider: "Unknown".into(),
            instance_type: "Unknown".into(),
            instance_id: "None".into(),
        }
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn machine_info_serializes_with_cadvisor_key_names() {
        let json = serde_json::to_value(sample_machine()).unwrap();
        assert_eq!(
            keys(&json),
            sorted(&[
                "timestamp",
                "vendor_id",
                "num_cores",
                "num_physical_cores",
                "num_sockets",
                "cpu_frequency_khz",
                "memory_capacity",
                "swap_capacity",
                "memory_by_type",
                "nvm",
                "hugepages",
                "machine_id",
                "system_uuid",
                "boot_id",
                "filesystems",
                "disk_map",
                "network_devices",
                "topology",
                "cloud_provider",
                "instance_type",
                "instance_id",
            ])
        );
        assert_eq!(keys(&json["hugepages"][0]), sorted(&["page_size", "num_pages"]));
        assert_eq!(keys(&json["filesystems"][0]), sorted(&["device", "capacity", "type", "inodes", "has_inodes"]));
        assert_eq!(keys(&json["network_devices"][0]), sorted(&["name", "mac_address", "speed", "mtu"]));
        assert_eq!(keys(&json["disk_map"]["8:0"]), sorted(&["name", "major", "minor", "size", "scheduler"]));
        assert_eq!(keys(&json["memory_by_type"]["Unbuffered-DDR4"]), sorted(&["capacity", "dimm_count"]));
        assert_eq!(keys(&json["nvm"]), sorted(&["memory_mode_capacity", "app_direct_mode_capacity", "avg_power_budget"]));
        let node = &json["topology"][0];
        assert_eq!(keys(node), sorted(&["node_id", "memory", "hugepages", "cores", "caches", "distances"]));
        assert_eq!(keys(&node["cores"][0]), sorted(&["core_id", "thread_ids", "caches", "uncore_caches", "socket_id"]));
        assert_eq!(keys(&node["caches"][0]), sorted(&["id", "size", "type", "level"]));
    }

    #[test]
    fn machine_info_round_trips_through_json() {
        let machine = sample_machine();
        let text = serde_json::to_string(&machine).unwrap();
        let back: MachineInfo = serde_json::from_str(&text).unwrap();
        assert_eq!(back, machine);
    }

    #[test]
    fn machine_info_accepts_cadvisor_json_missing_newer_fields() {
        // Older cAdvisor versions lack "distances" and "uncore_caches".
        let text = r#"{"num_cores":4,"topology":[{"node_id":0,"memory":1,"hugepages":[],
            "cores":[{"core_id":0,"thread_ids":[0],"caches":[],"socket_id":0}],"caches":[]}]}"#;
        let machine: MachineInfo = serde_json::from_str(text).unwrap();
        assert_eq!(machine.num_cores, 4);
        assert!(machine.topology[0].distances.is_empty());
    }

    #[test]
    fn read_host_facts_on_this_machine() {
        let facts = read_host_facts(Path::new("/")).unwrap();
        let machine = &facts.machine;
        assert!(machine.num_cores >= 1, "num_cores {}", machine.num_cores);
        assert!(machine.num_physical_cores >= 1);
        assert!(machine.num_sockets >= 1);
        assert!(machine.memory_capacity > 0);
        assert!(!machine.boot_id.is_empty());
        assert!(!facts.kernel_version.is_empty());
        assert!(!facts.os_image.is_empty());
        assert!(machine.timestamp.ends_with('Z'));
        let threads: usize = machine.topology.iter().flat_map(|node| &node.cores).map(|core| core.thread_ids.len()).sum();
        assert!(threads >= 1, "topology lists no thread: {:?}", machine.topology);
    }

    #[test]
    fn read_host_facts_names_the_missing_cpuinfo() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_host_facts(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("proc/cpuinfo"), "{err:#}");
    }

    #[test]
    fn read_host_facts_names_the_missing_meminfo() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), "processor\t: 0\n").unwrap();
        let err = read_host_facts(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("proc/meminfo"), "{err:#}");
    }

    #[test]
    fn read_host_facts_on_a_minimal_tree_leaves_optional_facts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cpuinfo"), "processor\t: 0\ncpu MHz\t\t: 1500.000\n\nprocessor\t: 1\n").unwrap();
        std::fs::write(dir.path().join("proc/meminfo"), "MemTotal:  1024 kB\nSwapTotal: 0 kB\n").unwrap();
        let facts = read_host_facts(dir.path()).unwrap();
        let machine = &facts.machine;
        assert_eq!(machine.num_cores, 2);
        assert_eq!(machine.num_physical_cores, 2);
        assert_eq!(machine.num_sockets, 1);
        assert_eq!(machine.cpu_frequency_khz, 1_500_000);
        assert_eq!(machine.memory_capacity, 1024 * 1024);
        assert_eq!(machine.machine_id, "");
        assert_eq!(machine.boot_id, "");
        assert!(machine.filesystems.is_empty());
        assert!(machine.network_devices.is_empty());
        // Without NUMA sysfs there is still one node holding all memory.
        assert_eq!(machine.topology.len(), 1);
        assert_eq!(machine.topology[0].memory, 1024 * 1024);
        assert_eq!(facts.os_image, "Linux");
        assert_eq!(facts.kernel_version, "");
    }
}
