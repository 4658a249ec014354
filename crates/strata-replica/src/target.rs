//! The copy target: what one copy of a replicated volume is, whatever holds it. Today a
//! volume of an engine pool on its own failure domain ([`crate::LocalCopy`]); later a remote
//! node's export over NBD. The replication layer reaches a copy only through this trait: it
//! never sees the engine's map or format.
//!
//! # Contract
//! - `read` returns the bytes last written (or zeros), or an error; never other bytes. A copy
//!   that cannot prove its bytes (a checksum mismatch) says so with [`CopyError::Checksum`].
//! - `write` and `write_zeroes` are durable after a successful `flush` (a disk with a volatile
//!   cache); an unflushed write survives a crash as old or new per 4 KiB block.
//! - A copy that will not answer again until it is re-attached (its device vanished, its pool
//!   failed) answers [`CopyError::Gone`]: the set faults it at once instead of counting errors.
//! - `write_behind` may answer before the write is carried out (a remote copy,
//!   [`crate::WriteBehind`]); a failure is then answered to a later call, as
//!   [`CopyError::Gone`], at the latest to the next `flush`. Reads and writes still see every
//!   write answered before them. The set faults the copy on that answer and resyncs every
//!   region written since the last flush that all copies passed, so the failed write's region
//!   is among them (`docs/replicas.md`, "Writes behind").

use std::fmt;

use strata_types::ErrorCode;
use thiserror::Error;

/// Why a copy failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CopyError {
    /// The device failed the I/O; the copy may answer again.
    #[error("copy {copy}: I/O error: {detail}")]
    Io {
        /// The copy's label.
        copy: String,
        /// What failed.
        detail: String,
    },
    /// A block failed its checksum: the copy did not return it.
    #[error("copy {copy}: checksum mismatch at offset {offset}")]
    Checksum {
        /// The copy's label.
        copy: String,
        /// Byte offset of the bad block in the volume.
        offset: u64,
    },
    /// The copy is unreachable until re-attached (vanished device, failed pool, lost node).
    #[error("copy {copy} is gone: {detail}")]
    Gone {
        /// The copy's label.
        copy: String,
        /// Why.
        detail: String,
    },
    /// The copy's failure domain has no room for the write.
    #[error("copy {copy}: out of space")]
    NoSpace {
        /// The copy's label.
        copy: String,
    },
}

impl CopyError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CopyError::Io { .. } | CopyError::Gone { .. } => ErrorCode::IoError,
            CopyError::Checksum { .. } => ErrorCode::ChecksumMismatch,
            CopyError::NoSpace { .. } => ErrorCode::OutOfSpace,
        }
    }
}

/// One copy of a replicated volume. Implementations are shared between threads: the set calls
/// them concurrently (reads beside writes, a resync step beside client I/O).
pub trait CopyTarget: Send + Sync + fmt::Debug {
    /// The copy's size in bytes (every copy of a set has the same).
    fn size(&self) -> Result<u64, CopyError>;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError>;
    /// Writes `data` at `offset`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), CopyError>;
    /// Makes `[offset, offset + len)` read as zeros; `unmap` frees the space (trim).
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), CopyError>;
    /// Makes every write acknowledged before it durable.
    fn flush(&self) -> Result<(), CopyError>;
    /// A label for events and errors (the domain and volume, or the remote export).
    fn describe(&self) -> String;
    /// Writes several ranges, no two overlapping; one result per write. A copy that can have
    /// several requests in flight at once (a remote copy) carries them out together.
    fn write_many(&self, writes: &[(u64, &[u8])]) -> Vec<Result<(), CopyError>> {
        writes.iter().map(|&(o, d)| self.write(o, d)).collect()
    }
    /// Writes `data` at `offset`, possibly answering before it is carried out (see the
    /// contract above). The set calls it only while another healthy copy takes its writes
    /// plainly.
    fn write_behind(&self, offset: u64, data: &[u8]) -> Result<(), CopyError> {
        self.write(offset, data)
    }
    /// Whether `write_behind` answers before the write is carried out.
    fn writes_behind(&self) -> bool {
        false
    }
}
