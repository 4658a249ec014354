//! ICMP answers of a router: `icmp_echo_reply` (a key rewrite) and `icmp_error` (a new
//! packet: ICMPv4 as RFC 792 says, ICMPv6 as RFC 4443 says).
//!
//! `icmp_error(type=T,code=C,src=IP)` writes, for the IPv4 packet at hand:
//!
//! | bytes | content |
//! |---|---|
//! | 14 | Ethernet: dst = the packet's source MAC, src = its destination MAC, type 0x0800 |
//! | 20 | IPv4: TOS 0xc0, id 0, no fragment flags, TTL 64, protocol 1, src = `IP`, dst = the packet's source |
//! | 8  | ICMP: type `T`, code `C`, checksum, 4 unused bytes (zero) |
//! | ≤ 68 | the packet's IP header (options included) and the first 8 bytes of its payload |
//!
//! It never answers (RFC 1122 3.2.2, `icmp_error_refused`): an ICMP error (any ICMP type that is
//! not a query: 0, 8, 9, 10, 13..18), a non-first fragment, a packet sent to a group MAC, to
//! 255.255.255.255 or a multicast address, or one whose source is not a single host (0.0.0.0,
//! 127/8, multicast, class E).
//!
//! With an IPv6 `src` it writes the ICMPv6 error (RFC 4443): Ethernet swapped as above, IPv6
//! (hop limit 64, next header 58) from `src` to the packet's source, type, code, checksum over
//! the IPv6 pseudo header, 4 unused bytes, then as much of the packet as keeps the error within
//! the minimum IPv6 MTU (1280 bytes). It never answers (RFC 4443 2.4 (e)): an ICMPv6 error
//! (type below 128), a packet to a group MAC or a multicast address, or from `::`, `::1` or a
//! multicast source.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{mac_is_group, ReplyDrop, ReplyKind};
use crate::csum;
use crate::key::{ethertype, ipproto, Field, FlowKey, FRAG_LATER};
use crate::packet::{Layout, IPV4_HLEN, IPV6_HLEN};

/// ICMP echo reply.
pub const ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable.
pub const DEST_UNREACHABLE: u8 = 3;
/// ICMP echo request.
pub const ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// TTL given to the answers a responder makes.
pub const REPLY_TTL: u8 = 64;

/// True for the ICMP types that are queries or their answers (the ones that may be answered by
/// an error); every other type is, or may be, an error message.
fn is_query(ty: u8) -> bool {
    matches!(ty, 0 | 8 | 9 | 10 | 13..=18)
}

/// True if `a` is not a single host's address (RFC 1122 3.2.2, 3.2.1.3).
pub(crate) fn not_one_host(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240
}

/// ICMPv6 destination unreachable.
pub const V6_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;
/// The minimum IPv6 MTU, which an ICMPv6 error never exceeds.
pub const IPV6_MIN_MTU: usize = 1280;

/// Whether `icmp_error` accepts this (type, code). ICMPv4: time exceeded 0/1, unreachable
/// 0..=15 except 4 (fragmentation needed carries a next-hop MTU this action does not know).
/// ICMPv6: time exceeded 0/1, unreachable 0..=6.
pub fn error_type_ok(v6: bool, ty: u8, code: u8) -> bool {
    match (v6, ty) {
        (false, DEST_UNREACHABLE) => code <= 15 && code != 4,
        (false, TIME_EXCEEDED) => code <= 1,
        (true, V6_DEST_UNREACHABLE) => code <= 6,
        (true, V6_TIME_EXCEEDED) => code <= 1,
        _ => false,
    }
}

