//! inet and cidr values read back from either output form and ordered as PostgreSQL's
//! `network_cmp` orders them: IPv4 before IPv6; within a family, by the network part the two
//! share (the shorter mask's bits), then the shorter mask first, then the whole address
//! (`10.0.0.0/8` < `10.0.0.1/8` < `10.0.0.0` < `10.0.0.1`). macaddr and macaddr8 sort by
//! their bytes, which `mac_bytes` reads from their text.

use std::cmp::Ordering;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    v6: bool,
    /// The mask length.
    bits: u8,
    /// The address, left-aligned (an IPv4 address in the top 32 bits).
    addr: u128,
}

impl Network {
    /// `addr` or `addr/bits`, as inet and cidr write them.
    pub fn parse(s: &str) -> Option<Network> {
        let (host, bits) = match s.split_once('/') {
            Some((h, b)) => (h, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let (v6, addr, max) = if host.contains(':') {
            (true, u128::from(host.parse::<Ipv6Addr>().ok()?), 128)
        } else {
            let v4 = u32::from(host.parse::<Ipv4Addr>().ok()?);
            (false, u128::from(v4) << 96, 32)
        };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Network { v6, bits, addr })
    }

    /// Family (2: IPv4, 3: IPv6), mask length, cidr flag, address length, address.
    pub fn from_binary(raw: &[u8]) -> Option<Network> {
        let [family, bits, _cidr, len, addr @ ..] = raw else {
            return None;
        };
        let (v6, max) = match (family, len) {
            (2, 4) => (false, 32),
            (3, 16) => (true, 128),
            _ => return None,
        };
        if addr.len() != *len as usize || *bits > max {
            return None;
        }
        let mut full = [0u8; 16];
        full[..addr.len()].copy_from_slice(addr);
        Some(Network {
            v6,
            bits: *bits,
            addr: u128::from_be_bytes(full),
        })
    }

    pub fn compare(&self, other: &Network) -> Ordering {
        if self.v6 != other.v6 {
            return self.v6.cmp(&other.v6);
        }
        let shared = u32::from(self.bits.min(other.bits));
        let prefix = |a: u128| a.checked_shr(128 - shared).unwrap_or(0);
        prefix(self.addr)
            .cmp(&prefix(other.addr))
            .then(self.bits.cmp(&other.bits))
            .then(self.addr.cmp(&other.addr))
    }
}

/// The bytes of a macaddr or macaddr8 as PostgreSQL writes it (`08:00:2b:01:02:03`).
pub fn mac_bytes(s: &str) -> Option<Vec<u8>> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|h| {
            (h.len() == 2)
                .then(|| u8::from_str_radix(h, 16).ok())
                .flatten()
        })
        .collect();
    bytes.filter(|b| b.len() == 6 || b.len() == 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_postgresql_does() {
        // Ascending, as `ORDER BY` gives them on PostgreSQL 15.
        let ascending = [
            "0.0.0.0/0",
            "9.255.255.255",
            "10.0.0.0/8",
            "10.0.0.1/8",
            "10.0.0.0",
            "10.0.0.1",
            "192.168.0.0/16",
            "192.168.1.5/24",
            "::/0",
            "::1",
            "::ffff:1.2.3.4",
            "fe80::1/64",
        ];
        let n = |s: &str| Network::parse(s).unwrap_or_else(|| panic!("{s}"));
        for w in ascending.windows(2) {
            assert_eq!(
                n(w[0]).compare(&n(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(
            Network::from_binary(&[2, 24, 0, 4, 192, 168, 1, 5]),
            Some(n("192.168.1.5/24"))
        );
        for bad in ["10.0.0.1/33", "x", "::1/129", "10.0.0/8"] {
            assert!(Network::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            mac_bytes("08:00:2b:01:02:0f"),
            Some(vec![8, 0, 0x2b, 1, 2, 15])
        );
        assert!(mac_bytes("08:00:2b").is_none());
    }
}
