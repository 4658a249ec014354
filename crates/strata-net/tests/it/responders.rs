//! The router, ARP and DHCP actions through a whole switch: every field of every answer, exact
//! counters, refusals, trace, and the DHCP parser on random and mutated bytes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;
use strata_net::csum;
use strata_net::key::{Field, FlowKey};
use strata_net::packet::{build_frame, parse_frame};
use strata_net::respond::dhcp::{self, msg, MAGIC, OFF_CHADDR, OFF_OPTIONS};
use strata_net::respond::ReplyDrop;
use strata_net::switch::{Disposition, Domain, DropReason, Effects, PortConfig, Switch};
use strata_net::{format_flow, parse_flow};

const T0: Duration = Duration::ZERO;
const VM: u64 = 0x0200_0000_0005;
const GW: u64 = 0x0200_0000_00fe;
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn v4(a: Ipv4Addr) -> u64 {
    u32::from(a) as u64
}

fn ip_key(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, VM);
    k.set(Field::EthDst, GW);
    k.set(Field::EthType, 0x0800);
    k.set(Field::NwProto, proto as u64);
    k.set(Field::NwTtl, ttl as u64);
    k.set(Field::NwSrc, v4(src));
    k.set(Field::NwDst, v4(dst));
    k
}

fn one(sw: &mut Switch, port: u32, frame: &[u8]) -> (Disposition, Vec<(u32, Vec<u8>)>) {
    let mut fx = Effects::new();
    let d = sw.receive(T0, port, frame, &mut fx);
    (d, fx.iter().map(|(p, b)| (p, b.to_vec())).collect())
}

fn ipv4_header_ok(f: &[u8], l3: usize) -> bool {
    let mut h = f[l3..l3 + 20].to_vec();
    let c = u16::from_be_bytes([h[10], h[11]]);
    h[10] = 0;
    h[11] = 0;
    csum::ipv4_header_checksum(&h) == c
}

fn router() -> (Switch, u32, u32) {
    let mut sw = Switch::default();
    let a = sw.add_port(PortConfig::tap("vm", None)).unwrap();
    let b = sw.add_port(PortConfig::tap("up", None)).unwrap();
    (sw, a, b)
}

#[test]
fn dec_ttl_forwards_with_a_valid_checksum_and_drops_at_one() {
    let (mut sw, a, b) = router();
    sw.add_flow(T0, "ip,nw_dst=10.1.0.0/16,actions=dec_ttl,output:up")
        .unwrap();
    let dst = Ipv4Addr::new(10, 1, 0, 9);
    let mut k = ip_key(17, VM_IP, dst, 64);
    k.set(Field::TpSrc, 1000);
    k.set(Field::TpDst, 2000);
    let f = build_frame(&k, 30);
    let (d, out) = one(&mut sw, a, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(out[0].0, b);
    let o = &out[0].1;
    assert_eq!(o[22], 63, "TTL 64 - 1");
    assert!(ipv4_header_ok(o, 14));
    let (_, lay) = parse_frame(o, b).unwrap();
    assert!(csum::verify_l4_checksum(o, 14, lay.l4.unwrap() as usize));
    assert_eq!(&o[..22], &f[..22]);
    assert_eq!(&o[34..], &f[34..], "only TTL and header checksum change");

    // TTL 1 with no rule catching it: dropped as ttl_expired, counted.
    let f1 = build_frame(&ip_key(17, VM_IP, dst, 1), 30);
    let before = sw.port_stats(a).unwrap().rx_dropped;
    assert_eq!(
        one(&mut sw, a, &f1).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::TtlExpired))
    );
    assert_eq!(sw.port_stats(a).unwrap().rx_dropped, before + 1);
    assert_eq!(sw.stats().replies.dropped(ReplyDrop::TtlExpired), 1);
    let mut f0 = f1.clone();
    f0[22] = 0; // build_frame writes TTL 0 as 64
    f0[24..26].copy_from_slice(&[0, 0]);
    let c = csum::ipv4_header_checksum(&f0[14..34]);
    f0[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        one(&mut sw, a, &f0).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::TtlExpired))
    );
    assert_eq!(sw.stats().replies.dropped(ReplyDrop::TtlExpired), 2);
    assert_eq!(sw.port_stats(b).unwrap().tx_packets, 1);
}

