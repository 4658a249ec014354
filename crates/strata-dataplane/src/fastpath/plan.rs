//! Whether the fast path can carry a result the engine offered ([`strata_net::Offload`]),
//! and the map entry that carries it: pure, so every rule is unit-tested without a kernel.
//!
//! The engine has already said the result is a function of the key (one output, rewrites
//! only). Here is what step 1 of the kernel program can repeat byte for byte:
//! - IPv4 TCP, UDP or ICMP, not a fragment, and for TCP a segment without SYN, FIN or RST
//!   (the slow path sees every connection's setup and teardown);
//! - an output to another veth port of the switch (`bpf_redirect_peer` into its peer);
//! - rewrites of the MACs, the IPv4 addresses and TCP/UDP ports, and the VLAN tag (push, pop,
//!   change); nothing else may differ between the frame in and the frame out.
//!
//! An output to a VXLAN port ([`Out::Vxlan`]) is carried by encapsulating in the kernel: the
//! entry gets the `TUNNEL` flag, the outer IPv4/UDP/VXLAN headers the port layer would write
//! (the one encoder, `strata_net::vxlan::write_ip_udp_vxlan`, with the source port the port's
//! range picks from the engine's flow hash, the tunnel's TTL and DF), and the route MTU; the
//! inner frame must leave untagged (the program puts the outer headers after the Ethernet
//! header, where a tag in the skb's metadata would end up outside).
//!
//! A result resting on established connections ([`strata_net::CtUse`]) is carried the same
//! way with the `CT` flag and the first connection's zone: nothing of conntrack runs in the
//! kernel (its counts come back at the fold, its changes move the generation).
//!
//! A tag present on both sides is always popped and pushed again: the engine writes the tag
//! from its key, where the DEI bit is replaced by "present", so the frame leaves with DEI
//! clear even when nothing changed it. The kernel does the same by rewriting the tag.

use strata_net::key::{ipproto, Field, FlowKey, VLAN_PRESENT};
use strata_net::vxlan::{self, SourcePorts};
use strata_net::Offload;

use super::key::{
    FpAction, FpKey, CT, PEER, SET_ETH_DST, SET_ETH_SRC, SET_NW_DST, SET_NW_SRC, SET_TP_DST,
    SET_TP_SRC, TUNNEL, VLAN_POP, VLAN_PUSH,
};

/// Where the output port's frames go in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    /// A veth port: into the peer of this host end.
    Peer(u32),
    /// A VXLAN port: encapsulated, out of this underlay device.
    Vxlan {
        /// Underlay device (holding the tunnel's local address).
        ifindex: u32,
        /// Route MTU toward the remote VTEP.
        mtu: usize,
        /// The port's source-port range.
        ports: SourcePorts,
    },
}

/// Why a result is left to the slow path (counted per reason in the fast path's stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not IPv4 TCP/UDP/ICMP, or a fragment.
    Protocol,
    /// A TCP SYN, FIN or RST (or a frame too short to tell).
    TcpFlags,
    /// A field changed that the program does not rewrite (TTL, TOS, ICMP type or code).
    Rewrite,
    /// The output does not match the kind of port (a VXLAN output without its
    /// encapsulation, a tagged inner frame, a header that does not encode).
    Tunnel,
}

/// The TCP flags of an untagged or tagged IPv4 frame, if it is TCP and long enough.
pub(crate) fn tcp_flags(frame: &[u8]) -> Option<u8> {
    let l3 = match frame.get(12..14)? {
        [0x81, 0x00] | [0x88, 0xa8] => 18,
        _ => 14,
    };
    let ihl = ((*frame.get(l3)? & 0x0f) as usize) * 4;
    frame.get(l3 + ihl + 13).copied()
}

