//! Per-volume quality of service and live figures.
//!
//! - Limits (IOPS and bytes per second, each with a burst) are token buckets. Admission is
//!   backpressure: a request that finds too few tokens waits before it is served, holding
//!   nothing but its caller; nothing is queued inside the engine. Waiting happens in slices of
//!   at most [`MAX_SLEEP`], re-reading the limits each time, so a change takes effect on
//!   requests already waiting within that slice.
//! - The burst is the bucket's depth. A bucket starts full and refills while idle, so a run of
//!   T seconds can take `rate * T + depth`; the default depth is a tenth of a second's worth
//!   ([`default_burst`]) so a 5 s run stays within 2% of its limit.
//! - One bucket pair per volume, shared by every caller (engine and NBD connections alike).
//! - Figures: counters since start (for Prometheus) and a ring of one-second slots: rates over
//!   the last 1, 10 and 60 whole seconds (the second under way is not counted) and latency
//!   percentiles over the last minute, fed by every request. Callers time a request from
//!   before [`VolumeIo::admit`], so latency includes the admission wait.
//!
//! [`Bucket`] takes time as an argument, so the arithmetic is tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use crate::bucket::{default_burst, Bucket, DEFAULT_BURST_SECS, MAX_SLEEP};
use crate::share::{ClassId, PoolShare};

/// Latency histogram buckets: bucket i counts latencies below 2^i microseconds (the last one
/// everything slower).
pub const LAT_BUCKETS: usize = 24;
/// Whole seconds of history for the live figures.
pub const WINDOW: usize = 60;
/// Slots in the ring: the whole seconds of [`WINDOW`] and the second under way.
const RING: usize = WINDOW + 1;

/// Limits of one volume. `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosLimits {
    /// Operations per second.
    pub iops: Option<u64>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
    /// Depth of the IOPS bucket: operations that may be spent at once after an idle spell
    /// (default: [`default_burst`] of the rate, a tenth of a second's worth).
    pub burst_iops: Option<u64>,
    /// Depth of the bandwidth bucket in bytes (default: a tenth of a second's worth).
    pub burst_bandwidth: Option<u64>,
}

/// One second of figures. Atomics, so recording takes no lock: a slot is reset by the first
/// request of a new second, and a request racing that reset may be lost from the live figures
/// (never from the cumulative counters).
#[derive(Debug)]
struct Second {
    /// Which second (since the volume's clock started) this slot holds.
    at: AtomicU64,
    ops: AtomicU64,
    bytes: AtomicU64,
    lat: [AtomicU64; LAT_BUCKETS],
}

impl Second {
    fn new() -> Self {
        Second {
            at: AtomicU64::new(u64::MAX),
            ops: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lat: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The windows of the live rates, seconds.
pub const RATE_WINDOWS: [u64; 3] = [1, 10, 60];

/// IOPS and throughput over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// Whole seconds the window covers (shorter than asked while the volume's figures are
    /// younger than the window).
    pub secs: u64,
    /// Operations per second.
    pub iops: f64,
    /// Bytes per second.
    pub throughput: f64,
}

/// Live figures of one volume: rates over the last 1, 10 and 60 whole seconds (the second
/// under way is not counted, so an idle volume reads 0 one second after its last request),
/// and latency percentiles over the last minute. A request's latency runs from its arrival
/// at the engine (or at the NBD server) to its completion, so it includes the time it waited
/// for QoS admission.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStats {
    /// One per [`RATE_WINDOWS`] entry, in that order.
    pub rates: [Rate; 3],
    /// Median latency, microseconds (upper bound of its histogram bucket).
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Seconds the percentiles cover.
    pub window_secs: u64,
}

/// Cumulative counters since the pool was opened (Prometheus).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Read operations.
    pub reads: u64,
    /// Write operations (including trims and zeroing).
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Latency histogram (non-cumulative buckets, see [`LAT_BUCKETS`]).
    pub latency: [u64; LAT_BUCKETS],
    /// Sum of latencies, microseconds.
    pub latency_sum_us: u64,
    /// Time spent waiting for admission, microseconds.
    pub throttled_us: u64,
}