#[test]
fn dec_ttl_on_ipv6_decrements_the_hop_limit() {
    let (mut sw, a, b) = router();
    sw.add_flow(T0, "ipv6,actions=dec_ttl,output:up").unwrap();
    let mut k = FlowKey::ZERO;
    k.set(Field::EthType, 0x86dd);
    k.set(Field::NwProto, 17);
    k.set(Field::NwTtl, 10);
    k.set_ipv6_src("fd00::5".parse::<Ipv6Addr>().unwrap());
    k.set_ipv6_dst("fd01::9".parse::<Ipv6Addr>().unwrap());
    let f = build_frame(&k, 12);
    let (d, out) = one(&mut sw, a, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    let (ok, lay) = parse_frame(&out[0].1, b).unwrap();
    assert_eq!(ok.nw_ttl(), 9);
    assert!(csum::verify_l4_checksum(
        &out[0].1,
        14,
        lay.l4.unwrap() as usize
    ));
    k.set(Field::NwTtl, 1);
    assert_eq!(
        one(&mut sw, a, &build_frame(&k, 12)).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::TtlExpired))
    );
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_router() {
    let (mut sw, a, b) = router();
    sw.add_flow(
        T0,
        "priority=200,ip,nw_ttl=1,actions=icmp_error(type=11,code=0,src=10.0.0.1),in_port",
    )
    .unwrap();
    sw.add_flow(T0, "priority=200,ip,nw_ttl=0,actions=drop")
        .unwrap();
    sw.add_flow(T0, "priority=100,ip,actions=dec_ttl,output:up")
        .unwrap();
    let dst = Ipv4Addr::new(10, 1, 0, 9);
    let mut k = ip_key(17, VM_IP, dst, 1);
    k.set(Field::TpSrc, 33434);
    k.set(Field::TpDst, 33435);
    let f = build_frame(&k, 40);
    let (d, out) = one(&mut sw, a, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(out[0].0, a, "back out of the input port");
    let o = &out[0].1;
    let (rk, rl) = parse_frame(o, a).unwrap();
    assert_eq!(rk.get(Field::EthDst), VM);
    assert_eq!(rk.get(Field::EthSrc), GW);
    assert_eq!((rk.nw_src(), rk.nw_dst()), (GW_IP, VM_IP));
    assert_eq!((rk.nw_proto(), rk.nw_ttl()), (1, 64));
    assert_eq!((rk.tp_src(), rk.tp_dst()), (11, 0));
    assert_eq!(o.len(), 14 + 20 + 8 + 28);
    assert!(ipv4_header_ok(o, 14));
    assert!(csum::verify_l4_checksum(o, 14, rl.l4.unwrap() as usize));
    assert_eq!(&o[42..70], &f[14..42], "quoted header + 8 bytes");
    assert_eq!(sw.stats().replies.icmp_errors, 1);
    assert_eq!(sw.port_stats(b).unwrap().tx_packets, 0);

    // An ICMP error with TTL 1 gets no error back: dropped and counted.
    let mut e = ip_key(1, VM_IP, dst, 1);
    e.set(Field::TpSrc, 3);
    e.set(Field::TpDst, 3);
    assert_eq!(
        one(&mut sw, a, &build_frame(&e, 36)).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::IcmpErrorRefused))
    );
    assert_eq!(sw.stats().replies.dropped(ReplyDrop::IcmpErrorRefused), 1);
    assert_eq!(sw.stats().replies.icmp_errors, 1);
}

#[test]
fn hop_limit_one_gets_an_icmpv6_time_exceeded() {
    let (mut sw, a, _) = router();
    sw.add_flow(
        T0,
        "priority=200,ipv6,nw_ttl=1,actions=icmp_error(type=3,code=0,src=fd00::1),in_port",
    )
    .unwrap();
    sw.add_flow(T0, "priority=100,ipv6,actions=dec_ttl,output:up")
        .unwrap();
    let (vm6, gw6): (Ipv6Addr, Ipv6Addr) = ("fd00::5".parse().unwrap(), "fd00::1".parse().unwrap());
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, VM);
    k.set(Field::EthDst, GW);
    k.set(Field::EthType, 0x86dd);
    k.set(Field::NwProto, 17);
    k.set(Field::NwTtl, 1);
    k.set_ipv6_src(vm6);
    k.set_ipv6_dst("fd01::9".parse::<Ipv6Addr>().unwrap());
    k.set(Field::TpSrc, 4000);
    k.set(Field::TpDst, 33434);
    for (payload, quoted) in [(100, 40 + 8 + 100), (1400, 1280 - 48)] {
        let f = build_frame(&k, payload);
        let (d, out) = one(&mut sw, a, &f);
        assert_eq!(d, Disposition::Forwarded(1));
        let o = &out[0].1;
        let (rk, rl) = parse_frame(o, a).unwrap();
        assert_eq!((rk.get(Field::EthDst), rk.get(Field::EthSrc)), (VM, GW));
        assert_eq!((rk.ipv6_src(), rk.ipv6_dst()), (gw6, vm6));
        assert_eq!((rk.nw_proto(), rk.nw_ttl()), (58, 64));
        assert_eq!((rk.tp_src(), rk.tp_dst()), (3, 0));
        assert_eq!(o.len(), 14 + 40 + 8 + quoted, "payload {payload}");
        assert!(o.len() - 14 <= 1280);
        assert!(csum::verify_l4_checksum(o, 14, rl.l4.unwrap() as usize));
        assert_eq!(&o[62..], &f[14..14 + quoted]);
    }
    // Never about an ICMPv6 error.
    k.set(Field::NwProto, 58);
    k.set(Field::TpSrc, 1);
    k.set(Field::TpDst, 0);
    assert_eq!(
        one(&mut sw, a, &build_frame(&k, 40)).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::IcmpErrorRefused))
    );
    assert_eq!(sw.stats().replies.icmp_errors, 2);
}

