//! Meters and slices through a whole switch, on simulated time: caps, bursts, guarantees on a
//! shared link (contention and work conservation), the cap bound as a property, drop reasons
//! per port, rates, trace and syntax.

use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;
use strata_net::drops::DropCode;
use strata_net::key::{Field, FlowKey, PortNo};
use strata_net::meter::{MeterConfig, MeterError, MeterVerdict, Meters};
use strata_net::packet::build_frame;
use strata_net::switch::{Disposition, DropReason};
use strata_net::{format_flow, parse_flow, Action, Domain, Effects, PortConfig, Switch};

use crate::tcp_key;

const MBIT: u64 = 1_000_000;

/// A UDP frame of exactly `len` bytes from MAC `src` (Ethernet + IPv4 + UDP = 42 bytes).
fn frame(src: u64, len: usize) -> Vec<u8> {
    let mut k = tcp_key(
        src,
        0x02_00_00_00_00_99,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        80,
    );
    k.set(Field::NwProto, 17);
    let f = build_frame(&k, len - 42);
    assert_eq!(f.len(), len);
    f
}

/// Offers frames of `len` bytes at `offered_bps` on each of `ports` (interleaved) from `start`
/// for `secs`; returns the bytes admitted per port (forwarded frames).
fn flood(
    sw: &mut Switch,
    ports: &[(PortNo, u64)],
    len: usize,
    start: Duration,
    secs: u64,
) -> Vec<u64> {
    let mut fx = Effects::new();
    let frames: Vec<Vec<u8>> = ports.iter().map(|(p, _)| frame(*p as u64, len)).collect();
    // Next send time of each port, in ns.
    let gap: Vec<u64> = ports
        .iter()
        .map(|(_, bps)| len as u64 * 8 * 1_000_000_000 / bps)
        .collect();
    let mut next: Vec<u64> = vec![start.as_nanos() as u64; ports.len()];
    let end = (start + Duration::from_secs(secs)).as_nanos() as u64;
    let mut got = vec![0u64; ports.len()];
    loop {
        let (i, &t) = next.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
        if t >= end {
            break;
        }
        fx.clear();
        if let Disposition::Forwarded(_) =
            sw.receive(Duration::from_nanos(t), ports[i].0, &frames[i], &mut fx)
        {
            got[i] += len as u64;
        }
        next[i] += gap[i];
    }
    got
}

/// As [`flood`] for `secs` after one second of the same traffic: the rate once the buckets'
/// initial bursts (250 ms of traffic by default) are spent.
fn flood_steady(
    sw: &mut Switch,
    ports: &[(PortNo, u64)],
    len: usize,
    start: Duration,
    secs: u64,
) -> Vec<u64> {
    flood(sw, ports, len, start, 1);
    flood(sw, ports, len, start + Duration::from_secs(1), secs)
}

fn rate(bytes: u64, secs: u64) -> f64 {
    bytes as f64 * 8.0 / secs as f64
}

/// A switch with ports a, b, c (untenanted) and flows `in_port=a,meter:1,output:c` and
/// `in_port=b,meter:2,output:c`.
fn slices() -> (Switch, PortNo, PortNo, PortNo) {
    let mut sw = Switch::default();
    let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
    let b = sw.add_port(PortConfig::tap("b", None)).unwrap();
    let c = sw.add_port(PortConfig::tap("c", None)).unwrap();
    sw.add_flow(Duration::ZERO, "in_port=a,actions=meter:1,output:c")
        .unwrap();
    sw.add_flow(Duration::ZERO, "in_port=b,actions=meter:2,output:c")
        .unwrap();
    (sw, a, b, c)
}

