//! The flow key: every header field the pipeline can match on, in a fixed-size, `Copy` value.
//!
//! The key is stored as [`KEY_WORDS`] little machine words (`u64`) rather than as named fields,
//! because everything the classifier and the caches do is word arithmetic over the key: masking
//! (`key & mask`), hashing only the words a mask touches, comparing, and OR-ing the bits a lookup
//! consulted into a wildcard mask. A [`FlowKey`] used as a *mask* has the same layout, so a
//! [`Match`] is just a (value, mask) pair of keys. Named accessors give the fields back.
//!
//! Layout (bit 0 is the least significant bit of the word; see docs/net-engine.md):
//!
//! | word | bits 0..                     |
//! |------|------------------------------|
//! | 0    | in_port:32, vlan_tci:16, eth_type:16 |
//! | 1    | tun_id:64                    |
//! | 2    | metadata:64                  |
//! | 3..6 | reg0..reg7, two 32-bit registers per word (even register in the low half) |
//! | 7    | eth_src:48, nw_proto:8, nw_tos:8 |
//! | 8    | eth_dst:48, nw_ttl:8, nw_frag:8 |
//! | 9    | nw_src:32, nw_dst:32 (IPv4, or ARP spa/tpa as in OVS) |
//! | 10,11| ipv6_src (high 64, low 64)   |
//! | 12,13| ipv6_dst (high 64, low 64)   |
//! | 14   | tp_src:16, tp_dst:16, arp_op:16 (ICMP type/code live in tp_src/tp_dst, as in OVS) |
//! | 15   | arp_sha:48                   |
//! | 16   | arp_tha:48                   |
//! | 17   | ct_mark:32, ct_zone:16, ct_state:8, recirc:8 (conntrack results; see below) |
//!
//! `vlan_tci` follows OpenFlow: bit 12 (0x1000, the CFI position) means "a tag is present",
//! so an untagged packet has `vlan_tci == 0` and `dl_vlan=0` can be told apart from "no VLAN".
//! MAC addresses are stored as the big-endian number of their six bytes; IPv4 addresses as
//! `u32::from(Ipv4Addr)`.
//!
//! Word 17 is not read from the wire: `ct_state` ([`ct_state`] flags), `ct_zone` and `ct_mark`
//! are 0 until a `ct(...,table=T)` action recirculates the packet with its conntrack verdict,
//! so an untracked packet matches `ct_state=-trk`. `recirc` is 0 on the first pass and `T + 1`
//! on a pass that a recirculation started at table `T`; no rule matches it, but every
//! translation consults it in full, so a cached pass never answers for another start table.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Number of 64-bit words in a [`FlowKey`].
pub const KEY_WORDS: usize = 18;

/// An OpenFlow-style port number.
pub type PortNo = u32;

/// `vlan_tci` bit meaning "an 802.1Q tag is present" (the CFI bit position, as OpenFlow uses it).
pub const VLAN_PRESENT: u16 = 0x1000;
/// Mask of the VLAN id in `vlan_tci`.
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// Mask of the priority code point in `vlan_tci`.
pub const VLAN_PCP_MASK: u16 = 0xe000;

/// `nw_frag` bit: the packet is an IP fragment (first or later).
pub const FRAG_ANY: u8 = 0x1;
/// `nw_frag` bit: the packet is a non-first fragment (no L4 header).
pub const FRAG_LATER: u8 = 0x2;

/// EtherType values the engine knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (accepted as an outer tag on input).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Placeholder for 802.3 frames whose type field is a length (as OVS's `FLOW_DL_TYPE_NONE`).
    pub const NONE: u16 = 0x05ff;
}

