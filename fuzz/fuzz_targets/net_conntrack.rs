//! Fuzz the connection tracker's state: the input is a sequence of packets (each a length byte,
//! a control byte and that many bytes of IP packet); the control byte picks the zone, whether to
//! commit, and how far time moves. The tracker must never panic and keep its invariants and
//! limits.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_net::conntrack::{Conntrack, CtConfig, CtMark, Limits};

fuzz_target!(|data: &[u8]| {
    let cfg = CtConfig {
        limits: Limits {
            max_entries: 8,
            zone_default: Some(4),
        },
        ..CtConfig::default()
    };
    let mut ct = Conntrack::new(cfg);
    let mut now = Duration::ZERO;
    let mut rest = data;
    while let [len, ctl, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_secs((*ctl >> 4) as u64 * 7);
        let zone = (*ctl & 3) as u16;
        if let Ok(p) = strata_net::l4::parse_ip(pkt) {
            ct.process(now, zone, &p);
            if ctl & 4 != 0 {
                let _ = ct.commit(
                    now,
                    zone,
                    &p,
                    CtMark {
                        mark: *len as u32,
                        label: 0,
                    },
                );
            }
        } else {
            ct.malformed();
        }
        if ctl & 8 != 0 {
            ct.expire(now);
        }
        ct.check().expect("tracker invariants");
    }
});
