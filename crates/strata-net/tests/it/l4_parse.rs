//! The IP/L4 reader of conntrack: no input panics, built packets parse back to their fields,
//! the frame path agrees with the L3 path, IPv6 extension headers are walked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use strata_net::conntrack::Conntrack;
use strata_net::l4::{parse_frame_ip, parse_ip, tcp_flags, L4Error, Tuple, L4};
use strata_net::packet::parse_frame;

use crate::ct_util::{echo, icmp_error, ip, tcp, udp};

fn addr_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

fn with_ethernet(p: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if p[0] >> 4 == 4 {
        &[0x08, 0x00]
    } else {
        &[0x86, 0xdd]
    });
    f.extend_from_slice(p);
    f.resize(f.len().max(60), 0); // Ethernet padding must be ignored
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..120), v6 in any::<bool>()) {
        let _ = parse_ip(&b);
        let mut b = b;
        if let Some(x) = b.first_mut() {
            *x = (*x & 0x0f) | if v6 { 0x60 } else { 0x45 };
        }
        let _ = parse_ip(&b);
    }

    /// Mutated valid packets (TCP with options, ICMP errors quoting TCP) reach deeper, and the
    /// tracker takes whatever parses.
    #[test]
    fn mutated_packets_never_panic(
        (src, dst) in addr_pair(),
        kind in 0..4u8,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let t = tcp(1, 2, 3, 4, tcp_flags::SYN, 5, &[2, 4, 5, 180, 1, 3, 3, 7], 3);
        let v6 = src.is_ipv6();
        let icmp = if v6 { 58 } else { 1 };
        let mut p = match kind {
            0 => ip(src, dst, 6, &t),
            1 => ip(src, dst, 17, &udp(1, 2, 4)),
            2 => ip(src, dst, icmp, &echo(v6, true, 1)),
            _ => ip(dst, src, icmp, &icmp_error(if v6 { 1 } else { 3 }, 0, &ip(src, dst, 6, &t))),
        };
        for (i, x) in &flips {
            let i = i.index(p.len());
            p[i] ^= *x;
        }
        let n = cut.index(p.len() + 1);
        let mut ct = Conntrack::default();
        match parse_ip(&p[..n]) {
            Ok(pkt) => { ct.process(std::time::Duration::ZERO, 0, &pkt); }
            Err(e) => prop_assert!(matches!(e.code(), "truncated" | "malformed")),
        }
    }

    #[test]
    fn built_packets_parse_back(
        (src, dst) in addr_pair(),
        sport in any::<u16>(), dport in any::<u16>(),
        seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), win in any::<u16>(),
        payload in 0..200usize,
        ws in prop::option::of(0..20u8),
    ) {
        let opts: Vec<u8> = ws.map_or(vec![], |s| vec![1, 3, 3, s]);
        let p = ip(src, dst, 6, &tcp(sport, dport, seq, ack, flags, win, &opts, payload));
        let pkt = parse_ip(&p).unwrap();
        prop_assert_eq!(pkt.tuple, Tuple { src, dst, sport, dport, proto: 6 });
        prop_assert_eq!(pkt.ip_len as usize, p.len());
        let L4::Tcp(s) = pkt.l4 else { return Err(TestCaseError::fail("not TCP")) };
        prop_assert_eq!((s.seq, s.ack, s.flags, s.win, s.payload_len as usize), (seq, ack, flags, win, payload));
        // Options are read on SYN segments only; the scale is clamped to 14.
        let want = if flags & tcp_flags::SYN != 0 { ws.map(|w| w.min(14)) } else { None };
        prop_assert_eq!(s.wscale, want);
        // The frame path gives the same answer.
        let f = with_ethernet(&p);
        let (_, lay) = parse_frame(&f, 1).unwrap();
        prop_assert_eq!(parse_frame_ip(&f, &lay).unwrap(), pkt);
    }

    #[test]
    fn icmp_errors_quote_the_inner_tuple(
        (src, dst) in addr_pair(), sport in any::<u16>(), dport in any::<u16>(), udp_inner in any::<bool>(), code in any::<u8>(),
    ) {
        let v6 = src.is_ipv6();
        let (proto, inner) = if udp_inner { (17, udp(sport, dport, 30)) } else { (6, tcp(sport, dport, 1, 2, tcp_flags::ACK, 3, &[], 100)) };
        let quoted = ip(src, dst, proto, &inner);
        let (icmp, t) = if v6 { (58, 3) } else { (1, 11) };
        let p = ip(dst, src, icmp, &icmp_error(t, code, &quoted));
        let pkt = parse_ip(&p).unwrap();
        prop_assert_eq!(pkt.l4, L4::IcmpError { icmp_type: t, code, inner: Tuple { src, dst, sport, dport, proto } });
    }
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let s = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let d = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let t = udp(1000, 53, 4);
    // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> fragment (first) -> UDP.
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ext.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]); // offset 0, M=1
    ext.extend_from_slice(&t);
    let p = ip(s, d, 0, &ext);
    let pkt = parse_ip(&p).unwrap();
    assert_eq!(
        (pkt.tuple.proto, pkt.tuple.sport, pkt.tuple.dport, pkt.l4),
        (17, 1000, 53, L4::Udp)
    );
    // A later fragment has no ports.
    let mut later = p.clone();
    let frag_at = 40 + 8 + 16 + 2;
    later[frag_at] = 0x01; // offset 32 * 8 bytes
    assert_eq!(parse_ip(&later).unwrap().l4, L4::Fragment);
    // An extension header running past the payload is truncated.
    let short = ip(s, d, 60, &[17, 200, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(parse_ip(&short), Err(L4Error::Truncated(_))));
    // Nine chained headers are refused.
    let mut chain = Vec::new();
    for _ in 0..9 {
        chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&t);
    assert!(matches!(
        parse_ip(&ip(s, d, 60, &chain)),
        Err(L4Error::Malformed(_))
    ));
}

#[test]
fn malformed_headers_are_typed_errors() {
    let s = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let d = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let mut p = ip(s, d, 6, &tcp(1, 2, 3, 4, tcp_flags::ACK, 5, &[], 0));
    p[20 + 12] = 0x40; // data offset 4
    assert_eq!(
        parse_ip(&p),
        Err(L4Error::Malformed("TCP data offset below 5"))
    );
    let mut p = ip(s, d, 17, &udp(1, 2, 0));
    p[0] = 0x44; // IHL 4
    assert!(matches!(parse_ip(&p), Err(L4Error::Malformed(_))));
    let mut p = ip(s, d, 17, &udp(1, 2, 0));
    p[3] = 200; // total length beyond the bytes
    assert!(matches!(parse_ip(&p), Err(L4Error::Truncated(_))));
    // An ICMPv4 error quoting an IPv6 packet.
    let q6 = ip(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        17,
        &udp(1, 2, 0),
    );
    assert!(parse_ip(&ip(s, d, 1, &icmp_error(3, 0, &q6))).is_err());
    assert_eq!(
        parse_ip(&[0x10; 30]),
        Err(L4Error::Malformed("IP version is neither 4 nor 6"))
    );
}