#[test]
fn icmp_error_keeps_the_vlan_of_a_trunk() {
    let mut sw = Switch::default();
    let t = sw.add_port(PortConfig::tap("trunk", None)).unwrap();
    sw.add_port(PortConfig::tap("x", None)).unwrap();
    sw.add_flow(
        T0,
        "udp,tp_dst=9,actions=icmp_error(type=3,code=3,src=10.0.0.1),in_port",
    )
    .unwrap();
    let mut k = ip_key(17, VM_IP, GW_IP, 64);
    k.set(Field::VlanTci, 0x1000 | 30);
    k.set(Field::TpSrc, 5000);
    k.set(Field::TpDst, 9);
    let f = build_frame(&k, 4);
    let (d, out) = one(&mut sw, t, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    let (rk, rl) = parse_frame(&out[0].1, t).unwrap();
    assert_eq!(rk.vlan_vid(), Some(30));
    assert_eq!((rk.tp_src(), rk.tp_dst()), (3, 3));
    assert!(csum::verify_l4_checksum(
        &out[0].1,
        rl.l3 as usize,
        rl.l4.unwrap() as usize
    ));
    // The quote is the IP header and the UDP header (the first 8 bytes of its payload).
    assert_eq!(&out[0].1[18 + 28..], &f[18..18 + 28]);
}

#[test]
fn ping_to_the_gateway_is_answered_small_and_large() {
    let (mut sw, a, _) = router();
    sw.add_flow(
        T0,
        "icmp,icmp_type=8,nw_dst=10.0.0.1,actions=icmp_echo_reply,in_port",
    )
    .unwrap();
    for (payload, split) in [(56, false), (4000, true)] {
        let mut k = ip_key(1, VM_IP, GW_IP, 64);
        k.set(Field::TpSrc, 8);
        let mut f = build_frame(&k, payload);
        // An identifier, a sequence number and a payload pattern, checksum recomputed.
        for (i, b) in f[38..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        csum::fill_l4_checksum(&mut f, 14, 34);
        let mut fx = Effects::new();
        fx.set_split(split);
        assert_eq!(sw.receive(T0, a, &f, &mut fx), Disposition::Forwarded(1));
        let o: Vec<u8> = fx
            .outputs()
            .map(|o| [o.head, &f[o.tail]].concat())
            .next()
            .unwrap();
        let (rk, _) = parse_frame(&o, a).unwrap();
        assert_eq!((rk.get(Field::EthDst), rk.get(Field::EthSrc)), (VM, GW));
        assert_eq!((rk.nw_src(), rk.nw_dst()), (GW_IP, VM_IP));
        assert_eq!((rk.tp_src(), rk.nw_ttl()), (0, 64));
        assert!(ipv4_header_ok(&o, 14));
        assert!(csum::verify_l4_checksum(&o, 14, 34), "payload {payload}");
        assert_eq!(&o[38..], &f[38..], "id, sequence and data echoed");
    }
    assert_eq!(sw.stats().replies.echo_replies, 2);
}

fn arp_request(sha: u64, spa: Ipv4Addr, tpa: Ipv4Addr) -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, sha);
    k.set(Field::EthDst, 0xffff_ffff_ffff);
    k.set(Field::EthType, 0x0806);
    k.set(Field::ArpOp, 1);
    k.set(Field::ArpSha, sha);
    k.set(Field::NwSrc, v4(spa));
    k.set(Field::NwDst, v4(tpa));
    k
}

