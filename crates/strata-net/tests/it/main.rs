//! Integration tests of the packet engine (one binary, modules per area).

mod classifier_model;
mod conntrack;
mod conntrack_model;
mod ct_pipeline;
mod ct_util;
mod golden;
mod l4_parse;
mod meters;
mod offload;
mod parsers;
mod probes;
mod responders;
mod segmentation;
mod tunnels;

use std::net::Ipv4Addr;

use strata_net::key::{Field, FlowKey};

/// A TCP/IPv4 key between two MACs (test helper).
pub fn tcp_key(src_mac: u64, dst_mac: u64, src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, src_mac);
    k.set(Field::EthDst, dst_mac);
    k.set(Field::EthType, 0x0800);
    k.set(Field::NwProto, 6);
    k.set(Field::NwTtl, 64);
    k.set(Field::NwSrc, u32::from(src) as u64);
    k.set(Field::NwDst, u32::from(dst) as u64);
    k.set(Field::TpSrc, 40000);
    k.set(Field::TpDst, dport as u64);
    k
}

/// An Ethernet frame from `src` to `dst` MAC (IPv4/UDP, `len` bytes of payload).
pub fn eth_frame(src_mac: u64, dst_mac: u64) -> Vec<u8> {
    let mut k = tcp_key(
        src_mac,
        dst_mac,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        80,
    );
    k.set(Field::NwProto, 17);
    strata_net::packet::build_frame(&k, 18)
}
