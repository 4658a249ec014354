//! What a device's I/O met since the daemon started: errors by kind, blocks repaired from
//! another copy. Counted where the I/O is done (the copies of `crate::storage`'s users), shown
//! by `pool show` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Error and repair counts of one device.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Reads that failed (I/O errors).
    pub read_errors: AtomicU64,
    /// Writes and flushes that failed.
    pub write_errors: AtomicU64,
    /// Blocks that failed their checksum.
    pub checksum_errors: AtomicU64,
    /// Blocks rewritten from another copy after a failed read.
    pub repaired: AtomicU64,
    /// When a checksum failure was last logged (seconds since the epoch): one line a second.
    pub logged: AtomicU64,
}

/// A snapshot of [`DeviceCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// See [`DeviceCounters::read_errors`].
    pub read_errors: u64,
    /// See [`DeviceCounters::write_errors`].
    pub write_errors: u64,
    /// See [`DeviceCounters::checksum_errors`].
    pub checksum_errors: u64,
    /// See [`DeviceCounters::repaired`].
    pub repaired: u64,
}

impl DeviceCounters {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a block that failed its checksum, and logs it at most once a second per device
    /// (a bad region read in a loop must not flood the log). `what` names the block, `then`
    /// what becomes of it.
    pub fn checksum_failed(&self, what: &str, then: &str) {
        Self::bump(&self.checksum_errors);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.logged.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(block = what, "checksum mismatch: {then}");
        }
    }

    /// The counts now.
    pub fn values(&self) -> CounterValues {
        CounterValues {
            read_errors: self.read_errors.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            checksum_errors: self.checksum_errors.load(Ordering::Relaxed),
            repaired: self.repaired.load(Ordering::Relaxed),
        }
    }
}
