//! Walking one block of a `TPACKET_V3` receive ring: pure reads over a byte slice, so the walk
//! is tested on synthetic blocks without a socket (`sys::packet` maps the ring and hands the
//! retired blocks here).
//!
//! # Block layout (`struct tpacket_block_desc`, native-endian)
//! ```text
//! 0  version u32 | 4 offset_to_priv u32
//! 8  block_status u32 | 12 num_pkts u32 | 16 offset_to_first_pkt u32 | 20 blk_len u32
//! 24 seq_num u64 | 32 ts_first_pkt (u32, u32) | 40 ts_last_pkt (u32, u32)
//! ```
//! Each packet starts with a `struct tpacket3_hdr` (48 bytes) at a 16-byte aligned offset:
//! ```text
//! 0  tp_next_offset u32 (0 on the last packet) | 4 tp_sec | 8 tp_nsec | 12 tp_snaplen | 16 tp_len
//! 20 tp_status u32 | 24 tp_mac u16 | 26 tp_net u16 | 28 tp_rxhash u32 | 32 tp_vlan_tci u32
//! 36 tp_vlan_tpid u16 | 38 padding
//! ```
//! `tp_mac` is the frame's offset from its header. With `PACKET_VNET_HDR` the kernel writes the
//! 10-byte `struct virtio_net_hdr` right before the frame (at `tp_mac - 10`).
//!
//! # Invariants
//! - Nothing outside the block is read: every offset and length is checked against the slice
//!   before use; a packet that does not fit ends the walk (counted by the caller as an error),
//!   it is never read past.
//! - At most `num_pkts` packets are returned, so a corrupt `tp_next_offset` cannot loop.

/// Size of `struct tpacket3_hdr`.
pub(crate) const TPACKET3_HDR_LEN: usize = 48;
/// Size of `struct tpacket_block_desc` (the block header).
pub(crate) const BLOCK_DESC_LEN: usize = 48;
/// Size of the `struct virtio_net_hdr` a packet socket writes and reads.
pub(crate) const PACKET_VNET_HDR_LEN: usize = 10;
/// `TP_STATUS_VLAN_VALID`: the kernel took the frame's 802.1Q tag out into `tp_vlan_tci`.
pub(crate) const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `TP_STATUS_VLAN_TPID_VALID`: `tp_vlan_tpid` holds the tag's TPID.
pub(crate) const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One received frame, borrowed from its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingFrame<'a> {
    /// The frame from its Ethernet header (`tp_snaplen` bytes).
    pub(crate) data: &'a [u8],
    /// The frame's length on the wire (`tp_len`); more than `data.len()` if it was cut.
    pub(crate) len: usize,
    /// The virtio-net header before the frame, when the socket asked for one.
    pub(crate) vnet: Option<&'a [u8; PACKET_VNET_HDR_LEN]>,
    /// The 802.1Q tag the kernel took out of the frame: (TPID, TCI).
    pub(crate) vlan: Option<(u16, u16)>,
}

/// The packets of one retired block, in order.
#[derive(Debug)]
pub(crate) struct BlockFrames<'a> {
    block: &'a [u8],
    at: usize,
    left: u32,
    vnet: bool,
    /// Set when a packet did not fit the block and the walk stopped early.
    pub(crate) bad: bool,
}

/// Walks `block` (one whole block of the ring). `vnet` says whether the socket has
/// `PACKET_VNET_HDR`. A block too short for its header yields nothing and is marked bad.
pub(crate) fn frames(block: &[u8], vnet: bool) -> BlockFrames<'_> {
    let (left, at, bad) = match (u32_at(block, 12), u32_at(block, 16)) {
        (Some(n), Some(first)) if block.len() >= BLOCK_DESC_LEN => (n, first as usize, false),
        _ => (0, 0, true),
    };
    BlockFrames {
        block,
        at,
        left,
        vnet,
        bad,
    }
}

impl<'a> BlockFrames<'a> {
    fn frame_at(&self, at: usize) -> Option<(RingFrame<'a>, u32)> {
        let b = self.block;
        let hdr = b.get(at..at.checked_add(TPACKET3_HDR_LEN)?)?;
        let next = u32_at(hdr, 0)?;
        let snaplen = u32_at(hdr, 12)? as usize;
        let len = u32_at(hdr, 16)? as usize;
        let status = u32_at(hdr, 20)?;
        let mac = u16_at(hdr, 24)? as usize;
        let start = at.checked_add(mac)?;
        let data = b.get(start..start.checked_add(snaplen)?)?;
        let vnet = if self.vnet {
            if mac < TPACKET3_HDR_LEN + PACKET_VNET_HDR_LEN {
                return None;
            }
            let h = b.get(start - PACKET_VNET_HDR_LEN..start)?;
            Some(<&[u8; PACKET_VNET_HDR_LEN]>::try_from(h).ok()?)
        } else {
            None
        };
        let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                u16_at(hdr, 36).unwrap_or(0x8100)
            } else {
                0x8100
            };
            (tpid, u32_at(hdr, 32).unwrap_or(0) as u16)
        });
        Some((
            RingFrame {
                data,
                len,
                vnet,
                vlan,
            },
            next,
        ))
    }
}

