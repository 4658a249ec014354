//! The connection key: zone plus 5-tuple, normalized so that both directions of a connection
//! give the same key, and its hash.
//!
//! Normalization: the endpoint (address, port) that sorts lower comes first. A packet and its
//! reply therefore look up one table entry with one hash; the entry keeps the original tuple,
//! and comparing the packet's source with it gives the direction. (NAT, later, changes the
//! reply tuple; it will add a second index entry for the translated tuple.)
//!
//! Invariant: `CtKey::of(z, t) == CtKey::of(z, &t.reversed())` for every tuple.

use std::net::IpAddr;

use crate::l4::Tuple;

/// A normalized connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Lower endpoint address (IPv4 as its 32-bit value).
    pub lo_addr: u128,
    /// Higher endpoint address.
    pub hi_addr: u128,
    /// Port of the lower endpoint.
    pub lo_port: u16,
    /// Port of the higher endpoint.
    pub hi_port: u16,
    /// Conntrack zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// IPv6 (true) or IPv4.
    pub v6: bool,
}

fn bits(a: IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(a) => (u32::from(a) as u128, false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

impl CtKey {
    /// The key of `t` in `zone`.
    pub fn of(zone: u16, t: &Tuple) -> CtKey {
        CtKey::with_side(zone, t).0
    }

    /// The key of `t` in `zone`, and whether `t`'s source is the lower endpoint (which, compared
    /// with the same fact for the opening packet, gives a packet's direction).
    #[inline]
    pub fn with_side(zone: u16, t: &Tuple) -> (CtKey, bool) {
        let (s, v6) = bits(t.src);
        let (d, _) = bits(t.dst);
        let src_lo = (s, t.sport) <= (d, t.dport);
        let (lo, hi) = if src_lo {
            ((s, t.sport), (d, t.dport))
        } else {
            ((d, t.dport), (s, t.sport))
        };
        let k = CtKey {
            lo_addr: lo.0,
            hi_addr: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            zone,
            proto: t.proto,
            v6,
        };
        (k, src_lo)
    }

    /// The tuple of a packet sent from the lower endpoint (`from_lo`) or from the higher one.
    pub fn tuple(&self, from_lo: bool) -> Tuple {
        let addr = |a: u128| {
            if self.v6 {
                IpAddr::V6(a.into())
            } else {
                IpAddr::V4((a as u32).into())
            }
        };
        let lo = (addr(self.lo_addr), self.lo_port);
        let hi = (addr(self.hi_addr), self.hi_port);
        let (s, d) = if from_lo { (lo, hi) } else { (hi, lo) };
        Tuple {
            src: s.0,
            dst: d.0,
            sport: s.1,
            dport: d.1,
            proto: self.proto,
        }
    }

    /// A seeded hash of the key (multiply-xorshift over its words). The seed comes from the
    /// caller's config, so a tenant cannot aim many connections at one bucket without knowing it.
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        const M: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = [
            self.lo_addr as u64,
            (self.lo_addr >> 64) as u64,
            self.hi_addr as u64,
            (self.hi_addr >> 64) as u64,
            (self.lo_port as u64)
                | ((self.hi_port as u64) << 16)
                | ((self.zone as u64) << 32)
                | ((self.proto as u64) << 48)
                | ((self.v6 as u64) << 56),
        ];
        let mut h = seed ^ M;
        for w in words {
            h = (h ^ w).wrapping_mul(M);
            h ^= h >> 29;
        }
        h.wrapping_mul(M) ^ (h >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn both_directions_share_a_key_and_zones_do_not() {
        let t = Tuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            sport: 1000,
            dport: 80,
            proto: 6,
        };
        assert_eq!(CtKey::of(3, &t), CtKey::of(3, &t.reversed()));
        let (k, lo) = CtKey::with_side(3, &t);
        assert_eq!((k.tuple(lo), k.tuple(!lo)), (t, t.reversed()));
        assert_ne!(lo, CtKey::with_side(3, &t.reversed()).1);
        assert_ne!(CtKey::of(3, &t), CtKey::of(4, &t));
        assert_eq!(
            CtKey::of(3, &t).hash(1),
            CtKey::of(3, &t.reversed()).hash(1)
        );
        assert_ne!(CtKey::of(3, &t).hash(1), CtKey::of(4, &t).hash(1));
        // Same addresses, ports swapped: another connection.
        let u = Tuple {
            sport: 80,
            dport: 1000,
            ..t
        };
        assert_ne!(CtKey::of(3, &t), CtKey::of(3, &u));
    }
}