#[test]
fn a_meter_caps_a_flood_to_its_rate_within_one_percent() {
    let (mut sw, a, _, c) = slices();
    sw.set_meter(1, MeterConfig::cap(100 * MBIT)).unwrap();
    // 1 Gbit/s of 1500-byte frames for 10 simulated seconds into a 100 Mbit/s cap.
    // (After one second: the default burst, 250 ms of traffic, is spent by then.)
    let offer = [(a, 1000 * MBIT)];
    let warm = flood(&mut sw, &offer, 1500, Duration::ZERO, 1)[0];
    let got = flood(&mut sw, &offer, 1500, Duration::from_secs(1), 10);
    let r = rate(got[0], 10);
    assert!(
        (r - 100e6).abs() <= 1e6,
        "admitted {r} bit/s, cap 100 Mbit/s"
    );
    // Every byte admitted was sent, every other one is a counted meter drop.
    let st = sw.meter_stats(1).unwrap();
    assert_eq!(st.admitted_bytes, warm + got[0]);
    assert_eq!(sw.port_stats(c).unwrap().tx_bytes, warm + got[0]);
    let pa = sw.port_stats(a).unwrap();
    assert_eq!(st.admitted_packets + st.dropped_packets, pa.rx_packets);
    assert_eq!(pa.drops.get(DropCode::Meter), st.dropped_packets);
    assert_eq!(pa.rx_dropped, st.dropped_packets);
    assert_eq!(pa.drops(), vec![("meter", st.dropped_packets)]);
    assert_eq!(sw.stats().meter_drops, st.dropped_packets);
    // And a packet over the rate is a Meter disposition.
    let mut fx = Effects::new();
    let d = sw.receive(Duration::from_secs(11), a, &frame(a as u64, 1500), &mut fx);
    let d2 = sw.receive(Duration::from_secs(11), a, &frame(a as u64, 1500), &mut fx);
    assert!(
        [d, d2].contains(&Disposition::Dropped(DropReason::Meter(1))),
        "{d:?} {d2:?}"
    );
}

#[test]
fn a_burst_passes_at_once_after_idle_and_no_more() {
    let (mut sw, a, _, _) = slices();
    let burst = 150_000;
    sw.set_meter(1, MeterConfig::cap(100 * MBIT).with_burst(burst))
        .unwrap();
    let mut fx = Effects::new();
    let f = frame(a as u64, 1500);
    let burst_at = |sw: &mut Switch, t: Duration, fx: &mut Effects| {
        (0..1000)
            .take_while(|_| matches!(sw.receive(t, a, &f, fx), Disposition::Forwarded(_)))
            .count() as u64
    };
    assert_eq!(burst_at(&mut sw, Duration::ZERO, &mut fx), burst / 1500);
    // 1 ms later: 12,500 bytes more = 8 frames (and the 0 bytes left over).
    assert_eq!(burst_at(&mut sw, Duration::from_millis(1), &mut fx), 8);
    // After a long idle, the bucket is full again but never more than full.
    assert_eq!(burst_at(&mut sw, Duration::from_secs(60), &mut fx), 100);
    // A TSO frame as large as the parser takes counts by its bytes (43.7 frames' worth).
    let big = frame(a as u64, 65_535);
    let t = Duration::from_secs(120);
    let d = sw.receive(t, a, &big, &mut fx);
    assert!(matches!(d, Disposition::Forwarded(1)), "{d:?}");
    assert!(matches!(
        sw.receive(t, a, &big, &mut fx),
        Disposition::Forwarded(1)
    ));
    assert_eq!(burst_at(&mut sw, t, &mut fx), (burst - 2 * 65_535) / 1500);
}

/// Link 1 Gbit/s; meter 1: cap 800 Mbit/s, guarantee 600; meter 2: cap 1 Gbit/s, guarantee 200.
fn guaranteed() -> (Switch, PortNo, PortNo, PortNo) {
    let (mut sw, a, b, c) = slices();
    sw.set_link(9, 1000 * MBIT).unwrap();
    sw.set_meter(
        1,
        MeterConfig::cap(800 * MBIT).with_guarantee(600 * MBIT, 9),
    )
    .unwrap();
    sw.set_meter(
        2,
        MeterConfig::cap(1000 * MBIT).with_guarantee(200 * MBIT, 9),
    )
    .unwrap();
    (sw, a, b, c)
}

#[test]
fn under_contention_each_slice_gets_its_guarantee_and_the_link_is_full() {
    for (offer_a, offer_b) in [(2000, 2000), (1000, 5000), (5000, 600)] {
        let (mut sw, a, b, _) = guaranteed();
        let got = flood_steady(
            &mut sw,
            &[(a, offer_a * MBIT), (b, offer_b * MBIT)],
            1500,
            Duration::ZERO,
            10,
        );
        let (ra, rb) = (rate(got[0], 10), rate(got[1], 10));
        assert!(ra >= 0.99 * 600e6, "a got {ra}, offered {offer_a} Mbit/s");
        assert!(rb >= 0.99 * 200e6, "b got {rb}, offered {offer_b} Mbit/s");
        assert!(ra <= 1.01 * 800e6, "a's cap holds: {ra}");
        assert!(
            ((ra + rb) - 1e9).abs() <= 0.01e9,
            "the link is used, not more: {ra} + {rb}"
        );
        let g = sw.meter_stats(1).unwrap().guaranteed_bytes;
        assert!(rate(g, 10) >= 0.99 * 600e6, "a's guarantee came first");
    }
}

