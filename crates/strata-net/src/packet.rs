//! Packet parsing into a [`FlowKey`], and building test/trace packets from a key.
//!
//! Hand-written, bounds-checked parsing: every read goes through `slice::get`, so no input can
//! panic, and nothing is allocated per packet (the key is a stack value and [`Layout`] records
//! offsets). The parser is strict where a later rewrite would trust a header (IPv4 IHL/total
//! length, TCP data offset, ARP sizes): a malformed header is an error and the packet is dropped
//! and counted, rather than matched on half-parsed fields.

use crate::key::{ethertype, ipproto, mac_from_bytes, Field, FlowKey, PortNo, FRAG_ANY};
use crate::key::{FRAG_LATER, VLAN_PRESENT};

/// Length of an Ethernet II header without tags.
pub const ETH_HLEN: usize = 14;
/// Length of an 802.1Q tag.
pub const VLAN_HLEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// Length of a UDP header.
pub const UDP_HLEN: usize = 8;
/// Minimum TCP header length.
pub const TCP_HLEN: usize = 20;
/// Length of an Ethernet/IPv4 ARP packet body.
pub const ARP_LEN: usize = 28;

/// Which protocol layer a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Ethernet header.
    Ethernet,
    /// 802.1Q tag.
    Vlan,
    /// ARP body.
    Arp,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header.
    Ipv6,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP / ICMPv6 header.
    Icmp,
}

/// Why a frame could not be parsed. The frame is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame ended inside a header.
    #[error("truncated {layer:?} header: need {needed} bytes at offset {offset}, frame has {len}")]
    Truncated {
        /// The header being read.
        layer: Layer,
        /// Offset of the header.
        offset: usize,
        /// Bytes needed from `offset`.
        needed: usize,
        /// Frame length.
        len: usize,
    },
    /// A header field has an impossible value.
    #[error("malformed {layer:?} header: {reason}")]
    Malformed {
        /// The header.
        layer: Layer,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Byte offsets of the headers found, used to rewrite the frame after actions change the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// True if the frame carried an 802.1Q/802.1ad tag (at offset 12).
    pub vlan: bool,
    /// TPID of that tag.
    pub tpid: u16,
    /// Offset of the L3 header (after the EtherType).
    pub l3: u16,
    /// Offset of the L4 header, if one was parsed (TCP, UDP, ICMP, ICMPv6 in a first fragment).
    pub l4: Option<u16>,
    /// End of the L3 packet (IP total length), excluding Ethernet padding.
    pub l3_end: u16,
}

#[inline]
fn rd16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

#[inline]
fn rd32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn rd48(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off + 6)?;
    Some(mac_from_bytes([s[0], s[1], s[2], s[3], s[4], s[5]]))
}

#[inline]
fn rd64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

#[inline]
fn need(b: &[u8], layer: Layer, offset: usize, needed: usize) -> Result<(), ParseError> {
    if offset.checked_add(needed).is_some_and(|e| e <= b.len()) {
        Ok(())
    } else {
        Err(ParseError::Truncated {
            layer,
            offset,
            needed,
            len: b.len(),
        })
    }
}

/// Parses an Ethernet frame received on `in_port` into a flow key.
///
/// Fields not present in the packet are zero. Frames longer than 65535 bytes are refused
/// (offsets are `u16`, and no frame a TAP or VXLAN port delivers is longer).
pub fn parse_frame(frame: &[u8], in_port: PortNo) -> Result<(FlowKey, Layout), ParseError> {
    let mut k = FlowKey::ZERO;
    let mut lay = Layout::default();
    if frame.len() > u16::MAX as usize {
        return Err(ParseError::Malformed {
            layer: Layer::Ethernet,
            reason: "frame longer than 65535 bytes",
        });
    }
    k.set(Field::InPort, in_port as u64);
    need(frame, Layer::Ethernet, 0, ETH_HLEN)?;
    let b = frame;
    k.set(Field::EthDst, rd48(b, 0).unwrap_or(0));
    k.set(Field::EthSrc, rd48(b, 6).unwrap_or(0));
    let mut off = 12;
    let mut et = rd16(b, off).unwrap_or(0);
    if et == ethertype::VLAN || et == ethertype::QINQ {
        need(b, Layer::Vlan, off, VLAN_HLEN + 2)?;
        let tci = rd16(b, off + 2).unwrap_or(0);
        // Bit 12 (DEI) is replaced by the "present" bit, as OpenFlow does.
        k.set(
            Field::VlanTci,
            ((tci & !VLAN_PRESENT) | VLAN_PRESENT) as u64,
        );
        lay.vlan = true;
        lay.tpid = et;
        off += VLAN_HLEN;
        et = rd16(b, off).unwrap_or(0);
    }
    off += 2;
    if et < 0x0600 {
        et = ethertype::NONE;
    }
    k.set(Field::EthType, et as u64);
    lay.l3 = off as u16;
    lay.l3_end = b.len() as u16;
    match et {
        ethertype::IPV4 => parse_ipv4(b, off, &mut k, &mut lay)?,
        ethertype::IPV6 => parse_ipv6(b, off, &mut k, &mut lay)?,
        ethertype::ARP => parse_arp(b, off, &mut k)?,
        _ => {}
    }
    Ok((k, lay))
}

