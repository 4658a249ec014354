//! One `ct(...)` action on one packet: look it up in the tracker, commit it (with NAT or a
//! load-balancer backend), apply its translation to the key, and compute the `ct_state`,
//! `ct_zone` and `ct_mark` a recirculated pass sees.
//!
//! Used by execution in [`crate::switch`] (live: the tracker changes) and by `trace` (peek:
//! nothing changes, a commit is only reported). The tuple given to the tracker comes from the
//! packet *as it is at the ct action*: addresses and ports from the current key (so an earlier
//! `set_field` or a NAT of an earlier pass counts), TCP sequence data from the frame.
//!
//! NAT writes the key only (`nw_src`/`nw_dst`, and `tp_src`/`tp_dst` for TCP and UDP); the
//! frame is rewritten at output from the key difference, with incremental checksum updates
//! (`switch::materialize`), like any `set_field`. The quoted header inside an ICMP error of a
//! NATed connection is not translated (only the outer addresses are).

use std::net::IpAddr;
use std::time::Duration;

use crate::conntrack::{
    CommitError, Conntrack, CtMark, CtState, Dir, NatKind, NatRequest, Verdict,
};
use crate::flow::{CtAction, CtNat};
use crate::key::{ct_state, ethertype, ipproto, Field, FlowKey};
use crate::l4::{self, CtPacket, L4};
use crate::lb::LbGroups;
use crate::packet::Layout;

/// Why a ct action dropped the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDrop {
    /// The commit was refused (table or zone full, NAT range exhausted).
    Commit(CommitError),
    /// `lb(id=N)`: the group does not exist or has no backend up.
    NoBackend(u32),
}

/// What one ct action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtStep {
    /// The tracker's verdict (after the commit, for a committed packet: its entry and mark).
    pub verdict: Verdict,
    /// `ct_state` flags for a recirculated pass.
    pub state: u8,
    /// A new connection was committed (trace: would be).
    pub committed: bool,
    /// The translation was applied to the packet.
    pub nat: bool,
    /// Set if the packet is dropped here.
    pub drop: Option<CtDrop>,
    /// The commit changed the mark of an existing connection.
    pub mark_changed: bool,
    /// A TCP handshake round trip this packet completed (`Conntrack::process_timed`): from
    /// the switch to the packet's sender and back.
    pub rtt: Option<Duration>,
}

/// Reads the packet's L3/L4 headers for the tracker (None: not IP, or malformed).
pub(crate) fn parse(frame: &[u8], layout: &Layout, parsed: &FlowKey) -> Option<CtPacket> {
    match parsed.eth_type() {
        ethertype::IPV4 | ethertype::IPV6 => l4::parse_frame_ip(frame, layout).ok(),
        _ => None,
    }
}

/// The packet as it is now: `pkt` with addresses (and TCP/UDP ports) from `k`.
fn current(pkt: &CtPacket, k: &FlowKey) -> CtPacket {
    let mut p = *pkt;
    let t = &mut p.tuple;
    match (t.src, t.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            t.src = IpAddr::V4(k.nw_src());
            t.dst = IpAddr::V4(k.nw_dst());
        }
        _ => {
            t.src = IpAddr::V6(k.ipv6_src());
            t.dst = IpAddr::V6(k.ipv6_dst());
        }
    }
    if matches!(p.l4, L4::Tcp(_) | L4::Udp) {
        t.sport = k.tp_src();
        t.dport = k.tp_dst();
    }
    p
}

