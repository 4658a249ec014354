//! Address management: what a subnet may be, which address a port gets, MACs, and port
//! ranges as the masked matches a flow table takes. Pure functions over what is in use.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use thiserror::Error;

/// Why an address request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpamError {
    /// The CIDR is not in canonical form (host bits set), or too small to hold hosts.
    #[error("{0} is not a usable network (host bits set, or smaller than a /30)")]
    NotANetwork(Ipv4Net),
    /// A subnet lies outside its network.
    #[error("subnet {subnet} lies outside the network's {network}")]
    Outside {
        /// The subnet asked for.
        subnet: Ipv4Net,
        /// The network's range.
        network: Ipv4Net,
    },
    /// A subnet overlaps another of the network.
    #[error("subnet {0} overlaps subnet {1} of the network")]
    Overlaps(Ipv4Net, Ipv4Net),
    /// An address is not a host address of the subnet.
    #[error("{ip} is not a host address of {cidr}")]
    NotAHost {
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        cidr: Ipv4Net,
    },
    /// An address is taken (by a port or the gateway).
    #[error("{0} is in use")]
    InUse(Ipv4Addr),
    /// Every host address is taken.
    #[error("subnet {0} has no free address")]
    Exhausted(Ipv4Net),
    /// A MAC is not a unicast Ethernet address, or is taken.
    #[error("{0}")]
    BadMac(String),
}

/// Smallest subnet that holds hosts besides network, broadcast and gateway addresses.
pub const MAX_PREFIX: u8 = 30;

/// Checks a network's own address space.
pub fn check_network(cidr: Ipv4Net) -> Result<(), IpamError> {
    if cidr.trunc() != cidr || cidr.prefix_len() > MAX_PREFIX {
        return Err(IpamError::NotANetwork(cidr));
    }
    Ok(())
}

/// Checks a new subnet against its network and the network's other subnets.
pub fn check_subnet(network: Ipv4Net, others: &[Ipv4Net], cidr: Ipv4Net) -> Result<(), IpamError> {
    check_network(cidr)?;
    if !network.contains(&cidr) {
        return Err(IpamError::Outside {
            subnet: cidr,
            network,
        });
    }
    for o in others {
        if o.contains(&cidr.network()) || cidr.contains(&o.network()) {
            return Err(IpamError::Overlaps(cidr, *o));
        }
    }
    Ok(())
}

/// The first host address: the gateway unless one is given.
pub fn default_gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// Whether `ip` is a host address of `cidr` (not its network or broadcast address).
pub fn check_host(cidr: Ipv4Net, ip: Ipv4Addr) -> Result<(), IpamError> {
    if !cidr.contains(&ip) || ip == cidr.network() || ip == cidr.broadcast() {
        return Err(IpamError::NotAHost { ip, cidr });
    }
    Ok(())
}

/// The lowest host address of `cidr` that is neither the gateway nor in `used`.
pub fn allocate_ip(
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, IpamError> {
    let first = u32::from(cidr.network()) + 1;
    let last = u32::from(cidr.broadcast()) - 1;
    // Skip runs of used addresses through the ordered set rather than probing one by one.
    let mut next = first;
    for u in used.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)) {
        let u = u32::from(*u);
        while next < u {
            if Ipv4Addr::from(next) != gateway {
                return Ok(Ipv4Addr::from(next));
            }
            next += 1;
        }
        next = u + 1;
    }
    while next <= last {
        if Ipv4Addr::from(next) != gateway {
            return Ok(Ipv4Addr::from(next));
        }
        next += 1;
    }
    Err(IpamError::Exhausted(cidr))
}

/// Checks a requested address for a port.
pub fn check_port_ip(
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    ip: Ipv4Addr,
) -> Result<(), IpamError> {
    check_host(cidr, ip)?;
    if ip == gateway || used.contains(&ip) {
        return Err(IpamError::InUse(ip));
    }
    Ok(())
}

/// Prefix of the MACs Strata allocates: locally administered, unicast (`02:53:...`).
pub const MAC_PREFIX: [u8; 2] = [0x02, 0x53];

/// A MAC from `seed` (a hash of the object id), moved on until it is not in `used`.
pub fn allocate_mac(seed: u64, used: &BTreeSet<[u8; 6]>) -> [u8; 6] {
    let mut n = seed as u32;
    loop {
        let b = n.to_be_bytes();
        let mac = [MAC_PREFIX[0], MAC_PREFIX[1], b[0], b[1], b[2], b[3]];
        if !used.contains(&mac) {
            return mac;
        }
        n = n.wrapping_add(1);
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast and all-zero addresses.
pub fn parse_mac(s: &str) -> Result<[u8; 6], IpamError> {
    let bad = || IpamError::BadMac(format!("{s:?} is not a MAC (aa:bb:cc:dd:ee:ff)"));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 == 1 || m == [0; 6] {
        return Err(IpamError::BadMac(format!(
            "{s} is not a unicast MAC (multicast bit set, or all zero)"
        )));
    }
    Ok(m)
}

/// A 64-bit FNV-1a hash (seeds MACs, names cookies): stable across runs and builds.
pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// An inclusive port range as the fewest `(value, mask)` pairs that cover exactly it.
pub fn port_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    if lo > hi {
        return out;
    }
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, (!(size - 1) & 0xffff) as u16));
        lo += size;
    }
    out
}

