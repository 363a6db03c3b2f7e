//! A small IPv4 CIDR type: just what config validation and IPAM need.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is larger than 32"));
        }
        let s = Subnet { network, prefix };
        if u32::from(network) & !s.mask() != 0 {
            return Err(format!("{network}/{prefix} has host bits set (did you mean {}/{prefix}?)", Ipv4Addr::from(u32::from(network) & s.mask())));
        }
        Ok(s)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    fn mask(&self) -> u32 {
        // Shifting a u32 by 32 overflows, so /0 is special-cased.
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// First usable host address (network + 1), the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Host addresses as a u32 range, network and broadcast excluded.
    pub fn host_range(&self) -> std::ops::RangeInclusive<u32> {
        u32::from(self.network) + 1..=u32::from(self.broadcast()) - 1
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        Subnet::new(ip, prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 88, 0, 1));
        assert!(s.contains(Ipv4Addr::new(10, 88, 3, 4)));
        assert!(!s.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(s.to_string(), "10.88.0.0/16");
        assert_eq!(s.host_range().count(), 65534);
    }

    #[test]
    fn rejects_bad_input() {
        assert!("10.88.0.1/16".parse::<Subnet>().unwrap_err().contains("host bits"));
        assert!("10.88.0.0".parse::<Subnet>().is_err());
        assert!("10.88.0.0/33".parse::<Subnet>().is_err());
        assert!("fd00::/64".parse::<Subnet>().is_err());
    }

    #[test]
    fn slash_zero_does_not_overflow() {
        let s: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(s.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }
}
