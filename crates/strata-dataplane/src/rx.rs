//! What a veth port's packet socket received, read out of one message: the frame, its
//! virtio-net header and the 802.1Q tag the kernel took out of it. Pure reads over byte slices
//! (`sys::packet` makes the `recvmmsg` call and hands each message's bytes here), so they are
//! tested on synthetic messages without a socket, and fuzzed (`fuzz_targets/net_rx.rs`).
//!
//! # Message layout
//! With `PACKET_VNET_HDR` the data starts with the 10-byte `struct virtio_net_hdr`, then the
//! frame from its Ethernet header. The control data holds one `SOL_PACKET`/`PACKET_AUXDATA`
//! message (`struct cmsghdr`, native-endian: `cmsg_len` usize, `cmsg_level` i32, `cmsg_type`
//! i32, then the data at the next 8-byte boundary) carrying `struct tpacket_auxdata`:
//! ```text
//! 0 tp_status u32 | 4 tp_len u32 | 8 tp_snaplen u32 | 12 tp_mac u16 | 14 tp_net u16
//! 16 tp_vlan_tci u16 | 18 tp_vlan_tpid u16
//! ```
//!
//! # Why messages and not a `TPACKET_V3` ring
//! The ring hands a block to user space only when it is full or its retire timer fires (at
//! least 1 ms): one request/response round trip through the slow path cost 1.1 ms
//! (`bench/net.sh`, 2026-12-02), twenty times the Linux bridge. `recvmmsg` wakes on the first
//! frame and still moves a burst per call. Each byte is copied once either way (into the ring,
//! or into our buffer).
//!
//! # Invariants
//! - Nothing outside the given slices is read: every offset and length is checked first.
//! - A message the kernel cut (`MSG_TRUNC`, or `tp_len` beyond what arrived) is returned with
//!   `len > data.len()`, so the caller counts and drops it; it is never forwarded cut.

/// Size of the `struct virtio_net_hdr` a packet socket writes and reads.
pub const PACKET_VNET_HDR_LEN: usize = 10;
/// `TP_STATUS_VLAN_VALID`: the kernel took the frame's 802.1Q tag out into `tp_vlan_tci`.
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `TP_STATUS_VLAN_TPID_VALID`: `tp_vlan_tpid` holds the tag's TPID.
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// `SOL_PACKET`.
pub const SOL_PACKET: i32 = 263;
/// `PACKET_AUXDATA`.
pub const PACKET_AUXDATA: i32 = 8;
/// Size of `struct cmsghdr` on a 64-bit kernel (and the alignment of what follows it).
const CMSG_HDR_LEN: usize = 16;
const CMSG_ALIGN: usize = 8;
/// Size of `struct tpacket_auxdata`.
pub const AUXDATA_LEN: usize = 20;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn usize_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?) as usize)
}

/// One received frame, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame<'a> {
    /// The frame from its Ethernet header (what arrived).
    pub data: &'a [u8],
    /// The frame's length on the wire; more than `data.len()` if it was cut.
    pub len: usize,
    /// The virtio-net header before the frame, when the socket asked for one.
    pub vnet: Option<&'a [u8; PACKET_VNET_HDR_LEN]>,
    /// The 802.1Q tag the kernel took out of the frame: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
}

/// What `PACKET_AUXDATA` says of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aux {
    pub status: u32,
    /// `tp_len`: the frame's length before any cut.
    pub len: u32,
    pub vlan_tci: u16,
    pub vlan_tpid: u16,
}

/// Finds the `PACKET_AUXDATA` message in a message's control data (`msg_controllen` bytes).
pub fn aux(control: &[u8]) -> Option<Aux> {
    let mut at = 0usize;
    while at.checked_add(CMSG_HDR_LEN)? <= control.len() {
        let len = usize_at(control, at)?;
        if len < CMSG_HDR_LEN || at.checked_add(len)? > control.len() {
            return None;
        }
        let level = i32_at(control, at + 8)?;
        let kind = i32_at(control, at + 12)?;
        if level == SOL_PACKET && kind == PACKET_AUXDATA && len >= CMSG_HDR_LEN + AUXDATA_LEN {
            let d = &control[at + CMSG_HDR_LEN..at + len];
            return Some(Aux {
                status: u32_at(d, 0)?,
                len: u32_at(d, 4)?,
                vlan_tci: u16_at(d, 16)?,
                vlan_tpid: u16_at(d, 18)?,
            });
        }
        at = at.checked_add(len.div_ceil(CMSG_ALIGN) * CMSG_ALIGN)?;
    }
    None
}