/// The lowest value in `lo..=hi` not in `used`.
pub fn lowest_free(used: &BTreeSet<u32>, lo: u32, hi: u32) -> Option<u32> {
    let mut next = lo;
    for &u in used.range(lo..=hi) {
        if u != next {
            return Some(next);
        }
        next = u + 1;
    }
    (next <= hi).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_inside_and_apart() {
        let n = net("10.0.0.0/16");
        check_subnet(n, &[], net("10.0.1.0/24")).unwrap();
        assert!(matches!(
            check_subnet(n, &[], net("10.1.0.0/24")),
            Err(IpamError::Outside { .. })
        ));
        assert!(matches!(
            check_subnet(n, &[net("10.0.0.0/23")], net("10.0.1.0/24")),
            Err(IpamError::Overlaps(..))
        ));
        assert!(matches!(
            check_subnet(n, &[net("10.0.1.0/24")], net("10.0.0.0/23")),
            Err(IpamError::Overlaps(..))
        ));
        assert!(matches!(
            check_subnet(n, &[], net("10.0.1.1/24")),
            Err(IpamError::NotANetwork(_))
        ));
        assert!(check_subnet(n, &[], net("10.0.1.0/31")).is_err());
    }

    #[test]
    fn allocation_skips_the_gateway_and_used_and_ends() {
        let c = net("10.0.1.0/29"); // hosts .1 .. .6
        let gw = default_gateway(c);
        assert_eq!(gw, Ipv4Addr::new(10, 0, 1, 1));
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Ok(ip) = allocate_ip(c, gw, &used) {
            check_port_ip(c, gw, &used, ip).unwrap();
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        used.remove(&Ipv4Addr::new(10, 0, 1, 4));
        assert_eq!(
            allocate_ip(c, gw, &used).unwrap(),
            Ipv4Addr::new(10, 0, 1, 4)
        );
        assert!(check_port_ip(c, gw, &used, Ipv4Addr::new(10, 0, 1, 7)).is_err());
        assert!(check_port_ip(c, gw, &used, gw).is_err());
    }

    #[test]
    fn macs_are_unicast_and_unique() {
        let mut used = BTreeSet::new();
        let a = allocate_mac(7, &used);
        used.insert(a);
        let b = allocate_mac(7, &used);
        assert_ne!(a, b);
        assert_eq!(a[0] & 1, 0);
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:53:00:00:00").is_err());
        assert_eq!(
            parse_mac("02:53:0a:0b:0c:0d").unwrap(),
            [2, 0x53, 10, 11, 12, 13]
        );
    }

    #[test]
    fn lowest_free_fills_holes() {
        let used: BTreeSet<u32> = [1, 2, 4].into_iter().collect();
        assert_eq!(lowest_free(&used, 1, 10), Some(3));
        assert_eq!(lowest_free(&used, 1, 2), None);
        assert_eq!(lowest_free(&BTreeSet::new(), 5, 6), Some(5));
    }

    proptest! {
        /// The masks cover exactly the range: the reference is the range itself.
        #[test]
        fn port_masks_cover_exactly(a in any::<u16>(), b in any::<u16>(), probe in any::<u16>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let m = port_masks(lo, hi);
            let hit = m.iter().filter(|(v, k)| probe & k == *v).count();
            prop_assert_eq!(hit, usize::from((lo..=hi).contains(&probe)));
            prop_assert!(m.len() <= 30);
        }

        /// Allocation never hands out the gateway, a used address or a non-host.
        #[test]
        fn allocation_is_a_free_host(used in proptest::collection::btree_set(0u32..64, 0..64)) {
            let c = net("10.9.0.0/26");
            let gw = default_gateway(c);
            let used: BTreeSet<Ipv4Addr> =
                used.into_iter().map(|o| Ipv4Addr::from(u32::from(c.network()) + o)).collect();
            match allocate_ip(c, gw, &used) {
                Ok(ip) => prop_assert!(check_port_ip(c, gw, &used, ip).is_ok()),
                Err(_) => prop_assert!((1..63)
                    .map(|o| Ipv4Addr::from(u32::from(c.network()) + o))
                    .all(|ip| ip == gw || used.contains(&ip))),
            }
        }
    }
}
