//! The transmit path: writes the effects of one received frame to the output ports, keeping
//! offloads where the output takes them, and fixing partial checksums after a rewrite.
//!
//! | output port | what is written |
//! |---|---|
//! | TAP with offloads, veth with `PACKET_VNET_HDR` | the frame whole, with the input's virtio-net header (offsets moved by a pushed or popped VLAN tag; a veth takes its first 10 bytes) |
//! | TAP without offloads, veth without vnet header | `gso::segment` output: MSS-sized frames with complete checksums |
//! | VXLAN | the inner frame segmented and checksummed the same way, each segment encapsulated by `encap` |

use std::collections::BTreeMap;

use strata_net::csum;
use strata_net::gso::{self, VirtioNetHdr};
use strata_net::key::{ethertype, PortNo};

use strata_net::Effects;

use crate::port::{Dev, PortIo, TxBufs};
use crate::rx::PACKET_VNET_HDR_LEN;
use crate::stats::PortIoStats;

/// Length of the Ethernet header of `f` (14, or 18 with one VLAN tag).
fn l2_len(f: &[u8]) -> usize {
    match f.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) {
        Some(ethertype::VLAN) | Some(ethertype::QINQ) => 18,
        _ => 14,
    }
}

/// The virtio-net header for a frame that came in as `input` with `hdr` and leaves as `out`:
/// the same offload, with offsets moved by the VLAN tag pushed or popped on the way.
fn shift_hdr(hdr: &VirtioNetHdr, input: &[u8], out: &[u8]) -> VirtioNetHdr {
    let mut h = *hdr;
    let delta = l2_len(out) as i32 - l2_len(input) as i32;
    if delta != 0 {
        h.csum_start = (h.csum_start as i32 + delta).max(0) as u16;
        if h.hdr_len != 0 {
            h.hdr_len = (h.hdr_len as i32 + delta).max(0) as u16;
        }
    }
    h.num_buffers = 0;
    h
}

/// If `out` (with partial checksum at `h.csum_start + h.csum_offset`) was rewritten by the
/// engine, writes into `scratch` a copy whose partial checksum is right again, and returns
/// true. The field of a partial checksum holds the (not complemented) pseudo-header sum, so an
/// address change must add the new address and subtract the old; port changes need nothing
/// (they are in the summed data). The engine's RFC 1624 update assumed a complemented
/// checksum, so we recompute from the received field instead of correcting its result.
pub fn fix_partial_csum(
    input: &[u8],
    in_hdr: &VirtioNetHdr,
    out: &[u8],
    h: &VirtioNetHdr,
    scratch: &mut Vec<u8>,
) -> bool {
    let (ip_in, ip_out) = (l2_len(input), l2_len(out));
    let pin = in_hdr.csum_start as usize + in_hdr.csum_offset as usize;
    let pout = h.csum_start as usize + h.csum_offset as usize;
    let et = u16::from_be_bytes([
        input.get(ip_in - 2).copied().unwrap_or(0),
        input.get(ip_in - 1).copied().unwrap_or(0),
    ]);
    let (a, b) = match et {
        ethertype::IPV4 => (12, 20),
        ethertype::IPV6 => (8, 40),
        _ => return false,
    };
    let (Some(ai), Some(ao), Some(fi), Some(fo)) = (
        input.get(ip_in + a..ip_in + b),
        out.get(ip_out + a..ip_out + b),
        input.get(pin..pin + 2),
        out.get(pout..pout + 2),
    ) else {
        return false;
    };
    if ai == ao && fi == fo {
        return false;
    }
    // S' = S + new - old, in ones' complement: add the new words and the complements of the
    // old ones.
    let mut s = u16::from_be_bytes([fi[0], fi[1]]) as u32;
    s = csum::ones_sum(ao, s);
    for w in ai.chunks_exact(2) {
        s += (!u16::from_be_bytes([w[0], w[1]])) as u32;
    }
    let v = csum::fold(s);
    scratch.clear();
    scratch.extend_from_slice(out);
    scratch[pout..pout + 2].copy_from_slice(&v.to_be_bytes());
    true
}

/// `head` then `tail` in one slice: `head` itself if there is no tail, else a copy in `buf`.
fn joined<'a>(buf: &'a mut Vec<u8>, head: &'a [u8], tail: &[u8]) -> &'a [u8] {
    if tail.is_empty() {
        return head;
    }
    buf.clear();
    buf.extend_from_slice(head);
    buf.extend_from_slice(tail);
    buf
}

