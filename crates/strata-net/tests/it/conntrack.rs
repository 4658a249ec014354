//! Conntrack engine behaviour through its public API, on packets parsed from bytes: TCP
//! through process/commit, UDP and echo pseudo-connections, related ICMP errors, limits,
//! expiry, marks, reopening, and exact counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use strata_net::conntrack::{
    CommitError, ConnProto, Conntrack, CtConfig, CtMark, CtState, Dir, InvalidReason, Limits,
    TcpState, Timeouts,
};
use strata_net::l4::tcp_flags::{ACK, FIN, RST, SYN};
use strata_net::l4::CtPacket;

use crate::ct_util::{echo, icmp_error, ip, parse, tcp, tcp_pkt, udp};

const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const S: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 254));
const C6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const S6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn mark(m: u32) -> CtMark {
    CtMark {
        mark: m,
        label: (m as u128) << 64,
    }
}

/// Client `c`:40000 to server `s`:80, ISNs 1000 and 9000.
struct Conn {
    c: IpAddr,
    s: IpAddr,
}

impl Conn {
    fn o(&self, seq: u32, ack: u32, flags: u8, len: usize) -> CtPacket {
        tcp_pkt(self.c, 40000, self.s, 80, seq, ack, flags, len)
    }
    fn r(&self, seq: u32, ack: u32, flags: u8, len: usize) -> CtPacket {
        tcp_pkt(self.s, 80, self.c, 40000, seq, ack, flags, len)
    }
}

fn tcp_lifecycle(c: IpAddr, s: IpAddr) {
    let k = Conn { c, s };
    let mut ct = Conntrack::default();
    let t0 = secs(100);
    let syn = k.o(1000, 0, SYN, 0);
    let v = ct.process(t0, 7, &syn);
    assert_eq!((v.state, v.entry), (CtState::New, None));
    assert!(ct.is_empty(), "process alone creates nothing");
    let id = ct.commit(t0, 7, &syn, mark(5)).unwrap();
    let info = ct.get(id).unwrap();
    assert_eq!(info.proto, ConnProto::Tcp(TcpState::SynSent));
    assert_eq!(info.deadline, t0 + secs(120));
    assert_eq!(info.zone, 7);

    // A retransmitted SYN is still New (no answer yet) but belongs to the entry.
    let v = ct.process(t0 + secs(1), 7, &syn);
    assert_eq!(
        (v.state, v.entry, v.dir, v.mark),
        (CtState::New, Some(id), Dir::Original, mark(5))
    );

    let steps: [(bool, CtPacket, TcpState, u64); 8] = [
        (false, k.r(9000, 1001, SYN | ACK, 0), TcpState::SynRecv, 60),
        (
            true,
            k.o(1001, 9001, ACK, 0),
            TcpState::Established,
            432_000,
        ),
        (
            true,
            k.o(1001, 9001, ACK, 500),
            TcpState::Established,
            432_000,
        ),
        (
            false,
            k.r(9001, 1501, ACK, 1000),
            TcpState::Established,
            432_000,
        ),
        (true, k.o(1501, 10001, FIN | ACK, 0), TcpState::FinWait, 120),
        (false, k.r(10001, 1502, ACK, 0), TcpState::CloseWait, 60),
        (false, k.r(10001, 1502, FIN | ACK, 0), TcpState::LastAck, 30),
        (true, k.o(1502, 10002, ACK, 0), TcpState::TimeWait, 120),
    ];
    for (i, (orig, p, st, timeout)) in steps.iter().enumerate() {
        let now = t0 + secs(2 + i as u64);
        let v = ct.process(now, 7, p);
        let dir = if *orig { Dir::Original } else { Dir::Reply };
        assert_eq!(
            (v.state, v.entry, v.dir, v.mark),
            (CtState::Established, Some(id), dir, mark(5)),
            "step {i}"
        );
        let info = ct.get(id).unwrap();
        assert_eq!(info.proto, ConnProto::Tcp(*st), "step {i}");
        assert_eq!(info.deadline, now + secs(*timeout), "step {i}");
    }
    let info = ct.get(id).unwrap();
    assert_eq!(info.packets, [1 + 1 + 4, 4]);
    let c = ct.counters();
    assert_eq!(
        (c.new, c.established, c.invalid_total(), c.committed),
        (2, 8, 0, 1)
    );
    ct.check().unwrap();
}

#[test]
fn tcp_lifecycle_ipv4() {
    tcp_lifecycle(C, S);
}

