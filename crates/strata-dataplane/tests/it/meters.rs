//! Bandwidth slices with real TCP: iperf3 between namespaces through TAP ports, capped by a
//! meter, and two slices with guarantees on one link under contention. Needs root.

use strata_net::MeterConfig;

use crate::meterbed::{bed, capped_run, client, server, MBIT};
use crate::netenv::require;

#[test]
fn tcp_through_a_200_mbit_meter_gets_the_cap_within_5_percent() {
    require(&["ip", "sh", "iperf3", "ss"]);
    let net = 71;
    let b = bed(net);
    let got = capped_run(&b, net, MeterConfig::cap(200 * MBIT), 10);
    let st = b.dp.stats().unwrap();
    let m =
        b.dp.with_switch(|sw, _| sw.meter_stats(1))
            .unwrap()
            .unwrap();
    eprintln!(
        "200 Mbit/s cap, default burst: {:.1} Mbit/s; meter admitted {} dropped {} packets",
        got / 1e6,
        m.admitted_packets,
        m.dropped_packets
    );
    assert!(
        (190e6..=210e6).contains(&got),
        "TCP got {:.1} Mbit/s through a 200 Mbit/s meter",
        got / 1e6
    );
    // The policer's drops are counted on the sender's port under their reason.
    let p = st.port(&b.taps[0]).unwrap();
    assert!(m.dropped_packets > 0, "TCP probes past the cap");
    assert!(p.dropped("meter") > 0 && p.dropped("meter") <= m.dropped_packets);
}

#[test]
fn two_slices_under_contention_each_get_their_guarantee() {
    require(&["ip", "sh", "iperf3", "ss"]);
    let net = 72;
    let b = bed(net);
    b.dp.with_switch(|sw, _| {
        sw.set_link(1, 1000 * MBIT)?;
        sw.set_meter(
            1,
            MeterConfig::cap(1000 * MBIT).with_guarantee(600 * MBIT, 1),
        )?;
        sw.set_meter(
            2,
            MeterConfig::cap(1000 * MBIT).with_guarantee(200 * MBIT, 1),
        )
    })
    .unwrap()
    .unwrap();
    let dst = format!("10.{net}.0.3");
    let _s1 = server(&b.rx, &dst, 5201);
    let _s2 = server(&b.rx, &dst, 5202);
    let (n1, n2) = (b.senders[0].name.clone(), b.senders[1].name.clone());
    let (d1, d2) = (dst.clone(), dst.clone());
    let c1 = std::thread::spawn(move || client(&n1, &d1, 5201, 6));
    let c2 = std::thread::spawn(move || client(&n2, &d2, 5202, 6));
    let (r1, r2) = (c1.join().unwrap(), c2.join().unwrap());
    let (r1, r2) = (r1.expect("slice 1"), r2.expect("slice 2"));
    eprintln!(
        "guarantees 600/200 on a 1 Gbit/s link: slice 1 {:.1}, slice 2 {:.1}, sum {:.1} Mbit/s",
        r1 / 1e6,
        r2 / 1e6,
        (r1 + r2) / 1e6
    );
    assert!(r1 >= 0.95 * 600e6, "slice 1 got {:.1} Mbit/s", r1 / 1e6);
    assert!(r2 >= 0.95 * 200e6, "slice 2 got {:.1} Mbit/s", r2 / 1e6);
    // Each figure is an average over its own client's run; the two runs start and end a
    // little apart, and the link is work-conserving, so a slice alone for those moments takes
    // the whole link: the sum of the two averages may pass 1 Gbit/s by that skew's share
    // (1052 Mbit/s was seen in CI). A link cap not enforced lets each slice reach its own
    // 1 Gbit/s cap, far above this bound.
    assert!(r1 + r2 <= 1.10e9, "the link holds: {:.1}", (r1 + r2) / 1e6);
}