/// A device that takes whole Ethernet frames, with or without offloads: a TAP queue or a veth
/// host end's packet socket.
enum FrameDev<'a> {
    Tap(&'a crate::sys::Tap),
    Veth(&'a crate::sys::PacketSocket),
}

impl FrameDev<'_> {
    fn offload(&self) -> bool {
        match self {
            FrameDev::Tap(t) => t.offload(),
            FrameDev::Veth(s) => s.vnet_hdr(),
        }
    }
    fn send_parts(
        &self,
        h: &[u8; gso::VIRTIO_NET_HDR_LEN],
        head: &[u8],
        tail: &[u8],
    ) -> std::io::Result<usize> {
        match self {
            FrameDev::Tap(t) => t.send_parts(h, head, tail),
            // A packet socket's header is the 10-byte form: the same fields without
            // `num_buffers`.
            FrameDev::Veth(s) => s.send_parts(&h[..PACKET_VNET_HDR_LEN], head, tail),
        }
    }
}

/// Writes every frame of `fx` to its port. `hdr` describes the received frame, `input`. The effects are split (see [`strata_net::Effects`]): each frame is a rewritten head
/// and a tail still in the receive buffer, written together with one `writev`, so a 64 KiB
/// frame is not copied in user space. Only outputs that must cut or checksum the frame (VXLAN,
/// a TAP without offloads) join the two first.
pub(crate) fn deliver(
    ports: &mut BTreeMap<PortNo, PortIo>,
    fx: &Effects,
    bufs: &mut TxBufs,
    hdr: &VirtioNetHdr,
    input: &[u8],
) {
    let TxBufs {
        segs,
        scratch,
        joined: join_buf,
        frags,
    } = bufs;
    let offloaded = hdr.gso_type != gso::GSO_NONE || hdr.flags & gso::F_NEEDS_CSUM != 0;
    for out in fx.outputs() {
        let (head, tail) = (out.head, &input[out.tail.clone()]);
        let Some(port) = ports.get_mut(&out.port) else {
            continue;
        };
        let dev = match &port.dev {
            Dev::Tap(t) => Some(FrameDev::Tap(t)),
            Dev::Veth(v) => Some(FrameDev::Veth(&v.sock)),
            Dev::Vxlan { .. } => None,
        };
        match (&port.dev, dev) {
            (_, Some(tap)) => {
                if !offloaded {
                    let h = VirtioNetHdr {
                        flags: hdr.flags & gso::F_DATA_VALID,
                        ..VirtioNetHdr::default()
                    };
                    port.io.syscalls += 1;
                    if tap.send_parts(&h.to_bytes(), head, tail).is_err() {
                        port.io.tx_errors += 1;
                    }
                    continue;
                }
                let h = shift_hdr(hdr, input, head);
                // The partial checksum lies in the head unless extension headers pushed it
                // out; then work on the whole frame, as for software segmentation.
                let (head, tail) = if !tap.offload() || csum_field_end(&h) > head.len() {
                    (joined(join_buf, head, tail), &[][..])
                } else {
                    (head, tail)
                };
                let head = if h.flags & gso::F_NEEDS_CSUM != 0
                    && fix_partial_csum(input, hdr, head, &h, scratch)
                {
                    &scratch[..]
                } else {
                    head
                };
                if tap.offload() {
                    if h.gso_type != gso::GSO_NONE {
                        port.io.tx_gso += 1;
                    }
                    port.io.syscalls += 1;
                    if tap.send_parts(&h.to_bytes(), head, tail).is_err() {
                        port.io.tx_errors += 1;
                    }
                } else {
                    segs.clear();
                    match gso::segment(&h, head, segs) {
                        Ok(n) => {
                            count_sw_offload(&mut port.io, &h, n);
                            let zero = VirtioNetHdr::default().to_bytes();
                            for s in segs.iter() {
                                port.io.syscalls += 1;
                                if tap.send_parts(&zero, s, &[]).is_err() {
                                    port.io.tx_errors += 1;
                                }
                            }
                        }
                        Err(_) => port.io.tx_errors += 1,
                    }
                }
            }
            (Dev::Vxlan { tx, .. }, _) => {
                let Some(e) = out.encap else {
                    port.io.tx_errors += 1;
                    continue;
                };
                let inner = joined(join_buf, head, tail);
                if !offloaded {
                    tx.send(&e, std::iter::once(inner), frags, &mut port.io);
                    continue;
                }
                let h = shift_hdr(hdr, input, inner);
                let inner = if h.flags & gso::F_NEEDS_CSUM != 0
                    && fix_partial_csum(input, hdr, inner, &h, scratch)
                {
                    &scratch[..]
                } else {
                    inner
                };
                segs.clear();
                let n = match gso::segment(&h, inner, segs) {
                    Ok(n) => n,
                    Err(_) => {
                        port.io.tx_errors += 1;
                        continue;
                    }
                };
                count_sw_offload(&mut port.io, &h, n);
                tx.send(&e, segs.iter(), frags, &mut port.io);
            }
            (_, None) => port.io.tx_errors += 1,
        }
    }
}

