//! /proc files of the network and the machine: per-interface counters from /proc/net/dev
//! (of the host, or of a pod through /proc/<pid>/net/dev), the default route's interface
//! and the boot time. Pure parsing.

/// One interface's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interfaces of /proc/net/dev in file order, the loopback left out.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
            (fields.len() >= 16).then(|| InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: fields[0],
                rx_errors: fields[2],
                tx_bytes: fields[8],
                tx_errors: fields[10],
            })
        })
        .filter(|i| i.name != "lo")
        .collect()
}

/// The boot time (seconds since the epoch) from /proc/stat's btime line.
pub fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1752161     718    0    0    0     0          0         0  1752161     718    0    0    0     0       0          0
  eth0: 151641188    5263    3    0    0     0          0         0   290485    2873    4    0    0     0       0          0
nodelet0:100 2 0 0 0 0 0 0 200 3 0 0 0 0 0 0
";

    #[test]
    fn net_dev_counters_by_interface() {
        let ifaces = parse_net_dev(NET_DEV);
        assert_eq!(ifaces.len(), 2, "{ifaces:?}");
        assert_eq!(ifaces[0], InterfaceCounters { name: "eth0".into(), rx_bytes: 151_641_188, rx_errors: 3, tx_bytes: 290_485, tx_errors: 4 });
        assert_eq!((ifaces[1].name.as_str(), ifaces[1].rx_bytes, ifaces[1].tx_bytes), ("nodelet0", 100, 200));
    }

    #[test]
    fn boot_time_from_proc_stat() {
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        assert_eq!(boot_time("cpu 1\n"), None);
    }
}
