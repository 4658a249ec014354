//! [`LocalCopy`]: a copy held by a volume of an engine pool. Each failure domain (a device
//! today) is its own pool with its own metadata, so losing a device loses only the copies on it.

use strata_block::{IoError, Pool, VolumeId};

use crate::target::{CopyError, CopyTarget};

/// A copy that is a volume of a local engine pool.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    pool: Pool,
    volume: VolumeId,
    label: String,
}

impl LocalCopy {
    /// The copy held by `volume` of `pool`, labelled `label` (for events and errors).
    pub fn new(pool: Pool, volume: VolumeId, label: impl Into<String>) -> Self {
        LocalCopy {
            pool,
            volume,
            label: label.into(),
        }
    }

    /// The pool holding the copy.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The volume holding the copy.
    pub fn volume(&self) -> VolumeId {
        self.volume
    }

    fn map(&self, e: IoError) -> CopyError {
        let copy = self.label.clone();
        match e {
            IoError::Checksum { offset, .. } => CopyError::Checksum { copy, offset },
            IoError::OutOfSpace { .. } => CopyError::NoSpace { copy },
            // A failed pool refuses writes until reopened, and a deleted volume never comes
            // back: both are gone until the caller re-attaches a new handle.
            e @ (IoError::PoolFailed | IoError::NotFound(_)) => CopyError::Gone {
                copy,
                detail: e.to_string(),
            },
            e => CopyError::Io {
                copy,
                detail: e.to_string(),
            },
        }
    }
}

impl CopyTarget for LocalCopy {
    fn size(&self) -> Result<u64, CopyError> {
        self.pool.size_of(self.volume).map_err(|e| self.map(e))
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        // The set meters the client's request; a copy's read is part of it.
        self.pool
            .read_unmetered(self.volume, offset, buf)
            .map_err(|e| self.map(e))
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), CopyError> {
        self.pool
            .write(self.volume, offset, data)
            .map_err(|e| self.map(e))
    }
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), CopyError> {
        self.pool
            .write_zeroes(self.volume, offset, len, unmap)
            .map_err(|e| self.map(e))
    }
    fn flush(&self) -> Result<(), CopyError> {
        self.pool.flush().map_err(|e| self.map(e))
    }
    fn describe(&self) -> String {
        self.label.clone()
    }
}
