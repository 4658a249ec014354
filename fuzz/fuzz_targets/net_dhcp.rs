//! Fuzz the DHCP server: the message parser on raw bytes, and the whole `dhcp_reply` path (the
//! bytes as a UDP/67 payload, and as a whole frame) through a switch; every answer it makes
//! must parse back as a valid frame.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_net::key::{Field, FlowKey};
use strata_net::packet::{build_frame, parse_frame};
use strata_net::switch::{Effects, PortConfig, Switch};

const FLOW: &str = "udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,prefix=24,router=10.0.0.1,\
dns=10.0.0.2;10.0.0.3,lease=3600,server=10.0.0.1,server_mac=02:00:00:00:00:fe,mtu=1450,\
domain=t.example),in_port";

fn header() -> &'static Vec<u8> {
    static H: OnceLock<Vec<u8>> = OnceLock::new();
    H.get_or_init(|| {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthSrc, 0x0200_0000_0077);
        k.set(Field::EthDst, 0xffff_ffff_ffff);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 17);
        k.set(Field::NwDst, u32::MAX as u64);
        k.set(Field::TpSrc, 68);
        k.set(Field::TpDst, 67);
        build_frame(&k, 0)
    })
}

thread_local! {
    // One switch for every input (making one per input costs more than the run): only its
    // caches carry over, and they do not change what an input gets.
    static SW: RefCell<(Switch, u32)> = RefCell::new({
        let mut sw = Switch::default();
        let p = sw.add_port(PortConfig::tap("vm", None)).unwrap();
        sw.add_flow(Duration::ZERO, FLOW).unwrap();
        (sw, p)
    });
}

fuzz_target!(|data: &[u8]| {
    let _ = strata_net::respond::dhcp::parse(data);
    let mut f = header().clone();
    f.extend_from_slice(data);
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = strata_net::csum::ipv4_header_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    SW.with(|cell| {
        let (sw, p) = &mut *cell.borrow_mut();
        let mut fx = Effects::new();
        for frame in [&f[..], data] {
            fx.clear();
            sw.receive(Duration::ZERO, *p, frame, &mut fx);
            for (_, out) in fx.iter() {
                parse_frame(out, *p).expect("an answer parses");
            }
        }
    });
});
