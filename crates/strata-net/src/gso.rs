//! virtio-net header and software segmentation (GSO/TSO) of offloaded frames.
//!
//! A TAP opened with `IFF_VNET_HDR` hands us frames up to 64 KiB described by a
//! [`VirtioNetHdr`]; when the output port cannot take such a frame (no TSO on the peer, or a
//! VXLAN port without inner offloads), the port layer calls [`segment`] to cut it into frames
//! of at most `hdr_len + gso_size` bytes, each with correct IPv4 header, TCP sequence number,
//! flags and checksums.
//!
//! Header layout (12 bytes, little-endian, the `virtio_net_hdr_mrg_rxbuf` form that
//! `TUNSETVNETHDRSZ 12` selects):
//!
//! ```text
//! 0  flags        u8   (1 = NEEDS_CSUM, 2 = DATA_VALID)
//! 1  gso_type     u8   (0 NONE, 1 TCPV4, 3 UDP, 4 TCPV6, | 0x80 ECN)
//! 2  hdr_len      u16  (bytes of headers; a hint, we parse the real ones)
//! 4  gso_size     u16  (payload bytes per segment, the MSS)
//! 6  csum_start   u16  (where checksumming starts)
//! 8  csum_offset  u16  (where the checksum goes, from csum_start)
//! 10 num_buffers  u16
//! ```

use crate::csum;
use crate::key::{ethertype, ipproto, FRAG_ANY};
use crate::packet::{parse_frame, ParseError};

/// Size of the header in the form we use.
pub const VIRTIO_NET_HDR_LEN: usize = 12;
/// `flags`: the checksum at csum_start/csum_offset must be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was validated.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (not supported here).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` flag: ECN (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// Flags.
    pub flags: u8,
    /// GSO type.
    pub gso_type: u8,
    /// Header length hint.
    pub hdr_len: u16,
    /// Segment payload size.
    pub gso_size: u16,
    /// Checksum start.
    pub csum_start: u16,
    /// Checksum offset from start.
    pub csum_offset: u16,
    /// Number of merged buffers.
    pub num_buffers: u16,
}

/// Segmentation failures (the frame is dropped and counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GsoError {
    /// Header shorter than 12 bytes.
    #[error("virtio-net header truncated ({0} bytes)")]
    HeaderTruncated(usize),
    /// GSO type we do not segment.
    #[error("unsupported gso_type {0:#x}")]
    Unsupported(u8),
    /// gso_size is 0 for a GSO frame.
    #[error("gso_size is zero")]
    ZeroGsoSize,
    /// Frame does not match its GSO type (not TCP, wrong IP version, a fragment).
    #[error("frame does not match gso_type {0:#x}")]
    Mismatch(u8),
    /// Frame did not parse.
    #[error("frame does not parse: {0}")]
    Parse(#[from] ParseError),
    /// csum_start/csum_offset outside the frame.
    #[error("checksum offsets outside the frame")]
    BadCsumOffsets,
}

impl VirtioNetHdr {
    /// Parses the 12-byte header.
    pub fn parse(b: &[u8]) -> Result<Self, GsoError> {
        let h = b
            .get(..VIRTIO_NET_HDR_LEN)
            .ok_or(GsoError::HeaderTruncated(b.len()))?;
        let u = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Ok(VirtioNetHdr {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            num_buffers: u(10),
        })
    }

    /// Serializes the 12-byte header.
    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
}

/// Output of [`segment`]: frames in one reusable buffer.
#[derive(Debug, Default)]
pub struct Segments {
    buf: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl Segments {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }
    /// Forgets the frames, keeping capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ranges.clear();
    }
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
    /// True if none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    /// The frames.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.ranges.iter().map(|&(s, l)| &self.buf[s..s + l])
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Splits (or, for a non-GSO frame, checksums) `frame` as described by `hdr`, appending the
/// resulting frames to `out`. Returns the number of frames appended.
///
/// TCP checksums are always recomputed in full (a GSO frame's checksum field holds only the
/// pseudo-header sum). IPv4 identification increments per segment; FIN and PSH stay on the
/// last segment only, CWR on the first only.
pub fn segment(hdr: &VirtioNetHdr, frame: &[u8], out: &mut Segments) -> Result<usize, GsoError> {
    let gt = hdr.gso_type & !GSO_ECN;
    if gt == GSO_NONE {
        let start = out.buf.len();
        out.buf.extend_from_slice(frame);
        if hdr.flags & F_NEEDS_CSUM != 0
            && !csum::complete_partial_checksum(
                &mut out.buf[start..],
                hdr.csum_start as usize,
                hdr.csum_offset as usize,
            )
        {
            out.buf.truncate(start);
            return Err(GsoError::BadCsumOffsets);
        }
        out.ranges.push((start, frame.len()));
        return Ok(1);
    }
    let want_et = match gt {
        GSO_TCPV4 => ethertype::IPV4,
        GSO_TCPV6 => ethertype::IPV6,
        other => return Err(GsoError::Unsupported(other)),
    };
    if hdr.gso_size == 0 {
        return Err(GsoError::ZeroGsoSize);
    }
    let (key, lay) = parse_frame(frame, 0)?;
    let Some(l4) = lay.l4 else {
        return Err(GsoError::Mismatch(hdr.gso_type));
    };
    if key.eth_type() != want_et || key.nw_proto() != ipproto::TCP || key.nw_frag() & FRAG_ANY != 0
    {
        return Err(GsoError::Mismatch(hdr.gso_type));
    }
    let (l3, l4) = (lay.l3 as usize, l4 as usize);
    let doff = ((frame[l4 + 12] >> 4) as usize) * 4;
    let hlen = l4 + doff;
    let end = lay.l3_end as usize;
    let payload = frame.get(hlen..end).unwrap_or(&[]);
    let mss = hdr.gso_size as usize;
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let flags0 = frame[l4 + 13];
    let v4 = want_et == ethertype::IPV4;
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let nseg = payload.len().div_ceil(mss).max(1);
    for i in 0..nseg {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let start = out.buf.len();
        out.buf.extend_from_slice(&frame[..hlen]);
        out.buf.extend_from_slice(chunk);
        let s = &mut out.buf[start..];
        let l3_len = hlen - l3 + chunk.len();
        if v4 {
            s[l3 + 2..l3 + 4].copy_from_slice(&(l3_len as u16).to_be_bytes());
            s[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            let ihl = ((s[l3] & 0x0f) as usize) * 4;
            let c = csum::ipv4_header_checksum(&s[l3..l3 + ihl]);
            s[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        } else {
            s[l3 + 4..l3 + 6].copy_from_slice(&((l3_len - 40) as u16).to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = flags0;
        if i + 1 != nseg {
            fl &= !(TCP_FIN | TCP_PSH);
        }
        if i != 0 {
            fl &= !TCP_CWR;
        }
        s[l4 + 13] = fl;
        csum::fill_l4_checksum(s, l3, l4);
        out.ranges.push((start, hlen + chunk.len()));
    }
    Ok(nseg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_frozen() {
        let h = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 1, 0]);
        assert_eq!(VirtioNetHdr::parse(&b).unwrap(), h);
        assert_eq!(
            VirtioNetHdr::parse(&b[..11]),
            Err(GsoError::HeaderTruncated(11))
        );
    }
}