/// The entry for `o`: the key the programs compute for its packets on the host end
/// `in_ifindex`, and the action that turns them into the engine's output to `out`.
/// `frame` is the received frame (for its TCP flags).
pub(crate) fn plan(
    o: &Offload,
    in_ifindex: u32,
    out: Out,
    frame: &[u8],
) -> Result<(FpKey, FpAction), Refusal> {
    let k = &o.key;
    let key = FpKey::of(in_ifindex, k, o.in_tpid);
    if !key.carried_protocol() || k.nw_frag() != 0 {
        return Err(Refusal::Protocol);
    }
    if k.nw_proto() == ipproto::TCP && tcp_flags(frame).is_none_or(|f| f & 0x07 != 0) {
        return Err(Refusal::TcpFlags);
    }
    let dest = out;
    let out = &o.out_key;
    for f in [
        Field::EthType,
        Field::NwProto,
        Field::NwTos,
        Field::NwTtl,
        Field::NwFrag,
    ] {
        if out.get(f) != k.get(f) {
            return Err(Refusal::Rewrite);
        }
    }
    let ports_rewritable = matches!(k.nw_proto(), ipproto::TCP | ipproto::UDP);
    if !ports_rewritable && (out.tp_src(), out.tp_dst()) != (k.tp_src(), k.tp_dst()) {
        return Err(Refusal::Rewrite);
    }
    let mut a = match (dest, &o.encap) {
        (Out::Peer(ifindex), None) => FpAction {
            flags: PEER,
            out_ifindex: ifindex,
            ..FpAction::default()
        },
        (
            Out::Vxlan {
                ifindex,
                mtu,
                ports,
            },
            Some(e),
        ) => {
            if out.vlan_tci() & VLAN_PRESENT != 0 {
                return Err(Refusal::Tunnel);
            }
            let sport = ports.pick(e.flow_hash);
            let mut a = FpAction {
                flags: TUNNEL,
                out_ifindex: ifindex,
                tun_vni: e.vni,
                tun_remote: e.tunnel.remote_ip.octets(),
                tun_sport: sport,
                tun_mtu: mtu.min(usize::from(u16::MAX)) as u16,
                ..FpAction::default()
            };
            vxlan::write_ip_udp_vxlan(&mut a.tun_hdr, &e.tunnel, e.vni, sport, 0, 0)
                .map_err(|_| Refusal::Tunnel)?;
            // The program writes the lengths, the identification and the checksum.
            a.tun_hdr[10..12].fill(0);
            a
        }
        _ => return Err(Refusal::Tunnel),
    };
    a.eth_dst = out.eth_dst();
    a.eth_src = out.eth_src();
    a.nw_src = out.nw_src().octets();
    a.nw_dst = out.nw_dst().octets();
    a.tp_src = out.tp_src();
    a.tp_dst = out.tp_dst();
    for (flag, differs) in [
        (SET_ETH_DST, out.eth_dst() != k.eth_dst()),
        (SET_ETH_SRC, out.eth_src() != k.eth_src()),
        (SET_NW_SRC, out.nw_src() != k.nw_src()),
        (SET_NW_DST, out.nw_dst() != k.nw_dst()),
        (SET_TP_SRC, out.tp_src() != k.tp_src()),
        (SET_TP_DST, out.tp_dst() != k.tp_dst()),
    ] {
        if differs {
            a.flags |= flag;
        }
    }
    let tagged_in = k.vlan_tci() & VLAN_PRESENT != 0;
    let tagged_out = out.vlan_tci() & VLAN_PRESENT != 0;
    if tagged_in {
        a.flags |= VLAN_POP;
    }
    if tagged_out {
        a.flags |= VLAN_PUSH;
        a.vlan_tci = out.vlan_tci() & !VLAN_PRESENT;
        a.vlan_tpid = o.out_tpid;
    }
    if let Some(u) = o.ct.first() {
        a.flags |= CT;
        a.ct_zone = u.zone;
    }
    Ok((key, a))
}

