//! Internet checksums (RFC 1071) and incremental updates (RFC 1624).
//!
//! Sums are carried as `u32` partial sums of big-endian 16-bit words and folded at the end, so a
//! pseudo-header sum, a header sum and a payload sum can be computed separately and added.

use crate::key::ipproto;

/// Adds `data` (as big-endian 16-bit words, odd trailing byte padded with zero) to `sum`.
#[inline]
pub fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = add32(sum, u16::from_be_bytes([c[0], c[1]]) as u32);
    }
    if let [last] = chunks.remainder() {
        sum = add32(sum, (*last as u32) << 8);
    }
    sum
}

/// Ones'-complement addition of two partial sums (end-around carry), never overflowing.
#[inline]
fn add32(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s + c as u32
}

/// Folds a partial sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The IPv4 header checksum of `hdr` (the checksum field at bytes 10..12 is treated as zero).
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let mut s = ones_sum(hdr.get(..10).unwrap_or(hdr), 0);
    if let Some(rest) = hdr.get(12..) {
        s = ones_sum(rest, s);
    }
    !fold(s)
}

/// Partial sum of the IPv4 pseudo header.
pub fn pseudo_sum_v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
    let mut s = ones_sum(&src, 0);
    s = ones_sum(&dst, s);
    s = add32(s, proto as u32);
    add32(s, l4_len as u32 & 0xffff)
}

/// Partial sum of the IPv6 pseudo header.
pub fn pseudo_sum_v6(src: [u8; 16], dst: [u8; 16], next_header: u8, l4_len: usize) -> u32 {
    let mut s = ones_sum(&src, 0);
    s = ones_sum(&dst, s);
    s = add32(s, (l4_len >> 16) as u32);
    s = add32(s, l4_len as u32 & 0xffff);
    add32(s, next_header as u32)
}

/// Offset of the checksum field inside an L4 header, for the protocols we checksum.
pub fn l4_csum_offset(proto: u8) -> Option<usize> {
    match proto {
        ipproto::TCP => Some(16),
        ipproto::UDP => Some(6),
        ipproto::ICMP | ipproto::ICMPV6 => Some(2),
        _ => None,
    }
}

/// Computes and stores the TCP/UDP/ICMP/ICMPv6 checksum of the packet whose IP header starts at
/// `l3` and L4 header at `l4`; the L4 segment runs to the end of the IP packet. Does nothing if
/// the headers are not a recognizable IPv4/IPv6 packet or the protocol has no checksum.
///
/// Returns true if a checksum was written.
pub fn fill_l4_checksum(frame: &mut [u8], l3: usize, l4: usize) -> bool {
    let Some(&vihl) = frame.get(l3) else {
        return false;
    };
    let (proto, end, pseudo_v4) = match vihl >> 4 {
        4 => {
            let Some(h) = frame.get(l3..l3 + 20) else {
                return false;
            };
            let tot = u16::from_be_bytes([h[2], h[3]]) as usize;
            (h[9], l3 + tot, true)
        }
        6 => {
            let Some(h) = frame.get(l3..l3 + 40) else {
                return false;
            };
            let plen = u16::from_be_bytes([h[4], h[5]]) as usize;
            (h[6], l3 + 40 + plen, false)
        }
        _ => return false,
    };
    let Some(off) = l4_csum_offset(proto) else {
        return false;
    };
    if end > frame.len() || l4 + off + 2 > end || l4 < l3 {
        return false;
    }
    let l4_len = end - l4;
    let init = if proto == ipproto::ICMP {
        0
    } else if pseudo_v4 {
        let h = &frame[l3..l3 + 20];
        pseudo_sum_v4(
            [h[12], h[13], h[14], h[15]],
            [h[16], h[17], h[18], h[19]],
            proto,
            l4_len,
        )
    } else {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&frame[l3 + 8..l3 + 24]);
        dst.copy_from_slice(&frame[l3 + 24..l3 + 40]);
        pseudo_sum_v6(src, dst, proto, l4_len)
    };
    frame[l4 + off] = 0;
    frame[l4 + off + 1] = 0;
    let mut c = !fold(ones_sum(&frame[l4..end], init));
    if c == 0 && proto == ipproto::UDP {
        c = 0xffff; // 0 means "no checksum" for UDP over IPv4
    }
    frame[l4 + off..l4 + off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Verifies the L4 checksum as [`fill_l4_checksum`] would compute it (true if correct).
pub fn verify_l4_checksum(frame: &[u8], l3: usize, l4: usize) -> bool {
    let mut copy = frame.to_vec();
    if !fill_l4_checksum(&mut copy, l3, l4) {
        return false;
    }
    copy == frame
}

/// Completes a checksum that a sender left partial (virtio `NEEDS_CSUM`, Linux
/// `CHECKSUM_PARTIAL`): the 16-bit field at `start + offset` holds the folded pseudo-header sum;
/// the ones'-complement sum over `start..` is written there.
///
/// Returns false (and leaves the frame alone) if the offsets lie outside the frame.
pub fn complete_partial_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(pos) = start.checked_add(offset) else {
        return false;
    };
    if pos.checked_add(2).is_none_or(|e| e > frame.len()) || start > frame.len() {
        return false;
    }
    let c = !fold(ones_sum(&frame[start..], 0));
    frame[pos..pos + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Incremental update (RFC 1624 eq. 3) of checksum `c` when a 16-bit word changes.
#[inline]
pub fn update16(c: u16, old: u16, new: u16) -> u16 {
    let s = add32(add32((!c) as u32, (!old) as u32 & 0xffff), new as u32);
    !fold(s)
}

/// Incremental update of checksum `c` when a 32-bit value changes.
#[inline]
pub fn update32(c: u16, old: u32, new: u32) -> u16 {
    let c = update16(c, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The example from RFC 1071 section 3: sum of 0001 f203 f4f5 f6f7 = 0xddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_sum(&data, 0)), 0xddf2);
    }

    #[test]
    fn ipv4_header_known_value() {
        // A classic example header (Wikipedia "IPv4 header checksum"): checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_matches_full() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = ipv4_header_checksum(&h);
        let new = 0x0a00_0005u32;
        let c2 = update32(c, 0xc0a8_00c7, new);
        h[16..20].copy_from_slice(&new.to_be_bytes());
        assert_eq!(c2, ipv4_header_checksum(&h));
    }
}
