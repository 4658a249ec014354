//! Typed errors of the replication layer, each mapped to a stable [`ErrorCode`].

use strata_types::ErrorCode;
use thiserror::Error;

use crate::intent::IntentError;
use crate::state::IllegalTransition;
use crate::target::CopyError;

/// Operating a replica set.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The range is outside the volume.
    #[error("range {offset}+{len} is outside the volume's {size} bytes")]
    OutOfRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Size.
        size: u64,
    },
    /// Every healthy copy failed the operation (the last error is given).
    #[error("no healthy copy could serve the {op}: {last}")]
    NoHealthyCopy {
        /// "read", "write", "flush" or "resync".
        op: &'static str,
        /// The last copy's error.
        last: CopyError,
    },
    /// A copy given to create, reattach or replace did not answer.
    #[error("copy {copy} does not answer: {source}")]
    CopyUnreachable {
        /// The copy's index.
        copy: usize,
        /// Its error.
        source: CopyError,
    },
    /// There is no healthy copy at all.
    #[error("the volume has no healthy copy")]
    Unavailable,
    /// The write-intent log failed; the operation was not acknowledged.
    #[error(transparent)]
    Intent(#[from] IntentError),
    /// A state change the state machine refuses.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// A set has 1 to 3 copies.
    #[error("a replica set has 1 to 3 copies, not {0}")]
    CopyCount(usize),
    /// No copy with that index.
    #[error("no copy {0}")]
    NoSuchCopy(usize),
    /// A copy's size differs from the set's.
    #[error("copy {copy} has {size} bytes, the set {expected}")]
    SizeMismatch {
        /// The copy.
        copy: usize,
        /// Its size.
        size: u64,
        /// The set's.
        expected: u64,
    },
    /// `create` on a log that already holds a record.
    #[error("the intent log already holds a replica set")]
    AlreadyCreated,
    /// `open` on a log that holds no record.
    #[error("the intent log holds no replica set")]
    NotCreated,
    /// The stored record does not describe these copies.
    #[error("the intent log does not match the copies: {0}")]
    LogMismatch(String),
}

impl ReplicaError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplicaError::OutOfRange { .. }
            | ReplicaError::CopyCount(_)
            | ReplicaError::NoSuchCopy(_)
            | ReplicaError::SizeMismatch { .. } => ErrorCode::InvalidArgument,
            ReplicaError::NoHealthyCopy { last, .. } => last.code(),
            ReplicaError::CopyUnreachable { source, .. } => source.code(),
            ReplicaError::Unavailable => ErrorCode::IoError,
            ReplicaError::Intent(IntentError::Io { .. }) => ErrorCode::IoError,
            ReplicaError::Intent(IntentError::Corrupt { .. }) | ReplicaError::LogMismatch(_) => {
                ErrorCode::CorruptMetadata
            }
            ReplicaError::Illegal(_) => ErrorCode::Conflict,
            ReplicaError::AlreadyCreated => ErrorCode::AlreadyExists,
            ReplicaError::NotCreated => ErrorCode::NotFound,
        }
    }
}
