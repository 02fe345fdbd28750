//! An IP address with a prefix length: `192.168.1.10/24`, `fd00::10/64`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address and the length of its network prefix. For a node, `addr` is the node's own
/// address; for a subnet, it is normally the network address (see [`Cidr::is_network`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    /// The subnet this address is in: host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(self.prefix))),
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether the host bits are all zero (`10.244.0.0/16`, not `10.244.0.1/16`).
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// Whether `ip` is inside this subnet. Addresses of the other family never are.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network().addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & v4_mask(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & v6_mask(self.prefix) == u128::from(n),
            _ => false,
        }
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.network().addr) || other.contains(self.network().addr)
    }

    /// For an IPv4 subnet with room for hosts (prefix up to /30): the all-ones broadcast address.
    pub fn broadcast(&self) -> Option<IpAddr> {
        match self.addr {
            IpAddr::V4(a) if self.prefix <= 30 => Some(IpAddr::V4(Ipv4Addr::from(
                u32::from(a) | !v4_mask(self.prefix),
            ))),
            _ => None,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a text is not `address/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrParseError(pub &'static str);

impl fmt::Display for CidrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Cidr, CidrParseError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or(CidrParseError("no prefix length (`/24`)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrParseError("not an IP address before the `/`"))?;
        // u8::from_str accepts a leading `+`: insist on digits.
        let prefix =
            (!prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit()))
                .then(|| prefix.parse::<u8>().ok())
                .flatten()
                .ok_or(CidrParseError("the prefix length is not a number"))?;
        Cidr::new(addr, prefix).ok_or(if addr.is_ipv4() {
            CidrParseError("the prefix length is over 32")
        } else {
            CidrParseError("the prefix length is over 128")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(c("192.168.1.10/24").to_string(), "192.168.1.10/24");
        assert_eq!(c("fd00::1/64").to_string(), "fd00::1/64");
        assert_eq!(c("0.0.0.0/0").prefix, 0);
        for bad in [
            "192.168.1.10",
            "192.168.1.10/33",
            "192.168.1/24",
            "x/24",
            "1.2.3.4/+4",
            "1.2.3.4/",
            "::1/129",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn network_contains_overlaps() {
        assert_eq!(c("192.168.1.10/24").network(), c("192.168.1.0/24"));
        assert_eq!(c("10.1.2.3/0").network(), c("0.0.0.0/0"));
        assert_eq!(c("10.1.2.3/32").network(), c("10.1.2.3/32"));
        assert!(c("192.168.1.10/24").contains("192.168.1.1".parse().unwrap()));
        assert!(!c("192.168.1.10/24").contains("192.168.2.1".parse().unwrap()));
        assert!(!c("192.168.1.10/24").contains("::1".parse().unwrap()));
        assert!(c("fd00::10/64").contains("fd00::1".parse().unwrap()));
        assert!(c("10.0.0.0/8").overlaps(&c("10.244.0.0/16")));
        assert!(c("10.244.0.0/16").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.244.0.0/16").overlaps(&c("10.96.0.0/12")));
        assert!(!c("10.244.0.0/16").overlaps(&c("fd00::/8")));
        assert!(!c("10.244.0.1/16").is_network() && c("10.244.0.0/16").is_network());
        assert_eq!(
            c("192.168.1.10/24").broadcast(),
            Some("192.168.1.255".parse().unwrap())
        );
        assert_eq!(c("192.168.1.10/31").broadcast(), None);
    }
}
