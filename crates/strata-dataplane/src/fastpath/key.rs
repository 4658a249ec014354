//! The byte layouts shared with the kernel programs (`bpf/fastpath.c`): the flow map's key
//! and value, the action, the filter's scratch slot and the counters. `#[repr(C)]` structs
//! whose sizes and offsets the unit test below pins to the C comments; change both together
//! and rebuild the object (`scripts/build-bpf`).
//!
//! # Key (40 bytes)
//! ```text
//!  0 ifindex u32        input port's host end
//!  4 vlan_tci u16       OpenFlow form (0x1000 = tagged, replacing DEI), 0 untagged
//!  6 vlan_tpid u16      0x8100 / 0x88a8, 0 untagged
//!  8 eth_dst [6]        14 eth_src [6]
//! 20 eth_type u16       0x0800
//! 22 nw_proto u8        23 nw_tos u8
//! 24 nw_src [4]         28 nw_dst [4]     network order
//! 32 tp_src u16         34 tp_dst u16     (ICMP: type, code)
//! 36 nw_ttl u8          37 tcp_class u8   0 (SYN/FIN/RST are never looked up)
//! 38 pad u16
//! ```
//! Multi-byte integers are in host order (the kernel programs and we run on one machine),
//! addresses in network order as on the wire.
//!
//! # Value (128 bytes, one copy per CPU)
//! ```text
//!  0 gen u64     8 packets u64    16 bytes u64    24 last_ns u64
//! 32 entry u32  36 pad u32       40 action (88 bytes):
//!    0 flags u32   4 out_ifindex u32   8 eth_dst [6]   14 eth_src [6]
//!   20 nw_src [4] 24 nw_dst [4]       28 tp_src u16   30 tp_dst u16
//!   32 vlan_tci u16 (as on the wire)  34 vlan_tpid u16
//!   36 tun_vni u32 40 tun_remote [4]  44 tun_sport u16  46 ct_zone u16   (step 2)
//!   48 tun_hdr [36] outer IPv4+UDP+VXLAN (`TUNNEL`)      84 tun_mtu u16  86 tun_pad u16
//! ```

use strata_net::key::{ethertype, ipproto, FlowKey, VLAN_PRESENT};

/// Rewrite the destination MAC.
pub(crate) const SET_ETH_DST: u32 = 1 << 0;
/// Rewrite the source MAC.
pub(crate) const SET_ETH_SRC: u32 = 1 << 1;
/// Rewrite the IPv4 source (and the checksums over it).
pub(crate) const SET_NW_SRC: u32 = 1 << 2;
/// Rewrite the IPv4 destination.
pub(crate) const SET_NW_DST: u32 = 1 << 3;
/// Rewrite the TCP/UDP source port.
pub(crate) const SET_TP_SRC: u32 = 1 << 4;
/// Rewrite the TCP/UDP destination port.
pub(crate) const SET_TP_DST: u32 = 1 << 5;
/// Remove the tag the frame came with.
pub(crate) const VLAN_POP: u32 = 1 << 6;
/// Leave with `vlan_tpid`/`vlan_tci` (after a pop: a change of tag).
pub(crate) const VLAN_PUSH: u32 = 1 << 7;
/// Deliver with `bpf_redirect_peer` into the output port's peer.
pub(crate) const PEER: u32 = 1 << 8;
/// Encapsulate in VXLAN with `tun_hdr` and deliver with `bpf_redirect_neigh` to the underlay
/// device `out_ifindex`.
pub(crate) const TUNNEL: u32 = 1 << 9;
/// The result rests on an established connection (zone in `ct_zone`). The programs do not
/// read it: the connection is userspace's (its counts are fed back at the fold, its changes
/// move the generation); it marks the entry for dumps and tests.
pub(crate) const CT: u32 = 1 << 10;

/// Indexes of the programs' own counters (`fp_stats`).
pub(crate) mod stat {
    /// Forwarded by the TC program.
    pub(crate) const FAST: u32 = 0;
    /// Left to the socket (the TC program dropped its copy).
    pub(crate) const SLOW: u32 = 1;
    /// The TC program saw no filter decision and passed the packet on.
    pub(crate) const NO_FILTER: u32 = 2;
    /// A rewrite failed; the packet was dropped.
    pub(crate) const ERROR: u32 = 3;
    /// An entry of an older generation was hit (the packet went to the slow path).
    pub(crate) const STALE: u32 = 4;
}

