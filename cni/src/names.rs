//! Names and hardware addresses derived from a container: deterministic, so
//! DEL (a separate process, maybe after a crash) finds what ADD created.

use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// Host-side veth name: "vn" + 10 hex chars of sha256(containerid + ifname).
/// 12 chars, within IFNAMSIZ; 40 bits make collisions on one node negligible.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::new()
        .chain_update(container_id.as_bytes())
        .chain_update(b"\0") // keep ("ab","c") and ("a","bc") apart
        .chain_update(ifname.as_bytes())
        .finalize();
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("vn{hex}")
}

/// MAC derived from an IP (container or bridge gateway) (0a:58 + the 4 address bytes, as the
/// Kubernetes bridge plugins do): locally administered, unicast, and stable
/// for an address so neighbours' ARP caches stay right across re-ADDs.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_name_is_stable_and_short() {
        let a = host_veth("abc", "eth0");
        assert_eq!(a, host_veth("abc", "eth0"));
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("vn"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth("abc", "eth1"));
        assert_ne!(host_veth("ab", "ceth0"), host_veth("abc", "eth0"));
    }

    #[test]
    fn mac_from_ip() {
        let mac = mac_for_ip(Ipv4Addr::new(10, 88, 0, 5));
        assert_eq!(format_mac(&mac), "0a:58:0a:58:00:05");
        assert_eq!(mac[0] & 1, 0, "unicast");
        assert_eq!(mac[0] & 2, 2, "locally administered");
    }
}
