//! Backends for tests: a fault-injecting wrapper and a power-cut simulator.
//!
//! They live in the library (not behind `cfg(test)`) so integration tests, benchmarks and later
//! crates (the NBD server's tests) can drive the engine through the same failures.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device::{range_check, BlockDevice};

/// Wraps a device and fails chosen operations on demand.
#[derive(Debug)]
pub struct FaultDevice {
    inner: Arc<dyn BlockDevice>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    /// Fail writes once this many more have succeeded (u64::MAX = never).
    writes_left: AtomicU64,
}

impl FaultDevice {
    /// Wraps `inner`; no faults are armed.
    pub fn new(inner: Arc<dyn BlockDevice>) -> Arc<Self> {
        Arc::new(FaultDevice {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_syncs: AtomicBool::new(false),
            writes_left: AtomicU64::new(u64::MAX),
        })
    }
    /// Makes every read fail (or stop failing).
    pub fn set_fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::SeqCst);
    }
    /// Makes every write fail (or stop failing).
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }
    /// Makes every sync fail (or stop failing).
    pub fn set_fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }
    /// Lets `n` more writes succeed, then fails all writes.
    pub fn fail_writes_after(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

impl BlockDevice for FaultDevice {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(injected());
        }
        let left = self.writes_left.load(Ordering::SeqCst);
        if left != u64::MAX {
            if left == 0 {
                return Err(injected());
            }
            self.writes_left.store(left - 1, Ordering::SeqCst);
        }
        self.inner.write_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.sync()
    }
    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }
}

/// Sector size at which a power cut tears unsynced writes.
pub const TEAR_SECTOR: usize = 512;

/// A set of devices that lose power together: the N-th `sync` across all of them (the first
/// sync is number one) cuts the power. At the cut every unsynced write of every device survives in part: each
/// 512-byte sector of it independently reaches the durable image or not, chosen by a seeded
/// generator. The cutting sync fails, and so does every later operation.
#[derive(Debug)]
pub struct PowerDomain {
    state: Mutex<DomainState>,
}

#[derive(Debug)]
struct DomainState {
    syncs: u64,
    cut_at: Option<u64>,
    dead: bool,
    rng: StdRng,
    devices: Vec<Arc<CrashDevice>>,
}

impl PowerDomain {
    /// A domain that cuts power at sync number `cut_at` (None: never), tearing with `seed`.
    pub fn new(cut_at: Option<u64>, seed: u64) -> Arc<Self> {
        Arc::new(PowerDomain {
            state: Mutex::new(DomainState {
                syncs: 0,
                cut_at,
                dead: false,
                rng: StdRng::seed_from_u64(seed),
                devices: Vec::new(),
            }),
        })
    }

    /// A new device of `size` zero bytes in this domain.
    pub fn device(self: &Arc<Self>, size: usize, label: &str) -> Arc<CrashDevice> {
        self.device_from_image(vec![0; size], label)
    }

    /// A new device in this domain whose durable and visible contents start as `image`.
    pub fn device_from_image(self: &Arc<Self>, image: Vec<u8>, label: &str) -> Arc<CrashDevice> {
        let d = Arc::new(CrashDevice {
            domain: Arc::downgrade(self),
            inner: Mutex::new(CrashInner {
                durable: image.clone(),
                current: image,
                pending: Vec::new(),
            }),
            label: label.to_string(),
        });
        self.state.lock().devices.push(d.clone());
        d
    }

    /// Cuts the power at the `n`-th sync from now (n >= 1).
    pub fn arm(&self, n: u64) {
        let mut st = self.state.lock();
        st.cut_at = Some(st.syncs + n);
    }

    /// How many syncs have been issued so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Whether the power has been cut.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Cuts the power now (as if the next sync were the cutting one).
    pub fn cut_now(&self) {
        let mut st = self.state.lock();
        Self::cut(&mut st);
    }

    fn cut(st: &mut DomainState) {
        if st.dead {
            return;
        }
        st.dead = true;
        let devices = st.devices.clone();
        for d in devices {
            let mut inner = d.inner.lock();
            let pending = std::mem::take(&mut inner.pending);
            for (off, data) in pending {
                for (i, sector) in data.chunks(TEAR_SECTOR).enumerate() {
                    if st.rng.gen_bool(0.5) {
                        let s = off as usize + i * TEAR_SECTOR;
                        inner.durable[s..s + sector.len()].copy_from_slice(sector);
                    }
                }
            }
        }
    }

    /// Counts a sync; returns Err if this sync cuts the power or the power is already off.
    fn on_sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.dead {
            return Err(power_off());
        }
        st.syncs += 1;
        if st.cut_at == Some(st.syncs) {
            Self::cut(&mut st);
            return Err(power_off());
        }
        Ok(())
    }

    fn is_dead_now(&self) -> bool {
        self.state.lock().dead
    }
}

fn power_off() -> io::Error {
    io::Error::other("power cut")
}

/// A device whose unsynced writes can be lost in a power cut. See [`PowerDomain`].
#[derive(Debug)]
pub struct CrashDevice {
    domain: std::sync::Weak<PowerDomain>,
    inner: Mutex<CrashInner>,
    label: String,
}

#[derive(Debug)]
struct CrashInner {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
}

impl CrashDevice {
    /// The bytes that survive a power cut (after one, the state to reopen from).
    pub fn durable_image(&self) -> Vec<u8> {
        self.inner.lock().durable.clone()
    }

    fn dead(&self) -> bool {
        self.domain.upgrade().is_none_or(|d| d.is_dead_now())
    }
}

impl BlockDevice for CrashDevice {
    fn len(&self) -> io::Result<u64> {
        Ok(self.inner.lock().current.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        if self.dead() {
            return Err(power_off());
        }
        let inner = self.inner.lock();
        let (s, e) = range_check(inner.current.len() as u64, buf.len(), off)?;
        buf.copy_from_slice(&inner.current[s..e]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if self.dead() {
            return Err(power_off());
        }
        let mut inner = self.inner.lock();
        let (s, e) = range_check(inner.current.len() as u64, buf.len(), off)?;
        inner.current[s..e].copy_from_slice(buf);
        inner.pending.push((off, buf.to_vec()));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let domain = self.domain.upgrade().ok_or_else(power_off)?;
        domain.on_sync()?;
        // Syncing one device makes all of its completed writes durable.
        let mut inner = self.inner.lock();
        let pending = std::mem::take(&mut inner.pending);
        for (off, data) in pending {
            inner.durable[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_tear_at_cut() {
        let dom = PowerDomain::new(Some(2), 7);
        let d = dom.device(8192, "c0");
        d.write_at(&[1; 4096], 0).unwrap();
        d.sync().unwrap();
        d.write_at(&[2; 4096], 0).unwrap();
        assert!(d.sync().is_err());
        assert!(d.read_at(&mut [0; 1], 0).is_err());
        let img = d.durable_image();
        // Every sector is wholly old or wholly new.
        for s in img[..4096].chunks(TEAR_SECTOR) {
            assert!(s.iter().all(|&b| b == 1) || s.iter().all(|&b| b == 2));
        }
    }

    #[test]
    fn fault_device_counts_writes() {
        let m: Arc<dyn BlockDevice> = crate::device::MemDevice::new(4096, "m");
        let f = FaultDevice::new(m);
        f.fail_writes_after(1);
        f.write_at(&[1], 0).unwrap();
        assert!(f.write_at(&[1], 0).is_err());
    }
}
