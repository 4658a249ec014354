//! Per-port rates over the last 1 s and 10 s, from counter samples fed by `now`.
//!
//! A port keeps a ring of samples of its counters (at most one per [`SAMPLE_EVERY`], taken by
//! the switch when a packet arrives or `expire` runs, for every port at once). A rate over a
//! window `W` at `now` is `(counters now − counters at sample s) / (now − s.time)`, `s` being
//! the newest sample at least `W` old; so it averages over `W` to `W + SAMPLE_EVERY` while
//! traffic flows (a longer span only if the switch saw no packet at all and nobody called
//! `expire`, in which case the counters did not move in between either). A port younger than
//! `W` averages over its life.
//!
//! Invariants: nothing is allocated after the port is made (the ring has a fixed capacity);
//! no per-packet work beyond one comparison with the next sampling time; no clock is read.

use std::collections::VecDeque;
use std::time::Duration;

/// Sampling interval.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The longest window served.
pub const LONG_WINDOW: Duration = Duration::from_secs(10);
/// The short window.
pub const SHORT_WINDOW: Duration = Duration::from_secs(1);
/// Samples kept: enough to look back [`LONG_WINDOW`] plus one interval.
const SAMPLES: usize = (LONG_WINDOW.as_millis() / SAMPLE_EVERY.as_millis()) as usize + 2;

/// The counters a rate is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops of every reason (input and output side).
    pub drops: u64,
}

/// Rates over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// Received bits per second.
    pub rx_bps: u64,
    /// Received packets per second.
    pub rx_pps: u64,
    /// Sent bits per second.
    pub tx_bps: u64,
    /// Sent packets per second.
    pub tx_pps: u64,
    /// Drops per second.
    pub drops_ps: u64,
}

/// A port's rates over the last 1 s and 10 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortRates {
    /// Over [`SHORT_WINDOW`].
    pub last_1s: Rates,
    /// Over [`LONG_WINDOW`].
    pub last_10s: Rates,
}

/// The ring of samples of one port.
#[derive(Debug, Clone)]
pub struct RateWindow {
    samples: VecDeque<(Duration, Totals)>,
}

impl RateWindow {
    /// A window whose first sample is `t` at `now`.
    pub fn new(now: Duration, t: Totals) -> Self {
        let mut samples = VecDeque::with_capacity(SAMPLES);
        samples.push_back((now, t));
        RateWindow { samples }
    }

    /// Records `t` at `now` if the last sample is [`SAMPLE_EVERY`] old (else nothing).
    pub fn sample(&mut self, now: Duration, t: Totals) {
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| now < *at + SAMPLE_EVERY)
        {
            return;
        }
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, t));
    }

    /// Rates over `window` ending at `now`, with `cur` the counters at `now`.
    pub fn rates(&self, now: Duration, cur: Totals, window: Duration) -> Rates {
        let cutoff = now.saturating_sub(window);
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= cutoff)
            .or_else(|| self.samples.front());
        let Some(&(at, b)) = base else {
            return Rates::default();
        };
        let dt = now.saturating_sub(at).as_nanos();
        if dt == 0 {
            return Rates::default();
        }
        let per_s = |d: u64, mul: u128| (d as u128 * mul * 1_000_000_000 / dt) as u64;
        Rates {
            rx_bps: per_s(cur.rx_bytes.saturating_sub(b.rx_bytes), 8),
            rx_pps: per_s(cur.rx_packets.saturating_sub(b.rx_packets), 1),
            tx_bps: per_s(cur.tx_bytes.saturating_sub(b.tx_bytes), 8),
            tx_pps: per_s(cur.tx_packets.saturating_sub(b.tx_packets), 1),
            drops_ps: per_s(cur.drops.saturating_sub(b.drops), 1),
        }
    }

    /// Rates over the last 1 s and 10 s.
    pub fn port_rates(&self, now: Duration, cur: Totals) -> PortRates {
        PortRates {
            last_1s: self.rates(now, cur, SHORT_WINDOW),
            last_10s: self.rates(now, cur, LONG_WINDOW),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_steady_flow_reads_its_rate_over_both_windows() {
        // 1,250 bytes every ms = 10 Mbit/s for 20 s, then silence.
        let mut w = RateWindow::new(Duration::ZERO, Totals::default());
        let mut t = Totals::default();
        for i in 1..=20_000u64 {
            t.rx_packets += 1;
            t.rx_bytes += 1250;
            w.sample(ms(i), t);
        }
        let r = w.port_rates(ms(20_000), t);
        assert_eq!(r.last_1s.rx_bps, 10_000_000);
        assert_eq!(r.last_1s.rx_pps, 1000);
        assert_eq!(r.last_10s.rx_bps, 10_000_000);
        assert_eq!(r.last_1s.tx_bps, 0);
        // Silence: the 1 s window empties first, the 10 s one halves after 5 s.
        for i in (20_100..=25_000).step_by(100) {
            w.sample(ms(i), t);
        }
        let r = w.port_rates(ms(25_000), t);
        assert_eq!(r.last_1s.rx_bps, 0);
        assert_eq!(r.last_10s.rx_bps, 5_000_000);
        assert!(w.samples.len() <= SAMPLES);
    }

    #[test]
    fn a_young_port_averages_over_its_life() {
        let mut w = RateWindow::new(ms(1000), Totals::default());
        let t = Totals {
            tx_bytes: 1000,
            tx_packets: 2,
            drops: 1,
            ..Default::default()
        };
        w.sample(ms(1050), t); // too soon: not kept
        let r = w.rates(ms(1500), t, SHORT_WINDOW);
        assert_eq!((r.tx_bps, r.tx_pps, r.drops_ps), (16_000, 4, 2));
        assert_eq!(w.rates(ms(1000), t, SHORT_WINDOW), Rates::default());
    }
}