/// `ct_state` flag bits, with OVS's values.
pub mod ct_state {
    /// The packet could start a connection (none tracked, or the other side never answered).
    pub const NEW: u8 = 0x01;
    /// Part of a connection that has seen packets both ways.
    pub const EST: u8 = 0x02;
    /// An ICMP error about a tracked connection.
    pub const REL: u8 = 0x04;
    /// In the reply direction of its connection.
    pub const RPL: u8 = 0x08;
    /// Not acceptable to the tracker.
    pub const INV: u8 = 0x10;
    /// The packet went through conntrack.
    pub const TRK: u8 = 0x20;
    /// Its connection has a source translation.
    pub const SNAT: u8 = 0x40;
    /// Its connection has a destination translation.
    pub const DNAT: u8 = 0x80;
    /// Flag names in the order `ct_state=` prints them.
    pub const NAMES: [(&str, u8); 8] = [
        ("new", NEW),
        ("est", EST),
        ("rel", REL),
        ("rpl", RPL),
        ("inv", INV),
        ("trk", TRK),
        ("snat", SNAT),
        ("dnat", DNAT),
    ];
}

/// IP protocol numbers the engine knows.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Where a field lives inside the key words. Fields are at most 64 bits wide; IPv6 addresses
/// are two fields (high and low half).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Input port.
    InPort,
    /// OpenFlow `vlan_tci` (see [`VLAN_PRESENT`]).
    VlanTci,
    /// EtherType (after any VLAN tag).
    EthType,
    /// Tunnel id (the VNI for VXLAN).
    TunId,
    /// Pipeline metadata.
    Metadata,
    /// Register `reg0`..`reg7`.
    Reg(u8),
    /// Ethernet source.
    EthSrc,
    /// Ethernet destination.
    EthDst,
    /// IP protocol (or low 8 bits of the ARP opcode in OVS; here ARP has its own `ArpOp`).
    NwProto,
    /// IP TOS / IPv6 traffic class byte.
    NwTos,
    /// IP TTL / IPv6 hop limit.
    NwTtl,
    /// Fragment flags ([`FRAG_ANY`], [`FRAG_LATER`]).
    NwFrag,
    /// IPv4 source (or ARP sender protocol address).
    NwSrc,
    /// IPv4 destination (or ARP target protocol address).
    NwDst,
    /// High 64 bits of the IPv6 source.
    Ipv6SrcHi,
    /// Low 64 bits of the IPv6 source.
    Ipv6SrcLo,
    /// High 64 bits of the IPv6 destination.
    Ipv6DstHi,
    /// Low 64 bits of the IPv6 destination.
    Ipv6DstLo,
    /// L4 source port (ICMP type).
    TpSrc,
    /// L4 destination port (ICMP code).
    TpDst,
    /// ARP opcode.
    ArpOp,
    /// ARP sender hardware address.
    ArpSha,
    /// ARP target hardware address.
    ArpTha,
    /// Conntrack mark of the packet's connection (after a recirculating `ct`).
    CtMark,
    /// Conntrack zone the packet was looked up in.
    CtZone,
    /// Conntrack state flags ([`ct_state`]).
    CtState,
    /// Recirculation: 0 on the first pass, `T + 1` on a pass started at table `T` by `ct`.
    Recirc,
}

impl Field {
    /// (word index, shift, width in bits).
    #[inline]
    pub const fn layout(self) -> (usize, u32, u32) {
        match self {
            Field::InPort => (0, 0, 32),
            Field::VlanTci => (0, 32, 16),
            Field::EthType => (0, 48, 16),
            Field::TunId => (1, 0, 64),
            Field::Metadata => (2, 0, 64),
            Field::Reg(n) => (3 + (n as usize & 7) / 2, ((n as u32) & 1) * 32, 32),
            Field::EthSrc => (7, 0, 48),
            Field::NwProto => (7, 48, 8),
            Field::NwTos => (7, 56, 8),
            Field::EthDst => (8, 0, 48),
            Field::NwTtl => (8, 48, 8),
            Field::NwFrag => (8, 56, 8),
            Field::NwSrc => (9, 0, 32),
            Field::NwDst => (9, 32, 32),
            Field::Ipv6SrcHi => (10, 0, 64),
            Field::Ipv6SrcLo => (11, 0, 64),
            Field::Ipv6DstHi => (12, 0, 64),
            Field::Ipv6DstLo => (13, 0, 64),
            Field::TpSrc => (14, 0, 16),
            Field::TpDst => (14, 16, 16),
            Field::ArpOp => (14, 32, 16),
            Field::ArpSha => (15, 0, 48),
            Field::ArpTha => (16, 0, 48),
            Field::CtMark => (17, 0, 32),
            Field::CtZone => (17, 32, 16),
            Field::CtState => (17, 48, 8),
            Field::Recirc => (17, 56, 8),
        }
    }

