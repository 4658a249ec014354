//! Conntrack in the switch pipeline: `ct_state` matches, `ct(...)` with recirculation,
//! NAT, the Maglev load balancer, the caches against an uncached switch, and trace.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use strata_net::csum;
use strata_net::l4::tcp_flags::{ACK, PSH, RST, SYN};
use strata_net::packet::parse_frame;
use strata_net::pipeline::CacheConfig;
use strata_net::switch::{Disposition, SwitchStats};
use strata_net::{parse_flow, Effects, FlowKey, PortConfig, Switch, SwitchConfig};

use crate::ct_util;

const A: u64 = 0x0200_0000_000a;
const B: u64 = 0x0200_0000_000b;

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// An Ethernet/IPv4/TCP frame with correct checksums.
#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    smac: u64,
    dmac: u64,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let l4 = ct_util::tcp(sport, dport, seq, ack, flags, 65535, &[], 0);
    let ip = ct_util::ip(IpAddr::V4(src), IpAddr::V4(dst), 6, &l4);
    let mut f = Vec::new();
    f.extend_from_slice(&dmac.to_be_bytes()[2..]);
    f.extend_from_slice(&smac.to_be_bytes()[2..]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    let hc = csum::ipv4_header_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&hc.to_be_bytes());
    assert!(csum::fill_l4_checksum(&mut f, 14, 34));
    f
}

/// The only output of `fx`: (port, key, checksums valid).
fn one_out(fx: &Effects) -> (u32, FlowKey, bool) {
    let outs: Vec<(u32, Vec<u8>)> = fx.iter().map(|(p, b)| (p, b.to_vec())).collect();
    assert_eq!(outs.len(), 1, "exactly one output");
    let (p, f) = &outs[0];
    let (k, lay) = parse_frame(f, *p).unwrap();
    let l3 = lay.l3 as usize;
    let ok = csum::ipv4_header_checksum(&f[l3..l3 + 20])
        == u16::from_be_bytes([f[l3 + 10], f[l3 + 11]])
        && csum::verify_l4_checksum(f, l3, lay.l4.unwrap() as usize);
    (*p, k, ok)
}

fn send(sw: &mut Switch, now: Duration, port: u32, f: &[u8]) -> (Disposition, Effects) {
    let mut fx = Effects::new();
    let d = sw.receive(now, port, f, &mut fx);
    (d, fx)
}

fn two_ports(cfg: SwitchConfig) -> (Switch, u32, u32) {
    let mut sw = Switch::new(cfg);
    let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
    let b = sw.add_port(PortConfig::tap("b", None)).unwrap();
    (sw, a, b)
}

/// The security-group flow set of the benchmark: track everything, let established traffic
/// through both ways, admit new TCP connections from `a` to port 80, drop the rest.
const SG_FLOWS: &[&str] = &[
    "table=0,priority=100,ip,actions=ct(zone=1,table=1)",
    "table=0,priority=10,actions=drop",
    "table=1,priority=100,ct_state=+trk+est,in_port=a,actions=output:b",
    "table=1,priority=100,ct_state=+trk+est,in_port=b,actions=output:a",
    "table=1,priority=90,ct_state=+trk+new,in_port=a,tcp,tp_dst=80,actions=ct(commit,zone=1),output:b",
    "table=1,priority=1,actions=drop",
];