#[test]
fn an_idle_guarantee_is_lent_out() {
    // b idle: a runs up to its own cap (800), beyond its guarantee (600).
    let (mut sw, a, b, _) = guaranteed();
    let got = flood_steady(&mut sw, &[(a, 2000 * MBIT)], 1500, Duration::ZERO, 10);
    let ra = rate(got[0], 10);
    assert!((ra - 800e6).abs() <= 8e6, "a alone got {ra}");
    // a idle: b runs up to the link (its cap is 1 Gbit/s, its guarantee 200).
    let got = flood_steady(
        &mut sw,
        &[(b, 2000 * MBIT)],
        1500,
        Duration::from_secs(20),
        10,
    );
    let rb = rate(got[0], 10);
    assert!((rb - 1e9).abs() <= 10e6, "b alone got {rb}");
    // Without the guarantee mechanism (both best effort on the link), the heavier sender
    // would take the link: this is what the guarantee changes.
    let (mut sw, a, b, _) = slices();
    sw.set_link(9, 1000 * MBIT).unwrap();
    sw.set_meter(1, MeterConfig::cap(800 * MBIT).with_guarantee(0, 9))
        .unwrap();
    sw.set_meter(2, MeterConfig::cap(1000 * MBIT).with_guarantee(0, 9))
        .unwrap();
    let got = flood_steady(
        &mut sw,
        &[(a, 300 * MBIT), (b, 5000 * MBIT)],
        1500,
        Duration::ZERO,
        10,
    );
    let ra = rate(got[0], 10);
    assert!(
        ra < 0.5 * 300e6,
        "best effort a only got {ra} beside a flood"
    );
}

#[test]
fn meters_in_series_each_apply() {
    // The port's meter then the network's: the tighter one wins, both count.
    let mut sw = Switch::default();
    let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
    sw.add_port(PortConfig::tap("c", None)).unwrap();
    sw.add_flow(Duration::ZERO, "in_port=a,actions=meter:1,meter:2,output:c")
        .unwrap();
    sw.set_meter(1, MeterConfig::cap(300 * MBIT)).unwrap();
    sw.set_meter(2, MeterConfig::cap(100 * MBIT)).unwrap();
    let offer = [(a, 1000 * MBIT)];
    flood(&mut sw, &offer, 1500, Duration::ZERO, 1);
    let m1_warm = sw.meter_stats(1).unwrap();
    let got = flood(&mut sw, &offer, 1500, Duration::from_secs(1), 10);
    assert!((rate(got[0], 10) - 100e6).abs() <= 1e6);
    let (m1, m2) = (sw.meter_stats(1).unwrap(), sw.meter_stats(2).unwrap());
    assert_eq!(
        m1.admitted_packets,
        m2.admitted_packets + m2.dropped_packets
    );
    let m1_bytes = m1.admitted_bytes - m1_warm.admitted_bytes;
    assert!((rate(m1_bytes, 10) - 300e6).abs() <= 3e6);
}

#[test]
fn a_missing_meter_drops_and_says_so() {
    let (mut sw, a, _, _) = slices();
    let mut fx = Effects::new();
    let d = sw.receive(Duration::ZERO, a, &frame(a as u64, 100), &mut fx);
    assert_eq!(d, Disposition::Dropped(DropReason::Meter(1)));
    assert_eq!(
        sw.port_stats(a).unwrap().drops(),
        vec![("meter_missing", 1)]
    );
    sw.set_meter(1, MeterConfig::cap(100 * MBIT)).unwrap();
    let d = sw.receive(Duration::ZERO, a, &frame(a as u64, 100), &mut fx);
    assert_eq!(d, Disposition::Forwarded(1));
    assert!(sw.remove_meter(1));
    assert!(!sw.remove_meter(1));
    assert_eq!(sw.meter_stats(1), None);
    assert_eq!(sw.remove_link(3), Ok(false));
    assert_eq!(
        sw.set_meter(5, MeterConfig::cap(10).with_guarantee(1, 3)),
        Err(MeterError::NoSuchLink(3))
    );
}

