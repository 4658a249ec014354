//! VXLAN (RFC 7348) over IPv4: the one codec of its headers (encode, decode, encapsulate,
//! decapsulate) and the mapping of a flow hash to an outer UDP source port. Pure functions: the
//! engine only *asks* for encapsulation ([`crate::Encap`]); the port layer calls these to write
//! the bytes it sends.
//!
//! Outer frame built by [`encap_ipv4`] (byte offsets from the start of the frame; a raw IP
//! socket sends bytes 14.. of it, written by [`write_ip_udp_vxlan`]):
//!
//! ```text
//!  0..6   outer destination MAC (next hop toward the remote VTEP)
//!  6..12  outer source MAC
//! 12..14  EtherType 0x0800
//! 14..34  IPv4: 0x45, TOS, total length, identification, flags (DF optional), TTL, proto 17,
//!         header checksum, local IP (26..30), remote IP (30..34)
//! 34..42  UDP: source port (hash of the inner flow, in [`SourcePorts`]), destination port
//!         (4789 by default), length, checksum 0 (allowed over IPv4; Linux's default)
//! 42..50  VXLAN: flags (0x08 = I, VNI valid) at 42, reserved 43..46, VNI 46..49, reserved 49
//! 50..    the inner Ethernet frame
//! ```
//!
//! DF is off by default, as with the Linux vxlan device (`df unset`): an inner 1500-byte frame
//! becomes a 1550-byte outer packet, and an underlay with a 1500 MTU may fragment it rather
//! than drop it. Set [`VxlanTunnel::df`] when the underlay MTU is known to be large enough.

use std::net::Ipv4Addr;

use crate::csum;
use crate::key::ipproto;
use crate::packet::{ETH_HLEN, IPV4_HLEN, UDP_HLEN};

/// IANA VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header length.
pub const VXLAN_HLEN: usize = 8;
/// The I flag: the VNI field is valid.
pub const VXLAN_FLAG_I: u8 = 0x08;
/// Bytes added in front of the inner frame by [`encap_ipv4`].
pub const VXLAN_OVERHEAD_V4: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;
/// Offset of the UDP header in the outer frame.
pub const OUTER_UDP_OFFSET: usize = ETH_HLEN + IPV4_HLEN;
/// Offset of the VXLAN header in the outer frame.
pub const OUTER_VXLAN_OFFSET: usize = OUTER_UDP_OFFSET + UDP_HLEN;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// One VXLAN tunnel endpoint pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanTunnel {
    /// Our underlay address.
    pub local_ip: Ipv4Addr,
    /// The remote VTEP.
    pub remote_ip: Ipv4Addr,
    /// Our underlay MAC.
    pub local_mac: [u8; 6],
    /// Next-hop MAC toward the remote VTEP.
    pub remote_mac: [u8; 6],
    /// UDP destination port (4789 unless configured otherwise).
    pub dst_port: u16,
    /// Set DF on the outer header.
    pub df: bool,
    /// Outer TTL.
    pub ttl: u8,
    /// A flow-keyed tunnel (only without a fixed VNI): what it receives enters with no
    /// isolation domain and `tun_id` = its VNI, so the flows alone decide where it goes. For a
    /// compiler that isolates by `tun_id` itself (the control plane's tunnels between nodes,
    /// whose ports have no domain either); a trunk tunnel's packets keep their `Vni` domain.
    pub flow_keyed: bool,
}

impl VxlanTunnel {
    /// A tunnel with defaults: port 4789, no DF, TTL 64.
    pub fn new(local_ip: Ipv4Addr, remote_ip: Ipv4Addr) -> Self {
        VxlanTunnel {
            local_ip,
            remote_ip,
            local_mac: [0x02, 0, 0, 0, 0, 1],
            remote_mac: [0x02, 0, 0, 0, 0, 2],
            dst_port: VXLAN_PORT,
            df: false,
            ttl: 64,
            flow_keyed: false,
        }
    }
}