/// Where the tracker state comes from: the live tracker, or a read-only view for trace.
pub(crate) enum Tracker<'a> {
    /// Execution.
    Live(&'a mut Conntrack),
    /// Trace.
    Peek(&'a Conntrack),
}

/// Runs `a` on the packet (`pkt`: its parsed headers, `None` if not trackable) whose current
/// key is `k`; applies NAT to `k`. `seed` keys the load balancer's hash.
pub(crate) fn step(
    tr: Tracker<'_>,
    lbs: &LbGroups,
    seed: u64,
    now: Duration,
    a: &CtAction,
    pkt: Option<&CtPacket>,
    k: &mut FlowKey,
) -> CtStep {
    let mut out = CtStep {
        verdict: Verdict {
            state: CtState::Invalid,
            entry: None,
            dir: Dir::Original,
            mark: CtMark::default(),
            reason: Some(crate::conntrack::InvalidReason::Malformed),
            nat: None,
        },
        state: ct_state::TRK | ct_state::INV,
        committed: false,
        nat: false,
        drop: None,
        rtt: None,
        mark_changed: false,
    };
    let Some(pkt) = pkt.map(|p| current(p, k)) else {
        if let Tracker::Live(ct) = tr {
            out.verdict = ct.malformed();
        }
        return out;
    };
    let (mut v, mut tr) = match tr {
        Tracker::Live(ct) => {
            let (v, rtt) = ct.process_timed(now, a.zone, &pkt);
            out.rtt = rtt;
            (v, Tracker::Live(ct))
        }
        Tracker::Peek(ct) => (ct.peek(now, a.zone, &pkt), Tracker::Peek(ct)),
    };
    let new_mark = |old: u32| match a.mark {
        Some((val, m)) => (old & !m) | (val & m),
        None => old,
    };
    if a.commit && v.state == CtState::New {
        let req = match a.nat {
            Some(CtNat::Src(r)) => Some(NatRequest {
                kind: NatKind::Src,
                addrs: (r.ip_lo, r.ip_hi),
                ports: (r.port_lo, r.port_hi),
            }),
            Some(CtNat::Dst(r)) => Some(NatRequest {
                kind: NatKind::Dst,
                addrs: (r.ip_lo, r.ip_hi),
                ports: (r.port_lo, r.port_hi),
            }),
            Some(CtNat::Lb(id)) => match lbs.get(id).and_then(|g| g.pick(&pkt.tuple, seed)) {
                Some(b) => Some(NatRequest {
                    kind: NatKind::Dst,
                    addrs: (b.ip, b.ip),
                    ports: (b.port, b.port),
                }),
                // A connection already pinned keeps its backend even if the group is gone.
                None if v.entry.is_none() => {
                    out.verdict = v;
                    out.drop = Some(CtDrop::NoBackend(id));
                    return out;
                }
                None => None,
            },
            Some(CtNat::Existing) | None => None,
        };
        let mark = CtMark {
            mark: new_mark(v.mark.mark),
            label: v.mark.label,
        };
        match &mut tr {
            Tracker::Live(ct) => match ct.commit_nat(now, a.zone, &pkt, mark, req) {
                Ok((id, nat)) => {
                    v.entry = Some(id);
                    v.nat = nat;
                    v.mark = mark;
                    out.committed = true;
                }
                Err(e) => {
                    out.verdict = v;
                    out.drop = Some(CtDrop::Commit(e));
                    return out;
                }
            },
            Tracker::Peek(_) => {
                // Trace: show the mark it would get; the translation is only chosen live.
                v.mark = mark;
                out.committed = true;
            }
        }
    } else if a.commit && a.mark.is_some() && v.state != CtState::Invalid {
        if let (Tracker::Live(ct), Some(id)) = (&mut tr, v.entry) {
            let m = new_mark(v.mark.mark);
            out.mark_changed = m != v.mark.mark;
            v.mark.mark = m;
            ct.set_mark(id, v.mark);
        }
    }
    let mut st = ct_state::TRK
        | match v.state {
            CtState::New => ct_state::NEW,
            CtState::Established => ct_state::EST,
            CtState::Related => ct_state::REL,
            CtState::Invalid => ct_state::INV,
        };
    if v.dir == Dir::Reply && v.state != CtState::Invalid {
        st |= ct_state::RPL;
    }
    if let (Some(_), Some(b), false) = (a.nat, v.nat, v.state == CtState::Invalid) {
        let ports = matches!(pkt.l4, L4::Tcp(_) | L4::Udp)
            && matches!(k.nw_proto(), ipproto::TCP | ipproto::UDP);
        let (src, dst) = b.rewrite(v.dir);
        let mut set = |addr_f: Field, port_f: Field, e: crate::conntrack::Endpoint| {
            if let IpAddr::V4(ip) = e.addr {
                k.set(addr_f, u32::from(ip) as u64);
                if ports {
                    k.set(port_f, e.port as u64);
                }
            }
        };
        if let Some(e) = src {
            set(Field::NwSrc, Field::TpSrc, e);
        }
        if let Some(e) = dst {
            set(Field::NwDst, Field::TpDst, e);
        }
        st |= match b.kind {
            NatKind::Src => ct_state::SNAT,
            NatKind::Dst => ct_state::DNAT,
        };
        out.nat = true;
    }
    out.verdict = v;
    out.state = st;
    out
}

/// The key a recirculation to `table` starts with: `k` with the ct fields of `s` and zone.
pub(crate) fn recirc_key(k: &FlowKey, s: &CtStep, zone: u16, table: u8) -> FlowKey {
    let mut r = *k;
    r.set(Field::CtState, s.state as u64);
    r.set(Field::CtZone, zone as u64);
    r.set(Field::CtMark, s.verdict.mark.mark as u64);
    r.set(Field::Recirc, table as u64 + 1);
    r
}