#[test]
fn tcp_lifecycle_ipv6() {
    tcp_lifecycle(C6, S6);
}

#[test]
fn out_of_window_segments_are_invalid_and_do_not_move_or_refresh() {
    let k = Conn { c: C, s: S };
    let mut ct = Conntrack::default();
    let syn = k.o(1000, 0, SYN, 0);
    let id = ct.commit(secs(0), 0, &syn, CtMark::default()).unwrap();
    ct.process(secs(0), 0, &k.r(9000, 1001, SYN | ACK, 0));
    ct.process(secs(0), 0, &k.o(1001, 9001, ACK, 0));
    let before = ct.get(id).unwrap();
    // Far beyond the window, an ack of unsent data, a RST out of window.
    for p in [
        k.o(1001 + (1 << 30), 9001, ACK, 10),
        k.o(1001, 9001 + 5000, ACK, 0),
        k.r(9001u32.wrapping_sub(1 << 30), 0, RST, 0),
    ] {
        let v = ct.process(secs(50), 0, &p);
        assert_eq!(
            (v.state, v.reason, v.entry),
            (CtState::Invalid, Some(InvalidReason::TcpWindow), Some(id))
        );
    }
    let after = ct.get(id).unwrap();
    assert_eq!(before, after, "no state, counter or deadline change");
    assert_eq!(ct.counters().invalid_of(InvalidReason::TcpWindow), 3);
    // An in-window RST closes.
    let v = ct.process(secs(51), 0, &k.r(9001, 0, RST, 0));
    assert_eq!(v.state, CtState::Established);
    assert_eq!(ct.get(id).unwrap().proto, ConnProto::Tcp(TcpState::Close));
    assert_eq!(ct.get(id).unwrap().deadline, secs(61));
}

#[test]
fn packets_that_cannot_open_are_invalid_and_commit_refuses_them() {
    let k = Conn { c: C, s: S };
    let mut ct = Conntrack::default();
    let ack = k.o(5, 6, ACK, 0);
    let v = ct.process(secs(0), 0, &ack);
    assert_eq!(
        (v.state, v.reason),
        (CtState::Invalid, Some(InvalidReason::NoConnection))
    );
    assert_eq!(
        ct.commit(secs(0), 0, &ack, CtMark::default()),
        Err(CommitError::NotNew(CtState::Invalid))
    );
    let synfin = k.o(5, 0, SYN | FIN, 0);
    assert_eq!(
        ct.process(secs(0), 0, &synfin).reason,
        Some(InvalidReason::TcpFlags)
    );
    let reply = parse(&ip(S, C, 1, &echo(false, false, 9)));
    assert_eq!(
        ct.process(secs(0), 0, &reply).reason,
        Some(InvalidReason::NoConnection)
    );
    assert!(ct.is_empty());
    assert_eq!(ct.counters().committed, 0);
}

#[test]
fn udp_pseudo_connection_and_its_timeouts() {
    let mut ct = Conntrack::default();
    let q = parse(&ip(C, S, 17, &udp(5353, 53, 20)));
    let a = parse(&ip(S, C, 17, &udp(53, 5353, 80)));
    assert_eq!(ct.process(secs(10), 3, &q).state, CtState::New);
    let id = ct.commit(secs(10), 3, &q, mark(1)).unwrap();
    assert_eq!(ct.get(id).unwrap().deadline, secs(40));
    // A second query before any answer is still New.
    assert_eq!(ct.process(secs(11), 3, &q).state, CtState::New);
    let v = ct.process(secs(12), 3, &a);
    assert_eq!(
        (v.state, v.dir, v.entry, v.mark),
        (CtState::Established, Dir::Reply, Some(id), mark(1))
    );
    let info = ct.get(id).unwrap();
    assert_eq!(info.deadline, secs(132), "stream timeout once answered");
    assert_eq!(info.bytes, [2 * 48, 108]);
    // Another zone does not see it.
    assert_eq!(ct.process(secs(12), 4, &a).state, CtState::New);
}