fn parse_arp(b: &[u8], off: usize, k: &mut FlowKey) -> Result<(), ParseError> {
    need(b, Layer::Arp, off, ARP_LEN)?;
    let htype = rd16(b, off).unwrap_or(0);
    let ptype = rd16(b, off + 2).unwrap_or(0);
    if htype != 1 || ptype != ethertype::IPV4 || b[off + 4] != 6 || b[off + 5] != 4 {
        return Err(ParseError::Malformed {
            layer: Layer::Arp,
            reason: "not Ethernet/IPv4 ARP",
        });
    }
    let op = rd16(b, off + 6).unwrap_or(0);
    // OVS also puts the low byte of the opcode in nw_proto; we keep a separate arp_op field.
    k.set(Field::ArpOp, op as u64);
    k.set(Field::ArpSha, rd48(b, off + 8).unwrap_or(0));
    k.set(Field::NwSrc, rd32(b, off + 14).unwrap_or(0) as u64);
    k.set(Field::ArpTha, rd48(b, off + 18).unwrap_or(0));
    k.set(Field::NwDst, rd32(b, off + 24).unwrap_or(0) as u64);
    Ok(())
}

fn parse_ipv4(b: &[u8], off: usize, k: &mut FlowKey, lay: &mut Layout) -> Result<(), ParseError> {
    need(b, Layer::Ipv4, off, IPV4_HLEN)?;
    let vihl = b[off];
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed {
            layer: Layer::Ipv4,
            reason: "version is not 4",
        });
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Err(ParseError::Malformed {
            layer: Layer::Ipv4,
            reason: "IHL below 5",
        });
    }
    let tot = rd16(b, off + 2).unwrap_or(0) as usize;
    if tot < ihl {
        return Err(ParseError::Malformed {
            layer: Layer::Ipv4,
            reason: "total length below header length",
        });
    }
    need(b, Layer::Ipv4, off, tot)?;
    lay.l3_end = (off + tot) as u16;
    k.set(Field::NwTos, b[off + 1] as u64);
    let frag = rd16(b, off + 6).unwrap_or(0);
    let more = frag & 0x2000 != 0;
    let frag_off = frag & 0x1fff;
    let mut fl = 0u8;
    if more || frag_off != 0 {
        fl |= FRAG_ANY;
    }
    if frag_off != 0 {
        fl |= FRAG_LATER;
    }
    k.set(Field::NwFrag, fl as u64);
    k.set(Field::NwTtl, b[off + 8] as u64);
    let proto = b[off + 9];
    k.set(Field::NwProto, proto as u64);
    k.set(Field::NwSrc, rd32(b, off + 12).unwrap_or(0) as u64);
    k.set(Field::NwDst, rd32(b, off + 16).unwrap_or(0) as u64);
    if frag_off == 0 {
        // Only the first fragment carries the L4 header; later fragments must not be read as one.
        let end = off + tot;
        parse_l4(&b[..end], off + ihl, proto, k, lay)?;
    }
    Ok(())
}

