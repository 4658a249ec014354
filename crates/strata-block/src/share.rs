//! Fair shares of a pool between tenants: weights and reservations over the pool's capacity.
//!
//! Per-volume limits ([`crate::qos`]) cap one volume; they cannot stop a tenant with many busy
//! volumes (or many connections to one) from taking a saturated pool from a tenant with few.
//! A pool whose capacity is known (operations and bytes per second: what its devices can do,
//! set by the operator, as Ceph's mClock takes `osd_mclock_max_capacity_iops`) admits requests
//! at most at that rate, and when requests wait for it they are served in order of their
//! *class* (one per tenant, and one each for rebuild and scrub traffic) by weighted
//! start-time fair queuing:
//!
//! - Each request costs the time the pool needs for it: `max(1 / iops_capacity, bytes /
//!   bandwidth_capacity)` seconds (the limits not set count nothing).
//! - A class has a finish tag. A request arriving in class `c` gets the start tag
//!   `max(finish(c), V)` and moves the finish tag to `start + cost / weight(c)`; `V`, the
//!   virtual time, is the start tag of the last request admitted. A class that was idle
//!   therefore rejoins at the front line: idleness earns no credit to spend later.
//! - Among waiting requests the smallest start tag goes first (ties by arrival), once the
//!   pool's buckets have the tokens. So two classes that both keep requests waiting get the
//!   pool in the ratio of their weights, however many requests each has waiting.
//! - A reservation (operations per second) is a bucket of its own: a waiting request whose
//!   class has a reservation token goes before tag order (it still takes the pool's tokens,
//!   possibly into debt), so a class gets at least its reservation while it asks for it.
//! - Nothing is queued inside the engine: a request waits in its caller's thread, holding
//!   nothing (the same backpressure as the per-volume limits). A class with many waiting
//!   requests only makes its own tags larger.
//! - A pool with no capacity set has no share state on the data path: one atomic load.
//!
//! [`ShareCore`] takes time as an argument, so the order is tested without sleeping;
//! [`PoolShare`] wraps it with a lock and a condition variable for real callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::bucket::{Bucket, MAX_SLEEP};

/// A share class: a tenant's requests, or a kind of background traffic.
pub type ClassId = u64;

/// Class of rebuild and resync traffic.
pub const CLASS_REBUILD: ClassId = u64::MAX;
/// Class of scrub traffic.
pub const CLASS_SCRUB: ClassId = u64::MAX - 1;

/// Weight of a class nobody configured.
pub const DEFAULT_WEIGHT: u32 = 100;

/// What the pool can do; `None` for both turns sharing off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Operations per second.
    pub iops: Option<u64>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
}

impl Capacity {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.iops.is_some() || self.bandwidth.is_some()
    }
}

/// How a class shares the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassShare {
    /// Relative weight (1 to 10,000).
    pub weight: u32,
    /// Operations per second the class gets first while it asks for them.
    pub reservation_iops: Option<u64>,
}

impl Default for ClassShare {
    fn default() -> Self {
        ClassShare {
            weight: DEFAULT_WEIGHT,
            reservation_iops: None,
        }
    }
}

#[derive(Debug)]
struct Class {
    share: ClassShare,
    reservation: Option<Bucket>,
    finish: f64,
    admitted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    class: ClassId,
    bytes: u64,
}

/// A request waiting for admission: its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    tag: OrdF64,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
#[allow(clippy::derive_ord_xor_partial_ord)]
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The queue and its arithmetic, with time (nanoseconds on any monotonic clock) given by the
/// caller.
#[derive(Debug)]
pub struct ShareCore {
    capacity: Capacity,
    iops: Option<Bucket>,
    bw: Option<Bucket>,
    classes: HashMap<ClassId, Class>,
    waiting: BTreeMap<Ticket, Waiter>,
    vtime: f64,
    seq: u64,
}

impl ShareCore {
    /// No capacity: everything is admitted at once.
    pub fn new() -> Self {
        ShareCore {
            capacity: Capacity::default(),
            iops: None,
            bw: None,
            classes: HashMap::new(),
            waiting: BTreeMap::new(),
            vtime: 0.0,
            seq: 0,
        }
    }

