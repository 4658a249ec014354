//! Fuzz conntrack's IP/L4 reader (IPv4/IPv6 with extension headers, TCP with options, UDP,
//! ICMP/ICMPv6 echo and errors with their quoted header), both on an L3 packet and through the
//! frame path, then feed what parses to a tracker.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_net::conntrack::{Conntrack, CtMark};

fuzz_target!(|data: &[u8]| {
    let mut ct = Conntrack::default();
    if let Ok(pkt) = strata_net::l4::parse_ip(data) {
        ct.process(Duration::ZERO, 0, &pkt);
        let _ = ct.commit(Duration::ZERO, 0, &pkt, CtMark::default());
        ct.process(Duration::from_secs(1), 0, &pkt);
    }
    if let Ok((_, lay)) = strata_net::packet::parse_frame(data, 1) {
        let _ = strata_net::l4::parse_frame_ip(data, &lay);
    }
    ct.check().expect("tracker invariants");
});