/// QoS state and figures of one volume.
#[derive(Debug)]
pub struct VolumeIo {
    epoch: Instant,
    limits: Mutex<(QosLimits, Option<Bucket>, Option<Bucket>)>,
    /// Whether any limit is set: unlimited volumes skip the limits lock.
    limited: std::sync::atomic::AtomicBool,
    ring: Vec<Second>,
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    latency: [AtomicU64; LAT_BUCKETS],
    latency_sum: AtomicU64,
    throttled: AtomicU64,
    /// The pool's fair share, once the volume is put in a class (a pool has one share for
    /// its life, so it is set once: the data path reads it without a lock).
    share: std::sync::OnceLock<std::sync::Arc<PoolShare>>,
    /// The volume's class in it (its tenant's).
    class: AtomicU64,
}

/// Histogram bucket of a latency.
pub fn lat_bucket(us: u64) -> usize {
    ((64 - us.leading_zeros()) as usize).min(LAT_BUCKETS - 1)
}

impl Default for VolumeIo {
    fn default() -> Self {
        Self::new()
    }
}

impl VolumeIo {
    /// No limits, no history.
    pub fn new() -> Self {
        VolumeIo {
            epoch: Instant::now(),
            limits: Mutex::new((QosLimits::default(), None, None)),
            limited: std::sync::atomic::AtomicBool::new(false),
            ring: (0..RING).map(|_| Second::new()).collect(),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            share: std::sync::OnceLock::new(),
            class: AtomicU64::new(0),
        }
    }

    /// Puts the volume's requests in `class` of the pool's fair share (see [`crate::share`]).
    /// A volume's share is its pool's: a second call may change the class, not the share.
    pub fn set_class(&self, share: std::sync::Arc<PoolShare>, class: ClassId) {
        self.class.store(class, Ordering::SeqCst);
        let _ = self.share.set(share);
    }