    /// Sets the pool's capacity. The buckets hold a tenth of a second's worth, so the pool
    /// never takes more than its capacity for long.
    pub fn set_capacity(&mut self, c: Capacity, now: u64) {
        let upd = |b: &mut Option<Bucket>, rate: Option<u64>| match rate {
            None => *b = None,
            Some(r) => match b {
                Some(b) => b.set(r, None, now),
                None => *b = Some(Bucket::new(r, None, now)),
            },
        };
        upd(&mut self.iops, c.iops);
        upd(&mut self.bw, c.bandwidth);
        self.capacity = c;
    }

    /// The capacity in force.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Sets a class's weight and reservation (kept across requests; the tags are kept).
    pub fn set_class(&mut self, id: ClassId, share: ClassShare, now: u64) {
        let c = self.class(id);
        c.share = ClassShare {
            weight: share.weight.clamp(1, 10_000),
            ..share
        };
        c.reservation = share.reservation_iops.map(|r| Bucket::new(r, None, now));
    }

    /// A class's share.
    pub fn class_share(&self, id: ClassId) -> ClassShare {
        self.classes.get(&id).map(|c| c.share).unwrap_or_default()
    }

    /// Requests admitted in a class since the pool opened.
    pub fn admitted(&self, id: ClassId) -> u64 {
        self.classes.get(&id).map_or(0, |c| c.admitted)
    }

    fn class(&mut self, id: ClassId) -> &mut Class {
        self.classes.entry(id).or_insert_with(|| Class {
            share: ClassShare::default(),
            reservation: None,
            finish: 0.0,
            admitted: 0,
        })
    }

    /// Seconds of the pool a request of `bytes` takes.
    fn cost(&self, bytes: u64) -> f64 {
        let ops = self.capacity.iops.map_or(0.0, |c| 1.0 / c.max(1) as f64);
        let bw = self
            .capacity
            .bandwidth
            .map_or(0.0, |c| bytes as f64 / c.max(1) as f64);
        ops.max(bw)
    }

    /// A request of `bytes` in class `id` joins the queue.
    pub fn arrive(&mut self, id: ClassId, bytes: u64) -> Ticket {
        let cost = self.cost(bytes);
        let vtime = self.vtime;
        let c = self.class(id);
        let start = c.finish.max(vtime);
        c.finish = start + cost / f64::from(c.share.weight.max(1));
        self.seq += 1;
        let t = Ticket {
            tag: OrdF64(start),
            seq: self.seq,
        };
        self.waiting.insert(t, Waiter { class: id, bytes });
        t
    }

    /// Whether the waiting request `t` may go now. `Ok`: it left the queue and took its
    /// tokens. `Err(d)`: wait about `d` before asking again (the time until the pool's
    /// tokens for the first request in line; [`MAX_SLEEP`] behind another request).
    pub fn poll(&mut self, t: Ticket, now: u64) -> Result<(), Duration> {
        let Some(&w) = self.waiting.get(&t) else {
            return Ok(());
        };
        let reserved = self
            .classes
            .get_mut(&w.class)
            .and_then(|c| c.reservation.as_mut())
            .is_some_and(|b| b.try_take(1, now).is_ok());
        let first = self.waiting.keys().next() == Some(&t);
        if !reserved && !first {
            return Err(MAX_SLEEP);
        }
        let ops = self.iops.as_ref().map(|b| b.clone().try_take(1, now));
        let bw = self.bw.as_ref().map(|b| b.clone().try_take(w.bytes, now));
        let wait = match (ops, bw) {
            (Some(Err(a)), Some(Err(b))) => Some(a.max(b)),
            (Some(Err(a)), _) | (_, Some(Err(a))) => Some(a),
            _ => None,
        };
        if let (Some(d), false) = (wait, reserved) {
            return Err(d);
        }
        // Admitted: a reserved request may leave the pool's buckets in debt.
        if let Some(b) = &mut self.iops {
            force_take(b, 1, now);
        }
        if let Some(b) = &mut self.bw {
            force_take(b, w.bytes, now);
        }
        self.waiting.remove(&t);
        self.vtime = self.vtime.max(t.tag.0);
        self.class(w.class).admitted += 1;
        Ok(())
    }

    /// A request that gives up waiting (its caller went away) leaves the queue.
    pub fn cancel(&mut self, t: Ticket) {
        self.waiting.remove(&t);
    }