fn install(sw: &mut Switch, flows: &[&str]) {
    for f in flows {
        sw.add_flow(Duration::ZERO, f)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

fn counters(sw: &Switch) -> Vec<u64> {
    sw.dump_flows(Duration::ZERO)
        .iter()
        .map(|d| d.stats.n_packets)
        .collect()
}

#[test]
fn ct_match_fields_parse_and_print_back() {
    for text in [
        "table=1,priority=5,ct_state=+est-rpl+trk,actions=drop",
        "table=1,priority=5,ct_state=-trk,actions=drop",
        "table=0,priority=5,ct_zone=7,ct_mark=0x3/0xf,actions=drop",
        "table=0,priority=5,ip,actions=ct(commit,zone=1,table=2,exec(set_field:0x1->ct_mark),nat(src=192.0.2.1-192.0.2.4:1024-2047))",
        "table=0,priority=5,ip,actions=ct(commit,zone=3,table=4,lb(id=9))",
    ] {
        let r = parse_flow(text, None).unwrap();
        assert_eq!(strata_net::format_flow(&r, None), text);
    }
    for bad in [
        "ip,actions=ct(zone=1,nat(src=1.2.3.4))",
        "ip,actions=ct(zone=1,lb(id=1))",
        "ip,actions=ct(zone=1,exec(set_field:1->ct_mark))",
        "ip,actions=ct(commit,nat(src=1.2.3.5-1.2.3.4))",
    ] {
        let e = parse_flow(bad, None).unwrap_err();
        assert_eq!(e.code(), "bad_ct", "{bad}");
    }
}

#[test]
fn security_group_flows_track_a_tcp_connection() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    install(&mut sw, SG_FLOWS);
    let (c, s) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let t0 = Duration::from_secs(1);
    let syn = tcp_frame(A, B, c, 40000, s, 80, 100, 0, SYN);
    let (d, fx) = send(&mut sw, t0, a, &syn);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(one_out(&fx).0, b);
    assert_eq!(sw.conntrack().len(), 1, "committed");
    // table0 ip, table0 drop, t1 est a, t1 est b, t1 new, t1 drop
    assert_eq!(counters(&sw), vec![1, 0, 0, 0, 1, 0]);
    let synack = tcp_frame(B, A, s, 80, c, 40000, 500, 101, SYN | ACK);
    let (d, fx) = send(&mut sw, t0, b, &synack);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(one_out(&fx).0, a);
    let ack = tcp_frame(A, B, c, 40000, s, 80, 101, 501, ACK);
    assert_eq!(send(&mut sw, t0, a, &ack).0, Disposition::Forwarded(1));
    assert_eq!(counters(&sw), vec![3, 0, 1, 1, 1, 0]);
    // A new connection to another port, an unsolicited SYN-ACK and a SYN from b: dropped.
    let ssh = tcp_frame(A, B, c, 40001, s, 22, 7, 0, SYN);
    assert!(matches!(
        send(&mut sw, t0, a, &ssh).0,
        Disposition::Dropped(_)
    ));
    let stray = tcp_frame(B, A, s, 81, c, 40002, 9, 10, SYN | ACK);
    assert!(matches!(
        send(&mut sw, t0, b, &stray).0,
        Disposition::Dropped(_)
    ));
    let rev = tcp_frame(B, A, s, 40000, c, 80, 9, 0, SYN);
    assert!(matches!(
        send(&mut sw, t0, b, &rev).0,
        Disposition::Dropped(_)
    ));
    assert_eq!(counters(&sw), vec![6, 0, 1, 1, 1, 3]);
    assert_eq!(
        sw.conntrack().len(),
        1,
        "nothing committed for denied packets"
    );
    let ct = sw.conntrack().counters();
    // The admitted SYN is looked up twice (table 0's ct, then the committing ct), as in OVS.
    assert_eq!((ct.new, ct.established, ct.committed), (4, 2, 1));
    assert_eq!(ct.invalid_total(), 1, "the stray SYN-ACK");
    // A RST ends it; the connection closes (state CLOSE) and later data is invalid.
    let rst = tcp_frame(A, B, c, 40000, s, 80, 101, 501, RST | ACK);
    assert_eq!(send(&mut sw, t0, a, &rst).0, Disposition::Forwarded(1));
    let late = tcp_frame(B, A, s, 80, c, 40000, 501, 101, ACK);
    assert!(matches!(
        send(&mut sw, t0, b, &late).0,
        Disposition::Dropped(_)
    ));
}

#[test]
fn untracked_packets_match_minus_trk_and_ct_without_table_keeps_the_key() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    install(
        &mut sw,
        &[
            // ct without table: the pass goes on with ct_state still 0, so the goto's table
            // sees -trk; the recirculated pass of table 2 sees +trk.
            "table=0,priority=100,ip,actions=ct(zone=5),goto_table:1",
            "table=1,priority=100,ct_state=-trk,actions=ct(zone=5,table=2)",
            "table=1,priority=10,actions=drop",
            "table=2,priority=100,ct_state=+trk+new,ct_zone=5,actions=output:b",
            "table=2,priority=10,actions=drop",
        ],
    );
    let f = tcp_frame(A, B, v4(10, 0, 0, 1), 1, v4(10, 0, 0, 2), 2, 0, 0, SYN);
    let (d, fx) = send(&mut sw, Duration::ZERO, a, &f);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(one_out(&fx).0, b);
    assert_eq!(counters(&sw), vec![1, 1, 0, 1, 0]);
    assert_eq!(sw.conntrack().counters().new, 2, "two ct lookups");
    assert!(sw.conntrack().is_empty(), "no commit");
}