    /// All-ones value of this field's width.
    #[inline]
    pub const fn full(self) -> u64 {
        let (_, _, bits) = self.layout();
        if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }
}

/// A flow key (or, with the same layout, a mask over flow keys). See the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// The raw words; public so the classifier can do word arithmetic, layout per module docs.
    pub w: [u64; KEY_WORDS],
}

impl FlowKey {
    /// The all-zero key (also the all-wildcard mask).
    pub const ZERO: FlowKey = FlowKey { w: [0; KEY_WORDS] };
    /// The all-ones mask (exact match on every bit).
    pub const ONES: FlowKey = FlowKey {
        w: [u64::MAX; KEY_WORDS],
    };

    /// Reads a field.
    #[inline]
    pub fn get(&self, f: Field) -> u64 {
        let (word, shift, _) = f.layout();
        (self.w[word] >> shift) & f.full()
    }

    /// Writes a field (the value is truncated to the field's width).
    #[inline]
    pub fn set(&mut self, f: Field, v: u64) {
        let (word, shift, _) = f.layout();
        let m = f.full() << shift;
        self.w[word] = (self.w[word] & !m) | ((v << shift) & m);
    }

    /// Writes only the bits of `v` selected by `mask` (both in field coordinates).
    #[inline]
    pub fn set_masked(&mut self, f: Field, v: u64, mask: u64) {
        let old = self.get(f);
        self.set(f, (old & !mask) | (v & mask));
    }

    /// `self & mask`, word by word.
    #[inline]
    pub fn and(&self, mask: &FlowKey) -> FlowKey {
        let mut out = *self;
        for (o, m) in out.w.iter_mut().zip(mask.w.iter()) {
            *o &= m;
        }
        out
    }

    /// `self |= other`, word by word (used to accumulate consulted bits).
    #[inline]
    pub fn or_assign(&mut self, other: &FlowKey) {
        for (o, m) in self.w.iter_mut().zip(other.w.iter()) {
            *o |= m;
        }
    }

    /// True if every bit of the key is zero.
    pub fn is_zero(&self) -> bool {
        self.w.iter().all(|&x| x == 0)
    }

