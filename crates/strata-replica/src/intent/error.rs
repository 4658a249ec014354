//! The write-intent log's own error (the crate's error vocabulary, `crate::error`, wraps it).

use std::io;

use thiserror::Error;

use super::DecodeError;

/// Reading or storing the write-intent log.
#[derive(Debug, Error)]
pub enum IntentError {
    /// The log's storage failed.
    #[error("intent log {log}: {source}")]
    Io {
        /// Where the log is.
        log: String,
        /// Cause.
        source: io::Error,
    },
    /// The stored record is damaged or of another format.
    #[error("intent log {log} is damaged: {source}")]
    Corrupt {
        /// Where the log is.
        log: String,
        /// What is wrong.
        source: DecodeError,
    },
}