#[test]
fn echo_pairs_request_and_reply_by_id() {
    for (c, s, v6) in [(C, S, false), (C6, S6, true)] {
        let proto = if v6 { 58 } else { 1 };
        let mut ct = Conntrack::default();
        let req = parse(&ip(c, s, proto, &echo(v6, true, 77)));
        assert_eq!(ct.process(secs(0), 0, &req).state, CtState::New);
        let id = ct.commit(secs(0), 0, &req, CtMark::default()).unwrap();
        assert_eq!(ct.get(id).unwrap().deadline, secs(30));
        let rep = parse(&ip(s, c, proto, &echo(v6, false, 77)));
        let v = ct.process(secs(1), 0, &rep);
        assert_eq!(
            (v.state, v.dir, v.entry),
            (CtState::Established, Dir::Reply, Some(id))
        );
        let other = parse(&ip(s, c, proto, &echo(v6, false, 78)));
        assert_eq!(
            ct.process(secs(1), 0, &other).reason,
            Some(InvalidReason::NoConnection)
        );
        // A request from the answering side with the same id is not a reply.
        let back = parse(&ip(s, c, proto, &echo(v6, true, 77)));
        assert_eq!(
            ct.process(secs(1), 0, &back).reason,
            Some(InvalidReason::NoConnection)
        );
    }
}

#[test]
fn icmp_errors_about_tracked_connections_are_related() {
    let mut ct = Conntrack::default();
    let k = Conn { c: C, s: S };
    let syn_bytes = ip(C, S, 6, &tcp(40000, 80, 1000, 0, SYN, 65535, &[], 0));
    let syn = parse(&syn_bytes);
    let id = ct.commit(secs(0), 1, &syn, mark(9)).unwrap();
    let before = ct.get(id).unwrap();
    // Destination unreachable from a router, and time exceeded, back to the client.
    for (t, code) in [(3, 1), (11, 0), (3, 4)] {
        let err = parse(&ip(ROUTER, C, 1, &icmp_error(t, code, &syn_bytes)));
        let v = ct.process(secs(1), 1, &err);
        assert_eq!(
            (v.state, v.entry, v.dir, v.mark),
            (CtState::Related, Some(id), Dir::Reply, mark(9)),
            "type {t}"
        );
        assert_eq!(
            ct.commit(secs(1), 1, &err, mark(1)),
            Err(CommitError::NotNew(CtState::Related))
        );
    }
    assert_eq!(
        ct.get(id).unwrap(),
        before,
        "errors do not refresh or change the entry"
    );
    // An error about a packet of the reply direction goes to the server: Original.
    ct.process(secs(1), 1, &k.r(9000, 1001, SYN | ACK, 0));
    let synack = ip(
        S,
        C,
        6,
        &tcp(80, 40000, 9000, 1001, SYN | ACK, 65535, &[], 0),
    );
    let err = parse(&ip(ROUTER, S, 1, &icmp_error(3, 3, &synack)));
    assert_eq!(ct.process(secs(2), 1, &err).dir, Dir::Original);
    // Other zone, other connection, or sent to a host that is not the quoted sender: unrelated.
    let err = parse(&ip(ROUTER, C, 1, &icmp_error(3, 1, &syn_bytes)));
    assert_eq!(
        ct.process(secs(2), 2, &err).reason,
        Some(InvalidReason::IcmpUnrelated)
    );
    let other = ip(C, S, 6, &tcp(40001, 80, 1000, 0, SYN, 65535, &[], 0));
    let err = parse(&ip(ROUTER, C, 1, &icmp_error(3, 1, &other)));
    assert_eq!(
        ct.process(secs(2), 1, &err).reason,
        Some(InvalidReason::IcmpUnrelated)
    );
    let err = parse(&ip(ROUTER, S, 1, &icmp_error(3, 1, &syn_bytes)));
    assert_eq!(
        ct.process(secs(2), 1, &err).reason,
        Some(InvalidReason::IcmpUnrelated)
    );
    assert_eq!(ct.counters().related, 4);
    assert_eq!(ct.counters().invalid_of(InvalidReason::IcmpUnrelated), 3);
}

