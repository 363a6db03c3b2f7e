//! Pure parsers for the procfs, sysfs and /etc files the machine facts come
//! from. Nothing here touches the file system.

use std::collections::{BTreeSet, HashMap};

/// What /proc/cpuinfo tells about the processors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfoSummary {
    pub vendor_id: String,
    /// Number of "processor" entries, i.e. online logical CPUs.
    pub logical_cpus: u32,
    /// Distinct ("physical id", "core id") pairs; 0 when cpuinfo lacks them (ARM).
    pub physical_cores: u32,
    /// Distinct "physical id" values; 0 when cpuinfo lacks them.
    pub sockets: u32,
    /// "cpu MHz" of the first processor that reports it.
    pub mhz: Option<f64>,
}

/// Splits a "key : value" line of cpuinfo; keys are padded with tabs.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    Some((key.trim(), value.trim()))
}

pub fn parse_cpuinfo(text: &str) -> CpuInfoSummary {
    let mut summary = CpuInfoSummary::default();
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    // "core id" follows "physical id" within one processor block.
    let mut current_socket = String::new();
    for (key, value) in text.lines().filter_map(split_key_value) {
        match key {
            "processor" => {
                summary.logical_cpus += 1;
                current_socket.clear();
            }
            "vendor_id" if summary.vendor_id.is_empty() => summary.vendor_id = value.to_string(),
            "physical id" => {
                current_socket = value.to_string();
                sockets.insert(value.to_string());
            }
            "core id" => {
                cores.insert((current_socket.clone(), value.to_string()));
            }
            "cpu MHz" if summary.mhz.is_none() => summary.mhz = value.parse().ok(),
            _ => {}
        }
    }
    summary.sockets = sockets.len() as u32;
    summary.physical_cores = cores.len() as u32;
    summary
}

/// Totals from /proc/meminfo, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemInfo {
    pub memory_capacity: u64,
    pub swap_capacity: u64,
}

pub fn parse_meminfo(text: &str) -> MemInfo {
    MemInfo { memory_capacity: meminfo_bytes(text, "MemTotal").unwrap_or(0), swap_capacity: meminfo_bytes(text, "SwapTotal").unwrap_or(0) }
}

/// Finds "KEY: N kB" in /proc/meminfo or a NUMA node's meminfo (whose lines
/// start with "Node 0 ") and returns it in bytes.
pub fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let label = format!("{key}:");
    text.lines().find_map(|line| {
        let mut tokens = line.split_whitespace().skip_while(|token| *token != label).skip(1);
        let number: u64 = tokens.next()?.parse().ok()?;
        match tokens.next() {
            Some("kB") => Some(number * 1024),
            _ => Some(number),
        }
    })
}

/// Parses os-release(5): KEY=value lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), unquote_shell_value(value.trim())))
        .collect()
}

/// os-release values follow shell quoting; double quotes allow backslash
/// escapes of `"`, `\`, `$` and `` ` ``.
fn unquote_shell_value(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One line of /proc/mounts.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// Parses /proc/mounts, decoding the octal escapes (`\040` for a space) the
/// kernel writes in paths.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(MountEntry {
                device: unescape_mount_field(fields.next()?),
                mount_point: unescape_mount_field(fields.next()?),
                fs_type: fields.next()?.to_string(),
            })
        })
        .collect()
}

fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keeps the mounts of real block devices, one per device: pseudo
/// filesystems (proc, tmpfs, overlay) and network mounts have no /dev/ source,
/// and a device mounted twice (bind mounts) is one filesystem.
pub fn block_device_mounts(mounts: Vec<MountEntry>) -> Vec<MountEntry> {
    let mut seen = BTreeSet::new();
    mounts.into_iter().filter(|mount| mount.device.starts_with("/dev/")).filter(|mount| seen.insert(mount.device.clone())).collect()
}

/// Parses a sysfs CPU list such as "0-3,8,10-11".
pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

/// Parses a sysfs cache size such as "32K" or "1M" into bytes.
pub fn parse_cache_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, multiplier) = match text.chars().last()? {
        'K' => (&text[..text.len() - 1], 1024),
        'M' => (&text[..text.len() - 1], 1024 * 1024),
        'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * multiplier)
}

/// Picks the active scheduler from /sys/block/X/queue/scheduler, which
/// brackets it: "mq-deadline [none] kyber".
pub fn parse_scheduler(text: &str) -> String {
    text.split_whitespace().find_map(|name| name.strip_prefix('[').and_then(|n| n.strip_suffix(']'))).unwrap_or("none").to_string()
}

/// Reads the page size in kB from a directory name like "hugepages-2048kB".
pub fn parse_hugepages_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()
}

/// Parses a NUMA node's "distance" file: "10 21".
pub fn parse_distances(text: &str) -> Vec<u64> {
    text.split_whitespace().filter_map(|n| n.parse().ok()).collect()
}

