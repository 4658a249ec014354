//! A token bucket with time given by the caller, shared by the per-volume limits
//! ([`crate::qos`]) and the pool's fair share ([`crate::share`]): its arithmetic is tested
//! without sleeping, in `qos.rs`.

use std::time::Duration;

/// Longest single sleep of a waiting request.
pub const MAX_SLEEP: Duration = Duration::from_millis(20);

/// Fraction of a second's worth of tokens a bucket holds when no burst is set.
pub const DEFAULT_BURST_SECS: f64 = 0.1;

/// The bucket depth for `rate` when no burst is given: a tenth of a second's worth (at least
/// one). Why a tenth: a bucket starts full and refills while idle, so a run of T seconds can
/// take `rate * T + depth`; a depth of one second's worth let a 5 s run exceed its limit by
/// 20%, a tenth keeps it within 2%, and still absorbs the jitter of a client's queue (a
/// request that needs more than the depth waits for a full bucket and leaves it in debt, so
/// large requests still pass and the long-run rate holds).
pub fn default_burst(rate: u64) -> u64 {
    ((rate as f64 * DEFAULT_BURST_SECS).ceil() as u64).max(1)
}

/// A token bucket with time given by the caller (nanoseconds on any monotonic clock).
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: u64,
}

impl Bucket {
    /// A full bucket; `burst: None` is [`default_burst`].
    pub fn new(rate: u64, burst: Option<u64>, now: u64) -> Self {
        let capacity = burst.unwrap_or_else(|| default_burst(rate)).max(1) as f64;
        Bucket {
            rate: rate.max(1) as f64,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Changes rate and burst, keeping the tokens already earned (clamped to the new burst).
    pub fn set(&mut self, rate: u64, burst: Option<u64>, now: u64) {
        self.refill(now);
        self.rate = rate.max(1) as f64;
        self.capacity = burst.unwrap_or_else(|| default_burst(rate)).max(1) as f64;
        self.tokens = self.tokens.min(self.capacity);
    }

    fn refill(&mut self, now: u64) {
        let dt = now.saturating_sub(self.last) as f64 / 1e9;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now.max(self.last);
    }

    /// Takes `n` tokens whatever the level: the bucket may go into debt, repaid by the refill.
    pub fn take_debt(&mut self, n: u64, now: u64) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// Takes `n` tokens if there are enough (a request larger than the burst needs a full
    /// bucket and leaves it in debt); otherwise returns how long until there will be.
    pub fn try_take(&mut self, n: u64, now: u64) -> Result<(), Duration> {
        self.refill(now);
        let need = (n as f64).min(self.capacity);
        if self.tokens >= need {
            self.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }
}