/// End of the partial checksum field `h` names (0 if the frame has none).
fn csum_field_end(h: &VirtioNetHdr) -> usize {
    if h.flags & gso::F_NEEDS_CSUM == 0 {
        return 0;
    }
    h.csum_start as usize + h.csum_offset as usize + 2
}

fn count_sw_offload(io: &mut PortIoStats, h: &VirtioNetHdr, n: usize) {
    if h.gso_type != gso::GSO_NONE {
        io.tx_segments += n as u64;
    } else {
        io.tx_csum_completed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;
    use strata_net::gso::Segments;
    use strata_net::key::{Field, FlowKey};
    use strata_net::packet::build_frame;
    use strata_net::switch::PortConfig;
    use strata_net::{Effects, Switch};

    /// A TCP/IPv4 frame as a TAP with offloads hands it over: the checksum field holds the
    /// folded pseudo-header sum, and the header says NEEDS_CSUM at 34 + 16.
    fn partial_tcp_frame() -> (Vec<u8>, VirtioNetHdr) {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0x0200_0000_0002);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, 0x0a00_0001);
        k.set(Field::NwDst, 0x0a00_0002);
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 80);
        let mut f = build_frame(&k, 100);
        let l4_len = f.len() - 34;
        let p = csum::fold(csum::pseudo_sum_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, l4_len));
        f[50..52].copy_from_slice(&p.to_be_bytes());
        let h = VirtioNetHdr {
            flags: gso::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VirtioNetHdr::default()
        };
        (f, h)
    }

    fn completes_to_valid(frame: &[u8], h: &VirtioNetHdr) -> bool {
        let mut segs = Segments::new();
        gso::segment(h, frame, &mut segs).unwrap();
        let out = segs.iter().next().unwrap();
        let l3 = l2_len(out);
        csum::verify_l4_checksum(out, l3, l3 + 20)
    }

    #[test]
    fn partial_checksum_survives_address_and_port_rewrites() {
        let (f, h) = partial_tcp_frame();
        assert!(completes_to_valid(&f, &h), "the test frame itself is right");
        let mut sw = Switch::default();
        let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
        sw.add_port(PortConfig::tap("b", None)).unwrap();
        sw.add_flow(
            Duration::ZERO,
            "tcp,actions=set_field:10.9.9.9->nw_dst,set_field:8080->tp_dst,mod_vlan_vid:7,output:b",
        )
        .unwrap();
        let mut fx = Effects::new();
        sw.receive(Duration::ZERO, a, &f, &mut fx);
        let (_, out) = fx.iter().next().unwrap();
        assert_eq!(l2_len(out), 18, "a tag was pushed");
        let oh = shift_hdr(&h, &f, out);
        assert_eq!(oh.csum_start, 38, "offsets follow the tag");
        assert!(
            !completes_to_valid(out, &oh),
            "the engine's complemented update is wrong for a partial sum"
        );
        let mut scratch = Vec::new();
        assert!(fix_partial_csum(&f, &h, out, &oh, &mut scratch));
        let (k, _) = strata_net::parse_frame(&scratch, 1).unwrap();
        assert_eq!(k.nw_dst(), Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(k.tp_dst(), 8080);
        assert!(
            completes_to_valid(&scratch, &oh),
            "fixed partial sum completes right"
        );
    }

    #[test]
    fn untouched_frames_need_no_fix() {
        let (f, h) = partial_tcp_frame();
        let mut scratch = Vec::new();
        assert!(!fix_partial_csum(&f, &h, &f, &h, &mut scratch));
        assert_eq!(shift_hdr(&h, &f, &f), h);
    }
}