    /// Requests waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

impl Default for ShareCore {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes `n` tokens whatever the level (a bucket may go into debt).
fn force_take(b: &mut Bucket, n: u64, now: u64) {
    if b.try_take(n, now).is_err() {
        b.take_debt(n, now);
    }
}

/// The pool's shares for real callers: [`ShareCore`] under a lock, waiters on a condition
/// variable.
#[derive(Debug)]
pub struct PoolShare {
    epoch: Instant,
    enabled: AtomicBool,
    core: Mutex<ShareCore>,
    cv: Condvar,
}

impl Default for PoolShare {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolShare {
    /// No capacity set: sharing off.
    pub fn new() -> Self {
        PoolShare {
            epoch: Instant::now(),
            enabled: AtomicBool::new(false),
            core: Mutex::new(ShareCore::new()),
            cv: Condvar::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a capacity is set (otherwise [`PoolShare::admit`] returns at once).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Sets the pool's capacity (none: sharing off; waiting requests go at once).
    pub fn set_capacity(&self, c: Capacity) {
        let now = self.now_ns();
        let mut g = self.core.lock();
        g.set_capacity(c, now);
        self.enabled.store(c.is_set(), Ordering::SeqCst);
        drop(g);
        self.cv.notify_all();
    }

    /// The capacity in force.
    pub fn capacity(&self) -> Capacity {
        self.core.lock().capacity()
    }

    /// Sets a class's weight and reservation.
    pub fn set_class(&self, id: ClassId, share: ClassShare) {
        let now = self.now_ns();
        self.core.lock().set_class(id, share, now);
        self.cv.notify_all();
    }

    /// A class's share.
    pub fn class_share(&self, id: ClassId) -> ClassShare {
        self.core.lock().class_share(id)
    }

    /// Requests admitted in a class since the pool opened.
    pub fn admitted(&self, id: ClassId) -> u64 {
        self.core.lock().admitted(id)
    }

    /// Blocks until a request of `bytes` in class `id` may go; returns the time it waited.
    pub fn admit(&self, id: ClassId, bytes: u64) -> Duration {
        if !self.enabled.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let start = Instant::now();
        let mut g = self.core.lock();
        let t = g.arrive(id, bytes);
        loop {
            if !self.enabled.load(Ordering::Relaxed) {
                g.cancel(t);
                break;
            }
            match g.poll(t, self.now_ns()) {
                Ok(()) => break,
                Err(d) => {
                    let d = d.clamp(Duration::from_micros(20), MAX_SLEEP);
                    self.cv.wait_for(&mut g, d);
                }
            }
        }
        drop(g);
        // The next in line may go now (or at least recompute its wait).
        self.cv.notify_all();
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Drives `n` requests per class, keeping `depth[c]` of class c waiting at all times, over
    /// `secs` of simulated time; returns the admitted count per class.
    fn run(core: &mut ShareCore, classes: &[(ClassId, usize)], secs: u64) -> Vec<u64> {
        let mut tickets: Vec<Vec<Ticket>> = classes
            .iter()
            .map(|&(c, d)| (0..d).map(|_| core.arrive(c, 4096)).collect())
            .collect();
        let mut done = vec![0u64; classes.len()];
        let step = MS / 10;
        let mut now = 0;
        while now < secs * 1_000 * MS {
            // Every waiter asks, in a fixed order (the order threads wake in does not matter:
            // only the first in line or a reserved one may go).
            for (i, ts) in tickets.iter_mut().enumerate() {
                for t in ts.iter_mut() {
                    while core.poll(*t, now).is_ok() {
                        done[i] += 1;
                        *t = core.arrive(classes[i].0, 4096);
                    }
                }
            }
            now += step;
        }
        // The requests still waiting go away (a ticket left in the queue holds up everyone
        // behind it: real callers always take theirs out, admitted or cancelled).
        for t in tickets.into_iter().flatten() {
            core.cancel(t);
        }
        done
    }

    /// A core whose pool sustains `iops` operations per second.
    fn iops_core(iops: u64) -> ShareCore {
        let mut c = ShareCore::new();
        c.set_capacity(
            Capacity {
                iops: Some(iops),
                bandwidth: None,
            },
            0,
        );
        c
    }

    #[test]
    fn no_capacity_admits_everything_at_once() {
        let mut c = ShareCore::new();
        let t = c.arrive(1, 4096);
        assert!(c.poll(t, 0).is_ok());
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn equal_weights_share_equally_whatever_the_queue_depths() {
        let mut c = iops_core(1000);
        let got = run(&mut c, &[(1, 8), (2, 1)], 5);
        let total = (got[0] + got[1]) as f64;
        assert!(
            (4900.0..=5200.0).contains(&total),
            "capacity holds: {got:?}"
        );
        let share = got[1] as f64 / total;
        assert!((0.48..=0.52).contains(&share), "{got:?}");
    }

    #[test]
    fn weights_set_the_ratio() {
        let mut c = iops_core(1000);
        c.set_class(
            1,
            ClassShare {
                weight: 300,
                reservation_iops: None,
            },
            0,
        );
        let got = run(&mut c, &[(1, 2), (2, 4)], 4);
        let r = got[0] as f64 / got[1] as f64;
        assert!((2.8..=3.2).contains(&r), "{got:?}");
    }

    #[test]
    fn a_reservation_is_met_against_a_heavier_weight() {
        let mut c = iops_core(1000);
        c.set_class(
            1,
            ClassShare {
                weight: 10_000,
                reservation_iops: None,
            },
            0,
        );
        c.set_class(
            2,
            ClassShare {
                weight: 1,
                reservation_iops: Some(300),
            },
            0,
        );
        let got = run(&mut c, &[(1, 4), (2, 4)], 5);
        let per_s = got[1] as f64 / 5.0;
        assert!(per_s >= 290.0, "reserved class got {per_s}/s: {got:?}");
    }

    #[test]
    fn an_idle_class_earns_no_credit() {
        let mut c = iops_core(1000);
        // Class 1 alone for 2 s, then class 2 joins: from then on they alternate, class 2
        // does not get 2 s worth of catching up.
        run(&mut c, &[(1, 4)], 2);
        let before = c.admitted(2);
        let mut t1 = c.arrive(1, 4096);
        let mut t2 = c.arrive(2, 4096);
        let mut now = 2_000 * MS;
        let (mut a, mut b) = (0, 0);
        while a + b < 200 {
            if c.poll(t1, now).is_ok() {
                a += 1;
                t1 = c.arrive(1, 4096);
            }
            if c.poll(t2, now).is_ok() {
                b += 1;
                t2 = c.arrive(2, 4096);
            }
            now += MS / 10;
        }
        assert_eq!(before, 0);
        assert!(
            (a as i64 - b as i64).abs() <= 10,
            "{a} vs {b}: no catching up"
        );
    }

    #[test]
    fn bandwidth_capacity_costs_by_bytes() {
        let mut c = ShareCore::new();
        c.set_capacity(
            Capacity {
                iops: None,
                bandwidth: Some(100 << 20),
            },
            0,
        );
        // Class 1 asks 1 MiB requests, class 2 4 KiB ones: equal weights share bytes.
        let mut t1 = c.arrive(1, 1 << 20);
        let mut t2 = c.arrive(2, 4096);
        let (mut b1, mut b2) = (0u64, 0u64);
        let mut now = 0;
        while now < 2_000 * MS {
            if c.poll(t1, now).is_ok() {
                b1 += 1 << 20;
                t1 = c.arrive(1, 1 << 20);
            }
            while c.poll(t2, now).is_ok() {
                b2 += 4096;
                t2 = c.arrive(2, 4096);
            }
            now += MS / 10;
        }
        let r = b1 as f64 / b2 as f64;
        assert!((0.9..=1.1).contains(&r), "{b1} vs {b2}");
    }

    #[test]
    fn real_threads_share_by_weight() {
        let s = std::sync::Arc::new(PoolShare::new());
        s.set_capacity(Capacity {
            iops: Some(2000),
            bandwidth: None,
        });
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut hs = Vec::new();
        for (class, threads) in [(1u64, 6), (2u64, 1)] {
            for _ in 0..threads {
                let (s, stop) = (s.clone(), stop.clone());
                hs.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        s.admit(class, 4096);
                    }
                }));
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        let (a, b) = (s.admitted(1) as f64, s.admitted(2) as f64);
        assert!(b / (a + b) >= 0.45, "one thread got {b} of {}", a + b);
        assert!(a + b <= 2000.0 * 1.5 + 400.0, "capacity holds: {}", a + b);
    }
}
