//! IP and transport headers as connection tracking reads them: the 5-tuple, the TCP fields the
//! window tracker needs (sequence, acknowledgement, window, flags, the SYN options that set
//! window scaling), the ICMP echo id, and the embedded header of an ICMP error.
//!
//! [`crate::packet`] parses a frame into a flow key and stops at the first 4 bytes of L4; this
//! file reads further, from the L3 header on, into a [`CtPacket`]. It is hand-written in the same
//! way: every read is bounds-checked (`slice::get` or an explicit length check before it), nothing
//! is allocated, and a malformed header is a typed [`L4Error`], never a panic. The
//! `net_l4` fuzz target runs it on arbitrary bytes.
//!
//! Rules, where a choice had to be made:
//! - IPv4: version 4, IHL >= 5, total length between IHL and the bytes present (Ethernet padding
//!   after it is ignored). A later fragment (offset != 0) has no L4 header: [`L4::Fragment`].
//! - IPv6: version 6, payload length within the bytes present. Hop-by-hop, routing, destination
//!   options, fragment and AH headers are walked (at most [`MAX_IPV6_EXT`] of them); a
//!   non-first fragment is [`L4::Fragment`].
//! - TCP: data offset >= 5 and within the segment. Options: MSS, window scale (clamped to 14 as
//!   RFC 7323 says), SACK-permitted; a malformed option list ends option parsing (the segment
//!   is still valid, as for a receiving host).
//! - ICMP errors (v4 types 3, 4, 5, 11, 12; v6 types 1 to 4) carry the IP header of the packet
//!   that caused them plus at least 8 bytes of its L4 header (RFC 792, RFC 4443): enough for
//!   ports, or for the echo id. The embedded packet may be truncated, so its length fields are
//!   not checked against what is present; its header itself must be complete.
//! - Checksums are not verified here (the port layer or the receiving host does that).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::key::ipproto;

/// How many IPv6 extension headers are walked before giving up (the packet is then refused).
pub const MAX_IPV6_EXT: usize = 8;

/// TCP flag bits (low byte of the flags field).
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer significant.
    pub const URG: u8 = 0x20;
}

/// The connection 5-tuple of a packet, as sent (source first).
///
/// For ICMP echo, both ports hold the echo identifier, so that reversing the tuple (swap
/// addresses and ports) gives the tuple of the reply. For protocols without ports, both are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (echo id for ICMP).
    pub sport: u16,
    /// Destination port (echo id for ICMP).
    pub dport: u16,
    /// IP protocol (the last next-header for IPv6).
    pub proto: u8,
}

impl Tuple {
    /// The tuple of a packet going the other way.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// The TCP fields connection tracking uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSeg {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful only with ACK).
    pub ack: u32,
    /// Flags (see [`tcp_flags`]).
    pub flags: u8,
    /// Window field as sent (unscaled).
    pub win: u16,
    /// Window scale option (SYN segments only), already clamped to 14.
    pub wscale: Option<u8>,
    /// MSS option, if present.
    pub mss: Option<u16>,
    /// SACK-permitted option present.
    pub sack_perm: bool,
    /// Payload bytes (after the TCP header, up to the IP end).
    pub payload_len: u32,
}

impl TcpSeg {
    /// True if every bit of `f` is set.
    #[inline]
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// What follows the IP header, as far as conntrack cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// A TCP segment.
    Tcp(TcpSeg),
    /// A UDP datagram.
    Udp,
    /// ICMP or ICMPv6 echo; `request` is false for a reply.
    Echo {
        /// Echo request (true) or reply (false).
        request: bool,
    },
    /// An ICMP or ICMPv6 error quoting a packet: `inner` is that packet's tuple, as it was sent.
    IcmpError {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// The tuple of the quoted packet (its source is the sender of the original packet).
        inner: Tuple,
    },
    /// Another ICMP or ICMPv6 message (neighbour discovery, router advertisement, ...):
    /// nothing conntrack can pair.
    IcmpOther {
        /// ICMP type.
        icmp_type: u8,
    },
    /// A later IP fragment: no L4 header to read.
    Fragment,
    /// Another IP protocol (tracked by addresses and protocol only).
    Other,
}