#[test]
fn arp_for_the_gateway_is_answered_and_nothing_floods() {
    let mut sw = Switch::default();
    let a = sw
        .add_port(PortConfig::tap("vm", Some(Domain::Vlan(10))))
        .unwrap();
    let b = sw
        .add_port(PortConfig::tap("other", Some(Domain::Vlan(10))))
        .unwrap();
    sw.add_flow(
        T0,
        "priority=100,arp,arp_op=1,arp_tpa=10.0.0.1,actions=arp_reply:02:00:00:00:00:fe,in_port",
    )
    .unwrap();
    sw.add_flow(T0, "priority=0,actions=normal").unwrap();
    let f = build_frame(&arp_request(VM, VM_IP, GW_IP), 0);
    let (d, out) = one(&mut sw, a, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(out[0].0, a);
    let o = &out[0].1;
    assert_eq!(o.len(), f.len());
    assert_eq!(&o[0..6], &VM.to_be_bytes()[2..], "eth dst = requester");
    assert_eq!(&o[6..12], &GW.to_be_bytes()[2..], "eth src = answering MAC");
    assert_eq!(&o[12..22], &[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    assert_eq!(&o[22..28], &GW.to_be_bytes()[2..], "sha");
    assert_eq!(&o[28..32], &GW_IP.octets(), "spa = the requested address");
    assert_eq!(&o[32..38], &VM.to_be_bytes()[2..], "tha");
    assert_eq!(&o[38..42], &VM_IP.octets(), "tpa");
    assert_eq!(sw.port_stats(b).unwrap().tx_packets, 0, "no flood");
    assert_eq!(sw.stats().replies.arp_replies, 1);
    // Another address is not ours: normal floods it.
    let f2 = build_frame(&arp_request(VM, VM_IP, Ipv4Addr::new(10, 0, 0, 7)), 0);
    assert_eq!(one(&mut sw, a, &f2).1[0].0, b);
    // A reply from a multicast sender is refused and counted.
    let mut bad = arp_request(0x0100_5e00_0001, VM_IP, GW_IP);
    bad.set(Field::EthSrc, 0x0100_5e00_0001);
    assert_eq!(
        one(&mut sw, a, &build_frame(&bad, 0)).0,
        Disposition::Dropped(DropReason::Reply(ReplyDrop::ArpRefused))
    );
    assert_eq!(sw.stats().replies.dropped(ReplyDrop::ArpRefused), 1);
}

#[test]
fn trace_shows_answers_and_ttl_drops() {
    let (mut sw, _, _) = router();
    sw.add_flow(
        T0,
        "arp,arp_op=1,arp_tpa=10.0.0.1,actions=arp_reply:02:00:00:00:00:fe,in_port",
    )
    .unwrap();
    sw.add_flow(
        T0,
        "priority=200,ip,nw_ttl=1,actions=icmp_error(type=11,code=0,src=10.0.0.1),in_port",
    )
    .unwrap();
    sw.add_flow(T0, "priority=100,ip,actions=dec_ttl,output:up")
        .unwrap();
    let t = sw
        .trace(
            "in_port=vm,arp,arp_op=1,dl_src=02:00:00:00:00:05,arp_sha=02:00:00:00:00:05,arp_spa=10.0.0.5,arp_tpa=10.0.0.1",
            T0,
        )
        .unwrap();
    assert_eq!(t.outputs.len(), 1);
    assert_eq!(t.final_key.arp_op(), 2);
    assert_eq!(t.final_key.nw_src(), GW_IP);
    let text = t.to_string();
    assert!(text.contains("arp_reply:02:00:00:00:00:fe"), "{text}");
    assert!(text.contains("arp_op=2"), "{text}");
    let t = sw
        .trace("in_port=vm,udp,nw_src=10.0.0.5,nw_dst=10.1.0.1,nw_ttl=1,dl_src=02:00:00:00:00:05,dl_dst=02:00:00:00:00:fe", T0)
        .unwrap();
    assert_eq!(t.outputs.len(), 1);
    assert_eq!(t.outputs[0].port, 1);
    assert_eq!((t.final_key.nw_proto(), t.final_key.tp_src()), (1, 11));
    assert_eq!(t.final_key.nw_dst(), VM_IP);
    // dec_ttl at TTL 1 directly (no catching rule): the trace says why it drops.
    sw.del_flows("priority=200,ip,nw_ttl=1", true).unwrap();
    let t = sw
        .trace(
            "in_port=vm,udp,nw_src=10.0.0.5,nw_dst=10.1.0.1,nw_ttl=1",
            T0,
        )
        .unwrap();
    assert_eq!(t.reply_drop, Some(ReplyDrop::TtlExpired));
    assert!(t.outputs.is_empty());
    assert!(t.to_string().contains("Dropped by action: ttl_expired"));
    assert_eq!(
        sw.stats().replies,
        Default::default(),
        "trace counts nothing"
    );
}

#[test]
fn reply_actions_parse_format_and_refuse() {
    for s in [
        "ip,actions=dec_ttl,output:2",
        "ipv6,actions=dec_ttl,in_port",
        "ip,nw_ttl=1,actions=icmp_error(type=11,code=0,src=10.0.0.1),in_port",
        "ipv6,nw_ttl=1,actions=icmp_error(type=3,code=0,src=fd00::1),in_port",
        "icmp,icmp_type=8,actions=icmp_echo_reply,in_port",
        "arp,arp_op=1,actions=arp_reply:02:00:00:00:00:01,in_port",
        "udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,netmask=255.255.255.0,router=10.0.0.1,dns=10.0.0.2;10.0.0.3,lease=3600,server=10.0.0.1,server_mac=02:00:00:00:00:fe,mtu=1450,domain=tenant.example),in_port",
        "udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,lease=86400,server=10.0.0.1,server_mac=02:00:00:00:00:fe),in_port",
    ] {
        let r = parse_flow(s, None).unwrap_or_else(|e| panic!("{s}: {e}"));
        let back = parse_flow(&format_flow(&r, None), None).unwrap();
        assert_eq!(back, r, "{s}");
    }
    // prefix= is netmask= written shorter; arguments in any order.
    let a = parse_flow("udp,tp_dst=67,actions=dhcp_reply(server_mac=02:00:00:00:00:fe,server=10.0.0.1,yiaddr=10.0.0.5,prefix=24)", None).unwrap();
    assert!(format_flow(&a, None).contains("netmask=255.255.255.0,lease=86400"));
    let code = |s: &str| parse_flow(s, None).unwrap_err().code();
    assert_eq!(code("actions=dec_ttl"), "missing_prerequisite");
    assert_eq!(code("udp,actions=icmp_echo_reply"), "missing_prerequisite");
    assert_eq!(code("icmp,actions=icmp_echo_reply"), "missing_prerequisite");
    assert_eq!(
        code("arp,actions=arp_reply:02:00:00:00:00:01"),
        "missing_prerequisite"
    );
    assert_eq!(
        code("ipv6,actions=icmp_error(type=11,src=10.0.0.1)"),
        "missing_prerequisite"
    );
    assert_eq!(
        code(
            "udp,actions=dhcp_reply(yiaddr=10.0.0.5,server=10.0.0.1,server_mac=02:00:00:00:00:fe)"
        ),
        "missing_prerequisite"
    );
    assert_eq!(
        code("arp,arp_op=1,actions=arp_reply:01:00:00:00:00:01"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=5,code=0,src=10.0.0.1)"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=3,code=4,src=10.0.0.1)"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=11,code=0)"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=11,code=0,src=10.0.0.1"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=11,bogus=1,src=10.0.0.1)"),
        "bad_action_argument"
    );
    assert_eq!(code("ip,actions=frobnicate(x=1)"), "unknown_action");
    assert_eq!(
        code("ip,actions=icmp_error(type=3,src=fd00::1)"),
        "missing_prerequisite"
    );
    assert_eq!(
        code("ipv6,actions=icmp_error(type=11,src=fd00::1)"),
        "bad_action_argument"
    );
    assert_eq!(
        code("ipv6,actions=icmp_error(type=3,src=fd00::zz)"),
        "bad_action_argument"
    );
    assert_eq!(
        code("udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,server=10.0.0.1)"),
        "bad_action_argument"
    );
    assert_eq!(code("udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,server=10.0.0.1,server_mac=02:00:00:00:00:fe,netmask=255.0.255.0)"), "bad_action_argument");
    assert_eq!(code("udp,tp_dst=67,actions=dhcp_reply(yiaddr=10.0.0.5,server=10.0.0.1,server_mac=02:00:00:00:00:fe,prefix=24,netmask=255.255.255.0)"), "bad_action_argument");
    assert_eq!(
        code("icmp,icmp_type=8,actions=icmp_echo_reply,dec_ttl,in_port"),
        "reply_not_last"
    );
    assert_eq!(
        code("icmp,icmp_type=8,actions=icmp_echo_reply,goto_table:3"),
        "reply_not_last"
    );
    assert_eq!(
        code("ip,actions=icmp_error(type=11,src=10.0.0.1),set_field:10.0.0.9->ip_dst,in_port"),
        "reply_not_last"
    );
    // Outputs before a reply are fine (a mirror of the question).
    parse_flow(
        "icmp,icmp_type=8,actions=output:3,icmp_echo_reply,in_port,output:4",
        None,
    )
    .unwrap();
}

// ----- DHCP -----

const CLIENT: u64 = 0x0200_0000_0077;

/// A DHCP message from CLIENT with `options` (without the end option).
fn dhcp_msg(ciaddr: Ipv4Addr, flags: u16, options: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; OFF_OPTIONS];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    b[8..10].copy_from_slice(&3u16.to_be_bytes());
    b[10..12].copy_from_slice(&flags.to_be_bytes());
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[OFF_CHADDR..OFF_CHADDR + 6].copy_from_slice(&CLIENT.to_be_bytes()[2..]);
    b[236..240].copy_from_slice(&MAGIC);
    b.extend_from_slice(options);
    b.push(255);
    b
}