#[test]
fn commit_sets_the_mark_that_later_packets_match() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    install(
        &mut sw,
        &[
            "table=0,priority=100,ip,actions=ct(zone=1,table=1)",
            "table=1,priority=100,ct_state=+trk+new,actions=ct(commit,zone=1,exec(set_field:0x2a->ct_mark)),output:b",
            "table=1,priority=100,ct_state=+trk+est,ct_mark=0x2a,actions=output:a",
            "table=1,priority=1,actions=drop",
        ],
    );
    let (c, s) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    send(
        &mut sw,
        Duration::ZERO,
        a,
        &tcp_frame(A, B, c, 5, s, 6, 1, 0, SYN),
    );
    let info = sw.conntrack().entries().next().unwrap();
    assert_eq!(info.mark.mark, 0x2a);
    let (d, fx) = send(
        &mut sw,
        Duration::ZERO,
        b,
        &tcp_frame(B, A, s, 6, c, 5, 9, 2, SYN | ACK),
    );
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(one_out(&fx).0, a);
}

/// A small xorshift, seeded, so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

#[test]
fn cached_and_uncached_pipelines_agree_on_random_ct_traffic() {
    let flows: Vec<&str> = SG_FLOWS
        .iter()
        .copied()
        .chain([
            "table=1,priority=95,ct_state=+trk+inv,actions=drop",
            "table=1,priority=95,ct_state=+trk+new,in_port=b,tcp,tp_dst=22,actions=ct(commit,zone=1,exec(set_field:0x7->ct_mark),table=2)",
            "table=2,priority=5,ct_mark=0x7,actions=output:a",
            "table=2,priority=4,actions=output:a,output:b",
        ])
        .collect();
    let seeds = [1u64, 0x5eed, 0xdead_beef, 42, 7];
    for seed in seeds {
        let (mut fast, a, b) = two_ports(SwitchConfig {
            cache: CacheConfig {
                emc_entries: 16,
                ..CacheConfig::default()
            },
            ..SwitchConfig::default()
        });
        let (mut slow, _, _) = two_ports(SwitchConfig {
            cache: CacheConfig {
                emc: false,
                megaflow: false,
                ..CacheConfig::default()
            },
            ..SwitchConfig::default()
        });
        install(&mut fast, &flows);
        install(&mut slow, &flows);
        let mut rng = Rng(seed);
        let hosts = [v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3)];
        let mut seqs = std::collections::HashMap::new();
        for i in 0..3000u64 {
            let now = Duration::from_millis(i * 50);
            let from_a = rng.next().is_multiple_of(2);
            let (h1, h2) = (rng.pick(&hosts), rng.pick(&hosts));
            let (p1, p2) = (
                rng.pick(&[1000u16, 1001, 80, 22]),
                rng.pick(&[80u16, 22, 1000]),
            );
            let flags = rng.pick(&[SYN, SYN, SYN | ACK, ACK, ACK, ACK, RST, RST | ACK]);
            // Plausible sequence numbers most of the time, so connections get established.
            let key = (h1, p1, h2, p2);
            let seq = *seqs.entry(key).or_insert((rng.next() as u32) & 0xffff);
            let back = seqs.get(&(h2, p2, h1, p1)).copied().unwrap_or(0);
            let ack = if rng.next().is_multiple_of(8) {
                rng.next() as u32
            } else {
                back.wrapping_add(1)
            };
            let (port, sm, dm) = if from_a { (a, A, B) } else { (b, B, A) };
            let f = tcp_frame(sm, dm, h1, p1, h2, p2, seq, ack, flags);
            let (d1, fx1) = send(&mut fast, now, port, &f);
            let (d2, fx2) = send(&mut slow, now, port, &f);
            assert_eq!(d1, d2, "seed {seed} packet {i}");
            let o1: Vec<(u32, Vec<u8>)> = fx1.iter().map(|(p, b)| (p, b.to_vec())).collect();
            let o2: Vec<(u32, Vec<u8>)> = fx2.iter().map(|(p, b)| (p, b.to_vec())).collect();
            assert_eq!(o1, o2, "seed {seed} packet {i}");
        }
        assert_eq!(counters(&fast), counters(&slow), "seed {seed}");
        assert_eq!(
            fast.conntrack().counters(),
            slow.conntrack().counters(),
            "seed {seed}"
        );
        let st = fast.pipeline_stats();
        assert!(
            st.emc_hits + st.megaflow_hits > 1000,
            "the caches were used: {st:?}"
        );
        let ct = fast.conntrack().counters();
        assert!(
            ct.established > 50 && ct.committed > 20,
            "seed {seed}: {ct:?}"
        );
    }
}