/// An IP packet as conntrack sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtPacket {
    /// Addresses, ports and protocol.
    pub tuple: Tuple,
    /// The transport header.
    pub l4: L4,
    /// Length of the IP packet (header included), for byte counters.
    pub ip_len: u16,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum L4Error {
    /// The packet ended inside a header.
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// A header field has an impossible value.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl L4Error {
    /// Stable code for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            L4Error::Truncated(_) => "truncated",
            L4Error::Malformed(_) => "malformed",
        }
    }
}

#[inline]
fn rd16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

#[inline]
fn rd32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn v4(b: &[u8], off: usize) -> Option<IpAddr> {
    let s = b.get(off..off + 4)?;
    Some(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])))
}

fn v6(b: &[u8], off: usize) -> Option<IpAddr> {
    let s = b.get(off..off + 16)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(s);
    Some(IpAddr::V6(Ipv6Addr::from(a)))
}

/// The IP header, read: addresses, protocol, where L4 starts, and whether L4 is present.
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: usize,
    later_fragment: bool,
    end: usize,
}

/// Reads an IPv4 or IPv6 header at the start of `b`. With `strict_len`, the length field must
/// fit in `b` (an outer packet); without, it may exceed it (a quoted packet in an ICMP error).
fn parse_ip_header(b: &[u8], strict_len: bool) -> Result<Ip, L4Error> {
    let first = *b.first().ok_or(L4Error::Truncated("IP"))?;
    match first >> 4 {
        4 => {
            if b.len() < 20 {
                return Err(L4Error::Truncated("IPv4"));
            }
            let ihl = ((first & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(L4Error::Malformed("IPv4 IHL below 5"));
            }
            if b.len() < ihl {
                return Err(L4Error::Truncated("IPv4 options"));
            }
            let tot = rd16(b, 2).unwrap_or(0) as usize;
            if tot < ihl {
                return Err(L4Error::Malformed("IPv4 total length below header length"));
            }
            if strict_len && tot > b.len() {
                return Err(L4Error::Truncated("IPv4 payload"));
            }
            let frag = rd16(b, 6).unwrap_or(0);
            Ok(Ip {
                src: v4(b, 12).ok_or(L4Error::Truncated("IPv4"))?,
                dst: v4(b, 16).ok_or(L4Error::Truncated("IPv4"))?,
                proto: b[9],
                l4: ihl,
                later_fragment: frag & 0x1fff != 0,
                end: tot.min(b.len()),
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(L4Error::Truncated("IPv6"));
            }
            let plen = rd16(b, 4).unwrap_or(0) as usize;
            if strict_len && 40 + plen > b.len() {
                return Err(L4Error::Truncated("IPv6 payload"));
            }
            let end = (40 + plen).min(b.len());
            let mut nh = b[6];
            let mut off = 40;
            let mut later_fragment = false;
            let mut walked = 0;
            loop {
                match nh {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    0 | 43 | 60 => {
                        let len = (*b.get(off + 1).ok_or(L4Error::Truncated("IPv6 ext"))? as usize
                            + 1)
                            * 8;
                        nh = b[off];
                        off += len;
                    }
                    // Fragment header: 8 bytes; offset in bits 3.. of bytes 2-3.
                    44 => {
                        let fo = rd16(b, off + 2).ok_or(L4Error::Truncated("IPv6 fragment"))?;
                        later_fragment |= fo & 0xfff8 != 0;
                        nh = b[off];
                        off += 8;
                    }
                    // Authentication header: (len + 2) * 4 bytes.
                    51 => {
                        let len = (*b.get(off + 1).ok_or(L4Error::Truncated("IPv6 AH"))? as usize
                            + 2)
                            * 4;
                        nh = b[off];
                        off += len;
                    }
                    _ => break,
                }
                walked += 1;
                if walked > MAX_IPV6_EXT {
                    return Err(L4Error::Malformed("too many IPv6 extension headers"));
                }
                if off > end {
                    return Err(L4Error::Truncated("IPv6 ext"));
                }
            }
            Ok(Ip {
                src: v6(b, 8).ok_or(L4Error::Truncated("IPv6"))?,
                dst: v6(b, 24).ok_or(L4Error::Truncated("IPv6"))?,
                proto: nh,
                l4: off,
                later_fragment,
                end,
            })
        }
        _ => Err(L4Error::Malformed("IP version is neither 4 nor 6")),
    }
}

fn is_icmp_error(proto: u8, t: u8) -> bool {
    match proto {
        ipproto::ICMP => matches!(t, 3 | 4 | 5 | 11 | 12),
        _ => (1..=4).contains(&t),
    }
}

fn echo_kind(proto: u8, t: u8) -> Option<bool> {
    match (proto, t) {
        (ipproto::ICMP, 8) | (ipproto::ICMPV6, 128) => Some(true),
        (ipproto::ICMP, 0) | (ipproto::ICMPV6, 129) => Some(false),
        _ => None,
    }
}

fn parse_tcp_options(opts: &[u8], seg: &mut TcpSeg) {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    return;
                }
                match (kind, len) {
                    (2, 4) => seg.mss = rd16(opts, i + 2),
                    (3, 3) => seg.wscale = Some(opts[i + 2].min(14)),
                    (4, 2) => seg.sack_perm = true,
                    _ => {}
                }
                i += len;
            }
        }
    }
}