#[test]
fn icmpv6_errors_and_errors_about_echo_are_related() {
    let mut ct = Conntrack::default();
    let router6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe));
    let q = ip(C6, S6, 17, &udp(7000, 53, 10));
    let id = ct
        .commit(secs(0), 0, &parse(&q), CtMark::default())
        .unwrap();
    for t in [1u8, 2, 3, 4] {
        let err = parse(&ip(router6, C6, 58, &icmp_error(t, 0, &q)));
        let v = ct.process(secs(1), 0, &err);
        assert_eq!(
            (v.state, v.entry),
            (CtState::Related, Some(id)),
            "ICMPv6 type {t}"
        );
    }
    let ping = ip(C, S, 1, &echo(false, true, 5));
    let pid = ct
        .commit(secs(0), 0, &parse(&ping), CtMark::default())
        .unwrap();
    let err = parse(&ip(ROUTER, C, 1, &icmp_error(11, 0, &ping)));
    assert_eq!(ct.process(secs(1), 0, &err).entry, Some(pid));
    // Neighbour solicitation is not trackable.
    let ns = parse(&ip(C6, S6, 58, &[135, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        ct.process(secs(1), 0, &ns).reason,
        Some(InvalidReason::Untrackable)
    );
}

#[test]
fn table_limit_refuses_new_connections_with_a_counter() {
    let cfg = CtConfig {
        limits: Limits {
            max_entries: 3,
            zone_default: None,
        },
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg);
    let q = |port: u16| parse(&ip(C, S, 17, &udp(port, 53, 0)));
    for p in 1..=3 {
        ct.commit(secs(0), 0, &q(p), CtMark::default()).unwrap();
    }
    assert_eq!(ct.process(secs(1), 0, &q(4)).state, CtState::New);
    assert_eq!(
        ct.commit(secs(1), 0, &q(4), CtMark::default()),
        Err(CommitError::TableFull(3))
    );
    assert_eq!(
        ct.commit(secs(1), 9, &q(5), CtMark::default()),
        Err(CommitError::TableFull(3))
    );
    assert_eq!((ct.len(), ct.counters().table_full), (3, 2));
    // Existing connections still work; a commit on one only sets its mark.
    assert!(ct.commit(secs(1), 0, &q(2), mark(4)).is_ok());
    assert_eq!(ct.counters().table_full, 2);
    // Once the entries expire (30 s), a commit reclaims them first and succeeds.
    assert!(ct.commit(secs(30), 0, &q(4), CtMark::default()).is_ok());
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.counters().expired, 3);
    ct.check().unwrap();
}

#[test]
fn zone_limits_are_per_zone_with_a_default_and_overrides() {
    let cfg = CtConfig {
        limits: Limits {
            max_entries: 100,
            zone_default: Some(2),
        },
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg);
    ct.set_zone_limit(5, Some(1));
    ct.set_zone_limit(6, None);
    let q = |port: u16| parse(&ip(C, S, 17, &udp(port, 53, 0)));
    let refused = |ct: &mut Conntrack, zone: u16, n: u16| {
        (1..=n)
            .filter(|&p| ct.commit(secs(0), zone, &q(p), CtMark::default()).is_err())
            .count()
    };
    assert_eq!(refused(&mut ct, 1, 4), 2);
    assert_eq!(refused(&mut ct, 5, 4), 3);
    assert_eq!(refused(&mut ct, 6, 10), 0);
    assert_eq!((ct.zone_len(1), ct.zone_len(5), ct.zone_len(6)), (2, 1, 10));
    assert_eq!(ct.counters().zone_full, 5);
    assert_eq!(
        ct.commit(secs(0), 5, &q(9), CtMark::default()),
        Err(CommitError::ZoneFull { zone: 5, limit: 1 })
    );
    assert_eq!(ct.flush_zone(6), 10);
    assert_eq!(ct.len(), 3);
    ct.check().unwrap();
}

#[test]
fn expiry_is_exact_at_lookup_and_the_sweep_reclaims() {
    let mut ct = Conntrack::default();
    let q = parse(&ip(C, S, 17, &udp(1, 53, 0)));
    let id = ct.commit(secs(0), 0, &q, CtMark::default()).unwrap();
    let dl = secs(30);
    assert_eq!(
        ct.process(dl - Duration::from_nanos(1), 0, &q).entry,
        Some(id)
    );
    // Refreshed to 30 s after that packet.
    let dl = dl - Duration::from_nanos(1) + secs(30);
    assert_eq!(ct.expire(dl - Duration::from_nanos(1)), 0);
    assert_eq!(ct.len(), 1);
    // At the deadline, without any sweep, the packet finds nothing: New again.
    let v = ct.process(dl, 0, &q);
    assert_eq!((v.state, v.entry), (CtState::New, None));
    assert!(ct.get(id).is_none(), "a stale id finds nothing");
    assert_eq!(ct.counters().expired, 1);

    // The sweep: 1000 entries with spread timeouts, swept once per second.
    let mut ct = Conntrack::default();
    for p in 0..1000u16 {
        let pk = parse(&ip(C, S, 17, &udp(p, 53, 0)));
        ct.commit(secs(p as u64 % 7), 0, &pk, CtMark::default())
            .unwrap();
    }
    let mut removed = 0;
    for t in 0..=40 {
        removed += ct.expire(secs(t));
        let alive = (0..1000u64).filter(|p| p % 7 + 30 > t).count() as u64;
        assert_eq!(ct.len() as u64, alive, "t={t}");
        ct.check().unwrap();
    }
    assert_eq!(removed, 1000);
}