/// Bytes a frame of the entry has as the switch would count it on receive and on send, from
/// the bytes the kernel counted (`skb->len`, without an offloaded tag): (receive, send)
/// extra bytes per packet.
pub(crate) fn tag_bytes(key: &FlowKey, out: &FlowKey) -> (u64, u64) {
    let t = |k: &FlowKey| u64::from(k.vlan_tci() & VLAN_PRESENT != 0) * 4;
    (t(key), t(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_net::packet::build_frame;

    fn key() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set(Field::InPort, 1);
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0x0200_0000_0002);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, 0x0a00_0001);
        k.set(Field::NwDst, 0x0a00_0002);
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 80);
        k
    }

    fn offer(k: FlowKey, out: FlowKey) -> Offload {
        Offload {
            in_port: 1,
            key: k,
            in_tpid: 0,
            out_port: 2,
            out_key: out,
            out_tpid: 0x8100,
            ..Offload::default()
        }
    }

    /// The frame the built key describes, with the TCP flags set to `flags`.
    fn frame(k: &FlowKey, flags: u8) -> Vec<u8> {
        let mut f = build_frame(k, 10);
        f[14 + 20 + 13] = flags;
        f
    }

    #[test]
    fn plain_forwarding_is_a_bare_redirect() {
        let k = key();
        let (fk, a) = plan(&offer(k, k), 7, Out::Peer(8), &frame(&k, 0x18)).unwrap();
        assert_eq!(fk.ifindex, 7);
        assert_eq!(a.flags, PEER);
        assert_eq!(a.out_ifindex, 8);
    }

    #[test]
    fn rewrites_become_flags() {
        let k = key();
        let mut out = k;
        out.set(Field::EthDst, 0x0200_0000_0009);
        out.set(Field::NwDst, 0x0a00_0009);
        out.set(Field::TpDst, 8080);
        let (_, a) = plan(&offer(k, out), 7, Out::Peer(8), &frame(&k, 0x10)).unwrap();
        assert_eq!(a.flags, PEER | SET_ETH_DST | SET_NW_DST | SET_TP_DST);
        assert_eq!(a.eth_dst, [2, 0, 0, 0, 0, 9]);
        assert_eq!(a.nw_dst, [10, 0, 0, 9]);
        assert_eq!(a.tp_dst, 8080);
    }

    #[test]
    fn tags_are_popped_pushed_or_rewritten() {
        let k = key();
        let mut tagged = k;
        tagged.set(Field::VlanTci, (VLAN_PRESENT | 0x2000 | 10) as u64);
        let (_, push) = plan(&offer(k, tagged), 7, Out::Peer(8), &frame(&k, 0x10)).unwrap();
        assert_eq!(push.flags, PEER | VLAN_PUSH);
        assert_eq!((push.vlan_tci, push.vlan_tpid), (0x200a, 0x8100));
        let mut o = offer(tagged, k);
        o.in_tpid = 0x8100;
        let (fk, pop) = plan(&o, 7, Out::Peer(8), &frame(&tagged, 0x10)).unwrap();
        assert_eq!(pop.flags, PEER | VLAN_POP);
        assert_eq!((fk.vlan_tci, fk.vlan_tpid), (0x300a, 0x8100));
        let mut o = offer(tagged, tagged);
        o.in_tpid = 0x8100;
        let (_, same) = plan(&o, 7, Out::Peer(8), &frame(&tagged, 0x10)).unwrap();
        assert_eq!(
            same.flags,
            PEER | VLAN_POP | VLAN_PUSH,
            "rewritten so DEI clears"
        );
    }

    #[test]
    fn what_the_program_cannot_repeat_is_refused() {
        let k = key();
        for flags in [0x02, 0x12, 0x01, 0x11, 0x04] {
            assert_eq!(
                plan(&offer(k, k), 7, Out::Peer(8), &frame(&k, flags)),
                Err(Refusal::TcpFlags),
                "flags {flags:#x}"
            );
        }
        let mut ttl = k;
        ttl.set(Field::NwTtl, 63);
        assert_eq!(
            plan(&offer(k, ttl), 7, Out::Peer(8), &frame(&k, 0x10)),
            Err(Refusal::Rewrite)
        );
        let mut v6 = k;
        v6.set(Field::EthType, 0x86dd);
        assert_eq!(
            plan(&offer(v6, v6), 7, Out::Peer(8), &frame(&k, 0x10)),
            Err(Refusal::Protocol)
        );
        let mut frag = k;
        frag.set(Field::NwFrag, 1);
        assert_eq!(
            plan(&offer(frag, frag), 7, Out::Peer(8), &frame(&k, 0x10)),
            Err(Refusal::Protocol)
        );
        let mut icmp = k;
        icmp.set(Field::NwProto, 1);
        icmp.set(Field::TpSrc, 8);
        icmp.set(Field::TpDst, 0);
        let mut reply = icmp;
        reply.set(Field::TpSrc, 0);
        assert_eq!(
            plan(&offer(icmp, reply), 7, Out::Peer(8), &build_frame(&icmp, 8)),
            Err(Refusal::Rewrite)
        );
        assert!(plan(&offer(icmp, icmp), 7, Out::Peer(8), &build_frame(&icmp, 8)).is_ok());
    }

    #[test]
    fn a_vxlan_output_carries_the_ports_outer_headers() {
        use std::net::Ipv4Addr;
        let k = key();
        let mut t =
            vxlan::VxlanTunnel::new(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        t.df = true;
        t.ttl = 9;
        let e = strata_net::Encap {
            vni: 77,
            flow_hash: 0x1234_5678_9abc,
            tunnel: t,
        };
        let ports = SourcePorts::new(40000, 40999).unwrap();
        let vx = Out::Vxlan {
            ifindex: 5,
            mtu: 1500,
            ports,
        };
        let mut o = offer(k, k);
        o.encap = Some(e);
        let (_, a) = plan(&o, 7, vx, &frame(&k, 0x10)).unwrap();
        assert_eq!(a.flags, TUNNEL);
        assert_eq!((a.out_ifindex, a.tun_vni, a.tun_mtu), (5, 77, 1500));
        assert_eq!(
            a.tun_sport,
            ports.pick(e.flow_hash),
            "the port layer's pick"
        );
        let mut want = [0u8; vxlan::IP_UDP_VXLAN_LEN];
        vxlan::write_ip_udp_vxlan(&mut want, &t, 77, a.tun_sport, 0, 0).unwrap();
        want[10..12].fill(0);
        assert_eq!(a.tun_hdr, want);
        assert_eq!(
            (a.tun_hdr[6], a.tun_hdr[8]),
            (0x40, 9),
            "DF and TTL of the tunnel"
        );
        // A veth output with an encapsulation, a VXLAN output without, a tagged inner frame.
        assert_eq!(
            plan(&o, 7, Out::Peer(8), &frame(&k, 0x10)),
            Err(Refusal::Tunnel)
        );
        assert_eq!(
            plan(&offer(k, k), 7, vx, &frame(&k, 0x10)),
            Err(Refusal::Tunnel)
        );
        let mut tagged = k;
        tagged.set(Field::VlanTci, (VLAN_PRESENT | 10) as u64);
        let mut o = offer(k, tagged);
        o.encap = Some(e);
        assert_eq!(plan(&o, 7, vx, &frame(&k, 0x10)), Err(Refusal::Tunnel));
    }

    #[test]
    fn tag_bytes_follow_the_tags() {
        let k = key();
        let mut tagged = k;
        tagged.set(Field::VlanTci, (VLAN_PRESENT | 10) as u64);
        assert_eq!(tag_bytes(&k, &tagged), (0, 4));
        assert_eq!(tag_bytes(&tagged, &k), (4, 0));
    }
}