#[test]
fn a_recirculation_loop_stops_at_the_limit() {
    let (mut sw, a, _) = two_ports(SwitchConfig::default());
    install(&mut sw, &["table=0,ip,actions=ct(zone=1,table=0)"]);
    let f = tcp_frame(A, B, v4(1, 1, 1, 1), 1, v4(2, 2, 2, 2), 2, 0, 0, SYN);
    assert!(matches!(
        send(&mut sw, Duration::ZERO, a, &f).0,
        Disposition::Dropped(_)
    ));
    assert_eq!(sw.stats().recirc_limit, 1);
    assert_eq!(
        counters(&sw),
        vec![1 + strata_net::switch::MAX_RECIRC as u64]
    );
}

const SNAT_FLOWS: &[&str] = &[
    "table=0,priority=100,in_port=a,ip,actions=ct(commit,zone=1,nat(src=192.0.2.1:5000-5001),table=1)",
    "table=0,priority=100,in_port=b,ip,actions=ct(zone=1,nat,table=1)",
    "table=1,priority=100,in_port=a,ct_state=+trk+snat,actions=output:b",
    "table=1,priority=100,in_port=b,ct_state=+trk+est+rpl+snat,actions=output:a",
    "table=1,priority=1,actions=drop",
];

#[test]
fn snat_allocates_ports_translates_replies_and_drops_when_exhausted() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    install(&mut sw, SNAT_FLOWS);
    let (c, r) = (v4(10, 0, 0, 1), v4(198, 51, 100, 7));
    let nat = v4(192, 0, 2, 1);
    let t = Duration::from_secs(1);
    let mut ports = Vec::new();
    for sport in [40000u16, 40001] {
        let (d, fx) = send(&mut sw, t, a, &tcp_frame(A, B, c, sport, r, 443, 1, 0, SYN));
        assert_eq!(d, Disposition::Forwarded(1));
        let (p, k, ok) = one_out(&fx);
        assert_eq!(p, b);
        assert!(ok, "checksums after SNAT");
        assert_eq!((k.nw_src(), k.nw_dst(), k.tp_dst()), (nat, r, 443));
        ports.push(k.tp_src());
    }
    ports.sort();
    assert_eq!(ports, vec![5000, 5001], "two connections, two ports");
    // The range holds two ports for this remote endpoint: a third connection is dropped.
    let (d, _) = send(&mut sw, t, a, &tcp_frame(A, B, c, 40002, r, 443, 1, 0, SYN));
    assert!(matches!(d, Disposition::Dropped(_)));
    assert_eq!(sw.stats().nat_exhausted, 1);
    assert_eq!(sw.conntrack().counters().nat_exhausted, 1);
    // Another remote endpoint may reuse the ports.
    let (d, fx) = send(&mut sw, t, a, &tcp_frame(A, B, c, 40002, r, 444, 1, 0, SYN));
    assert_eq!(d, Disposition::Forwarded(1));
    assert!([5000, 5001].contains(&one_out(&fx).1.tp_src()));
    // The reply to the NAT address goes back to the client, de-translated.
    let nat_port = {
        let (_, fx) = send(&mut sw, t, a, &tcp_frame(A, B, c, 40000, r, 443, 1, 0, SYN));
        one_out(&fx).1.tp_src()
    };
    let (d, fx) = send(
        &mut sw,
        t,
        b,
        &tcp_frame(B, A, r, 443, nat, nat_port, 900, 2, SYN | ACK),
    );
    assert_eq!(d, Disposition::Forwarded(1));
    let (p, k, ok) = one_out(&fx);
    assert_eq!(p, a);
    assert!(ok, "checksums after un-SNAT");
    assert_eq!(
        (k.nw_src(), k.tp_src(), k.nw_dst(), k.tp_dst()),
        (r, 443, c, 40000)
    );
    // The client's ACK keeps its translation.
    let (_, fx) = send(
        &mut sw,
        t,
        a,
        &tcp_frame(A, B, c, 40000, r, 443, 2, 901, ACK),
    );
    assert_eq!(one_out(&fx).1.tp_src(), nat_port);
    sw.conntrack().check().unwrap();
    assert_eq!(
        sw.stats(),
        SwitchStats {
            nat_exhausted: 1,
            ..sw.stats()
        }
    );
}