#[test]
fn a_long_gap_between_sweeps_and_far_deadlines() {
    let cfg = CtConfig {
        timeouts: Timeouts {
            udp: secs(10_000),
            ..Timeouts::default()
        },
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg);
    for p in 0..100u16 {
        let pk = parse(&ip(C, S, 17, &udp(p, 53, 0)));
        ct.commit(secs(p as u64 * 100), 0, &pk, CtMark::default())
            .unwrap();
    }
    // Deadlines 10,000 .. 19,900 s: more than two turns of the wheel.
    for t in [5_000u64, 9_999, 12_345, 19_899, 19_900] {
        ct.expire(secs(t));
        let alive = (0..100u64).filter(|p| p * 100 + 10_000 > t).count();
        assert_eq!(ct.len(), alive, "t={t}");
        ct.check().unwrap();
    }
}

#[test]
fn marks_are_set_by_commit_and_reported_on_every_packet() {
    let mut ct = Conntrack::default();
    let q = parse(&ip(C, S, 17, &udp(1, 53, 0)));
    let a = parse(&ip(S, C, 17, &udp(53, 1, 0)));
    let id = ct.commit(secs(0), 0, &q, mark(1)).unwrap();
    assert_eq!(ct.process(secs(1), 0, &a).mark, mark(1));
    assert_eq!(
        ct.commit(secs(1), 0, &a, mark(2)),
        Ok(id),
        "commit on an existing connection"
    );
    assert_eq!(ct.process(secs(1), 0, &q).mark, mark(2));
    assert!(ct.set_mark(id, mark(3)));
    assert_eq!(ct.process(secs(1), 0, &a).mark, mark(3));
    assert!(ct.remove(id));
    assert!(!ct.set_mark(id, mark(4)));
    assert!(!ct.remove(id));
    assert_eq!(ct.process(secs(1), 0, &a).state, CtState::New);
    assert_eq!(ct.counters().removed, 1);
}

#[test]
fn a_syn_reopens_a_tuple_in_time_wait_or_close() {
    let k = Conn { c: C, s: S };
    let mut ct = Conntrack::default();
    let id = ct
        .commit(secs(0), 0, &k.o(1000, 0, SYN, 0), mark(1))
        .unwrap();
    ct.process(secs(0), 0, &k.r(9000, 1001, SYN | ACK, 0));
    ct.process(secs(0), 0, &k.o(1001, 9001, RST | ACK, 0));
    assert_eq!(ct.get(id).unwrap().proto, ConnProto::Tcp(TcpState::Close));
    let syn2 = k.o(777_777, 0, SYN, 0);
    let v = ct.process(secs(1), 0, &syn2);
    assert_eq!((v.state, v.entry), (CtState::New, None));
    assert!(ct.get(id).is_none());
    let id2 = ct.commit(secs(1), 0, &syn2, mark(2)).unwrap();
    assert_ne!(id, id2);
    assert_eq!(ct.counters().reopened, 1);
    // commit alone (without process first) also reopens a closed tuple.
    ct.process(secs(2), 0, &k.r(5, 777_778, RST | ACK, 0));
    let syn3 = k.o(5_000_000, 0, SYN, 0);
    let id3 = ct.commit(secs(3), 0, &syn3, mark(3)).unwrap();
    assert_ne!(id3, id2);
    assert_eq!(
        ct.get(id3).unwrap().proto,
        ConnProto::Tcp(TcpState::SynSent)
    );
    assert_eq!(ct.counters().reopened, 2);
}