/// Parses a "major:minor" device number as in /sys/block/X/dev.
pub fn parse_device_number(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL_CPUINFO: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
cpu MHz\t\t: 2200.152
physical id\t: 0
siblings\t: 4
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu vme de pse

processor\t: 1
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2200.999
physical id\t: 0
core id\t\t: 1

processor\t: 2
vendor_id\t: GenuineIntel
physical id\t: 1
core id\t\t: 0

processor\t: 3
vendor_id\t: GenuineIntel
physical id\t: 1
core id\t\t: 0
";

    const ARM_CPUINFO: &str = "\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes
CPU implementer\t: 0x41

processor\t: 1
BogoMIPS\t: 243.75
";

    #[test]
    fn cpuinfo_counts_threads_cores_and_sockets() {
        let summary = parse_cpuinfo(INTEL_CPUINFO);
        assert_eq!(summary.vendor_id, "GenuineIntel");
        assert_eq!(summary.logical_cpus, 4);
        // Socket 1 core 0 has two threads, and core 0 exists on both sockets.
        assert_eq!(summary.physical_cores, 3);
        assert_eq!(summary.sockets, 2);
        assert_eq!(summary.mhz, Some(2200.152));
    }

    #[test]
    fn cpuinfo_without_topology_lines_reports_zero_cores() {
        let summary = parse_cpuinfo(ARM_CPUINFO);
        assert_eq!(summary.logical_cpus, 2);
        assert_eq!(summary.physical_cores, 0);
        assert_eq!(summary.sockets, 0);
        assert_eq!(summary.vendor_id, "");
        assert_eq!(summary.mhz, None);
    }

    #[test]
    fn meminfo_totals_are_bytes() {
        let text = "MemTotal:       16303728 kB\nMemFree:         1234 kB\nSwapTotal:       2097148 kB\n";
        let mem = parse_meminfo(text);
        assert_eq!(mem.memory_capacity, 16303728 * 1024);
        assert_eq!(mem.swap_capacity, 2097148 * 1024);
    }

    #[test]
    fn meminfo_without_swap_line_has_zero_swap() {
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), MemInfo { memory_capacity: 10240, swap_capacity: 0 });
    }

    #[test]
    fn node_meminfo_lines_carry_a_node_prefix() {
        let text = "Node 1 MemTotal:        5990604 kB\nNode 1 MemFree:         4496776 kB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(5990604 * 1024));
        assert_eq!(meminfo_bytes(text, "MemUsed"), None);
    }

    #[test]
    fn meminfo_counts_without_unit_are_taken_as_is() {
        assert_eq!(meminfo_bytes("HugePages_Total:       4\n", "HugePages_Total"), Some(4));
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let text = r#"
# comment
NAME="Debian GNU/Linux"
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
ID=debian
VARIANT='Server Edition'
QUOTED="say \"hi\" \$HOME"
"#;
        let fields = parse_os_release(text);
        assert_eq!(fields["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(fields["ID"], "debian");
        assert_eq!(fields["VARIANT"], "Server Edition");
        assert_eq!(fields["QUOTED"], "say \"hi\" $HOME");
        assert!(!fields.contains_key("# comment"));
    }

    #[test]
    fn mounts_are_parsed_and_unescaped() {
        let text = "\
proc /proc proc rw,relatime 0 0
/dev/sda1 / ext4 rw,relatime 0 0
/dev/sdb1 /mnt/my\\040disk xfs rw 0 0
";
        let mounts = parse_mounts(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[2], MountEntry { device: "/dev/sdb1".into(), mount_point: "/mnt/my disk".into(), fs_type: "xfs".into() });
    }

    #[test]
    fn only_block_device_mounts_are_kept_once_each() {
        let text = "\
sysfs /sys sysfs rw 0 0
overlay /var/lib/containers/x overlay rw 0 0
server:/export /mnt/nfs nfs4 rw 0 0
/dev/vda / ext4 rw 0 0
tmpfs /dev/shm tmpfs rw 0 0
/dev/vda /etc/hosts ext4 rw 0 0
/dev/mapper/vg-data /data xfs rw 0 0
";
        let kept: Vec<(String, String)> = block_device_mounts(parse_mounts(text)).into_iter().map(|m| (m.device, m.mount_point)).collect();
        assert_eq!(kept, vec![("/dev/vda".to_string(), "/".to_string()), ("/dev/mapper/vg-data".to_string(), "/data".to_string()),]);
    }

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5"), vec![5]);
        assert!(parse_cpu_list("\n").is_empty());
    }

    #[test]
    fn cache_sizes_scale_by_suffix() {
        assert_eq!(parse_cache_size("32K\n"), Some(32 * 1024));
        assert_eq!(parse_cache_size("2M"), Some(2 * 1024 * 1024));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("big"), None);
        assert_eq!(parse_cache_size(""), None);
    }

    #[test]
    fn scheduler_is_the_bracketed_name() {
        assert_eq!(parse_scheduler("mq-deadline kyber [bfq] none\n"), "bfq");
        assert_eq!(parse_scheduler("none"), "none");
    }

    #[test]
    fn hugepage_directory_names_give_the_size_in_kb() {
        assert_eq!(parse_hugepages_dir_name("hugepages-2048kB"), Some(2048));
        assert_eq!(parse_hugepages_dir_name("hugepages-1048576kB"), Some(1048576));
        assert_eq!(parse_hugepages_dir_name("other"), None);
    }

    #[test]
    fn distances_and_device_numbers_parse() {
        assert_eq!(parse_distances("10 21\n"), vec![10, 21]);
        assert_eq!(parse_device_number("8:16\n"), Some((8, 16)));
        assert_eq!(parse_device_number("x"), None);
    }
}
