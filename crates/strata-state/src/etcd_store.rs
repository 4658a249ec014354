//! The etcd backend: the [`Store`] trait over etcd's v3 KV, Txn and Watch APIs.
//!
//! Mapping (see `docs/state-store.md`):
//! - every key is stored as `root + key` (root default [`DEFAULT_ROOT`], always ending in `/`),
//!   so clusters that share one etcd never see each other's keys; results have the root
//!   stripped. Revisions are etcd's own: one store-wide revision (writes of other roots bump it
//!   too), per key its create and mod revision;
//! - `txn` is one etcd Txn: every `Compare::ModRevision(k, r)` becomes `mod_revision(k) == r`
//!   (etcd compares an absent key as mod_revision 0), every write goes in `success`. etcd
//!   refuses two writes of one key in a Txn, so the last write of each key is sent (the outcome
//!   of applying them in order);
//! - `range` is a Range from `root + max(prefix, after + "\0")` to the end of the prefix;
//! - `changes` is a watch of the whole key space from `after + 1`, filtered by the prefix here,
//!   read until an event of the revision current when the call began (every revision but an
//!   empty etcd's first carries an event), or until `limit` is reached at the end of a revision
//!   (etcd never splits a revision across watch responses); a compacted start revision answers
//!   [`StoreError::Compacted`];
//! - `wait` returns the current revision if it is past `after`, otherwise watches the root from
//!   `after + 1` until an event arrives or the timeout passes.
//!
//! Every call runs on the store's own runtime and ends within the configured timeout (`wait`:
//! its own timeout plus that one), whatever the cluster does: see `conn.rs`.

mod conn;
mod lease;
mod wire;

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::check::check_txn;
use crate::{Compare, Event, KeyValue, Op, Store, StoreError, Txn, TxnResult};
use conn::{Conn, Members};

/// Root prefix of every key when none is given.
pub const DEFAULT_ROOT: &str = "/strata/";
/// Bound on one request when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the cluster is and how keys are laid out in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client endpoints, `host:port`.
    pub endpoints: Vec<String>,
    /// Prefix of every key (ends with `/`).
    pub root: String,
    /// Bound on one request, all members tried.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// Endpoints (`host:port`) with the default root and timeout.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            root: DEFAULT_ROOT.to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Parses `etcd://HOST:PORT[,HOST:PORT...][/ROOT/]`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Invalid(format!("etcd URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("expected etcd://HOST:PORT[,HOST:PORT...][/ROOT/]"))?;
        let (hosts, root) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let mut endpoints = Vec::new();
        for h in hosts.split(',') {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(bad(&format!("{h:?} is not HOST:PORT")));
            }
            endpoints.push(h.to_string());
        }
        let mut cfg = EtcdConfig::new(endpoints);
        if let Some(r) = root.filter(|r| *r != "/") {
            cfg = cfg.root(r);
        }
        Ok(cfg)
    }

    /// Sets the root prefix (a `/` is appended when missing).
    pub fn root(mut self, root: &str) -> Self {
        self.root = if root.ends_with('/') {
            root.to_string()
        } else {
            format!("{root}/")
        };
        self
    }

    /// Sets the bound on one request.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// The etcd-backed store.
#[derive(Debug)]
pub struct EtcdStore {
    conn: Conn,
    root: String,
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: etcd's "\0" means "to the end of the keyspace".
    vec![0]
}

fn rev(header: Option<wire::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.revision.max(0) as u64)
}

impl EtcdStore {
    /// Connects and checks that the cluster answers (a clear error now rather than at the
    /// first request).
    pub fn connect(cfg: EtcdConfig) -> Result<Self, StoreError> {
        if cfg.root.is_empty() || !cfg.root.ends_with('/') {
            return Err(StoreError::Invalid(format!(
                "etcd root {:?} must end with '/'",
                cfg.root
            )));
        }
        let s = EtcdStore {
            conn: Conn::new(&cfg.endpoints, cfg.timeout)?,
            root: cfg.root,
        };
        s.revision()?;
        Ok(s)
    }