/// The flow map's key.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct FpKey {
    pub(crate) ifindex: u32,
    pub(crate) vlan_tci: u16,
    pub(crate) vlan_tpid: u16,
    pub(crate) eth_dst: [u8; 6],
    pub(crate) eth_src: [u8; 6],
    pub(crate) eth_type: u16,
    pub(crate) nw_proto: u8,
    pub(crate) nw_tos: u8,
    pub(crate) nw_src: [u8; 4],
    pub(crate) nw_dst: [u8; 4],
    pub(crate) tp_src: u16,
    pub(crate) tp_dst: u16,
    pub(crate) nw_ttl: u8,
    pub(crate) tcp_class: u8,
    pub(crate) pad: u16,
}

/// What the TC program does with a packet of the key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FpAction {
    pub(crate) flags: u32,
    pub(crate) out_ifindex: u32,
    pub(crate) eth_dst: [u8; 6],
    pub(crate) eth_src: [u8; 6],
    pub(crate) nw_src: [u8; 4],
    pub(crate) nw_dst: [u8; 4],
    pub(crate) tp_src: u16,
    pub(crate) tp_dst: u16,
    pub(crate) vlan_tci: u16,
    pub(crate) vlan_tpid: u16,
    pub(crate) tun_vni: u32,
    pub(crate) tun_remote: [u8; 4],
    pub(crate) tun_sport: u16,
    pub(crate) ct_zone: u16,
    /// Outer IPv4, UDP and VXLAN headers (`strata_net::vxlan::write_ip_udp_vxlan` for an
    /// empty inner frame, identification and checksum zero: the program writes those and
    /// the lengths per packet).
    pub(crate) tun_hdr: [u8; TUN_HDR],
    /// Route MTU toward the remote VTEP (bytes of outer IPv4 packet).
    pub(crate) tun_mtu: u16,
    pub(crate) tun_pad: u16,
}

/// Bytes of the outer headers in [`FpAction::tun_hdr`].
pub(crate) const TUN_HDR: usize = strata_net::vxlan::IP_UDP_VXLAN_LEN;

impl Default for FpAction {
    fn default() -> Self {
        FpAction {
            flags: 0,
            out_ifindex: 0,
            eth_dst: [0; 6],
            eth_src: [0; 6],
            nw_src: [0; 4],
            nw_dst: [0; 4],
            tp_src: 0,
            tp_dst: 0,
            vlan_tci: 0,
            vlan_tpid: 0,
            tun_vni: 0,
            tun_remote: [0; 4],
            tun_sport: 0,
            ct_zone: 0,
            tun_hdr: [0; TUN_HDR],
            tun_mtu: 0,
            tun_pad: 0,
        }
    }
}

/// The flow map's value (each CPU has its own copy: the counters are that CPU's).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FpValue {
    pub(crate) gen: u64,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) last_ns: u64,
    pub(crate) entry: u32,
    pub(crate) pad: u32,
    pub(crate) act: FpAction,
}

impl FpKey {
    /// The key the kernel programs compute for a frame on the host end `ifindex` whose engine
    /// key (as parsed) is `k`, its tag having had TPID `tpid`.
    pub(crate) fn of(ifindex: u32, k: &FlowKey, tpid: u16) -> FpKey {
        let tagged = k.vlan_tci() & VLAN_PRESENT != 0;
        FpKey {
            ifindex,
            vlan_tci: k.vlan_tci(),
            vlan_tpid: if tagged { tpid } else { 0 },
            eth_dst: k.eth_dst(),
            eth_src: k.eth_src(),
            eth_type: k.eth_type(),
            nw_proto: k.nw_proto(),
            nw_tos: k.nw_tos(),
            nw_src: k.nw_src().octets(),
            nw_dst: k.nw_dst().octets(),
            tp_src: k.tp_src(),
            tp_dst: k.tp_dst(),
            nw_ttl: k.nw_ttl(),
            tcp_class: 0,
            pad: 0,
        }
    }

