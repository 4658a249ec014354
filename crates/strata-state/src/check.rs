//! Input rules every backend applies before it queues or sends anything: a bad key or value
//! is refused with [`StoreError::Invalid`] and changes nothing.

use crate::{Compare, Op, StoreError, Txn};

/// Longest key accepted.
pub const MAX_KEY: usize = 1024;
/// Largest value accepted (etcd's default request limit is 1.5 MiB, so a value this size
/// still fits in one request with its key).
pub const MAX_VALUE: usize = 1 << 20;

/// Refuses an empty or over-long key.
pub(crate) fn check_key(k: &str) -> Result<(), StoreError> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(StoreError::Invalid(format!(
            "key length {} (1..={MAX_KEY})",
            k.len()
        )));
    }
    Ok(())
}

/// Checks every key and value of a transaction.
pub(crate) fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    for op in &txn.success {
        match op {
            Op::Put(k, v) | Op::PutLeased(k, v, _) => {
                check_key(k)?;
                if v.len() > MAX_VALUE {
                    return Err(StoreError::Invalid(format!(
                        "value of {} bytes (at most {MAX_VALUE})",
                        v.len()
                    )));
                }
            }
            Op::Delete(k) => check_key(k)?,
        }
    }
    for Compare::ModRevision(k, _) in &txn.compare {
        check_key(k)?;
    }
    Ok(())
}