/// Reads one message: `data` is what `recvmmsg` wrote (its `msg_len` bytes), `truncated` its
/// `MSG_TRUNC` flag, `control` its control data, `vnet` whether the socket has
/// `PACKET_VNET_HDR`. `None` when the message is too short to hold its virtio-net header.
pub fn frame<'a>(
    data: &'a [u8],
    truncated: bool,
    control: &[u8],
    vnet: bool,
) -> Option<RxFrame<'a>> {
    let (hdr, body) = if vnet {
        let (h, b) = data.split_at_checked(PACKET_VNET_HDR_LEN)?;
        (Some(<&[u8; PACKET_VNET_HDR_LEN]>::try_from(h).ok()?), b)
    } else {
        (None, data)
    };
    let aux = aux(control);
    let mut len = aux.map_or(body.len(), |a| (a.len as usize).max(body.len()));
    if truncated && len == body.len() {
        len += 1;
    }
    let vlan = aux
        .filter(|a| a.status & TP_STATUS_VLAN_VALID != 0)
        .map(|a| {
            let tpid = if a.status & TP_STATUS_VLAN_TPID_VALID != 0 {
                a.vlan_tpid
            } else {
                0x8100
            };
            (tpid, a.vlan_tci)
        });
    Some(RxFrame {
        data: body,
        len,
        vnet: hdr,
        vlan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control data as the kernel writes it: one `PACKET_AUXDATA` message.
    fn control(len: u32, tci: Option<u16>, tpid: Option<u16>) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&((CMSG_HDR_LEN + AUXDATA_LEN) as u64).to_ne_bytes());
        c.extend_from_slice(&SOL_PACKET.to_ne_bytes());
        c.extend_from_slice(&PACKET_AUXDATA.to_ne_bytes());
        let status = 1
            | tci.map_or(0, |_| TP_STATUS_VLAN_VALID)
            | tpid.map_or(0, |_| TP_STATUS_VLAN_TPID_VALID);
        c.extend_from_slice(&status.to_ne_bytes());
        c.extend_from_slice(&len.to_ne_bytes());
        c.extend_from_slice(&len.to_ne_bytes());
        c.extend_from_slice(&[0u8; 4]);
        c.extend_from_slice(&tci.unwrap_or(0).to_ne_bytes());
        c.extend_from_slice(&tpid.unwrap_or(0).to_ne_bytes());
        c.resize(c.len().div_ceil(CMSG_ALIGN) * CMSG_ALIGN, 0);
        c
    }

    #[test]
    fn reads_the_frame_its_header_and_its_tag() {
        let mut m = vec![0xABu8; PACKET_VNET_HDR_LEN];
        m.extend_from_slice(&[7u8; 1514]);
        let f = frame(&m, false, &control(1514, Some(42), None), true).unwrap();
        assert_eq!(f.data, &[7u8; 1514][..]);
        assert_eq!(f.len, 1514);
        assert_eq!(f.vnet, Some(&[0xAB; 10]));
        assert_eq!(f.vlan, Some((0x8100, 42)));
        // A QinQ outer TPID is kept; no tag, no vlan.
        let f = frame(&m, false, &control(1514, Some(5), Some(0x88a8)), true).unwrap();
        assert_eq!(f.vlan, Some((0x88a8, 5)));
        let f = frame(&m, false, &control(1514, None, None), true).unwrap();
        assert_eq!(f.vlan, None);
        // Without vnet headers the whole message is the frame.
        let f = frame(&m[..60], false, &[], false).unwrap();
        assert_eq!((f.data.len(), f.len, f.vnet, f.vlan), (60, 60, None, None));
    }

    #[test]
    fn a_cut_frame_says_so_and_nothing_is_read_past() {
        let m = vec![1u8; 100];
        // The kernel said MSG_TRUNC, or auxdata's length is longer than what arrived.
        assert!(frame(&m, true, &[], false).unwrap().len > 100);
        assert_eq!(
            frame(&m, false, &control(9000, None, None), false)
                .unwrap()
                .len,
            9000
        );
        // Too short for the virtio header.
        assert_eq!(frame(&m[..9], false, &[], true), None);
        // Damaged control data: a length past the end, a length below the header, short.
        let mut c = control(100, Some(1), None);
        c[..8].copy_from_slice(&1000u64.to_ne_bytes());
        assert_eq!(aux(&c), None);
        c[..8].copy_from_slice(&3u64.to_ne_bytes());
        assert_eq!(aux(&c), None);
        assert_eq!(aux(&[0u8; 7]), None);
        // Another message first, then auxdata: found.
        let mut two = Vec::new();
        two.extend_from_slice(&20u64.to_ne_bytes());
        two.extend_from_slice(&1i32.to_ne_bytes());
        two.extend_from_slice(&1i32.to_ne_bytes());
        two.extend_from_slice(&[0u8; 8]);
        two.extend_from_slice(&control(64, Some(9), None));
        assert_eq!(aux(&two).map(|a| a.vlan_tci), Some(9));
    }
}