#[test]
fn counters_are_exact() {
    let k = Conn { c: C, s: S };
    let mut ct = Conntrack::default();
    let syn = k.o(1, 0, SYN, 0);
    ct.process(secs(0), 0, &syn); // new
    ct.commit(secs(0), 0, &syn, CtMark::default()).unwrap();
    ct.process(secs(0), 0, &k.r(50, 2, SYN | ACK, 0)); // established
    ct.process(secs(0), 0, &k.o(2, 51, ACK, 0)); // established
    ct.process(secs(0), 0, &k.o(2, 51, 0, 0)); // tcp_flags
    ct.process(secs(0), 0, &k.o(2 + (1 << 30), 51, ACK, 0)); // tcp_window
    ct.process(secs(0), 0, &k.o(2, 0, SYN, 0)); // tcp_state
    ct.process(secs(0), 0, &tcp_pkt(C, 1, S, 2, 1, 1, ACK, 0)); // no_connection
    let mut frag = ip(C, S, 17, &udp(1, 2, 0));
    frag[7] = 8; // offset 64 bytes
    ct.process(secs(0), 0, &parse(&frag)); // fragment
    ct.malformed(); // a packet the caller could not parse
    let c = *ct.counters();
    assert_eq!((c.new, c.established, c.related), (1, 2, 0));
    use InvalidReason::*;
    let inv: Vec<_> = [
        Malformed,
        Fragment,
        TcpFlags,
        TcpState,
        TcpWindow,
        NoConnection,
        IcmpUnrelated,
        Untrackable,
    ]
    .iter()
    .map(|r| c.invalid_of(*r))
    .collect();
    assert_eq!(inv, vec![1, 1, 1, 1, 1, 1, 0, 0]);
    assert_eq!(c.committed, 1);
}

#[test]
fn port_less_packets_never_match_an_entry() {
    let mut ct = Conntrack::default();
    // An echo with id 0 has ports (0, 0), like an ICMP timestamp request's port-less tuple.
    let ping = parse(&ip(C, S, 1, &echo(false, true, 0)));
    let id = ct.commit(secs(0), 0, &ping, mark(1)).unwrap();
    let ts = parse(&ip(C, S, 1, &[13, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        ct.process(secs(1), 0, &ts).reason,
        Some(InvalidReason::Untrackable)
    );
    assert_eq!(
        ct.commit(secs(1), 0, &ts, mark(2)),
        Err(CommitError::NotNew(CtState::Invalid))
    );
    // A later fragment of a UDP flow with ports (0, 0).
    let q = parse(&ip(C, S, 17, &udp(0, 0, 0)));
    ct.commit(secs(0), 0, &q, mark(3)).unwrap();
    let mut frag = ip(C, S, 17, &udp(9, 9, 0));
    frag[7] = 8;
    let frag = parse(&frag);
    assert_eq!(
        ct.process(secs(1), 0, &frag).reason,
        Some(InvalidReason::Fragment)
    );
    assert_eq!(
        ct.commit(secs(1), 0, &frag, mark(4)),
        Err(CommitError::NotNew(CtState::Invalid))
    );
    assert_eq!(ct.get(id).unwrap().mark, mark(1));
    assert!(ct.entries().all(|e| e.mark == mark(1) || e.mark == mark(3)));
}

#[test]
fn refused_commits_at_the_limit_sweep_at_most_once_a_second() {
    let cfg = CtConfig {
        limits: Limits {
            max_entries: 2,
            zone_default: None,
        },
        timeouts: Timeouts {
            udp: Duration::from_millis(29_500),
            ..Timeouts::default()
        },
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg);
    let q = |port: u16| parse(&ip(C, S, 17, &udp(port, 53, 0)));
    ct.commit(secs(0), 0, &q(1), CtMark::default()).unwrap();
    ct.commit(secs(0), 0, &q(2), CtMark::default()).unwrap();
    ct.expire(secs(29));
    // Both are due at 29.5 s. A refused commit does not sweep again within second 29 (so a
    // flood of refused SYNs costs no rescans); the slots come back with second 30's sweep.
    for p in 3..10u16 {
        let now = secs(29) + Duration::from_millis(600 + p as u64);
        assert!(ct.commit(now, 0, &q(p), CtMark::default()).is_err());
    }
    assert_eq!(ct.counters().table_full, 7);
    // A lookup of an expired entry removes it at once.
    let now = secs(29) + Duration::from_millis(900);
    assert_eq!(ct.process(now, 0, &q(1)).entry, None);
    assert_eq!((ct.len(), ct.counters().expired), (1, 1));
    assert!(ct.commit(secs(30), 0, &q(20), CtMark::default()).is_ok());
    // Full again: in second 30 the sweep runs and reclaims the other one.
    assert!(ct.commit(secs(30), 0, &q(21), CtMark::default()).is_ok());
    assert_eq!((ct.len(), ct.counters().expired), (2, 2));
    ct.check().unwrap();
}