    /// Input port.
    pub fn in_port(&self) -> PortNo {
        self.get(Field::InPort) as PortNo
    }
    /// OpenFlow `vlan_tci` (0 when untagged).
    pub fn vlan_tci(&self) -> u16 {
        self.get(Field::VlanTci) as u16
    }
    /// VLAN id if a tag is present.
    pub fn vlan_vid(&self) -> Option<u16> {
        let tci = self.vlan_tci();
        (tci & VLAN_PRESENT != 0).then_some(tci & VLAN_VID_MASK)
    }
    /// VLAN priority if a tag is present.
    pub fn vlan_pcp(&self) -> Option<u8> {
        let tci = self.vlan_tci();
        (tci & VLAN_PRESENT != 0).then_some((tci >> 13) as u8)
    }
    /// EtherType.
    pub fn eth_type(&self) -> u16 {
        self.get(Field::EthType) as u16
    }
    /// Tunnel id (VNI).
    pub fn tun_id(&self) -> u64 {
        self.get(Field::TunId)
    }
    /// Metadata.
    pub fn metadata(&self) -> u64 {
        self.get(Field::Metadata)
    }
    /// Register `n` (0..=7).
    pub fn reg(&self, n: u8) -> u32 {
        self.get(Field::Reg(n)) as u32
    }
    /// Ethernet source.
    pub fn eth_src(&self) -> [u8; 6] {
        mac_to_bytes(self.get(Field::EthSrc))
    }
    /// Ethernet destination.
    pub fn eth_dst(&self) -> [u8; 6] {
        mac_to_bytes(self.get(Field::EthDst))
    }
    /// IP protocol.
    pub fn nw_proto(&self) -> u8 {
        self.get(Field::NwProto) as u8
    }
    /// IPv4 TOS / IPv6 traffic class.
    pub fn nw_tos(&self) -> u8 {
        self.get(Field::NwTos) as u8
    }
    /// IP TTL / hop limit.
    pub fn nw_ttl(&self) -> u8 {
        self.get(Field::NwTtl) as u8
    }
    /// Fragment flags.
    pub fn nw_frag(&self) -> u8 {
        self.get(Field::NwFrag) as u8
    }
    /// IPv4 source (ARP spa).
    pub fn nw_src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.get(Field::NwSrc) as u32)
    }
    /// IPv4 destination (ARP tpa).
    pub fn nw_dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.get(Field::NwDst) as u32)
    }
    /// IPv6 source.
    pub fn ipv6_src(&self) -> Ipv6Addr {
        Ipv6Addr::from(((self.w[10] as u128) << 64) | self.w[11] as u128)
    }
    /// IPv6 destination.
    pub fn ipv6_dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(((self.w[12] as u128) << 64) | self.w[13] as u128)
    }
    /// L4 source port / ICMP type.
    pub fn tp_src(&self) -> u16 {
        self.get(Field::TpSrc) as u16
    }
    /// L4 destination port / ICMP code.
    pub fn tp_dst(&self) -> u16 {
        self.get(Field::TpDst) as u16
    }
    /// ARP opcode.
    pub fn arp_op(&self) -> u16 {
        self.get(Field::ArpOp) as u16
    }
    /// ARP sender hardware address.
    pub fn arp_sha(&self) -> [u8; 6] {
        mac_to_bytes(self.get(Field::ArpSha))
    }
    /// ARP target hardware address.
    pub fn arp_tha(&self) -> [u8; 6] {
        mac_to_bytes(self.get(Field::ArpTha))
    }

    /// Conntrack state flags.
    pub fn ct_state(&self) -> u8 {
        self.get(Field::CtState) as u8
    }
    /// Conntrack zone.
    pub fn ct_zone(&self) -> u16 {
        self.get(Field::CtZone) as u16
    }
    /// Conntrack mark.
    pub fn ct_mark(&self) -> u32 {
        self.get(Field::CtMark) as u32
    }

    /// Sets the IPv6 source.
    pub fn set_ipv6_src(&mut self, a: Ipv6Addr) {
        let v = u128::from(a);
        self.w[10] = (v >> 64) as u64;
        self.w[11] = v as u64;
    }
    /// Sets the IPv6 destination.
    pub fn set_ipv6_dst(&mut self, a: Ipv6Addr) {
        let v = u128::from(a);
        self.w[12] = (v >> 64) as u64;
        self.w[13] = v as u64;
    }

    /// Hash of the whole key (used by the exact-match cache and the VXLAN source port).
    #[inline]
    pub fn hash_all(&self) -> u64 {
        let mut h = HASH_SEED;
        for &x in &self.w {
            h = hash_word(h, x);
        }
        hash_finish(h)
    }

    /// Hash of `self & mask` over the listed words only (the words where `mask` is nonzero):
    /// a subtable hashes only what its mask covers, so a 2-field mask costs 2 rounds, not 17.
    #[inline]
    pub fn hash_masked(&self, mask: &FlowKey, words: &[u8]) -> u64 {
        let mut h = HASH_SEED;
        for &i in words {
            let i = i as usize;
            h = hash_word(h, self.w[i] & mask.w[i]);
        }
        hash_finish(h)
    }

    /// True if `self & mask == value` on the listed words (`value` already masked).
    #[inline]
    pub fn matches_masked(&self, mask: &FlowKey, value: &FlowKey, words: &[u8]) -> bool {
        words.iter().all(|&i| {
            let i = i as usize;
            self.w[i] & mask.w[i] == value.w[i]
        })
    }

    /// Indices of the nonzero words of this key (used for masks).
    pub fn nonzero_words(&self) -> Vec<u8> {
        (0..KEY_WORDS as u8)
            .filter(|&i| self.w[i as usize] != 0)
            .collect()
    }
}