/// Why a VXLAN packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VxlanError {
    /// Shorter than the headers.
    #[error("truncated VXLAN packet ({0} bytes)")]
    Truncated(usize),
    /// Not Ethernet/IPv4/UDP.
    #[error("outer headers are not Ethernet/IPv4/UDP")]
    NotUdp,
    /// Outer IPv4 header is malformed.
    #[error("malformed outer IPv4 header")]
    BadIpv4,
    /// A fragment: reassembly belongs to the underlay stack, not here.
    #[error("outer IPv4 packet is a fragment")]
    Fragment,
    /// UDP destination port is not the tunnel's.
    #[error("UDP destination port {0} is not the VXLAN port")]
    WrongPort(u16),
    /// UDP length field disagrees with the packet.
    #[error("bad UDP length")]
    BadUdpLength,
    /// Non-zero UDP checksum that does not verify.
    #[error("bad outer UDP checksum")]
    BadChecksum,
    /// The I flag is not set.
    #[error("VXLAN I flag not set")]
    NoVni,
    /// VNI above 24 bits, or inner frame too large to encapsulate.
    #[error("value out of range")]
    OutOfRange,
}

/// Encodes the 8-byte VXLAN header.
pub fn encode_header(vni: u32) -> [u8; VXLAN_HLEN] {
    let v = (vni & MAX_VNI).to_be_bytes();
    [VXLAN_FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Decodes a VXLAN header + inner frame (a UDP payload). Reserved bits are ignored as RFC 7348
/// requires of receivers; the I flag must be set.
pub fn decap_payload(p: &[u8]) -> Result<(u32, &[u8]), VxlanError> {
    let h = p.get(..VXLAN_HLEN).ok_or(VxlanError::Truncated(p.len()))?;
    if h[0] & VXLAN_FLAG_I == 0 {
        return Err(VxlanError::NoVni);
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    Ok((vni, &p[VXLAN_HLEN..]))
}

/// The range outer UDP source ports are taken from (RFC 7348 section 5 recommends the dynamic
/// range 49152-65535, the default). Both ends are included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePorts {
    /// Lowest port.
    pub lo: u16,
    /// Highest port (at least `lo`).
    pub hi: u16,
}

impl Default for SourcePorts {
    fn default() -> Self {
        SourcePorts {
            lo: 49152,
            hi: 65535,
        }
    }
}

impl SourcePorts {
    /// A range, or None if `lo > hi` or `lo` is 0.
    pub fn new(lo: u16, hi: u16) -> Option<Self> {
        (lo != 0 && lo <= hi).then_some(SourcePorts { lo, hi })
    }
    /// The source port of a flow: its hash mapped into the range, so every frame of a flow
    /// gets the same port (one ECMP path) and different flows spread over the range.
    pub fn pick(&self, flow_hash: u64) -> u16 {
        let h = flow_hash ^ (flow_hash >> 32) ^ (flow_hash >> 16);
        let span = (self.hi - self.lo) as u64 + 1;
        self.lo + (h % span) as u16
    }
}

/// Outer UDP source port from a hash of the inner flow in the default range (49152-65535).
pub fn source_port(flow_hash: u64) -> u16 {
    SourcePorts::default().pick(flow_hash)
}

/// True if an inner frame of `inner_len` bytes fits in one outer IPv4 packet (the total length
/// field is 16 bits).
pub fn fits_ipv4(inner_len: usize) -> bool {
    IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + inner_len <= u16::MAX as usize
}

/// Bytes of outer header in front of the inner frame when the sender writes from IPv4 on (a
/// raw IP socket: the kernel adds the Ethernet header).
pub const IP_UDP_VXLAN_LEN: usize = IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;

/// Appends the outer Ethernet/IPv4/UDP/VXLAN headers and `inner` to `out`.
pub fn encap_ipv4(
    t: &VxlanTunnel,
    vni: u32,
    src_port: u16,
    ip_id: u16,
    inner: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), VxlanError> {
    let start = out.len();
    out.resize(start + VXLAN_OVERHEAD_V4, 0);
    out.extend_from_slice(inner);
    let r = write_outer_ipv4(
        &mut out[start..start + VXLAN_OVERHEAD_V4],
        t,
        vni,
        src_port,
        ip_id,
        inner.len(),
    );
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Fills `hdr` (exactly [`VXLAN_OVERHEAD_V4`] bytes, placed in front of an inner frame of
/// `inner_len` bytes) with the outer headers. Lets the switch write the inner frame first and
/// the headers after, without a copy.
pub fn write_outer_ipv4(
    hdr: &mut [u8],
    t: &VxlanTunnel,
    vni: u32,
    src_port: u16,
    ip_id: u16,
    inner_len: usize,
) -> Result<(), VxlanError> {
    if vni > MAX_VNI || hdr.len() != VXLAN_OVERHEAD_V4 || !fits_ipv4(inner_len) {
        return Err(VxlanError::OutOfRange);
    }
    hdr[0..6].copy_from_slice(&t.remote_mac);
    hdr[6..12].copy_from_slice(&t.local_mac);
    hdr[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    write_ip_udp_vxlan(&mut hdr[ETH_HLEN..], t, vni, src_port, ip_id, inner_len)
}

/// Fills `hdr` (exactly [`IP_UDP_VXLAN_LEN`] bytes) with the outer IPv4, UDP and VXLAN headers
/// for an inner frame of `inner_len` bytes: what a raw IP socket (`IP_HDRINCL`) sends in front
/// of the inner frame. The UDP checksum is 0 (RFC 7348 allows it over IPv4; Linux's default).
pub fn write_ip_udp_vxlan(
    hdr: &mut [u8],
    t: &VxlanTunnel,
    vni: u32,
    src_port: u16,
    ip_id: u16,
    inner_len: usize,
) -> Result<(), VxlanError> {
    if vni > MAX_VNI || hdr.len() != IP_UDP_VXLAN_LEN || !fits_ipv4(inner_len) {
        return Err(VxlanError::OutOfRange);
    }
    let udp_len = UDP_HLEN + VXLAN_HLEN + inner_len;
    let tot = IPV4_HLEN + udp_len;
    let ip = &mut hdr[..IPV4_HLEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6..8].copy_from_slice(&(if t.df { 0x4000u16 } else { 0 }).to_be_bytes());
    ip[8] = t.ttl;
    ip[9] = ipproto::UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&t.local_ip.octets());
    ip[16..20].copy_from_slice(&t.remote_ip.octets());
    let c = csum::ipv4_header_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut hdr[IPV4_HLEN..IPV4_HLEN + UDP_HLEN];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&t.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    hdr[IPV4_HLEN + UDP_HLEN..].copy_from_slice(&encode_header(vni));
    Ok(())
}

/// A decapsulated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped<'a> {
    /// Outer source IP (the remote VTEP).
    pub src_ip: Ipv4Addr,
    /// Outer destination IP.
    pub dst_ip: Ipv4Addr,
    /// Outer UDP source port.
    pub src_port: u16,
    /// The VNI.
    pub vni: u32,
    /// The inner Ethernet frame.
    pub inner: &'a [u8],
}

/// Validates an outer Ethernet/IPv4/UDP/VXLAN frame and returns the inner frame.
pub fn decap_ipv4(frame: &[u8], dst_port: u16) -> Result<Decapped<'_>, VxlanError> {
    let eth = frame
        .get(..ETH_HLEN)
        .ok_or(VxlanError::Truncated(frame.len()))?;
    if eth[12..14] != [0x08, 0x00] {
        return Err(VxlanError::NotUdp);
    }
    let ip = frame
        .get(ETH_HLEN..ETH_HLEN + IPV4_HLEN)
        .ok_or(VxlanError::Truncated(frame.len()))?;
    if ip[0] >> 4 != 4 {
        return Err(VxlanError::BadIpv4);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < IPV4_HLEN || tot < ihl + UDP_HLEN || ETH_HLEN + tot > frame.len() {
        return Err(VxlanError::BadIpv4);
    }
    let hdr = &frame[ETH_HLEN..ETH_HLEN + ihl];
    if csum::ipv4_header_checksum(hdr) != u16::from_be_bytes([ip[10], ip[11]]) {
        return Err(VxlanError::BadIpv4);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(VxlanError::Fragment);
    }
    if ip[9] != ipproto::UDP {
        return Err(VxlanError::NotUdp);
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = ETH_HLEN + ihl;
    let end = ETH_HLEN + tot;
    let udp = &frame[l4..l4 + UDP_HLEN];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != dst_port {
        return Err(VxlanError::WrongPort(dport));
    }
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen < UDP_HLEN || l4 + ulen > end {
        return Err(VxlanError::BadUdpLength);
    }
    if udp[6..8] != [0, 0] {
        let mut copy = frame[..l4 + ulen].to_vec();
        // Recompute over exactly the UDP length; compare.
        let ip_tot = ((ihl + ulen) as u16).to_be_bytes();
        copy[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&ip_tot);
        let orig = [udp[6], udp[7]];
        csum::fill_l4_checksum(&mut copy, ETH_HLEN, l4);
        if copy[l4 + 6..l4 + 8] != orig {
            return Err(VxlanError::BadChecksum);
        }
    }
    let (vni, inner) = decap_payload(&frame[l4 + UDP_HLEN..l4 + ulen])?;
    Ok(Decapped {
        src_ip,
        dst_ip,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        vni,
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_stay_in_range_and_follow_the_hash() {
        let r = SourcePorts::new(50000, 50003).unwrap();
        let picks: std::collections::BTreeSet<u16> =
            (0..64u64).map(|h| r.pick(h * 0x9e37_79b9)).collect();
        assert!(
            picks.iter().all(|p| (50000..=50003).contains(p)),
            "{picks:?}"
        );
        assert!(picks.len() > 1, "hashes spread: {picks:?}");
        assert_eq!(r.pick(12345), r.pick(12345));
        assert!(SourcePorts::new(2, 1).is_none() && SourcePorts::new(0, 9).is_none());
        let d = SourcePorts::default();
        assert_eq!((d.lo, d.hi), (49152, 65535));
        assert_eq!(d.pick(u64::MAX), source_port(u64::MAX));
        assert_eq!(SourcePorts::new(7, 7).unwrap().pick(99), 7);
    }

    #[test]
    fn header_layout_is_frozen() {
        assert_eq!(
            encode_header(0x123456),
            [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]
        );
        assert_eq!(
            decap_payload(&[0x08, 0xff, 0xff, 0xff, 0, 0, 100, 0xff])
                .unwrap()
                .0,
            100
        );
        assert_eq!(decap_payload(&[0; 8]), Err(VxlanError::NoVni));
    }

    #[test]
    fn encap_decap_roundtrip() {
        let t = VxlanTunnel::new(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 2));
        let inner = vec![0xabu8; 100];
        let mut out = Vec::new();
        encap_ipv4(&t, 4242, source_port(99), 7, &inner, &mut out).unwrap();
        assert_eq!(out.len(), inner.len() + VXLAN_OVERHEAD_V4);
        assert_eq!(&out[36..38], &4789u16.to_be_bytes());
        let d = decap_ipv4(&out, VXLAN_PORT).unwrap();
        assert_eq!(d.vni, 4242);
        assert_eq!(d.inner, &inner[..]);
        assert_eq!(d.src_ip, t.local_ip);
        assert!(d.src_port >= 49152);
        assert_eq!(decap_ipv4(&out, 8472), Err(VxlanError::WrongPort(4789)));
        for n in 0..out.len() - inner.len() {
            assert!(decap_ipv4(&out[..n], VXLAN_PORT).is_err());
        }
    }
}
