//! The embedded backend: one redb file holding the keys, a bounded change log and the
//! store revision. Every transaction is one durable redb write transaction, so a crash (also
//! `kill -9`) loses nothing that was acknowledged.
//!
//! Tables:
//! - `kv`: key -> `create_revision:u64 | mod_revision:u64 | value` (little-endian)
//! - `log`: revision -> the changes of that revision, `n:u32` then per change
//!   `key_len:u32 key kind:u8 (1 put, 0 delete) value_len:u32 value`
//! - `meta`: `"revision"` and `"oldest"` (the oldest revision the log still holds)

use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Compare, Event, KeyValue, Op, Store, StoreError, Txn, TxnResult};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Revisions of history kept for watchers that fall behind.
pub const HISTORY: u64 = 100_000;
/// Longest key accepted.
pub const MAX_KEY: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE: usize = 1 << 20;

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
    /// Latest committed revision, for `wait`.
    rev: Mutex<u64>,
    changed: Condvar,
    /// Serializes writers (redb would too; this also orders the condvar updates).
    write: Mutex<()>,
    /// Revisions of change log kept.
    history: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &*self.rev.lock())
            .finish()
    }
}

fn be<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Corrupt(key.to_string()));
    }
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: u64::from_le_bytes(raw[0..8].try_into().expect("8")),
        mod_revision: u64::from_le_bytes(raw[8..16].try_into().expect("8")),
        value: raw[16..].to_vec(),
    })
}

fn decode_log(rev: u64, raw: &[u8], out: &mut Vec<Event>, prefix: &str) -> Result<(), StoreError> {
    let bad = || StoreError::Corrupt(format!("log revision {rev}"));
    let mut p = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let s = raw.get(p..p + n).ok_or_else(bad)?;
        p += n;
        Ok(s)
    };
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4"));
    for _ in 0..n {
        let kl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let key = std::str::from_utf8(take(kl)?)
            .map_err(|_| bad())?
            .to_string();
        let kind = take(1)?[0];
        let vl = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        let value = take(vl)?.to_vec();
        if key.starts_with(prefix) {
            out.push(Event {
                revision: rev,
                key,
                value: (kind == 1).then_some(value),
            });
        }
    }
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, keeping [`HISTORY`] revisions of change log.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_history(path, HISTORY)
    }

    /// Opens (or creates) the store, keeping `history` (at least 1) revisions of change log.
    pub fn open_with_history(path: impl AsRef<Path>, history: u64) -> Result<Self, StoreError> {
        let db = Database::create(path.as_ref()).map_err(be)?;
        let w = db.begin_write().map_err(be)?;
        let rev = {
            w.open_table(KV).map_err(be)?;
            w.open_table(LOG).map_err(be)?;
            let mut meta = w.open_table(META).map_err(be)?;
            let rev = meta.get("revision").map_err(be)?.map_or(0, |v| v.value());
            if meta.get("oldest").map_err(be)?.is_none() {
                meta.insert("oldest", 1).map_err(be)?;
            }
            rev
        };
        w.commit().map_err(be)?;
        Ok(RedbStore {
            db,
            rev: Mutex::new(rev),
            changed: Condvar::new(),
            write: Mutex::new(()),
            history: history.max(1),
        })
    }
}

fn check_key(k: &str) -> Result<(), StoreError> {
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(StoreError::Invalid(format!(
            "key length {} (1..={MAX_KEY})",
            k.len()
        )));
    }
    Ok(())
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let t = r.open_table(KV).map_err(be)?;
        match t.get(key).map_err(be)? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let rev = r
            .open_table(META)
            .map_err(be)?
            .get("revision")
            .map_err(be)?
            .map_or(0, |v| v.value());
        let t = r.open_table(KV).map_err(be)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let mut out = Vec::new();
        for item in t.range(start..).map_err(be)? {
            let (k, v) = item.map_err(be)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if after == Some(k) {
                continue;
            }
            out.push(decode_kv(k, v.value())?);
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok((out, rev))
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        for op in &txn.success {
            match op {
                Op::Put(k, v) => {
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
        let _w = self.write.lock();
        let w = self.db.begin_write().map_err(be)?;
        let (succeeded, rev) = {
            let mut kv = w.open_table(KV).map_err(be)?;
            let mut meta = w.open_table(META).map_err(be)?;
            let cur = meta.get("revision").map_err(be)?.map_or(0, |v| v.value());
            let mut ok = true;
            for c in &txn.compare {
                let Compare::ModRevision(k, want) = c;
                let have = match kv.get(k.as_str()).map_err(be)? {
                    Some(v) => decode_kv(k, v.value())?.mod_revision,
                    None => 0,
                };
                if have != *want {
                    ok = false;
                    break;
                }
            }
            if !ok || txn.success.is_empty() {
                (ok, cur)
            } else {
                let rev = cur + 1;
                let mut log = Vec::new();
                log.extend_from_slice(&(txn.success.len() as u32).to_le_bytes());
                for op in &txn.success {
                    let (k, v) = match op {
                        Op::Put(k, v) => {
                            let created = match kv.get(k.as_str()).map_err(be)? {
                                Some(old) => decode_kv(k, old.value())?.create_revision,
                                None => rev,
                            };
                            let mut rec = Vec::with_capacity(16 + v.len());
                            rec.extend_from_slice(&created.to_le_bytes());
                            rec.extend_from_slice(&rev.to_le_bytes());
                            rec.extend_from_slice(v);
                            kv.insert(k.as_str(), rec.as_slice()).map_err(be)?;
                            (k, Some(v))
                        }
                        Op::Delete(k) => {
                            kv.remove(k.as_str()).map_err(be)?;
                            (k, None)
                        }
                    };
                    log.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    log.extend_from_slice(k.as_bytes());
                    log.push(u8::from(v.is_some()));
                    let v: &[u8] = v.map_or(&[], |v| v.as_slice());
                    log.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    log.extend_from_slice(v);
                }
                let mut lt = w.open_table(LOG).map_err(be)?;
                lt.insert(rev, log.as_slice()).map_err(be)?;
                // Keep a bounded history: drop the revision that fell out of the window.
                if rev > self.history {
                    let old = rev - self.history;
                    lt.remove(old).map_err(be)?;
                    meta.insert("oldest", old + 1).map_err(be)?;
                }
                meta.insert("revision", rev).map_err(be)?;
                (true, rev)
            }
        };
        w.commit().map_err(be)?;
        let mut r = self.rev.lock();
        if rev > *r {
            *r = rev;
            self.changed.notify_all();
        }
        Ok(TxnResult {
            succeeded,
            revision: rev,
        })
    }

    fn revision(&self) -> Result<u64, StoreError> {
        Ok(*self.rev.lock())
    }

    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let r = self.db.begin_read().map_err(be)?;
        let oldest = r
            .open_table(META)
            .map_err(be)?
            .get("oldest")
            .map_err(be)?
            .map_or(1, |v| v.value());
        if after + 1 < oldest {
            return Err(StoreError::Compacted {
                requested: after + 1,
                oldest,
            });
        }
        let t = r.open_table(LOG).map_err(be)?;
        let mut out = Vec::new();
        for item in t.range(after + 1..).map_err(be)? {
            let (rev, raw) = item.map_err(be)?;
            decode_log(rev.value(), raw.value(), &mut out, prefix)?;
            // Stop only at a revision boundary: a caller resumes after the last revision it
            // saw, so a revision must never be split.
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn wait(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut r = self.rev.lock();
        while *r <= after {
            if self.changed.wait_until(&mut r, deadline).timed_out() {
                break;
            }
        }
        Ok(*r)
    }
}