fn parse_ipv6(b: &[u8], off: usize, k: &mut FlowKey, lay: &mut Layout) -> Result<(), ParseError> {
    need(b, Layer::Ipv6, off, IPV6_HLEN)?;
    let vtc = rd32(b, off).unwrap_or(0);
    if vtc >> 28 != 6 {
        return Err(ParseError::Malformed {
            layer: Layer::Ipv6,
            reason: "version is not 6",
        });
    }
    let plen = rd16(b, off + 4).unwrap_or(0) as usize;
    need(b, Layer::Ipv6, off, IPV6_HLEN + plen)?;
    let end = off + IPV6_HLEN + plen;
    lay.l3_end = end as u16;
    k.set(Field::NwTos, ((vtc >> 20) & 0xff) as u64);
    let nh = b[off + 6];
    k.set(Field::NwProto, nh as u64);
    k.set(Field::NwTtl, b[off + 7] as u64);
    k.set(Field::Ipv6SrcHi, rd64(b, off + 8).unwrap_or(0));
    k.set(Field::Ipv6SrcLo, rd64(b, off + 16).unwrap_or(0));
    k.set(Field::Ipv6DstHi, rd64(b, off + 24).unwrap_or(0));
    k.set(Field::Ipv6DstLo, rd64(b, off + 32).unwrap_or(0));
    // Extension headers are not walked: a packet whose next header is not TCP/UDP/ICMPv6 is
    // classified on its L3 fields only (nw_proto holds the extension header type).
    parse_l4(&b[..end], off + IPV6_HLEN, nh, k, lay)
}

fn parse_l4(
    b: &[u8],
    off: usize,
    proto: u8,
    k: &mut FlowKey,
    lay: &mut Layout,
) -> Result<(), ParseError> {
    match proto {
        ipproto::TCP => {
            need(b, Layer::Tcp, off, TCP_HLEN)?;
            let doff = ((b[off + 12] >> 4) as usize) * 4;
            if doff < TCP_HLEN {
                return Err(ParseError::Malformed {
                    layer: Layer::Tcp,
                    reason: "data offset below 5",
                });
            }
            need(b, Layer::Tcp, off, doff)?;
        }
        ipproto::UDP => need(b, Layer::Udp, off, UDP_HLEN)?,
        ipproto::ICMP | ipproto::ICMPV6 => {
            need(b, Layer::Icmp, off, 4)?;
            k.set(Field::TpSrc, b[off] as u64);
            k.set(Field::TpDst, b[off + 1] as u64);
            lay.l4 = Some(off as u16);
            return Ok(());
        }
        _ => return Ok(()),
    }
    k.set(Field::TpSrc, rd16(b, off).unwrap_or(0) as u64);
    k.set(Field::TpDst, rd16(b, off + 2).unwrap_or(0) as u64);
    lay.l4 = Some(off as u16);
    Ok(())
}

/// Builds a well-formed frame for `key` with `payload_len` zero bytes of L4 payload: used by
/// `trace` (so traced packets go through the same ingress code as real ones) and by tests.
///
/// IPv4 packets get a valid header checksum, TCP/UDP/ICMP a valid checksum; fragment flags are
/// honoured (a later fragment carries no L4 header). Fields the key leaves zero stay zero.
pub fn build_frame(key: &FlowKey, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + payload_len);
    f.extend_from_slice(&key.eth_dst());
    f.extend_from_slice(&key.eth_src());
    if let Some(vid) = key.vlan_vid() {
        let tci = vid | ((key.vlan_pcp().unwrap_or(0) as u16) << 13);
        f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    let et = key.eth_type();
    f.extend_from_slice(&et.to_be_bytes());
    let l3 = f.len();
    match et {
        ethertype::ARP => {
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
            f.extend_from_slice(&key.arp_op().to_be_bytes());
            f.extend_from_slice(&key.arp_sha());
            f.extend_from_slice(&key.nw_src().octets());
            f.extend_from_slice(&key.arp_tha());
            f.extend_from_slice(&key.nw_dst().octets());
        }
        ethertype::IPV4 => {
            let later = key.nw_frag() & FRAG_LATER != 0;
            let l4 = if later { Vec::new() } else { build_l4(key) };
            let tot = IPV4_HLEN + l4.len() + payload_len;
            let frag: u16 = match (key.nw_frag() & FRAG_ANY != 0, later) {
                (_, true) => 0x2000 | 185, // MF + an arbitrary non-zero offset
                (true, false) => 0x2000,
                _ => 0x4000, // DF
            };
            f.push(0x45);
            f.push(key.nw_tos());
            f.extend_from_slice(&(tot as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34]);
            f.extend_from_slice(&frag.to_be_bytes());
            f.push(if key.nw_ttl() == 0 { 64 } else { key.nw_ttl() });
            f.push(key.nw_proto());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&key.nw_src().octets());
            f.extend_from_slice(&key.nw_dst().octets());
            let c = crate::csum::ipv4_header_checksum(&f[l3..l3 + IPV4_HLEN]);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&l4);
            f.resize(f.len() + payload_len, 0);
            if !later {
                crate::csum::fill_l4_checksum(&mut f, l3, l3 + IPV4_HLEN);
            }
        }
        ethertype::IPV6 => {
            let l4 = build_l4(key);
            let plen = l4.len() + payload_len;
            let vtc: u32 = (6 << 28) | ((key.nw_tos() as u32) << 20);
            f.extend_from_slice(&vtc.to_be_bytes());
            f.extend_from_slice(&(plen as u16).to_be_bytes());
            f.push(key.nw_proto());
            f.push(if key.nw_ttl() == 0 { 64 } else { key.nw_ttl() });
            f.extend_from_slice(&key.ipv6_src().octets());
            f.extend_from_slice(&key.ipv6_dst().octets());
            f.extend_from_slice(&l4);
            f.resize(f.len() + payload_len, 0);
            crate::csum::fill_l4_checksum(&mut f, l3, l3 + IPV6_HLEN);
        }
        _ => f.resize(f.len() + payload_len.max(46), 0),
    }
    f
}