const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// One round of the key hash: multiply-xorshift, cheap and good enough for table indexing
/// (keys are not attacker-chosen in a way that matters more than for any switch; the tables
/// are bounded so a collision flood degrades speed, never correctness).
#[inline]
fn hash_word(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

#[inline]
fn hash_finish(h: u64) -> u64 {
    let h = h ^ (h >> 33);
    let h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Six MAC bytes to the key's numeric form.
pub fn mac_from_bytes(b: [u8; 6]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

/// The key's numeric MAC form to six bytes.
pub fn mac_to_bytes(v: u64) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (v >> (8 * (5 - i))) as u8;
    }
    out
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(v: u64) -> String {
    let b = mac_to_bytes(v);
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FlowKey");
        d.field("in_port", &self.in_port())
            .field("vlan_tci", &format_args!("{:#06x}", self.vlan_tci()))
            .field("eth_type", &format_args!("{:#06x}", self.eth_type()))
            .field(
                "eth_src",
                &format_args!("{}", fmt_mac(self.get(Field::EthSrc))),
            )
            .field(
                "eth_dst",
                &format_args!("{}", fmt_mac(self.get(Field::EthDst))),
            );
        if self.tun_id() != 0 {
            d.field("tun_id", &self.tun_id());
        }
        if self.metadata() != 0 {
            d.field("metadata", &format_args!("{:#x}", self.metadata()));
        }
        for r in 0..8u8 {
            if self.reg(r) != 0 {
                d.field(REG_NAMES[r as usize], &self.reg(r));
            }
        }
        d.field("nw_proto", &self.nw_proto())
            .field("nw_tos", &self.nw_tos())
            .field("nw_ttl", &self.nw_ttl())
            .field("nw_frag", &self.nw_frag())
            .field("nw_src", &self.nw_src())
            .field("nw_dst", &self.nw_dst());
        if self.w[10..14].iter().any(|&x| x != 0) {
            d.field("ipv6_src", &self.ipv6_src())
                .field("ipv6_dst", &self.ipv6_dst());
        }
        d.field("tp_src", &self.tp_src())
            .field("tp_dst", &self.tp_dst());
        if self.arp_op() != 0 {
            d.field("arp_op", &self.arp_op())
                .field(
                    "arp_sha",
                    &format_args!("{}", fmt_mac(self.get(Field::ArpSha))),
                )
                .field(
                    "arp_tha",
                    &format_args!("{}", fmt_mac(self.get(Field::ArpTha))),
                );
        }
        if self.w[17] != 0 {
            d.field("ct_state", &format_args!("{:#04x}", self.ct_state()))
                .field("ct_zone", &self.ct_zone())
                .field("ct_mark", &format_args!("{:#x}", self.ct_mark()))
                .field("recirc", &self.get(Field::Recirc));
        }
        d.finish()
    }
}

const REG_NAMES: [&str; 8] = [
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7",
];

/// A match: the packets whose key satisfies `key & mask == value`.
///
/// Invariant: `value & mask == value` (constructors keep it), so equal matches compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Match {
    /// The required bits (already masked).
    pub value: FlowKey,
    /// Which bits are significant.
    pub mask: FlowKey,
}

