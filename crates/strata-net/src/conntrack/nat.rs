//! NAT address and port allocation for a new connection.
//!
//! A translated connection is found by two keys: its own (the opening tuple, normalized) and
//! the key of its translated reply tuple. Allocation picks the first candidate (address,
//! port) whose reply key is not held by any entry of the zone, so no two connections of a zone
//! share a translated 5-tuple: for source NAT, two connections to the same remote endpoint
//! never get the same (NAT address, port, protocol), and replies always find their connection.
//!
//! Candidates: every address of the range times every port of the range, starting from the
//! packet's own port when it lies in the range (so a port is kept where possible, as Linux
//! does), otherwise from a hash of the tuple (so connections spread over the range), and
//! wrapping. With no port range, destination NAT keeps the port, and source NAT keeps it if
//! free, else takes one from 1024-65535. ICMP echo keeps its id (the switch does not rewrite
//! ICMP ids) and protocols without ports have one candidate per address. At most
//! [`MAX_TRIES`] candidates are looked at, so a full range costs a bounded number of lookups
//! per refused packet; a range larger than that may be refused before it is truly full.

use std::net::{IpAddr, Ipv4Addr};

use crate::conntrack::key::CtKey;
use crate::conntrack::table::{NatEntry, Table};
use crate::conntrack::types::{Endpoint, NatBinding, NatKind, NatRequest};
use crate::l4::{CtPacket, L4};

/// Candidates looked at before a NAT commit is refused.
pub const MAX_TRIES: u64 = 4096;

/// First port source NAT picks from when no port range is given and the packet's own is taken.
pub const SNAT_PORT_MIN: u16 = 1024;

/// The translation for `pkt`'s new connection in `zone`, or `None` if the range is exhausted
/// (or the packet is not IPv4).
pub fn choose(
    table: &Table,
    seed: u64,
    zone: u16,
    pkt: &CtPacket,
    req: &NatRequest,
) -> Option<NatEntry> {
    let t = pkt.tuple;
    if !matches!((t.src, t.dst), (IpAddr::V4(_), IpAddr::V4(_))) {
        return None;
    }
    let (own_port, fixed_port) = match (req.kind, pkt.l4) {
        (_, L4::Echo { .. }) => (t.sport, true),
        (_, L4::Other) => (0, true),
        (NatKind::Src, _) => (t.sport, false),
        (NatKind::Dst, _) => (t.dport, false),
    };
    let (plo, phi) = match req.ports {
        _ if fixed_port => (own_port, own_port),
        (0, _) if req.kind == NatKind::Dst => (own_port, own_port),
        (0, _) => (SNAT_PORT_MIN.min(own_port.max(1)), u16::MAX),
        p => p,
    };
    let (alo, ahi) = (u32::from(req.addrs.0), u32::from(req.addrs.1));
    let nports = (phi - plo) as u64 + 1;
    let naddrs = (ahi - alo) as u64 + 1;
    let total = nports * naddrs;
    let h = CtKey::of(zone, &t).hash(seed);
    let addr0 = h % naddrs;
    let start = if (plo..=phi).contains(&own_port) {
        addr0 * nports + (own_port - plo) as u64
    } else {
        (h >> 16) % total
    };
    let from = match req.kind {
        NatKind::Src => Endpoint {
            addr: t.src,
            port: t.sport,
        },
        NatKind::Dst => Endpoint {
            addr: t.dst,
            port: t.dport,
        },
    };
    for i in 0..total.min(MAX_TRIES) {
        let c = (start + i) % total;
        let to = Endpoint {
            addr: IpAddr::V4(Ipv4Addr::from(alo + (c / nports) as u32)),
            port: plo + (c % nports) as u16,
        };
        let mut translated = t;
        match req.kind {
            NatKind::Src => (translated.src, translated.sport) = (to.addr, to.port),
            NatKind::Dst => (translated.dst, translated.dport) = (to.addr, to.port),
        }
        if matches!(pkt.l4, L4::Echo { .. }) {
            // Echo "ports" are the id on both sides.
            (translated.sport, translated.dport) = (t.sport, t.dport);
        }
        let reply = translated.reversed();
        let (rkey, reply_lo) = CtKey::with_side(zone, &reply);
        let rhash = rkey.hash(seed);
        if table.find(&rkey, rhash).is_none() {
            return Some(NatEntry {
                binding: NatBinding {
                    kind: req.kind,
                    from,
                    to,
                },
                rkey,
                rhash,
                reply_lo,
            });
        }
    }
    None
}