impl<'a> Iterator for BlockFrames<'a> {
    type Item = RingFrame<'a>;
    fn next(&mut self) -> Option<RingFrame<'a>> {
        if self.left == 0 || self.bad {
            return None;
        }
        let Some((f, next)) = self.frame_at(self.at) else {
            self.bad = true;
            return None;
        };
        self.left -= 1;
        if next == 0 && self.left > 0 {
            // The kernel says more packets follow but links to none.
            self.bad = true;
            self.left = 0;
        }
        self.at += next as usize;
        Some(f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A block as the kernel fills it: `frames` (data, vlan tci) with a vnet header of
    /// `0xAB`-bytes when `vnet`, each packet 16-byte aligned.
    pub(crate) fn block(frames: &[(&[u8], Option<u16>)], vnet: bool) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_DESC_LEN];
        b[12..16].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&(BLOCK_DESC_LEN as u32).to_ne_bytes());
        let mac = TPACKET3_HDR_LEN + 16 + if vnet { PACKET_VNET_HDR_LEN } else { 0 };
        for (i, (data, tci)) in frames.iter().enumerate() {
            let at = b.len();
            let total = (mac + data.len()).div_ceil(16) * 16;
            b.resize(at + total, 0);
            let next = if i + 1 == frames.len() { 0 } else { total };
            b[at..at + 4].copy_from_slice(&(next as u32).to_ne_bytes());
            b[at + 12..at + 16].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[at + 16..at + 20].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            let status = 1 | tci.map_or(0, |_| TP_STATUS_VLAN_VALID);
            b[at + 20..at + 24].copy_from_slice(&status.to_ne_bytes());
            b[at + 24..at + 26].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[at + 32..at + 36].copy_from_slice(&(tci.unwrap_or(0) as u32).to_ne_bytes());
            if vnet {
                b[at + mac - PACKET_VNET_HDR_LEN..at + mac].fill(0xAB);
            }
            b[at + mac..at + mac + data.len()].copy_from_slice(data);
        }
        b
    }

    #[test]
    fn walks_every_frame_in_order() {
        let f1 = [1u8; 60];
        let f2 = [2u8; 1514];
        let f3 = [3u8; 61];
        let b = block(&[(&f1, None), (&f2, Some(7)), (&f3, None)], true);
        let mut it = frames(&b, true);
        let got: Vec<RingFrame<'_>> = it.by_ref().collect();
        assert!(!it.bad);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].data, &f1[..]);
        assert_eq!(got[1].data, &f2[..]);
        assert_eq!(got[2].data, &f3[..]);
        assert_eq!(got[1].vlan, Some((0x8100, 7)));
        assert_eq!(got[0].vlan, None);
        assert!(got.iter().all(|f| f.vnet == Some(&[0xAB; 10])));
        // Without vnet headers the same layout walks the same frames.
        let b = block(&[(&f1, None), (&f3, None)], false);
        let got: Vec<RingFrame<'_>> = frames(&b, false).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].data, &f3[..]);
        assert_eq!(got[1].vnet, None);
    }

    #[test]
    fn a_damaged_block_is_never_read_past() {
        let f = [9u8; 100];
        let good = block(&[(&f, None), (&f, None)], true);
        // Truncated in the second packet.
        let cut = &good[..good.len() - 10];
        let mut it = frames(cut, true);
        assert_eq!(it.next().map(|f| f.data.len()), Some(100));
        assert_eq!(it.next(), None);
        assert!(it.bad);
        // A snaplen past the end.
        let mut b = good.clone();
        b[BLOCK_DESC_LEN + 12..BLOCK_DESC_LEN + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut it = frames(&b, true);
        assert_eq!(it.next(), None);
        assert!(it.bad);
        // More packets announced than linked: stops at the last link.
        let mut b = good.clone();
        b[12..16].copy_from_slice(&5u32.to_ne_bytes());
        let mut it = frames(&b, true);
        assert_eq!(it.by_ref().count(), 2);
        assert!(it.bad);
        // A frame offset that leaves no room for the vnet header.
        let mut b = good;
        b[BLOCK_DESC_LEN + 24..BLOCK_DESC_LEN + 26].copy_from_slice(&50u16.to_ne_bytes());
        assert_eq!(frames(&b, true).next(), None);
        // A block shorter than its header.
        let mut it = frames(&[0u8; 20], true);
        assert_eq!(it.next(), None);
        assert!(it.bad);
        // An empty block.
        assert_eq!(frames(&block(&[], true), true).count(), 0);
    }
}