/// The message in an Ethernet/IPv4/UDP 68→67 frame (as a client in INIT sends it).
fn dhcp_frame(ciaddr: Ipv4Addr, m: &[u8]) -> Vec<u8> {
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, CLIENT);
    k.set(
        Field::EthDst,
        if ciaddr.is_unspecified() {
            0xffff_ffff_ffff
        } else {
            GW
        },
    );
    k.set(Field::EthType, 0x0800);
    k.set(Field::NwProto, 17);
    k.set(Field::NwTtl, 64);
    k.set(Field::NwSrc, v4(ciaddr));
    k.set(
        Field::NwDst,
        if ciaddr.is_unspecified() {
            u32::MAX as u64
        } else {
            v4(GW_IP)
        },
    );
    k.set(Field::TpSrc, 68);
    k.set(Field::TpDst, 67);
    let mut f = build_frame(&k, m.len());
    f[42..].copy_from_slice(m);
    f[38..40].copy_from_slice(&(8 + m.len() as u16).to_be_bytes());
    csum::fill_l4_checksum(&mut f, 14, 34);
    f
}

fn dhcp_switch() -> (Switch, u32, u32) {
    let mut sw = Switch::default();
    let a = sw
        .add_port(PortConfig::tap("vm", Some(Domain::Vni(5))))
        .unwrap();
    let b = sw
        .add_port(PortConfig::tap("vm2", Some(Domain::Vni(5))))
        .unwrap();
    sw.add_flow(
        T0,
        "priority=100,in_port=vm,udp,tp_src=68,tp_dst=67,dl_src=02:00:00:00:00:77,actions=dhcp_reply(yiaddr=10.0.0.5,prefix=24,router=10.0.0.1,dns=10.0.0.2;10.0.0.3,lease=3600,server=10.0.0.1,server_mac=02:00:00:00:00:fe,mtu=1450,domain=t1.example),in_port",
    )
    .unwrap();
    sw.add_flow(T0, "priority=0,actions=normal").unwrap();
    (sw, a, b)
}