    /// The root prefix of this store's keys.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Drops etcd's history before `revision` (cluster-wide: every root shares it). A later
    /// `changes` from before it answers [`StoreError::Compacted`].
    pub fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let m = self.conn.members.clone();
        let req = wire::CompactionRequest {
            revision: revision as i64,
            physical: true,
        };
        self.conn.run(m.timeout, async move {
            let _: wire::CompactionResponse = m.unary(wire::COMPACT, req).await?;
            Ok(())
        })
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.root.len() + key.len());
        k.extend_from_slice(self.root.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        key.strip_prefix(self.root.as_bytes())
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_string)
            .ok_or_else(|| StoreError::Corrupt(String::from_utf8_lossy(key).into_owned()))
    }

    fn kv(&self, kv: wire::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.strip(&kv.key)?,
            value: kv.value,
            create_revision: kv.create_revision.max(0) as u64,
            mod_revision: kv.mod_revision.max(0) as u64,
        })
    }

    fn event(&self, ev: wire::Event) -> Result<Event, StoreError> {
        let kv = ev
            .kv
            .ok_or_else(|| StoreError::Corrupt("watch event without a key".into()))?;
        Ok(Event {
            revision: kv.mod_revision.max(0) as u64,
            key: self.strip(&kv.key)?,
            value: (ev.r#type != wire::EVENT_DELETE).then_some(kv.value),
        })
    }

    fn range_raw(&self, req: wire::RangeRequest) -> Result<wire::RangeResponse, StoreError> {
        let m = self.conn.members.clone();
        self.conn
            .run(m.timeout, async move { m.unary(wire::RANGE, req).await })
    }
}

/// The current revision, read with a count-only range of `key`.
async fn current(m: &Members, key: Vec<u8>) -> Result<u64, StoreError> {
    let r: wire::RangeResponse = m
        .unary(
            wire::RANGE,
            wire::RangeRequest {
                key,
                count_only: true,
                ..Default::default()
            },
        )
        .await?;
    Ok(rev(r.header))
}

fn cancelled(resp: &wire::WatchResponse, after: u64) -> Option<StoreError> {
    if resp.compact_revision > 0 {
        return Some(StoreError::Compacted {
            requested: after + 1,
            oldest: resp.compact_revision as u64,
        });
    }
    resp.canceled
        .then(|| StoreError::Backend(format!("etcd: watch cancelled: {}", resp.cancel_reason)))
}

/// Events of keys starting with `prefix` after `after`, up to the revision current at the
/// start, or fewer when `limit` is reached (at the end of a revision).
///
/// The watch covers the whole key space and the prefix is applied here: every revision after
/// the first is made by a write and so carries at least one event, so seeing an event at the
/// start revision proves everything before it was seen. (A progress notification cannot serve:
/// etcd before 3.4.25/3.5.8 answers a progress request before it has sent a catching-up
/// watcher its history, and Debian ships 3.4.23.)
async fn history(
    m: &Members,
    prefix: Vec<u8>,
    after: u64,
    limit: usize,
) -> Result<Vec<wire::Event>, StoreError> {
    let target = current(m, prefix.clone()).await?;
    // Revision 1 is an empty etcd's and has no event.
    if after >= target || target <= 1 {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + m.timeout;
    let create = wire::WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: after as i64 + 1,
    };
    let (mut w, first) = m.watch(create, deadline).await?;
    let mut out: Vec<wire::Event> = Vec::new();
    let mut pending = Some(first);
    loop {
        let resp = match pending.take() {
            Some(r) => r,
            None => next(&mut w, deadline, after, m.timeout).await?,
        };
        if let Some(e) = cancelled(&resp, after) {
            return Err(e);
        }
        let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) else {
            continue;
        };
        let last = last.mod_revision.max(0) as u64;
        out.extend(
            resp.events
                .into_iter()
                .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix))),
        );
        if limit != 0 && out.len() >= limit {
            // One response may carry many revisions: stop at the end of the revision that
            // reached the limit (it is whole: a response never splits one).
            let at = out[limit - 1].kv.as_ref().map_or(0, |kv| kv.mod_revision);
            out.retain(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= at));
            return Ok(out);
        }
        if last >= target {
            return Ok(out);
        }
    }
}

/// The next watch response, before `deadline`.
async fn next(
    w: &mut conn::Watch,
    deadline: Instant,
    after: u64,
    timeout: Duration,
) -> Result<wire::WatchResponse, StoreError> {
    tokio::select! {
        msg = w.responses.message() => match msg {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(StoreError::Backend("etcd: watch stream closed".into())),
            Err(s) => Err(StoreError::Backend(format!("etcd: watch: {}", s.message()))),
        },
        _ = tokio::time::sleep_until(deadline) => Err(StoreError::Backend(format!(
            "etcd: history after revision {after} not read within {timeout:?}"
        ))),
    }
}