fn build_l4(key: &FlowKey) -> Vec<u8> {
    let mut l4 = Vec::new();
    match key.nw_proto() {
        ipproto::TCP => {
            l4.extend_from_slice(&key.tp_src().to_be_bytes());
            l4.extend_from_slice(&key.tp_dst().to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        }
        ipproto::UDP => {
            l4.extend_from_slice(&key.tp_src().to_be_bytes());
            l4.extend_from_slice(&key.tp_dst().to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            l4.extend_from_slice(&[key.tp_src() as u8, key.tp_dst() as u8, 0, 0, 0, 1, 0, 1]);
        }
        _ => {}
    }
    l4
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tcp_key() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set(Field::InPort, 3);
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0x0200_0000_0002);
        k.set(Field::EthType, ethertype::IPV4 as u64);
        k.set(Field::NwProto, ipproto::TCP as u64);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, u32::from(Ipv4Addr::new(10, 0, 0, 1)) as u64);
        k.set(Field::NwDst, u32::from(Ipv4Addr::new(10, 0, 0, 2)) as u64);
        k.set(Field::TpSrc, 1234);
        k.set(Field::TpDst, 80);
        k
    }

    #[test]
    fn tcp_roundtrip() {
        let k = tcp_key();
        let f = build_frame(&k, 10);
        let (p, lay) = parse_frame(&f, 3).unwrap();
        assert_eq!(p, k);
        assert_eq!(lay.l3, 14);
        assert_eq!(lay.l4, Some(34));
    }

    #[test]
    fn later_fragment_has_no_ports() {
        let mut k = tcp_key();
        k.set(Field::NwFrag, (FRAG_ANY | FRAG_LATER) as u64);
        let f = build_frame(&k, 30);
        let (p, lay) = parse_frame(&f, 3).unwrap();
        assert_eq!(p.tp_src(), 0);
        assert_eq!(p.tp_dst(), 0);
        assert_eq!(lay.l4, None);
        assert_eq!(p.nw_frag(), FRAG_ANY | FRAG_LATER);
    }

    #[test]
    fn truncated_frames_are_errors() {
        let f = build_frame(&tcp_key(), 0);
        for n in 0..f.len() {
            assert!(parse_frame(&f[..n], 1).is_err(), "len {n}");
        }
    }

    #[test]
    fn vlan_tag_is_parsed() {
        let mut k = tcp_key();
        k.set(Field::VlanTci, (VLAN_PRESENT | 10 | (3 << 13)) as u64);
        let f = build_frame(&k, 0);
        let (p, lay) = parse_frame(&f, 3).unwrap();
        assert_eq!(p.vlan_vid(), Some(10));
        assert_eq!(p.vlan_pcp(), Some(3));
        assert!(lay.vlan);
        assert_eq!(p, k);
    }
}