#[test]
fn every_drop_has_its_reason_on_its_port() {
    let mut sw = Switch::default();
    let a = sw
        .add_port(PortConfig::tap("a", Some(Domain::Vni(1))))
        .unwrap();
    let b = sw
        .add_port(PortConfig::tap("b", Some(Domain::Vni(1))))
        .unwrap();
    let x = sw
        .add_port(PortConfig::tap("x", Some(Domain::Vni(2))))
        .unwrap();
    let now = Duration::ZERO;
    sw.add_flow(now, "priority=9,in_port=a,udp,tp_dst=1,actions=drop")
        .unwrap();
    sw.add_flow(now, "priority=9,in_port=a,udp,tp_dst=2,actions=output:x")
        .unwrap();
    sw.add_flow(
        now,
        "priority=9,in_port=a,udp,tp_dst=3,actions=dec_ttl,output:b",
    )
    .unwrap();
    sw.add_flow(now, "priority=9,in_port=a,udp,tp_dst=4,actions=output:77")
        .unwrap();
    sw.add_flow(
        now,
        "priority=9,in_port=a,udp,tp_dst=5,actions=goto_table:3",
    )
    .unwrap();
    sw.add_flow(now, "priority=1,in_port=x,actions=flood")
        .unwrap();
    let mut fx = Effects::new();
    let mut send = |sw: &mut Switch, p: PortNo, dport: u16, ttl: u8| {
        let mut k: FlowKey = tcp_key(
            0x02_00_00_00_00_01,
            0x02_00_00_00_00_02,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            dport,
        );
        k.set(Field::NwProto, 17);
        k.set(Field::NwTtl, ttl as u64);
        fx.clear();
        sw.receive(now, p, &build_frame(&k, 10), &mut fx)
    };
    send(&mut sw, a, 1, 64); // drop action
    send(&mut sw, a, 2, 64); // output into another tenant
    send(&mut sw, a, 3, 1); // ttl expired
    send(&mut sw, a, 4, 64); // no such output port
    send(&mut sw, a, 5, 64); // miss in table 3
    send(&mut sw, a, 6, 64); // miss in table 0
    send(&mut sw, x, 6, 64); // flood, nobody else in VNI 2
    let mut fx2 = Effects::new();
    sw.receive(now, a, &[0u8; 10], &mut fx2); // does not parse
    let pa = sw.port_stats(a).unwrap();
    assert_eq!(
        pa.drops(),
        vec![
            ("parse_error", 1),
            ("isolation", 1),
            ("table_miss", 2),
            ("drop_action", 1),
            ("output_to_unknown_port", 1),
            ("ttl_expired", 1),
        ]
    );
    assert_eq!(pa.drops.rx_total(), pa.rx_dropped + pa.rx_errors);
    let px = sw.port_stats(x).unwrap();
    assert_eq!(
        px.drops(),
        vec![("no_flood_target", 1), ("tx_isolation", 1)]
    );
    assert_eq!(px.drops.tx_total(), px.tx_dropped);
    assert_eq!(px.drops.rx_total(), px.rx_dropped);
    assert!(sw.port_stats(b).unwrap().drops().is_empty());
}

#[test]
fn port_rates_over_one_and_ten_seconds() {
    let (mut sw, a, _, c) = slices();
    sw.set_meter(1, MeterConfig::cap(100 * MBIT)).unwrap();
    flood(&mut sw, &[(a, 400 * MBIT)], 1500, Duration::ZERO, 12);
    let now = Duration::from_secs(12);
    let ra = sw.port_rates(a, now).unwrap();
    let rc = sw.port_rates(c, now).unwrap();
    for (r, want) in [
        (ra.last_1s.rx_bps, 400e6),
        (ra.last_10s.rx_bps, 400e6),
        (rc.last_1s.tx_bps, 100e6),
        (rc.last_10s.tx_bps, 100e6),
    ] {
        assert!((r as f64 - want).abs() <= 0.01 * want, "{r} vs {want}");
    }
    // 3/4 of a's frames are meter drops.
    let drops = ra.last_1s.drops_ps as f64;
    assert!((drops - 0.75 * ra.last_1s.rx_pps as f64).abs() <= 0.02 * drops);
    // Quiet for 2 s: the 1 s rate is 0, the 10 s one still remembers.
    sw.expire(Duration::from_secs(13));
    let later = Duration::from_secs(14);
    sw.expire(later);
    let rc = sw.port_rates(c, later).unwrap();
    assert_eq!(rc.last_1s.tx_bps, 0);
    assert!(rc.last_10s.tx_bps > 70 * MBIT);
}