/// The options of an answer as (code, value) in order.
fn options_of(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    let mut i = OFF_OPTIONS;
    while i < b.len() && b[i] != 255 {
        if b[i] == 0 {
            i += 1;
            continue;
        }
        let l = b[i + 1] as usize;
        v.push((b[i], b[i + 2..i + 2 + l].to_vec()));
        i += 2 + l;
    }
    v
}

/// Sends `m` from the client; returns the one answer's frame.
fn ask(sw: &mut Switch, port: u32, ciaddr: Ipv4Addr, m: &[u8]) -> Vec<u8> {
    let (d, out) = one(sw, port, &dhcp_frame(ciaddr, m));
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(out[0].0, port);
    out.into_iter().next().unwrap().1
}

fn check_udp(o: &[u8], dst_mac: u64, dst_ip: Ipv4Addr) -> &[u8] {
    let (k, lay) = parse_frame(o, 1).unwrap();
    assert_eq!(k.get(Field::EthDst), dst_mac);
    assert_eq!(k.get(Field::EthSrc), GW);
    assert_eq!((k.nw_src(), k.nw_dst()), (GW_IP, dst_ip));
    assert_eq!((k.nw_proto(), k.nw_ttl()), (17, 64));
    assert_eq!((k.tp_src(), k.tp_dst()), (67, 68));
    assert!(ipv4_header_ok(o, 14));
    assert!(csum::verify_l4_checksum(o, 14, lay.l4.unwrap() as usize));
    let udp_len = u16::from_be_bytes([o[38], o[39]]) as usize;
    assert_eq!(udp_len, o.len() - 34);
    &o[42..]
}