    /// True for the protocols the programs look up (IPv4 TCP, UDP, ICMP).
    pub(crate) fn carried_protocol(&self) -> bool {
        self.eth_type == ethertype::IPV4
            && matches!(self.nw_proto, ipproto::TCP | ipproto::UDP | ipproto::ICMP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};
    use strata_net::key::Field;

    /// The layouts of bpf/fastpath.c, field by field.
    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(size_of::<FpKey>(), 40);
        assert_eq!(align_of::<FpKey>(), 4);
        let k = [
            (offset_of!(FpKey, ifindex), 0),
            (offset_of!(FpKey, vlan_tci), 4),
            (offset_of!(FpKey, vlan_tpid), 6),
            (offset_of!(FpKey, eth_dst), 8),
            (offset_of!(FpKey, eth_src), 14),
            (offset_of!(FpKey, eth_type), 20),
            (offset_of!(FpKey, nw_proto), 22),
            (offset_of!(FpKey, nw_tos), 23),
            (offset_of!(FpKey, nw_src), 24),
            (offset_of!(FpKey, nw_dst), 28),
            (offset_of!(FpKey, tp_src), 32),
            (offset_of!(FpKey, tp_dst), 34),
            (offset_of!(FpKey, nw_ttl), 36),
            (offset_of!(FpKey, tcp_class), 37),
            (offset_of!(FpKey, pad), 38),
        ];
        for (i, (got, want)) in k.iter().enumerate() {
            assert_eq!(got, want, "key field {i}");
        }
        assert_eq!(size_of::<FpAction>(), 88);
        let a = [
            (offset_of!(FpAction, flags), 0),
            (offset_of!(FpAction, out_ifindex), 4),
            (offset_of!(FpAction, eth_dst), 8),
            (offset_of!(FpAction, eth_src), 14),
            (offset_of!(FpAction, nw_src), 20),
            (offset_of!(FpAction, nw_dst), 24),
            (offset_of!(FpAction, tp_src), 28),
            (offset_of!(FpAction, tp_dst), 30),
            (offset_of!(FpAction, vlan_tci), 32),
            (offset_of!(FpAction, vlan_tpid), 34),
            (offset_of!(FpAction, tun_vni), 36),
            (offset_of!(FpAction, tun_remote), 40),
            (offset_of!(FpAction, tun_sport), 44),
            (offset_of!(FpAction, ct_zone), 46),
            (offset_of!(FpAction, tun_hdr), 48),
            (offset_of!(FpAction, tun_mtu), 84),
            (offset_of!(FpAction, tun_pad), 86),
        ];
        for (i, (got, want)) in a.iter().enumerate() {
            assert_eq!(got, want, "action field {i}");
        }
        assert_eq!(size_of::<FpValue>(), 128);
        assert_eq!(align_of::<FpValue>(), 8);
        let v = [
            (offset_of!(FpValue, gen), 0),
            (offset_of!(FpValue, packets), 8),
            (offset_of!(FpValue, bytes), 16),
            (offset_of!(FpValue, last_ns), 24),
            (offset_of!(FpValue, entry), 32),
            (offset_of!(FpValue, pad), 36),
            (offset_of!(FpValue, act), 40),
        ];
        for (i, (got, want)) in v.iter().enumerate() {
            assert_eq!(got, want, "value field {i}");
        }
    }

    #[test]
    fn key_of_an_engine_key() {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthDst, 0x0200_0000_0002);
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::VlanTci, (VLAN_PRESENT | 0x2000 | 7) as u64);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwTos, 0x12);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, 0x0a00_0001);
        k.set(Field::NwDst, 0x0a00_0002);
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 80);
        let f = FpKey::of(9, &k, 0x8100);
        assert_eq!(f.ifindex, 9);
        assert_eq!(f.vlan_tci, 0x3007);
        assert_eq!(f.vlan_tpid, 0x8100);
        assert_eq!(f.eth_dst, [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.eth_src, [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.nw_src, [10, 0, 0, 1]);
        assert_eq!(f.nw_dst, [10, 0, 0, 2]);
        assert_eq!(
            (f.tp_src, f.tp_dst, f.nw_tos, f.nw_ttl),
            (40000, 80, 0x12, 64)
        );
        assert!(f.carried_protocol());
        k.set(Field::VlanTci, 0);
        assert_eq!(FpKey::of(9, &k, 0x8100).vlan_tpid, 0, "untagged: no TPID");
    }
}