fn parse_tcp(b: &[u8]) -> Result<TcpSeg, L4Error> {
    if b.len() < 20 {
        return Err(L4Error::Truncated("TCP"));
    }
    let doff = ((b[12] >> 4) as usize) * 4;
    if doff < 20 {
        return Err(L4Error::Malformed("TCP data offset below 5"));
    }
    if doff > b.len() {
        return Err(L4Error::Truncated("TCP options"));
    }
    let mut seg = TcpSeg {
        seq: rd32(b, 4).unwrap_or(0),
        ack: rd32(b, 8).unwrap_or(0),
        flags: b[13],
        win: rd16(b, 14).unwrap_or(0),
        payload_len: (b.len() - doff) as u32,
        ..TcpSeg::default()
    };
    if seg.has(tcp_flags::SYN) {
        parse_tcp_options(&b[20..doff], &mut seg);
    }
    Ok(seg)
}

/// The tuple of the packet quoted in an ICMP error (`b` starts at its IP header).
fn parse_quoted(b: &[u8], outer_proto: u8) -> Result<Tuple, L4Error> {
    let ip = parse_ip_header(b, false)?;
    let v6 = matches!(ip.src, IpAddr::V6(_));
    if v6 != (outer_proto == ipproto::ICMPV6) {
        return Err(L4Error::Malformed("ICMP error quotes the other IP version"));
    }
    if ip.later_fragment {
        return Err(L4Error::Malformed("ICMP error quotes a later fragment"));
    }
    let l4 = b.get(ip.l4..).unwrap_or(&[]);
    let (sport, dport) = match ip.proto {
        ipproto::TCP | ipproto::UDP => {
            if l4.len() < 8 {
                return Err(L4Error::Truncated("quoted L4"));
            }
            (rd16(l4, 0).unwrap_or(0), rd16(l4, 2).unwrap_or(0))
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            if l4.len() < 8 {
                return Err(L4Error::Truncated("quoted ICMP"));
            }
            if echo_kind(ip.proto, l4[0]).is_none() {
                return Err(L4Error::Malformed(
                    "ICMP error quotes a non-echo ICMP message",
                ));
            }
            let id = rd16(l4, 4).unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    };
    Ok(Tuple {
        src: ip.src,
        dst: ip.dst,
        sport,
        dport,
        proto: ip.proto,
    })
}

/// Parses an IP packet (`b` starts at the IPv4 or IPv6 header; bytes after the IP length, such
/// as Ethernet padding, are ignored).
pub fn parse_ip(b: &[u8]) -> Result<CtPacket, L4Error> {
    let ip = parse_ip_header(b, true)?;
    let ip_len = ip.end.min(u16::MAX as usize) as u16;
    let mut tuple = Tuple {
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        proto: ip.proto,
    };
    if ip.later_fragment {
        return Ok(CtPacket {
            tuple,
            l4: L4::Fragment,
            ip_len,
        });
    }
    let seg = b.get(ip.l4..ip.end).ok_or(L4Error::Truncated("L4"))?;
    let l4 = match ip.proto {
        ipproto::TCP => {
            let t = parse_tcp(seg)?;
            tuple.sport = rd16(seg, 0).unwrap_or(0);
            tuple.dport = rd16(seg, 2).unwrap_or(0);
            L4::Tcp(t)
        }
        ipproto::UDP => {
            if seg.len() < 8 {
                return Err(L4Error::Truncated("UDP"));
            }
            tuple.sport = rd16(seg, 0).unwrap_or(0);
            tuple.dport = rd16(seg, 2).unwrap_or(0);
            L4::Udp
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let v6 = matches!(ip.src, IpAddr::V6(_));
            if v6 != (ip.proto == ipproto::ICMPV6) {
                // ICMPv4 over IPv6 or ICMPv6 over IPv4: nothing to pair.
                return Ok(CtPacket {
                    tuple,
                    l4: L4::Other,
                    ip_len,
                });
            }
            if seg.len() < 8 {
                return Err(L4Error::Truncated("ICMP"));
            }
            let (t, code) = (seg[0], seg[1]);
            if let Some(request) = echo_kind(ip.proto, t) {
                let id = rd16(seg, 4).unwrap_or(0);
                tuple.sport = id;
                tuple.dport = id;
                L4::Echo { request }
            } else if is_icmp_error(ip.proto, t) {
                L4::IcmpError {
                    icmp_type: t,
                    code,
                    inner: parse_quoted(&seg[8..], ip.proto)?,
                }
            } else {
                L4::IcmpOther { icmp_type: t }
            }
        }
        _ => L4::Other,
    };
    Ok(CtPacket { tuple, l4, ip_len })
}

/// Parses the IP packet of a frame that [`crate::packet::parse_frame`] already parsed, using
/// its layout (the L3 offset and end). Non-IP frames are an error.
pub fn parse_frame_ip(frame: &[u8], lay: &crate::packet::Layout) -> Result<CtPacket, L4Error> {
    let ip = frame
        .get(lay.l3 as usize..lay.l3_end as usize)
        .ok_or(L4Error::Truncated("IP"))?;
    parse_ip(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let tot = 20 + l4.len();
        let mut p = vec![
            0x45,
            0,
            (tot >> 8) as u8,
            tot as u8,
            0,
            0,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn tcp_syn_options_are_read() {
        let mut t = vec![
            0x9c, 0x40, 0, 80, 0, 0, 0, 7, 0, 0, 0, 0, 0x80, 0x02, 0xff, 0xff,
        ];
        t.extend_from_slice(&[0, 0, 0, 0]);
        // MSS 1460, NOP, wscale 15 (clamped), SACK-permitted, EOL, padding.
        t.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, 15, 4, 2, 0, 0]);
        let p = parse_ip(&ipv4(6, &t)).unwrap();
        let L4::Tcp(s) = p.l4 else { panic!() };
        assert_eq!((p.tuple.sport, p.tuple.dport), (40000, 80));
        assert_eq!((s.seq, s.flags, s.win), (7, tcp_flags::SYN, 0xffff));
        assert_eq!((s.mss, s.wscale, s.sack_perm), (Some(1460), Some(14), true));
        assert_eq!(s.payload_len, 0);
    }

    #[test]
    fn malformed_tcp_options_end_parsing_but_keep_the_segment() {
        let mut t = vec![0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x60, 0x02, 0, 1];
        t.extend_from_slice(&[0, 0, 0, 0, 3, 9, 0, 0]); // wscale with length 9
        let p = parse_ip(&ipv4(6, &t)).unwrap();
        let L4::Tcp(s) = p.l4 else { panic!() };
        assert_eq!(s.wscale, None);
    }

    #[test]
    fn truncation_is_an_error_at_every_length() {
        let t = [
            0u8, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x10, 0, 1, 0, 0, 0, 0,
        ];
        let p = ipv4(6, &t);
        assert!(parse_ip(&p).is_ok());
        for n in 0..p.len() {
            assert!(parse_ip(&p[..n]).is_err(), "len {n}");
        }
    }

    #[test]
    fn icmp_error_quotes_udp_tuple() {
        let quoted = ipv4(17, &[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        let p = parse_ip(&ipv4(1, &icmp)).unwrap();
        let L4::IcmpError {
            icmp_type, inner, ..
        } = p.l4
        else {
            panic!("{:?}", p.l4)
        };
        assert_eq!(icmp_type, 3);
        assert_eq!((inner.sport, inner.dport, inner.proto), (5000, 53, 17));
    }

    #[test]
    fn later_fragment_has_no_l4() {
        let mut p = ipv4(6, &[0; 20]);
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(parse_ip(&p).unwrap().l4, L4::Fragment);
    }
}