/// Waits for an event of `[key, end)` after `after`, until `deadline`; returns the store
/// revision then.
async fn follow(
    m: &Members,
    key: Vec<u8>,
    end: Vec<u8>,
    after: u64,
    deadline: Instant,
) -> Result<u64, StoreError> {
    let now = current(m, key.clone()).await?;
    if now > after {
        return Ok(now);
    }
    let create = wire::WatchCreateRequest {
        key: key.clone(),
        range_end: end,
        start_revision: after as i64 + 1,
    };
    let (mut w, first) = m.watch(create, deadline).await?;
    let mut pending = Some(first);
    loop {
        let resp = match pending.take() {
            Some(r) => r,
            None => tokio::select! {
                msg = w.responses.message() => match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(StoreError::Backend("etcd: watch stream closed".into())),
                    Err(s) => return Err(StoreError::Backend(format!("etcd: watch: {}", s.message()))),
                },
                _ = tokio::time::sleep_until(deadline) => return current(m, key).await,
            },
        };
        if let Some(e) = cancelled(&resp, after) {
            return Err(e);
        }
        if let Some(kv) = resp.events.last().and_then(|e| e.kv.as_ref()) {
            return Ok(rev(resp.header).max(kv.mod_revision.max(0) as u64));
        }
    }
}

impl Store for EtcdStore {
    fn leases(&self) -> Option<&dyn crate::Leases> {
        Some(self)
    }
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let r = self.range_raw(wire::RangeRequest {
            key: self.full(key),
            ..Default::default()
        })?;
        r.kvs.into_iter().next().map(|kv| self.kv(kv)).transpose()
    }

    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let start = match after {
            // The first key after `after`.
            Some(a) if a >= prefix => {
                let mut k = self.full(a);
                k.push(0);
                k
            }
            _ => self.full(prefix),
        };
        let r = self.range_raw(wire::RangeRequest {
            key: start,
            range_end: prefix_end(&self.full(prefix)),
            limit: limit as i64,
            ..Default::default()
        })?;
        let revision = rev(r.header);
        let kvs = r
            .kvs
            .into_iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<_, _>>()?;
        Ok((kvs, revision))
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        check_txn(&txn)?;
        let compare = txn
            .compare
            .iter()
            .map(|Compare::ModRevision(k, r)| wire::Compare {
                result: wire::COMPARE_EQUAL,
                target: wire::TARGET_MOD,
                key: self.full(k),
                target_union: Some(wire::TargetUnion::ModRevision(*r as i64)),
            })
            .collect();
        // etcd refuses a Txn that writes one key twice: keep each key's last write.
        let key_of = |op: &Op| op.key().to_string();
        let last: HashMap<String, usize> = txn
            .success
            .iter()
            .enumerate()
            .map(|(i, op)| (key_of(op), i))
            .collect();
        let success = txn
            .success
            .into_iter()
            .enumerate()
            .filter(|(i, op)| last.get(&key_of(op)) == Some(i))
            .map(|(_, op)| wire::RequestOp {
                request: Some(match op {
                    Op::Put(k, v) => wire::Request::Put(wire::PutRequest {
                        key: self.full(&k),
                        value: v,
                        lease: 0,
                    }),
                    Op::PutLeased(k, v, l) => wire::Request::Put(wire::PutRequest {
                        key: self.full(&k),
                        value: v,
                        lease: l.0,
                    }),
                    Op::Delete(k) => {
                        wire::Request::Delete(wire::DeleteRangeRequest { key: self.full(&k) })
                    }
                }),
            })
            .collect();
        let req = wire::TxnRequest { compare, success };
        let m = self.conn.members.clone();
        let r: wire::TxnResponse = self
            .conn
            .run(m.timeout, async move { m.unary(wire::TXN, req).await })?;
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: rev(r.header),
        })
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let m = self.conn.members.clone();
        let key = self.root.as_bytes().to_vec();
        self.conn
            .run(m.timeout, async move { current(&m, key).await })
    }

    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let m = self.conn.members.clone();
        let key = self.full(prefix);
        // A count-only read, then the watch: two bounded steps.
        let evs = self.conn.run(m.timeout * 2, async move {
            history(&m, key, after, limit).await
        })?;
        evs.into_iter().map(|e| self.event(e)).collect()
    }

    fn wait(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        let m = self.conn.members.clone();
        let key = self.root.as_bytes().to_vec();
        let end = prefix_end(&key);
        // The wait itself, then at most one bounded read of the revision.
        self.conn.run(timeout + m.timeout * 2, async move {
            let deadline = Instant::now() + timeout;
            follow(&m, key, end, after, deadline).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/strata/"), b"/strata0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn urls_name_members_and_an_optional_root() {
        let c = EtcdConfig::from_url("etcd://10.0.0.1:2379,h2:2379").unwrap();
        assert_eq!(c.endpoints, vec!["10.0.0.1:2379", "h2:2379"]);
        assert_eq!(c.root, DEFAULT_ROOT);
        let c = EtcdConfig::from_url("etcd://h:1/prod/a").unwrap();
        assert_eq!(c.root, "/prod/a/");
        for bad in [
            "http://h:1",
            "etcd://",
            "etcd://h",
            "etcd://h:x",
            "etcd://:1",
            "etcd://h:1,",
        ] {
            assert!(
                matches!(EtcdConfig::from_url(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