#[test]
fn discover_gets_an_offer_with_every_field() {
    let (mut sw, a, b) = dhcp_switch();
    let z = Ipv4Addr::UNSPECIFIED;
    let o = ask(&mut sw, a, z, &dhcp_msg(z, 0, &[53, 1, msg::DISCOVER]));
    let bp = check_udp(&o, CLIENT, VM_IP);
    assert!(bp.len() >= 300);
    assert_eq!(&bp[0..4], &[2, 1, 6, 0]);
    assert_eq!(&bp[4..8], &0xdead_beefu32.to_be_bytes(), "xid");
    assert_eq!(&bp[8..12], &[0, 0, 0, 0], "secs, flags");
    assert_eq!(&bp[12..16], &[0; 4], "ciaddr");
    assert_eq!(&bp[16..20], &VM_IP.octets(), "yiaddr");
    assert_eq!(&bp[20..28], &[0; 8], "siaddr, giaddr");
    assert_eq!(&bp[28..34], &CLIENT.to_be_bytes()[2..], "chaddr");
    assert!(
        bp[34..236].iter().all(|&x| x == 0),
        "rest of chaddr, sname, file"
    );
    assert_eq!(&bp[236..240], &MAGIC);
    let want: Vec<(u8, Vec<u8>)> = vec![
        (53, vec![msg::OFFER]),
        (54, GW_IP.octets().to_vec()),
        (51, 3600u32.to_be_bytes().to_vec()),
        (58, 1800u32.to_be_bytes().to_vec()),
        (59, 3150u32.to_be_bytes().to_vec()),
        (1, vec![255, 255, 255, 0]),
        (3, GW_IP.octets().to_vec()),
        (6, vec![10, 0, 0, 2, 10, 0, 0, 3]),
        (15, b"t1.example".to_vec()),
        (26, 1450u16.to_be_bytes().to_vec()),
    ];
    assert_eq!(options_of(bp), want);
    assert_eq!(sw.stats().replies.dhcp_offers, 1);
    assert_eq!(sw.port_stats(b).unwrap().tx_packets, 0, "never flooded");
    // The broadcast flag makes it a broadcast.
    let o = ask(&mut sw, a, z, &dhcp_msg(z, 0x8000, &[53, 1, msg::DISCOVER]));
    let bp = check_udp(&o, 0xffff_ffff_ffff, Ipv4Addr::BROADCAST);
    assert_eq!(&bp[10..12], &[0x80, 0]);
}