impl Match {
    /// The match-everything match.
    pub const ANY: Match = Match {
        value: FlowKey::ZERO,
        mask: FlowKey::ZERO,
    };

    /// Requires `field & mask == v & mask` (merging with any earlier constraint on the field).
    pub fn set_masked(&mut self, f: Field, v: u64, mask: u64) {
        let mask = mask & f.full();
        let old_m = self.mask.get(f);
        let old_v = self.value.get(f);
        let new_m = old_m | mask;
        // New bits take the new value; bits already constrained keep the newest value too.
        let new_v = (old_v & !mask) | (v & mask);
        self.mask.set(f, new_m);
        self.value.set(f, new_v & new_m);
    }

    /// Requires an exact value for a field.
    pub fn set_exact(&mut self, f: Field, v: u64) {
        self.set_masked(f, v, f.full());
    }

    /// Mask of a field in this match.
    pub fn field_mask(&self, f: Field) -> u64 {
        self.mask.get(f)
    }

    /// Value of a field in this match.
    pub fn field_value(&self, f: Field) -> u64 {
        self.value.get(f)
    }

    /// True if `key` is matched.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        key.w
            .iter()
            .zip(self.mask.w.iter())
            .zip(self.value.w.iter())
            .all(|((k, m), v)| k & m == *v)
    }

    /// True if every packet matched by `self` is also matched by `other`'s constraints being
    /// looser or equal, i.e. `other` covers `self` (used by non-strict del-flows).
    pub fn is_covered_by(&self, other: &Match) -> bool {
        (0..KEY_WORDS).all(|i| {
            // other's mask must be a subset of ours, and agree on those bits.
            other.mask.w[i] & !self.mask.w[i] == 0
                && self.value.w[i] & other.mask.w[i] == other.value.w[i]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap() {
        let fields = [
            Field::InPort,
            Field::VlanTci,
            Field::EthType,
            Field::TunId,
            Field::Metadata,
            Field::Reg(0),
            Field::Reg(1),
            Field::Reg(2),
            Field::Reg(3),
            Field::Reg(4),
            Field::Reg(5),
            Field::Reg(6),
            Field::Reg(7),
            Field::EthSrc,
            Field::EthDst,
            Field::NwProto,
            Field::NwTos,
            Field::NwTtl,
            Field::NwFrag,
            Field::NwSrc,
            Field::NwDst,
            Field::Ipv6SrcHi,
            Field::Ipv6SrcLo,
            Field::Ipv6DstHi,
            Field::Ipv6DstLo,
            Field::TpSrc,
            Field::TpDst,
            Field::ArpOp,
            Field::ArpSha,
            Field::ArpTha,
            Field::CtMark,
            Field::CtZone,
            Field::CtState,
            Field::Recirc,
        ];
        let mut seen = FlowKey::ZERO;
        for f in fields {
            let mut k = FlowKey::ZERO;
            k.set(f, u64::MAX);
            assert_eq!(k.get(f), f.full(), "{f:?}");
            assert!(k.and(&seen).is_zero(), "{f:?} overlaps");
            seen.or_assign(&k);
        }
    }

    #[test]
    fn mac_roundtrip() {
        let m = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(mac_to_bytes(mac_from_bytes(m)), m);
        assert_eq!(fmt_mac(mac_from_bytes(m)), "02:11:22:33:44:55");
    }

    #[test]
    fn match_masks_values() {
        let mut m = Match::ANY;
        m.set_masked(Field::NwDst, 0x0a00_0005, 0xffff_ff00);
        assert_eq!(m.field_value(Field::NwDst), 0x0a00_0000);
        let mut k = FlowKey::ZERO;
        k.set(Field::NwDst, 0x0a00_00fe);
        assert!(m.matches(&k));
        k.set(Field::NwDst, 0x0a00_01fe);
        assert!(!m.matches(&k));
    }
}
