//! Address choice over a set of used addresses: pure, so it is unit-tested
//! without touching disk.

use crate::subnet::Subnet;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The next free host address after `last` (round-robin, wrapping), skipping
/// the gateway and every used address. Round-robin means an address freed by
/// DEL is not handed out again at once, so stale ARP entries and lingering
/// connections towards a dead pod do not hit its successor.
pub fn next_free(subnet: Subnet, gateway: Ipv4Addr, used: &HashSet<Ipv4Addr>, last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let range = subnet.host_range();
    let (lo, hi) = (*range.start(), *range.end());
    if lo > hi {
        return None;
    }
    let start = match last.map(u32::from) {
        Some(l) if (lo..hi).contains(&l) => l + 1,
        _ => lo,
    };
    // Walk start..=hi, then lo..start: every host address exactly once.
    (start..=hi).chain(lo..start).map(Ipv4Addr::from).find(|ip| *ip != gateway && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_used() {
        let s = net("10.1.0.0/24");
        let used: HashSet<_> = [ip("10.1.0.2")].into();
        assert_eq!(next_free(s, ip("10.1.0.1"), &used, None), Some(ip("10.1.0.3")));
    }

    #[test]
    fn round_robin_after_last() {
        let s = net("10.1.0.0/24");
        let none = HashSet::new();
        assert_eq!(next_free(s, ip("10.1.0.1"), &none, Some(ip("10.1.0.7"))), Some(ip("10.1.0.8")));
        // Wraps past the end, never yielding the broadcast address.
        assert_eq!(next_free(s, ip("10.1.0.1"), &none, Some(ip("10.1.0.254"))), Some(ip("10.1.0.2")));
        // A last value outside the subnet (config changed) restarts at the bottom.
        assert_eq!(next_free(s, ip("10.1.0.1"), &none, Some(ip("192.168.0.1"))), Some(ip("10.1.0.2")));
    }

    #[test]
    fn gateway_in_the_middle() {
        let s = net("10.1.0.0/30"); // hosts .1 and .2
        let none = HashSet::new();
        assert_eq!(next_free(s, ip("10.1.0.2"), &none, None), Some(ip("10.1.0.1")));
    }

    #[test]
    fn exhausted() {
        let s = net("10.1.0.0/29"); // hosts .1-.6, gateway .1
        let used: HashSet<_> = (2..=6).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        assert_eq!(next_free(s, ip("10.1.0.1"), &used, Some(ip("10.1.0.4"))), None);
    }

    #[test]
    fn every_address_handed_out_once() {
        let s = net("10.1.0.0/28");
        let gw = ip("10.1.0.1");
        let mut used = HashSet::new();
        let mut last = None;
        while let Some(a) = next_free(s, gw, &used, last) {
            assert!(s.contains(a) && a != gw && a != s.network() && a != s.broadcast());
            assert!(used.insert(a));
            last = Some(a);
        }
        assert_eq!(used.len(), 13);
    }
}