const LB_FLOWS: &[&str] = &[
    "table=0,priority=100,in_port=a,tcp,nw_dst=192.0.2.10,tp_dst=80,actions=ct(commit,zone=2,lb(id=7),table=1)",
    "table=0,priority=100,in_port=b,tcp,actions=ct(zone=2,nat,table=1)",
    "table=1,priority=100,in_port=a,ct_state=+trk+dnat,actions=output:b",
    "table=1,priority=100,in_port=b,ct_state=+trk+rpl+dnat,actions=output:a",
    "table=1,priority=1,actions=drop",
];

#[test]
fn lb_pins_connections_through_conntrack_and_skips_down_backends() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    install(&mut sw, LB_FLOWS);
    let (b1, b2) = (v4(10, 1, 0, 1), v4(10, 1, 0, 2));
    sw.set_lb_group(7, vec![(b1, 8080, 1), (b2, 8080, 1)]);
    let vip = v4(192, 0, 2, 10);
    let t = Duration::from_secs(1);
    let client = |i: u16| v4(10, 0, (i >> 8) as u8, i as u8);
    let mut chosen = Vec::new();
    for i in 0..200u16 {
        let (d, fx) = send(
            &mut sw,
            t,
            a,
            &tcp_frame(A, B, client(i), 30000 + i, vip, 80, 1, 0, SYN),
        );
        assert_eq!(d, Disposition::Forwarded(1));
        let (_, k, ok) = one_out(&fx);
        assert!(ok);
        assert_eq!(k.tp_dst(), 8080);
        assert!(k.nw_dst() == b1 || k.nw_dst() == b2);
        chosen.push(k.nw_dst());
    }
    let to_b1 = chosen.iter().filter(|&&x| x == b1).count();
    assert!((70..=130).contains(&to_b1), "spread {to_b1}/200");
    // b1 goes down: existing connections stay pinned (a retransmitted SYN, a reply), new ones
    // go to b2 only.
    assert!(sw.set_lb_backend_up(7, b1, 8080, false));
    for i in 0..200u16 {
        let (_, fx) = send(
            &mut sw,
            t,
            a,
            &tcp_frame(A, B, client(i), 30000 + i, vip, 80, 1, 0, SYN),
        );
        assert_eq!(one_out(&fx).1.nw_dst(), chosen[i as usize], "pinned {i}");
    }
    let i = chosen.iter().position(|&x| x == b1).unwrap() as u16;
    let (d, fx) = send(
        &mut sw,
        t,
        b,
        &tcp_frame(B, A, b1, 8080, client(i), 30000 + i, 7, 2, SYN | ACK),
    );
    assert_eq!(d, Disposition::Forwarded(1));
    let (_, k, ok) = one_out(&fx);
    assert!(ok);
    assert_eq!(
        (k.nw_src(), k.tp_src()),
        (vip, 80),
        "reply comes from the VIP"
    );
    for i in 1000..1100u16 {
        let (_, fx) = send(
            &mut sw,
            t,
            a,
            &tcp_frame(A, B, client(i), 30000 + i, vip, 80, 1, 0, SYN),
        );
        assert_eq!(
            one_out(&fx).1.nw_dst(),
            b2,
            "new connections avoid the down backend"
        );
    }
    // No group: new connections are dropped and counted, pinned ones still pass.
    assert!(sw.remove_lb_group(7));
    let (d, _) = send(
        &mut sw,
        t,
        a,
        &tcp_frame(A, B, client(2000), 1, vip, 80, 1, 0, SYN),
    );
    assert!(matches!(d, Disposition::Dropped(_)));
    assert_eq!(sw.stats().lb_no_backend, 1);
    let (_, fx) = send(
        &mut sw,
        t,
        a,
        &tcp_frame(A, B, client(0), 30000, vip, 80, 1, 0, SYN),
    );
    assert_eq!(one_out(&fx).1.nw_dst(), chosen[0]);
}