/// Appends to `out` the ICMPv6 error `ty`/`code` from `src` about the IPv6 packet in `frame`
/// (parsed as `k`, `lay`); untagged Ethernet, like [`error`].
pub fn error_v6(
    frame: &[u8],
    lay: &Layout,
    k: &FlowKey,
    ty: u8,
    code: u8,
    src: Ipv6Addr,
    out: &mut Vec<u8>,
) -> Result<ReplyKind, ReplyDrop> {
    if k.eth_type() != ethertype::IPV6 {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    if k.nw_proto() == ipproto::ICMPV6 && k.tp_src() < 128 {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let (osrc, odst) = (k.ipv6_src(), k.ipv6_dst());
    if mac_is_group(k.get(Field::EthDst))
        || mac_is_group(k.get(Field::EthSrc))
        || odst.is_multicast()
        || osrc.is_multicast()
        || osrc.is_unspecified()
        || osrc.is_loopback()
    {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let l3 = lay.l3 as usize;
    let end = (lay.l3_end as usize).min(frame.len());
    if l3 + IPV6_HLEN > end {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let quote = &frame[l3..end.min(l3 + IPV6_MIN_MTU - IPV6_HLEN - 8)];
    let start = out.len();
    out.extend_from_slice(&k.eth_src());
    out.extend_from_slice(&k.eth_dst());
    out.extend_from_slice(&ethertype::IPV6.to_be_bytes());
    let plen = (8 + quote.len()) as u16;
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&plen.to_be_bytes());
    out.extend_from_slice(&[ipproto::ICMPV6, REPLY_TTL]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&osrc.octets());
    out.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(quote);
    let b = &mut out[start..];
    csum::fill_l4_checksum(b, 14, 14 + IPV6_HLEN);
    Ok(ReplyKind::IcmpError)
}

/// Rewrites the key of an ICMPv4 echo request into its reply: Ethernet and IP addresses
/// swapped, type 0, TTL 64 (the switch fixes the checksums incrementally).
pub fn echo_reply(k: &mut FlowKey) -> Result<ReplyKind, ReplyDrop> {
    if k.eth_type() != ethertype::IPV4
        || k.nw_proto() != ipproto::ICMP
        || k.tp_src() != ECHO_REQUEST as u16
        || k.nw_frag() != 0
    {
        return Err(ReplyDrop::EchoRefused);
    }
    let (src, dst) = (k.nw_src(), k.nw_dst());
    if not_one_host(src) || dst.is_multicast() || dst.is_broadcast() || not_one_host(dst) {
        return Err(ReplyDrop::EchoRefused);
    }
    let (es, ed) = (k.get(Field::EthSrc), k.get(Field::EthDst));
    if mac_is_group(es) {
        return Err(ReplyDrop::EchoRefused);
    }
    k.set(Field::EthSrc, ed);
    k.set(Field::EthDst, es);
    k.set(Field::NwSrc, u32::from(dst) as u64);
    k.set(Field::NwDst, u32::from(src) as u64);
    k.set(Field::TpSrc, ECHO_REPLY as u64);
    k.set(Field::NwTtl, REPLY_TTL as u64);
    Ok(ReplyKind::Echo)
}

/// Appends to `out` the ICMP error `ty`/`code` from `src` about the IPv4 packet in `frame`
/// (parsed as `k`, `lay`). The Ethernet header is untagged: the switch adds the tag of the
/// output port.
pub fn error(
    frame: &[u8],
    lay: &Layout,
    k: &FlowKey,
    ty: u8,
    code: u8,
    src: Ipv4Addr,
    out: &mut Vec<u8>,
) -> Result<ReplyKind, ReplyDrop> {
    if k.eth_type() != ethertype::IPV4 || k.nw_frag() & FRAG_LATER != 0 {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    if k.nw_proto() == ipproto::ICMP && !is_query(k.tp_src() as u8) {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let (osrc, odst) = (k.nw_src(), k.nw_dst());
    if mac_is_group(k.get(Field::EthDst))
        || odst.is_broadcast()
        || odst.is_multicast()
        || not_one_host(osrc)
        || mac_is_group(k.get(Field::EthSrc))
    {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let l3 = lay.l3 as usize;
    let end = (lay.l3_end as usize).min(frame.len());
    let ihl = frame.get(l3).map_or(0, |v| ((v & 0x0f) as usize) * 4);
    if ihl < IPV4_HLEN || l3 + ihl > end {
        return Err(ReplyDrop::IcmpErrorRefused);
    }
    let quote = &frame[l3..(l3 + ihl + 8).min(end)];
    let start = out.len();
    out.extend_from_slice(&k.eth_src());
    out.extend_from_slice(&k.eth_dst());
    out.extend_from_slice(&ethertype::IPV4.to_be_bytes());
    let ip = out.len();
    let total = (IPV4_HLEN + 8 + quote.len()) as u16;
    out.extend_from_slice(&[0x45, 0xc0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, REPLY_TTL, ipproto::ICMP, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&osrc.octets());
    let hc = csum::ipv4_header_checksum(&out[ip..ip + IPV4_HLEN]);
    out[ip + 10..ip + 12].copy_from_slice(&hc.to_be_bytes());
    let icmp = out.len();
    out.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(quote);
    let c = csum::fold(csum::ones_sum(&out[icmp..], 0));
    let c = !c;
    out[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    debug_assert_eq!(out.len() - start, 14 + total as usize);
    Ok(ReplyKind::IcmpError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{build_frame, parse_frame};

    fn udp_key(ttl: u8) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0x0200_0000_00fe);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 17);
        k.set(Field::NwTtl, ttl as u64);
        k.set(Field::NwSrc, u32::from(Ipv4Addr::new(10, 0, 0, 5)) as u64);
        k.set(Field::NwDst, u32::from(Ipv4Addr::new(10, 1, 0, 9)) as u64);
        k.set(Field::TpSrc, 33434);
        k.set(Field::TpDst, 33435);
        k
    }

    #[test]
    fn time_exceeded_quotes_header_and_eight_bytes() {
        let k0 = udp_key(1);
        let f = build_frame(&k0, 100);
        let (k, lay) = parse_frame(&f, 1).unwrap();
        let mut out = Vec::new();
        let r = error(&f, &lay, &k, 11, 0, Ipv4Addr::new(10, 0, 0, 1), &mut out);
        assert_eq!(r, Ok(ReplyKind::IcmpError));
        assert_eq!(out.len(), 14 + 20 + 8 + 20 + 8);
        let (rk, rl) = parse_frame(&out, 1).unwrap();
        assert_eq!(rk.get(Field::EthDst), 0x0200_0000_0001);
        assert_eq!(rk.get(Field::EthSrc), 0x0200_0000_00fe);
        assert_eq!(rk.nw_src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(rk.nw_dst(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(rk.nw_ttl(), 64);
        assert_eq!((rk.tp_src(), rk.tp_dst()), (11, 0));
        let mut h = out[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        assert_eq!(
            csum::ipv4_header_checksum(&h),
            u16::from_be_bytes([out[24], out[25]])
        );
        assert!(csum::verify_l4_checksum(&out, 14, rl.l4.unwrap() as usize));
        assert_eq!(&out[42..62], &f[14..34], "the original header");
        assert_eq!(
            &out[62..70],
            &f[34..42],
            "and the first 8 bytes of its payload"
        );
    }

    #[test]
    fn never_an_error_about_an_error_a_broadcast_or_a_later_fragment() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let try_key = |k: FlowKey| {
            let f = build_frame(&k, 8);
            let (pk, lay) = parse_frame(&f, 1).unwrap();
            let mut out = Vec::new();
            let r = error(&f, &lay, &pk, 11, 0, src, &mut out);
            (r, out.is_empty())
        };
        assert_eq!(try_key(udp_key(1)).0, Ok(ReplyKind::IcmpError));
        let mut k = udp_key(1);
        k.set(Field::NwProto, 1);
        k.set(Field::TpSrc, 3);
        k.set(Field::TpDst, 1);
        assert_eq!(try_key(k), (Err(ReplyDrop::IcmpErrorRefused), true));
        k.set(Field::TpSrc, 8);
        k.set(Field::TpDst, 0);
        assert_eq!(
            try_key(k).0,
            Ok(ReplyKind::IcmpError),
            "an echo request may get one"
        );
        let mut k = udp_key(1);
        k.set(Field::EthDst, 0xffff_ffff_ffff);
        assert_eq!(try_key(k).0, Err(ReplyDrop::IcmpErrorRefused));
        let mut k = udp_key(1);
        k.set(Field::NwDst, u32::from(Ipv4Addr::new(224, 0, 0, 5)) as u64);
        assert_eq!(try_key(k).0, Err(ReplyDrop::IcmpErrorRefused));
        let mut k = udp_key(1);
        k.set(Field::NwSrc, 0);
        assert_eq!(try_key(k).0, Err(ReplyDrop::IcmpErrorRefused));
        let mut k = udp_key(1);
        k.set(Field::NwFrag, (crate::key::FRAG_ANY | FRAG_LATER) as u64);
        assert_eq!(try_key(k).0, Err(ReplyDrop::IcmpErrorRefused));
        let mut k = udp_key(1);
        k.set(Field::NwFrag, crate::key::FRAG_ANY as u64);
        assert_eq!(
            try_key(k).0,
            Ok(ReplyKind::IcmpError),
            "a first fragment may"
        );
    }

    #[test]
    fn echo_reply_swaps_and_refuses_non_requests() {
        let mut k = udp_key(5);
        k.set(Field::NwProto, 1);
        k.set(Field::TpSrc, 8);
        let mut r = k;
        assert_eq!(echo_reply(&mut r), Ok(ReplyKind::Echo));
        assert_eq!(r.nw_src(), k.nw_dst());
        assert_eq!(r.nw_dst(), k.nw_src());
        assert_eq!(r.get(Field::EthDst), k.get(Field::EthSrc));
        assert_eq!((r.tp_src(), r.nw_ttl()), (0, 64));
        let mut r = k;
        r.set(Field::TpSrc, 0);
        assert_eq!(echo_reply(&mut r), Err(ReplyDrop::EchoRefused));
        let mut r = k;
        r.set(Field::NwFrag, 1);
        assert_eq!(echo_reply(&mut r), Err(ReplyDrop::EchoRefused));
        let mut r = k;
        r.set(Field::NwDst, u32::MAX as u64);
        assert_eq!(echo_reply(&mut r), Err(ReplyDrop::EchoRefused));
    }
}
