//! The write-intent log: which regions may differ between copies after a crash, and which
//! copies are authoritative. Like md's write-intent bitmap plus its member roles.
//!
//! # Invariants (kept by [`crate::ReplicaSet`])
//! - A region is in the stored record before the first write into it after a flush is sent to
//!   any copy; a stored record therefore covers every region whose copies may disagree.
//! - Bits are cleared only after a flush that every copy completed while all were healthy,
//!   only for regions a whole flush interval left unwritten, and lazily: the in-memory set loses them at once, the stored record at the next store (the
//!   next first write into a clean region, a fault, or [`crate::ReplicaSet::sync_intent`]). The
//!   stored set is always a superset of the in-memory one.
//! - While any copy is not healthy no bit is cleared, so the stored bits also cover every
//!   region a faulted copy missed: a copy flagged [`CopyFlag::Stale`] needs exactly those.
//! - A copy's flag leaves [`CopyFlag::InSync`] (is stored as stale) before the write or flush
//!   that faulted it is acknowledged, so after a crash a stale copy is never chosen as source.
//! - A store replaces the whole record atomically: a crash leaves the old or the new one.

mod error;
mod file;
mod format;

pub use error::IntentError;
pub use file::FileIntentLog;
pub use format::{decode, encode, DecodeError, HEADER_LEN, MAGIC, VERSION};

use std::sync::Arc;

use parking_lot::Mutex;

use crate::types::RegionSet;

/// What the log says of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFlag {
    /// It missed writes: it needs the marked regions from an in-sync copy.
    Stale,
    /// In sync except, after a crash, for the marked regions.
    InSync,
    /// A new copy whose rebuild has not finished: it needs everything.
    New,
}

impl CopyFlag {
    /// The byte stored for it.
    pub fn to_byte(self) -> u8 {
        match self {
            CopyFlag::Stale => 0,
            CopyFlag::InSync => 1,
            CopyFlag::New => 2,
        }
    }
    /// The flag a stored byte means, if any.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(CopyFlag::Stale),
            1 => Some(CopyFlag::InSync),
            2 => Some(CopyFlag::New),
            _ => None,
        }
    }
}

/// The whole content of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    /// Increases by one per store (tells an operator how busy the log is; not trusted).
    pub generation: u64,
    /// Bytes per region ([`crate::REGION_SIZE`] today; stored so a change is detected).
    pub region_size: u64,
    /// Regions of the volume.
    pub regions: u64,
    /// One flag per copy, by index (1 to 3).
    pub copies: Vec<CopyFlag>,
    /// Regions whose copies may disagree.
    pub dirty: RegionSet,
}

/// Where the record is kept. A store is atomic and durable when it returns.
pub trait IntentLog: Send + std::fmt::Debug {
    /// The stored record, or None if none was ever stored.
    fn load(&mut self) -> Result<Option<IntentRecord>, IntentError>;
    /// Replaces the stored record.
    fn store(&mut self, record: &IntentRecord) -> Result<(), IntentError>;
}

/// An in-memory log for engine tests. Clones share the record, so a test can "reopen" it
/// after a simulated power cut (a store is atomic and durable by definition here), and can
/// make stores fail.
#[derive(Debug, Clone, Default)]
pub struct MemIntentLog {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    record: Option<Vec<u8>>,
    stores: u64,
    fail: bool,
}

impl MemIntentLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
    /// How many stores have succeeded.
    pub fn stores(&self) -> u64 {
        self.inner.lock().stores
    }
    /// Makes stores fail (or stop failing).
    pub fn set_fail(&self, on: bool) {
        self.inner.lock().fail = on;
    }
    /// The stored record, decoded (tests).
    pub fn peek(&self) -> Option<IntentRecord> {
        let g = self.inner.lock();
        g.record
            .as_deref()
            .map(|b| decode(b).expect("own encoding"))
    }
}

impl IntentLog for MemIntentLog {
    fn load(&mut self) -> Result<Option<IntentRecord>, IntentError> {
        let g = self.inner.lock();
        match &g.record {
            None => Ok(None),
            // Through the codec, so the fake exercises the same bytes as the file.
            Some(b) => decode(b).map(Some).map_err(|e| IntentError::Corrupt {
                log: "memory".into(),
                source: e,
            }),
        }
    }
    fn store(&mut self, record: &IntentRecord) -> Result<(), IntentError> {
        let mut g = self.inner.lock();
        if g.fail {
            return Err(IntentError::Io {
                log: "memory".into(),
                source: std::io::Error::other("injected fault"),
            });
        }
        g.record = Some(encode(record));
        g.stores += 1;
        Ok(())
    }
}