#[test]
fn trace_shows_the_ct_steps_and_the_recirculation() {
    let (mut sw, _, _) = two_ports(SwitchConfig::default());
    install(&mut sw, SG_FLOWS);
    let tr = sw
        .trace(
            "in_port=a,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80,ct_state=+new",
            Duration::ZERO,
        )
        .unwrap();
    let text = tr.to_string();
    assert_eq!(tr.ct.len(), 2, "{text}");
    assert_eq!(tr.ct[0].recirc, Some(1));
    assert!(tr.ct[1].step.committed);
    assert_eq!(tr.outputs.len(), 1, "{text}");
    for want in [
        "ct(zone=1): ",
        "ct_state=+new+trk",
        "recirculate to table 1",
        "Recirculated: ",
        ", commit",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    // Without a forced state, the built PSH+ACK segment of an unknown connection is invalid.
    let tr = sw
        .trace(
            "in_port=a,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80",
            Duration::ZERO,
        )
        .unwrap();
    assert!(tr.to_string().contains("invalid (no_connection)"), "{tr}");
    assert!(tr.outputs.is_empty());
    assert!(sw.conntrack().is_empty(), "trace changes nothing");
    assert_eq!(sw.conntrack().counters().new, 0);
}

/// A TCP handshake through the security-group flows gives one round-trip sample to each
/// side: the server's port gets SYN → SYN-ACK, the client's SYN-ACK → ACK; a retransmitted
/// SYN-ACK gives none, a second zone on the way counts once, and a refused packet none.
#[test]
fn handshakes_give_each_side_its_round_trip() {
    let (mut sw, a, b) = two_ports(SwitchConfig::default());
    // Two zones on the way (as a router's NAT zone and a port's group zone): one sample per
    // packet all the same.
    install(
        &mut sw,
        &[
            "table=0,priority=100,ip,actions=ct(zone=1,table=1)",
            "table=1,priority=100,ip,actions=ct(zone=2,table=2)",
            "table=2,priority=100,ct_state=+trk+est,in_port=a,actions=output:b",
            "table=2,priority=100,ct_state=+trk+est,in_port=b,actions=output:a",
            "table=2,priority=90,ct_state=+trk+new,in_port=a,tcp,actions=ct(commit,zone=1),ct(commit,zone=2),output:b",
            "table=2,priority=1,actions=drop",
        ],
    );
    let rtt = |sw: &Switch, p: u32| sw.port_stats(p).unwrap().handshake_rtt;
    let (c, s) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2));
    let t0 = Duration::from_secs(5);
    let syn = tcp_frame(A, B, c, 40000, s, 80, 100, 0, SYN);
    assert_eq!(send(&mut sw, t0, a, &syn).0, Disposition::Forwarded(1));
    assert_eq!((rtt(&sw, a).count, rtt(&sw, b).count), (0, 0));
    // The server answers 300 µs later.
    let synack = tcp_frame(B, A, s, 80, c, 40000, 500, 101, SYN | ACK);
    let t1 = t0 + Duration::from_micros(300);
    assert_eq!(send(&mut sw, t1, b, &synack).0, Disposition::Forwarded(1));
    let hb = rtt(&sw, b);
    assert_eq!((hb.count, hb.sum_us), (1, 300), "the server's half, once");
    assert_eq!(hb.quantile_us(0.5), Some(512));
    // The same SYN-ACK again: no new sample (the state does not move).
    let _ = send(&mut sw, t1 + Duration::from_micros(50), b, &synack);
    assert_eq!(rtt(&sw, b).count, 1);
    // The client acks 2 ms after the first SYN-ACK.
    let ack = tcp_frame(A, B, c, 40000, s, 80, 101, 501, ACK);
    let t2 = t1 + Duration::from_millis(2);
    assert_eq!(send(&mut sw, t2, a, &ack).0, Disposition::Forwarded(1));
    let ha = rtt(&sw, a);
    assert_eq!((ha.count, ha.sum_us), (1, 2000), "the client's half, once");
    // Data afterwards gives nothing more.
    let data = tcp_frame(A, B, c, 40000, s, 80, 101, 501, ACK | PSH);
    let _ = send(&mut sw, t2 + Duration::from_millis(1), a, &data);
    assert_eq!((rtt(&sw, a).count, rtt(&sw, b).count), (1, 1));
    // A handshake the flows refuse (from b: no rule admits it) gives no sample.
    let rev = tcp_frame(B, A, s, 41000, c, 22, 9, 0, SYN);
    assert!(matches!(
        send(&mut sw, t2, b, &rev).0,
        Disposition::Dropped(_)
    ));
    let rev_ack = tcp_frame(A, B, c, 22, s, 41000, 70, 10, SYN | ACK);
    let _ = send(&mut sw, t2 + Duration::from_millis(1), a, &rev_ack);
    assert_eq!((rtt(&sw, a).count, rtt(&sw, b).count), (1, 1));
}
