//! Micro-benchmark of the connection tracker (engine only, packets already parsed):
//!
//! - new connections per second: SYN (process + commit), SYN-ACK, ACK, FIN, ACK, FIN, ACK, each
//!   through `process`, with the simulated clock moving 1 ms per connection and `expire` once
//!   per simulated second (so TIME_WAIT entries, 120 s, are reclaimed as they would be);
//! - lookups per second: pure ACKs in both directions on 100,000 established connections (and
//!   on 1,000, where the table fits in cache), in a shuffled order (each one a hash lookup, a window check and a timeout refresh);
//! - the parse cost of a TCP packet by `l4::parse_ip`, for scale.
//!
//! Run: `cargo run --release -p strata-net --example ctbench [-- CONNS]`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use strata_net::conntrack::{Conntrack, CtConfig, CtMark, CtState, Limits};
use strata_net::l4::tcp_flags::{ACK, FIN, SYN};
use strata_net::l4::{CtPacket, TcpSeg, Tuple, L4};

fn pkt(t: Tuple, seq: u32, ack: u32, flags: u8) -> CtPacket {
    CtPacket {
        tuple: t,
        l4: L4::Tcp(TcpSeg {
            seq,
            ack,
            flags,
            win: 65535,
            payload_len: 0,
            ..TcpSeg::default()
        }),
        ip_len: 40,
    }
}

/// Connection `i`: a client address and port derived from `i`, to one server.
fn tuple(i: u32) -> Tuple {
    Tuple {
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 14))),
        dst: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
        sport: 1024 + (i & 0x3fff) as u16,
        dport: 80,
        proto: 6,
    }
}

fn open(ct: &mut Conntrack, now: Duration, t: Tuple) {
    let r = t.reversed();
    let syn = pkt(t, 1000, 0, SYN);
    assert_eq!(ct.process(now, 1, &syn).state, CtState::New);
    ct.commit(now, 1, &syn, CtMark::default()).expect("room");
    ct.process(now, 1, &pkt(r, 5000, 1001, SYN | ACK));
    ct.process(now, 1, &pkt(t, 1001, 5001, ACK));
}

fn main() {
    let conns: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let cfg = CtConfig {
        limits: Limits {
            max_entries: 1 << 20,
            zone_default: None,
        },
        ..CtConfig::default()
    };

    // New connections: full lifecycle.
    let mut ct = Conntrack::new(cfg);
    let mut now = Duration::from_secs(1);
    let mut last_sweep = now.as_secs();
    let start = Instant::now();
    for i in 0..conns {
        let t = tuple(i);
        let r = t.reversed();
        open(&mut ct, now, t);
        ct.process(now, 1, &pkt(t, 1001, 5001, FIN | ACK));
        ct.process(now, 1, &pkt(r, 5001, 1002, ACK));
        ct.process(now, 1, &pkt(r, 5001, 1002, FIN | ACK));
        let v = ct.process(now, 1, &pkt(t, 1002, 5002, ACK));
        debug_assert_eq!(v.state, CtState::Established);
        now += Duration::from_millis(1);
        if now.as_secs() != last_sweep {
            last_sweep = now.as_secs();
            ct.expire(now);
        }
    }
    let el = start.elapsed();
    let c = *ct.counters();
    assert_eq!(c.committed, conns as u64);
    assert_eq!(c.invalid_total(), 0);
    println!(
        "new connections: {conns} in {:.3} s = {:.0} conn/s ({:.0} packets/s through process), {} entries left, {} expired",
        el.as_secs_f64(),
        conns as f64 / el.as_secs_f64(),
        conns as f64 * 7.0 / el.as_secs_f64(),
        ct.len(),
        c.expired
    );

    lookups(cfg, 100_000);
    lookups(cfg, 1_000);

    println!(
        "entry size: {} bytes in the slab (plus 16 in the index, 4 in the wheel)",
        std::mem::size_of::<Option<strata_net::conntrack::table::Entry>>() + 4
    );

    // Parsing, for scale.
    let mut p = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.extend_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 3, 233, 0, 0, 19, 137, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let k = 5_000_000u64;
    let start = Instant::now();
    let mut ok = 0u64;
    for i in 0..k {
        p[15] = i as u8;
        ok += strata_net::l4::parse_ip(std::hint::black_box(&p)).is_ok() as u64;
    }
    let el = start.elapsed();
    assert_eq!(ok, k);
    println!(
        "parse_ip (IPv4/TCP): {:.0} ns per packet",
        el.as_nanos() as f64 / k as f64
    );
}

/// Established lookups at `n` entries.
fn lookups(cfg: CtConfig, n: u32) {
    let mut ct = Conntrack::new(cfg);
    let now = Duration::from_secs(1);
    for i in 0..n {
        open(&mut ct, now, tuple(i));
    }
    assert_eq!(ct.len(), n as usize);
    // A fixed pseudo-random order (xorshift), so the index is not walked sequentially.
    let mut order: Vec<u32> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let pkts: Vec<CtPacket> = order
        .iter()
        .flat_map(|&i| {
            let t = tuple(i);
            [pkt(t, 1001, 5001, ACK), pkt(t.reversed(), 5001, 1001, ACK)]
        })
        .collect();
    let rounds = 2_000_000 / n as u64;
    let start = Instant::now();
    let mut est = 0u64;
    for r in 0..rounds {
        let t = now + Duration::from_millis(r);
        for p in &pkts {
            est += (ct.process(t, 1, p).state == CtState::Established) as u64;
        }
    }
    let el = start.elapsed();
    let total = pkts.len() as u64 * rounds;
    assert_eq!(est, total);
    println!(
        "established lookups at {n} entries: {total} in {:.3} s = {:.2} M lookups/s ({:.0} ns each)",
        el.as_secs_f64(),
        total as f64 / el.as_secs_f64() / 1e6,
        el.as_nanos() as f64 / total as f64
    );
}
