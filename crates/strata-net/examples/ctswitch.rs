//! New TCP connections per second through the whole switch pipeline (parse, EMC/megaflow,
//! `ct` with recirculation, commit, output), with the typical security-group flow set:
//!
//! ```text
//! table=0  ip                      -> ct(zone=1,table=1)
//! table=1  +trk+est                -> output
//! table=1  +trk+new,tcp,tp_dst=80  -> ct(commit,zone=1),output
//! table=1  (otherwise)             -> drop
//! ```
//!
//! Each connection is 7 frames (SYN, SYN-ACK, ACK, FIN-ACK, ACK, FIN-ACK, ACK), built before
//! the clock starts; the simulated clock moves 1 ms per connection and `Switch::expire` runs
//! every simulated second. For scale, the same frames through one `output` rule (no ct).
//!
//! Run: `cargo run --release -p strata-net --example ctswitch [-- CONNS]`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use strata_net::csum;
use strata_net::l4::tcp_flags::{ACK, FIN, SYN};
use strata_net::{Effects, PortConfig, Switch};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

#[allow(clippy::too_many_arguments)]
fn frame(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let hc = csum::ipv4_header_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&hc.to_be_bytes());
    csum::fill_l4_checksum(&mut f, 14, 34);
    f
}

/// The 7 frames of connection `i`, each with the port it enters on (1 = client side).
fn conn(i: u32) -> Vec<(u32, Vec<u8>)> {
    let c = Ipv4Addr::from(0x0a00_0000 | (i >> 14));
    let s = Ipv4Addr::new(10, 255, 0, 1);
    let cp = 1024 + (i & 0x3fff) as u16;
    let (ci, si) = (1000u32, 5000u32);
    vec![
        (1, frame(A, B, c, cp, s, 80, ci, 0, SYN)),
        (2, frame(B, A, s, 80, c, cp, si, ci + 1, SYN | ACK)),
        (1, frame(A, B, c, cp, s, 80, ci + 1, si + 1, ACK)),
        (1, frame(A, B, c, cp, s, 80, ci + 1, si + 1, FIN | ACK)),
        (2, frame(B, A, s, 80, c, cp, si + 1, ci + 2, ACK)),
        (2, frame(B, A, s, 80, c, cp, si + 1, ci + 2, FIN | ACK)),
        (1, frame(A, B, c, cp, s, 80, ci + 2, si + 2, ACK)),
    ]
}

fn switch(flows: &[&str]) -> Switch {
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("a", None).with_number(1))
        .unwrap();
    sw.add_port(PortConfig::tap("b", None).with_number(2))
        .unwrap();
    for f in flows {
        sw.add_flow(Duration::ZERO, f).unwrap();
    }
    sw
}

fn run(sw: &mut Switch, frames: &[Vec<(u32, Vec<u8>)>]) -> (f64, u64) {
    let mut fx = Effects::new();
    let mut forwarded = 0u64;
    let mut now = Duration::from_secs(1);
    let mut next_expire = now;
    let t = Instant::now();
    for c in frames {
        for (port, f) in c {
            fx.clear();
            if let strata_net::switch::Disposition::Forwarded(_) =
                sw.receive(now, *port, f, &mut fx)
            {
                forwarded += 1;
            }
        }
        now += Duration::from_millis(1);
        if now >= next_expire {
            sw.expire(now);
            next_expire = now + Duration::from_secs(1);
        }
    }
    (t.elapsed().as_secs_f64(), forwarded)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let frames: Vec<Vec<(u32, Vec<u8>)>> = (0..n).map(conn).collect();
    let mut sg = switch(&[
        "table=0,priority=100,ip,actions=ct(zone=1,table=1)",
        "table=1,priority=100,ct_state=+trk+est,in_port=a,actions=output:b",
        "table=1,priority=100,ct_state=+trk+est,in_port=b,actions=output:a",
        "table=1,priority=90,ct_state=+trk+new,in_port=a,tcp,tp_dst=80,actions=ct(commit,zone=1),output:b",
        "table=1,priority=1,actions=drop",
    ]);
    let (secs, fwd) = run(&mut sg, &frames);
    assert_eq!(fwd, 7 * n as u64, "every frame of every connection passes");
    let ct = sg.conntrack().counters();
    let st = sg.pipeline_stats();
    println!(
        "security groups (ct): {n} connections, {:.0} conn/s, {:.2} M frames/s, {:.0} ns/frame",
        n as f64 / secs,
        7.0 * n as f64 / secs / 1e6,
        secs * 1e9 / (7.0 * n as f64)
    );
    println!(
        "  conntrack: committed {} established {} live entries {}; caches: emc {} megaflow {} miss {} ({} megaflows)",
        ct.committed,
        ct.established,
        sg.conntrack().len(),
        st.emc_hits,
        st.megaflow_hits,
        st.misses,
        sg.pipeline().n_megaflows()
    );
    let mut plain = switch(&[
        "priority=100,in_port=a,actions=output:b",
        "priority=100,in_port=b,actions=output:a",
    ]);
    let (psecs, pfwd) = run(&mut plain, &frames);
    assert_eq!(pfwd, 7 * n as u64);
    println!(
        "same frames, one output rule (no ct): {:.2} M frames/s, {:.0} ns/frame; ct costs {:.1}x",
        7.0 * n as f64 / psecs / 1e6,
        psecs * 1e9 / (7.0 * n as f64),
        secs / psecs
    );
}