#[test]
fn trace_peeks_at_meters() {
    let (mut sw, a, _, _) = slices();
    sw.set_meter(1, MeterConfig::cap(100 * MBIT)).unwrap();
    let spec = "in_port=a,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2";
    let t = sw.trace(spec, Duration::ZERO).unwrap();
    assert_eq!(t.meters.len(), 1);
    assert_eq!(t.meters[0].verdict, Some(MeterVerdict::Admit));
    let text = t.to_string();
    assert!(text.contains("meter 1: would admit"), "{text}");
    assert!(text.contains("Output: c"), "{text}");
    assert_eq!(sw.meter_stats(1).unwrap(), Default::default(), "peek only");
    // Drain the bucket: trace now says drop, and no output.
    // (1500-byte frames, then frames as small as the traced one: nothing it needs is left).
    let mut fx = Effects::new();
    for len in [1500, 42] {
        let f = frame(a as u64, len);
        while sw.receive(Duration::ZERO, a, &f, &mut fx)
            != Disposition::Dropped(DropReason::Meter(1))
        {
            fx.clear();
        }
    }
    let before = sw.meter_stats(1).unwrap();
    let t = sw.trace(spec, Duration::ZERO).unwrap();
    let text = t.to_string();
    assert!(text.contains("meter 1: would drop (over cap)"), "{text}");
    assert!(t.outputs.is_empty(), "{text}");
    assert_eq!(sw.meter_stats(1).unwrap(), before);
    let t = sw.trace("in_port=b,udp", Duration::ZERO).unwrap();
    assert!(t.to_string().contains("meter 2: no such meter, would drop"));
}

#[test]
fn meter_syntax_round_trips_and_refuses_zero() {
    let r = parse_flow("in_port=1,actions=meter:7,meter:4294967295,output:2", None).unwrap();
    assert_eq!(
        r.actions,
        vec![Action::Meter(7), Action::Meter(u32::MAX), Action::Output(2)]
    );
    assert_eq!(parse_flow(&format_flow(&r, None), None).unwrap(), r);
    for bad in [
        "actions=meter:0",
        "actions=meter",
        "actions=meter:x",
        "actions=meter:4294967296",
    ] {
        let e = parse_flow(bad, None).unwrap_err();
        assert_eq!(e.code(), "bad_action_argument", "{bad}");
    }
    let code = strata_net::FlowRule {
        actions: vec![Action::Meter(0)],
        ..Default::default()
    };
    assert_eq!(code.validate().unwrap_err().code(), "bad_action_argument");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over any window of the packet sequence, a meter admits at most rate × window + burst,
    /// with or without a guarantee and whatever the other meter on its link does; the link
    /// admits at most capacity × window + 2 link bursts + the guaranteed bursts.
    #[test]
    fn admitted_bytes_never_exceed_rate_times_window_plus_burst(
        rate_mbit in 1u64..2000,
        burst_kib in 65u64..2000,
        min_pct in prop::option::of(0u64..=100),
        pkts in prop::collection::vec((0u64..2_000_000, 60u64..=65_536, any::<bool>()), 1..300),
    ) {
        let rate = rate_mbit * MBIT;
        let burst = burst_kib * 1024;
        let cap_link = 1500 * MBIT;
        let mut m = Meters::default();
        m.set_link(1, cap_link).unwrap();
        let mut cfg = MeterConfig::cap(rate).with_burst(burst);
        if let Some(p) = min_pct {
            cfg = cfg.with_guarantee((rate * p / 100).min(cap_link / 2), 1);
        }
        m.set_meter(1, cfg).unwrap();
        // A second meter on the same link, guarantee up to half the link.
        m.set_meter(2, MeterConfig::cap(cap_link).with_burst(burst).with_guarantee(cap_link / 2, 1))
            .unwrap();
        let mut t = 0u64;
        // (time ns, bytes admitted by meter 1, bytes admitted on the link)
        let mut log: Vec<(u64, u64, u64)> = Vec::new();
        for (dt, len, other) in pkts {
            t += dt;
            let id = if other { 2 } else { 1 };
            let ok = m.admit(id, len, Duration::from_nanos(t)).unwrap().admitted();
            let mine = if ok && id == 1 { len } else { 0 };
            let on_link = ok && (id == 2 || min_pct.is_some());
            log.push((t, mine, if on_link { len } else { 0 }));
        }
        let link_slack = 2 * strata_net::meter::default_burst(cap_link) + 2 * burst;
        for i in 0..log.len() {
            let (mut sum, mut link) = (0u64, 0u64);
            for j in i..log.len() {
                sum += log[j].1;
                link += log[j].2;
                let w = (log[j].0 - log[i].0) as u128;
                let bound = (rate as u128 * w / 8 / 1_000_000_000) as u64 + burst;
                prop_assert!(sum <= bound, "meter: {} > {} over {} ns", sum, bound, w);
                let lb = (cap_link as u128 * w / 8 / 1_000_000_000) as u64 + link_slack;
                prop_assert!(link <= lb, "link: {} > {} over {} ns", link, lb, w);
            }
        }
    }
}