#[test]
fn request_ack_nak_renew_inform_release() {
    let (mut sw, a, _) = dhcp_switch();
    let z = Ipv4Addr::UNSPECIFIED;
    let sel = [53, 1, 3, 54, 4, 10, 0, 0, 1, 50, 4, 10, 0, 0, 5];
    let o = ask(&mut sw, a, z, &dhcp_msg(z, 0, &sel));
    let bp = check_udp(&o, CLIENT, VM_IP);
    assert_eq!(options_of(bp)[0], (53, vec![msg::ACK]));
    assert_eq!(&bp[16..20], &VM_IP.octets());
    // Init-reboot asking for another address: NAK, broadcast, no yiaddr, no parameters.
    let o = ask(
        &mut sw,
        a,
        z,
        &dhcp_msg(z, 0, &[53, 1, 3, 50, 4, 10, 0, 0, 9]),
    );
    let bp = check_udp(&o, 0xffff_ffff_ffff, Ipv4Addr::BROADCAST);
    assert_eq!(&bp[16..20], &[0; 4]);
    assert_eq!(
        options_of(bp),
        vec![(53, vec![msg::NAK]), (54, GW_IP.octets().to_vec())]
    );
    // Renewing (unicast from the bound address): ACK unicast to ciaddr, ciaddr echoed.
    let o = ask(&mut sw, a, VM_IP, &dhcp_msg(VM_IP, 0, &[53, 1, 3]));
    let bp = check_udp(&o, CLIENT, VM_IP);
    assert_eq!(&bp[12..16], &VM_IP.octets());
    assert_eq!(options_of(bp)[2].0, 51);
    // INFORM: ACK without yiaddr and without lease options.
    let o = ask(&mut sw, a, VM_IP, &dhcp_msg(VM_IP, 0, &[53, 1, 8]));
    let bp = check_udp(&o, CLIENT, VM_IP);
    assert_eq!(&bp[16..20], &[0; 4]);
    let codes: Vec<u8> = options_of(bp).iter().map(|o| o.0).collect();
    assert_eq!(codes, vec![53, 54, 1, 3, 6, 15, 26]);
    assert_eq!(sw.stats().replies.dhcp_acks, 3);
    assert_eq!(sw.stats().replies.dhcp_naks, 1);
    // RELEASE, DECLINE: nothing sent; a REQUEST for another server: nothing; an OFFER: nothing.
    let drops = [
        (vec![53, 1, msg::RELEASE], ReplyDrop::DhcpNoReply),
        (vec![53, 1, msg::DECLINE], ReplyDrop::DhcpNoReply),
        (
            vec![53, 1, 3, 54, 4, 10, 0, 0, 9, 50, 4, 10, 0, 0, 5],
            ReplyDrop::DhcpNotForUs,
        ),
        (vec![53, 1, msg::OFFER], ReplyDrop::DhcpUnexpected),
        (vec![], ReplyDrop::DhcpMalformed),
    ];
    for (opts, why) in drops {
        let d = one(&mut sw, a, &dhcp_frame(z, &dhcp_msg(z, 0, &opts))).0;
        assert_eq!(d, Disposition::Dropped(DropReason::Reply(why)), "{opts:?}");
    }
    let r = sw.stats().replies;
    assert_eq!(r.dropped(ReplyDrop::DhcpNoReply), 2);
    assert_eq!(r.dropped(ReplyDrop::DhcpNotForUs), 1);
    assert_eq!(r.dropped(ReplyDrop::DhcpUnexpected), 1);
    assert_eq!(r.dropped(ReplyDrop::DhcpMalformed), 1);
}

#[test]
fn a_relayed_request_is_answered_to_the_relay() {
    let (mut sw, a, _) = dhcp_switch();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = dhcp_msg(z, 0, &[53, 1, msg::DISCOVER]);
    m[24..28].copy_from_slice(&[10, 9, 9, 9]);
    let (_, out) = one(&mut sw, a, &dhcp_frame(z, &m));
    let (k, _) = parse_frame(&out[0].1, a).unwrap();
    assert_eq!(k.nw_dst(), Ipv4Addr::new(10, 9, 9, 9));
    assert_eq!((k.tp_src(), k.tp_dst()), (67, 67));
    assert_eq!(
        k.get(Field::EthDst),
        CLIENT,
        "to the MAC the relay sent from"
    );
}

fn valid_messages() -> Vec<Vec<u8>> {
    let z = Ipv4Addr::UNSPECIFIED;
    vec![
        dhcp_msg(z, 0, &[53, 1, 1]),
        dhcp_msg(
            z,
            0x8000,
            &[53, 1, 3, 54, 4, 10, 0, 0, 1, 50, 4, 10, 0, 0, 5],
        ),
        dhcp_msg(VM_IP, 0, &[53, 1, 3]),
        dhcp_msg(VM_IP, 0, &[53, 1, 8, 52, 1, 3]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dhcp_parser_never_panics_on_random_bytes(b in prop::collection::vec(any::<u8>(), 0..700)) {
        let _ = dhcp::parse(&b);
    }

    #[test]
    fn mutated_requests_never_panic_and_answers_stay_valid(
        which in 0usize..4,
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut m = valid_messages().swap_remove(which);
        for (i, v) in muts {
            let at = i.index(m.len());
            m[at] = v;
        }
        if truncate {
            m.truncate(cut.index(m.len() + 1));
        }
        let _ = dhcp::parse(&m);
        let (mut sw, a, _) = dhcp_switch();
        let z = Ipv4Addr::UNSPECIFIED;
        let mut fx = Effects::new();
        if let Disposition::Forwarded(_) = sw.receive(T0, a, &dhcp_frame(z, &m), &mut fx) {
            let (_, o) = fx.iter().next().unwrap();
            let (k, lay) = parse_frame(o, a).unwrap();
            prop_assert_eq!((k.tp_src(), k.nw_src()), (67, GW_IP));
            prop_assert!(ipv4_header_ok(o, 14));
            prop_assert!(csum::verify_l4_checksum(o, 14, lay.l4.unwrap() as usize));
            prop_assert!(dhcp::parse(&o[42..]).is_err(), "an answer is a BOOTREPLY");
        }
    }
}