    /// The volume's share class, if set.
    pub fn class(&self) -> Option<ClassId> {
        self.share.get().map(|_| self.class.load(Ordering::SeqCst))
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Replaces the limits; requests already waiting see them within [`MAX_SLEEP`].
    pub fn set_limits(&self, l: QosLimits) {
        let now = self.now_ns();
        let mut g = self.limits.lock();
        let upd = |b: &mut Option<Bucket>, rate: Option<u64>, burst: Option<u64>| match rate {
            None => *b = None,
            Some(r) => match b {
                Some(b) => b.set(r, burst, now),
                None => *b = Some(Bucket::new(r, burst, now)),
            },
        };
        upd(&mut g.1, l.iops, l.burst_iops);
        upd(&mut g.2, l.bandwidth, l.burst_bandwidth);
        g.0 = l;
        self.limited
            .store(g.1.is_some() || g.2.is_some(), Ordering::SeqCst);
    }

    /// The limits in force.
    pub fn limits(&self) -> QosLimits {
        self.limits.lock().0
    }

    /// Blocks until a request of `bytes` may proceed: first the volume's own limits, then
    /// its class's turn at the pool (when the pool's capacity is set). Returns the time it
    /// waited.
    pub fn admit(&self, bytes: u64) -> Duration {
        let own = self.admit_own(bytes);
        let Some(share) = self.share.get() else {
            return own;
        };
        if !share.enabled() {
            return own;
        }
        let shared = share.admit(self.class.load(Ordering::Relaxed), bytes);
        if !shared.is_zero() {
            self.throttled
                .fetch_add(shared.as_micros() as u64, Ordering::Relaxed);
        }
        own + shared
    }

    fn admit_own(&self, bytes: u64) -> Duration {
        if !self.limited.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let start = Instant::now();
        loop {
            let wait = {
                let now = self.now_ns();
                let mut g = self.limits.lock();
                let (_, ops, bw) = &mut *g;
                // Check both before taking from either, so a refusal takes nothing.
                let w1 = ops.as_ref().map(|b| b.clone().try_take(1, now));
                let w2 = bw.as_ref().map(|b| b.clone().try_take(bytes, now));
                match (w1, w2) {
                    (Some(Err(a)), Some(Err(b))) => Some(a.max(b)),
                    (Some(Err(a)), _) | (_, Some(Err(a))) => Some(a),
                    _ => {
                        if let Some(b) = ops {
                            let _ = b.try_take(1, now);
                        }
                        if let Some(b) = bw {
                            let _ = b.try_take(bytes, now);
                        }
                        None
                    }
                }
            };
            match wait {
                None => break,
                Some(w) => std::thread::sleep(w.clamp(Duration::from_micros(50), MAX_SLEEP)),
            }
        }
        let waited = start.elapsed();
        if !waited.is_zero() {
            self.throttled
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
        waited
    }

    /// Records a finished request.
    pub fn record(&self, write: bool, bytes: u64, latency: Duration) {
        self.record_in(self.epoch.elapsed().as_secs(), write, bytes, latency);
    }

    fn record_in(&self, sec: u64, write: bool, bytes: u64, latency: Duration) {
        let us = latency.as_micros() as u64;
        let b = lat_bucket(us);
        if write {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.latency[b].fetch_add(1, Ordering::Relaxed);
        self.latency_sum.fetch_add(us, Ordering::Relaxed);
        let slot = &self.ring[(sec % RING as u64) as usize];
        if slot.at.load(Ordering::Relaxed) != sec && slot.at.swap(sec, Ordering::AcqRel) != sec {
            slot.ops.store(0, Ordering::Relaxed);
            slot.bytes.store(0, Ordering::Relaxed);
            for l in &slot.lat {
                l.store(0, Ordering::Relaxed);
            }
        }
        slot.ops.fetch_add(1, Ordering::Relaxed);
        slot.bytes.fetch_add(bytes, Ordering::Relaxed);
        slot.lat[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Figures over the last whole seconds (see [`LiveStats`]).
    pub fn live(&self) -> LiveStats {
        self.live_at(self.epoch.elapsed().as_secs())
    }

    /// [`VolumeIo::live`] as seen during second `sec` of the volume's clock.
    fn live_at(&self, sec: u64) -> LiveStats {
        // Slot sums for whole seconds sec-1, sec-2, ... back to sec-WINDOW.
        let mut ops = [0u64; WINDOW];
        let mut bytes = [0u64; WINDOW];
        let mut lat = [0u64; LAT_BUCKETS];
        for s in &self.ring {
            let at = s.at.load(Ordering::Acquire);
            if at == u64::MAX || at >= sec || at + (WINDOW as u64) < sec {
                continue;
            }
            let age = (sec - 1 - at) as usize;
            ops[age] = s.ops.load(Ordering::Relaxed);
            bytes[age] = s.bytes.load(Ordering::Relaxed);
            for (a, b) in lat.iter_mut().zip(s.lat.iter()) {
                *a += b.load(Ordering::Relaxed);
            }
        }
        let rates = RATE_WINDOWS.map(|w| {
            let secs = w.min(sec);
            let n = secs as usize;
            let d = secs.max(1) as f64;
            Rate {
                secs,
                iops: ops[..n].iter().sum::<u64>() as f64 / d,
                throughput: bytes[..n].iter().sum::<u64>() as f64 / d,
            }
        });
        let total: u64 = lat.iter().sum();
        let pct = |p: f64| -> u64 {
            let target = (total as f64 * p).ceil() as u64;
            let mut acc = 0;
            for (i, n) in lat.iter().enumerate() {
                acc += n;
                if acc >= target && target > 0 {
                    return 1u64 << i;
                }
            }
            0
        };
        LiveStats {
            rates,
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            window_secs: sec.min(WINDOW as u64),
        }
    }

    /// Records a finished request as if during second `sec` (tests).
    #[cfg(test)]
    fn record_at(&self, sec: u64, bytes: u64, latency: Duration) {
        self.record_in(sec, false, bytes, latency);
    }

    /// Counters since start.
    pub fn totals(&self) -> Totals {
        Totals {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
            latency_sum_us: self.latency_sum.load(Ordering::Relaxed),
            throttled_us: self.throttled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bucket_enforces_rate_and_burst() {
        let mut b = Bucket::new(100, Some(10), 0);
        for _ in 0..10 {
            b.try_take(1, 0).unwrap();
        }
        let w = b.try_take(1, 0).unwrap_err();
        assert_eq!(w, Duration::from_millis(10));
        // After 50 ms, 5 tokens.
        for _ in 0..5 {
            b.try_take(1, S / 20).unwrap();
        }
        assert!(b.try_take(1, S / 20).is_err());
        // Over a long run the rate holds: 100/s.
        let mut b = Bucket::new(100, Some(1), 0);
        let mut t = 0;
        let mut n = 0;
        while t < 10 * S {
            match b.try_take(1, t) {
                Ok(()) => n += 1,
                Err(w) => t += w.as_nanos() as u64,
            }
        }
        assert!((999..=1001).contains(&n), "{n}");
    }

    /// Greedy demand for 5 s from a bucket that filled while idle: the default depth keeps
    /// the total within 5% of the rate (a one-second depth gave 6 s worth, +20%).
    #[test]
    fn default_burst_keeps_a_five_second_run_within_five_percent() {
        for (rate, n) in [(400u64, 1u64), (8 << 20, 65536)] {
            let mut b = Bucket::new(rate, None, 0);
            let (mut t, mut taken) = (0u64, 0u64);
            while t < 5 * S {
                match b.try_take(n, t) {
                    Ok(()) => taken += n,
                    // A wait shorter than a nanosecond rounds to zero: step on regardless.
                    Err(w) => t += (w.as_nanos() as u64).max(1),
                }
            }
            let ratio = taken as f64 / (5 * rate) as f64;
            assert!((0.99..=1.05).contains(&ratio), "rate {rate}: {ratio}");
        }
        assert_eq!(default_burst(400), 40);
        assert_eq!(default_burst(3), 1);
    }

    #[test]
    fn requests_larger_than_the_burst_pass_with_a_full_bucket() {
        let mut b = Bucket::new(1000, Some(100), 0);
        b.try_take(500, 0).unwrap();
        // In debt: the next waits until the bucket refills past zero and to 100.
        let w = b.try_take(1, 0).unwrap_err();
        assert_eq!(w, Duration::from_micros(401_000));
    }

    #[test]
    fn limit_change_applies_to_waiters() {
        let io = std::sync::Arc::new(VolumeIo::new());
        io.set_limits(QosLimits {
            iops: Some(1),
            burst_iops: Some(1),
            ..Default::default()
        });
        io.admit(4096);
        let io2 = io.clone();
        let t = std::thread::spawn(move || io2.admit(4096));
        std::thread::sleep(Duration::from_millis(100));
        io.set_limits(QosLimits::default());
        let waited = t.join().unwrap();
        assert!(waited < Duration::from_millis(400), "{waited:?}");
    }

    /// Rates over 1, 10 and 60 whole seconds: an idle volume reads 0 over 1 s one second
    /// after its last request and over 10 s ten seconds after (not an average over a window
    /// that grows to a minute).
    #[test]
    fn rates_over_one_ten_and_sixty_seconds() {
        let io = VolumeIo::new();
        // 100 requests of 4 KiB in each of seconds 0..20.
        for sec in 0..20 {
            for _ in 0..100 {
                io.record_at(sec, 4096, Duration::from_micros(100));
            }
        }
        let l = io.live_at(20);
        assert_eq!(l.rates.map(|r| r.secs), [1, 10, 20]);
        assert_eq!(l.rates.map(|r| r.iops), [100.0, 100.0, 100.0]);
        assert_eq!(l.rates[0].throughput, 409_600.0);
        let l = io.live_at(21);
        assert_eq!(l.rates.map(|r| r.iops), [0.0, 90.0, 2000.0 / 21.0]);
        let l = io.live_at(30);
        assert_eq!(l.rates[1].iops, 0.0);
        assert_eq!(l.rates[2].iops, 2000.0 / 30.0);
        let l = io.live_at(80);
        assert_eq!(l.rates[2].iops, 0.0);
        assert_eq!(l.p50_us, 0);
        // A slot reused after a minute holds only its new second.
        io.record_at(81, 4096, Duration::from_micros(100));
        assert_eq!(io.live_at(82).rates.map(|r| r.iops), [1.0, 0.1, 1.0 / 60.0]);
    }

    #[test]
    fn live_figures_and_percentiles() {
        let io = VolumeIo::new();
        for _ in 0..98 {
            io.record_in(0, false, 4096, Duration::from_micros(10));
        }
        io.record_in(0, true, 4096, Duration::from_micros(1000));
        io.record_in(0, true, 4096, Duration::from_micros(1000));
        // The second under way is not counted yet; one second later it is.
        assert_eq!(io.live_at(0).rates[0].iops, 0.0);
        let l = io.live_at(1);
        assert_eq!(l.p50_us, 16);
        assert_eq!(l.p99_us, 1024);
        assert_eq!(l.rates[0].iops, 100.0);
        let t = io.totals();
        assert_eq!((t.reads, t.writes, t.read_bytes), (98, 2, 98 * 4096));
        assert_eq!(t.latency.iter().sum::<u64>(), 100);
    }
}
