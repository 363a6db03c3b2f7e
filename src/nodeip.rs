//! The node's own address when --node-ip is not given: the IPv4 address of the interface that
//! holds the default route (read from /proc, no traffic sent).

use std::net::{IpAddr, Ipv4Addr};

pub fn default_route_ipv4() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = default_route_interface(&routes)?;
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| a.interface_name == interface)
        .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|sin| IpAddr::V4(sin.ip()))))
        .or(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

/// Whether the node has an IPv6 address to serve Services on: one that is neither loopback nor
/// link-local (read from /proc/net/if_inet6; none when IPv6 is disabled).
pub fn has_global_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|table| any_global_ipv6(&table))
}

/// /proc/net/if_inet6 lines: address (32 hex digits), index, prefix length, scope, flags, name.
fn any_global_ipv6(table: &str) -> bool {
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // scope 00 is global (10 host, 20 link)
        fields.len() >= 6 && fields[3] == "00" && fields[5] != "lo"
    })
}

/// The interface of the first default route (destination 0.0.0.0, mask 0) in /proc/net/route.
pub fn default_route_interface(routes: &str) -> Option<String> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000").then(|| fields[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t0010A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth0\t00000000\t0110A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn global_ipv6_is_neither_loopback_nor_link_local() {
        let lo = "00000000000000000000000000000001 01 80 10 80       lo\n";
        let link = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
        let global = "fd000000000000000000000000000002 04 40 00 80     eth0\n";
        assert!(!any_global_ipv6(&format!("{lo}{link}")));
        assert!(any_global_ipv6(&format!("{lo}{link}{global}")));
    }

    #[test]
    fn the_default_route_names_its_interface_with_the_full_columns() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }
}
