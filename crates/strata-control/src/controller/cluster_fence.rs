//! Failover and fencing (issue 14 step 4, `docs/cluster.md`): a volume whose copies span
//! nodes has one owner, its serving node, with a generation; another node holding a copy that
//! has every acknowledged write takes it over once the owner is down, and the old owner can no
//! longer change any copy.
//!
//! # Store layout
//! - `/owners/{volume}`: the volume's [`Owner`]: the serving node, its generation, and what
//!   the serving node's intent log says of each copy (by index of the volume's `copies`).
//!   Written by the serving node's intent log ([`FencedIntentLog`]) whenever a copy's flag
//!   changes, and by a takeover. Absent: generation 0, every copy in sync (the set never
//!   stored a change).
//!
//! # Invariants
//! - A write is acknowledged without a copy only after `/owners/{volume}` names that copy
//!   stale, written by a transaction that holds only while this node's generation is the
//!   record's (the set stores its flags before acknowledging; [`FencedIntentLog`] publishes
//!   them first). A node cut off from the store cannot publish, so it acknowledges no write
//!   its peers miss; a node that lost the volume cannot publish either.
//! - A takeover happens on a node whose copy the record names in sync, only while the
//!   serving node is down (its lease expired), by one transaction comparing the volume record
//!   and the owner record: the volume names the new node and its copy first, the generation
//!   goes up by one, every other copy is named new (rebuilt whole: their unflushed regions are
//!   unknown without the old node's log).
//! - A copy export is `copy:{volume}:{generation}`; a node port opens it only at the record's
//!   generation, and refuses every request of a session whose generation is older than the
//!   newest this node has seen ([`FencedIo`]): writes already in flight from the old owner stop
//!   within one agent pass.
//! - A node that sees another node serve a volume it served closes that volume's sessions,
//!   forgets its set (`release_lost_volumes`), before its agent makes the copy
//!   the new owner names on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_block::IoError;
use strata_nbd::{ExportIo, Runs, SinceToken};
use strata_replica::{CopyFlag, FileIntentLog, IntentError, IntentLog, IntentRecord};
use strata_state::{Store, Txn};

use super::auth::Principal;
use super::cluster_copies::{held_key, split_copy, HeldCopy};
use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// What the serving node's intent log says of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySync {
    /// Has every acknowledged write (but, after a crash, perhaps some unacknowledged ones).
    InSync,
    /// Missed writes.
    Stale,
    /// Being built whole.
    New,
}

impl From<CopyFlag> for CopySync {
    fn from(f: CopyFlag) -> Self {
        match f {
            CopyFlag::InSync => CopySync::InSync,
            CopyFlag::Stale => CopySync::Stale,
            CopyFlag::New => CopySync::New,
        }
    }
}

/// The owner of a volume whose copies span nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The serving node.
    pub node: String,
    /// Goes up by one at each takeover.
    pub generation: u64,
    /// Each copy's flag, by index of the volume's `copies`.
    pub copies: Vec<CopySync>,
}

pub(super) fn owner_key(volume: &str) -> String {
    format!("/owners/{volume}")
}

/// The intent log of a set whose copies span nodes: the file, plus the copies' flags
/// published to the owner record first, under this node's generation.
pub(super) struct FencedIntentLog {
    file: FileIntentLog,
    store: Arc<dyn Store>,
    volume: String,
    node: String,
    generation: u64,
    /// The owner record as last written or read, with its revision (0: absent).
    last: (Option<Owner>, u64),
}

impl std::fmt::Debug for FencedIntentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedIntentLog")
            .field("file", &self.file)
            .field("volume", &self.volume)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl FencedIntentLog {
    /// The log of `volume`'s set on `node`, refused when another node owns the volume.
    pub(super) fn open(
        store: Arc<dyn Store>,
        file: FileIntentLog,
        volume: &str,
        node: &str,
    ) -> Result<Self, ControlError> {
        let last = read_owner(store.as_ref(), volume)?;
        let generation = match &last.0 {
            Some(o) if o.node != node => {
                return Err(ControlError::Fenced(format!(
                    "volume {volume} is owned by node {} (generation {}), not this node",
                    o.node, o.generation
                )))
            }
            Some(o) => o.generation,
            None => 0,
        };
        Ok(FencedIntentLog {
            file,
            store,
            volume: volume.to_string(),
            node: node.to_string(),
            generation,
            last,
        })
    }

    fn fenced(&self, why: String) -> IntentError {
        IntentError::Io {
            log: format!("owner record of volume {}", self.volume),
            source: std::io::Error::other(why),
        }
    }

    /// Writes `copies` into the owner record while this node's generation is the record's.
    fn publish(&mut self, copies: Vec<CopySync>) -> Result<(), IntentError> {
        let key = owner_key(&self.volume);
        for _ in 0..4 {
            let o = Owner {
                node: self.node.clone(),
                generation: self.generation,
                copies: copies.clone(),
            };
            let r = self
                .store
                .txn(
                    Txn::new()
                        .when(key.clone(), self.last.1)
                        .put(key.clone(), enc(&o)),
                )
                .map_err(|e| self.fenced(format!("the store did not take the change: {e}")))?;
            if r.succeeded {
                self.last = (Some(o), r.revision);
                return Ok(());
            }
            let cur = read_owner(self.store.as_ref(), &self.volume)
                .map_err(|e| self.fenced(e.to_string()))?;
            match &cur.0 {
                Some(c) if c.node == self.node && c.generation == self.generation => {}
                None if self.generation == 0 => {}
                Some(c) => {
                    return Err(self.fenced(format!(
                        "fenced: node {} took the volume over (generation {} > {})",
                        c.node, c.generation, self.generation
                    )))
                }
                None => return Err(self.fenced("fenced: the owner record is gone".into())),
            }
            self.last = cur;
        }
        Err(self.fenced("the owner record kept changing".into()))
    }
}

impl IntentLog for FencedIntentLog {
    fn load(&mut self) -> Result<Option<IntentRecord>, IntentError> {
        self.file.load()
    }

    fn store(&mut self, record: &IntentRecord) -> Result<(), IntentError> {
        let copies: Vec<CopySync> = record.copies.iter().map(|f| (*f).into()).collect();
        if self.last.0.as_ref().map(|o| &o.copies) != Some(&copies) {
            self.publish(copies)?;
        }
        self.file.store(record)
    }
}

fn read_owner(store: &dyn Store, volume: &str) -> Result<(Option<Owner>, u64), ControlError> {
    match store.get(&owner_key(volume))? {
        None => Ok((None, 0)),
        Some(kv) => {
            let o = serde_json::from_slice(&kv.value).map_err(|e| {
                ControlError::internal(format!("owner record of {volume} is damaged: {e}"))
            })?;
            Ok((Some(o), kv.mod_revision))
        }
    }
}

/// One session of a copy export at a generation: every request is refused once this node has
/// seen a newer generation of the volume.
#[derive(Debug)]
pub struct FencedIo {
    inner: Arc<dyn ExportIo>,
    volume: String,
    session: u64,
    current: Arc<AtomicU64>,
}

impl FencedIo {
    fn check(&self) -> Result<(), IoError> {
        let now = self.current.load(Ordering::SeqCst);
        if now > self.session {
            return Err(IoError::Fenced(format!(
                "copy of volume {}: this session is of owner generation {}, the volume is at {now}",
                self.volume, self.session
            )));
        }
        Ok(())
    }
}

impl ExportIo for FencedIo {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.check()?;
        self.inner.read(off, dst)
    }
    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.check()?;
        self.inner.read_unmetered(off, dst)
    }
    fn qos(&self) -> Result<Option<Arc<strata_block::VolumeIo>>, IoError> {
        self.inner.qos()
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<(), IoError> {
        self.check()?;
        self.inner.write(off, data)
    }
    fn trim(&self, off: u64, len: u64) -> Result<(), IoError> {
        self.check()?;
        self.inner.trim(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), IoError> {
        self.check()?;
        self.inner.write_zeroes(off, len, unmap)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.check()?;
        self.inner.flush()
    }
    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError> {
        self.check()?;
        self.inner.allocation(off, len)
    }
    fn since(&self, name: &str) -> Option<SinceToken> {
        self.inner.since(name)
    }
    fn since_all(&self) -> Vec<(String, SinceToken)> {
        self.inner.since_all()
    }
    fn changed(&self, since: SinceToken, off: u64, len: u64) -> Result<Runs, IoError> {
        self.check()?;
        self.inner.changed(since, off, len)
    }
}

impl Controller {
    /// The owner record of `volume` (absent: generation 0, on its serving node).
    pub(super) fn owner_generation(&self, volume: &str) -> Result<u64, ControlError> {
        Ok(read_owner(self.store.as_ref(), volume)?
            .0
            .map_or(0, |o| o.generation))
    }

    /// The intent log of `v`'s set on this node: fenced when its copies span nodes.
    pub(super) fn set_log(&self, v: &Volume) -> Result<Box<dyn IntentLog>, ControlError> {
        let file = self.intent_log(v)?;
        if v.copy_devices().iter().any(|c| split_copy(c).is_some()) {
            let log = FencedIntentLog::open(self.store.clone(), file, &v.id, &self.node)?;
            return Ok(Box::new(log));
        }
        Ok(Box::new(file))
    }

    /// Wraps the engine export of this node's copy of `id` for a session at `generation`.
    pub(super) fn fenced_copy(
        &self,
        id: &str,
        generation: u64,
        inner: Arc<dyn ExportIo>,
    ) -> Arc<dyn ExportIo> {
        self.node_port.generations.saw(id, generation);
        Arc::new(FencedIo {
            inner,
            volume: id.to_string(),
            session: generation,
            current: self.node_port.generations.cell(id),
        })
    }

    /// Records the newest generation of every volume this node holds a copy of (the agent's
    /// pass): sessions of older generations are refused from now on.
    pub(super) fn refresh_generations(&self) -> Result<(), ControlError> {
        for (k, o) in self.list::<Owner>("/owners/", None, 0)? {
            if let Some(id) = k.strip_prefix("/owners/") {
                if o.node != self.node {
                    self.node_port.generations.saw(id, o.generation);
                }
            }
        }
        Ok(())
    }

    /// Serves volume `id` from this node from now on: the serving node must be down and this
    /// node's copy in sync. Idempotent on the node that serves it.
    pub fn take_over(&self, p: &Principal, id: &str) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        let serving = self.volume_node(&v);
        if serving == self.node {
            return Ok(v);
        }
        let mine = format!("{}:", self.node);
        let Some((slot, dev)) = v
            .copy_devices()
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.strip_prefix(&mine).map(|d| (i, d.to_string())))
        else {
            return Err(ControlError::NoInSyncCopy(format!(
                "node {} holds no copy of volume {}",
                self.node, v.name
            )));
        };
        if self.node_is_up(&serving) {
            return Err(ControlError::ServingNodeUp(format!(
                "volume {} is served by node {serving}, which is up: a takeover is for a node \
                 that is down (its lease expired)",
                v.name
            )));
        }
        let held = self.get::<HeldCopy>(&held_key(&self.node, &v.id))?;
        let engine = self.storage.engine(&dev);
        if held.is_none_or(|(h, _)| h.device != dev)
            || engine.is_none_or(|e| e.volume_id(&v.id).is_err())
        {
            return Err(ControlError::NoInSyncCopy(format!(
                "this node's copy of volume {} on device {dev} is not made yet",
                v.name
            )));
        }
        let (owner, orev) = read_owner(self.store.as_ref(), &v.id)?;
        let (generation, flag) = match &owner {
            None => (0, CopySync::InSync),
            Some(o) => (
                o.generation,
                o.copies.get(slot).copied().unwrap_or(CopySync::New),
            ),
        };
        if flag != CopySync::InSync {
            return Err(ControlError::NoInSyncCopy(format!(
                "this node's copy of volume {} is {flag:?} in the owner record: it may lack \
                 acknowledged writes",
                v.name
            )));
        }
        // The new order: this node's copy first (unqualified: it is local now), then the
        // others, the old serving node's qualified with its name.
        let mut copies = vec![dev.clone()];
        for (i, c) in v.copy_devices().into_iter().enumerate() {
            if i == slot {
                continue;
            }
            copies.push(match split_copy(&c) {
                Some(_) => c,
                None => format!("{serving}:{c}"),
            });
        }
        let next = Owner {
            node: self.node.clone(),
            generation: generation + 1,
            copies: std::iter::once(CopySync::InSync)
                .chain(std::iter::repeat_n(CopySync::New, copies.len() - 1))
                .collect(),
        };
        // The log first: the set opened after the switch finds every other copy new. A crash
        // before the switch leaves a log no set of this node reads (the record names the old
        // node), overwritten at the next takeover.
        let mut log = self.intent_log(&v)?;
        let rec = IntentRecord {
            generation: 0,
            region_size: strata_replica::REGION_SIZE,
            regions: strata_replica::types::region_count(v.size),
            copies: std::iter::once(CopyFlag::InSync)
                .chain(std::iter::repeat_n(CopyFlag::New, copies.len() - 1))
                .collect(),
            dirty: Default::default(),
        };
        log.store(&rec)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let vkey = volume_key(&v.tenant, &v.id);
        let (cur, vrev) = self
            .get::<Volume>(&vkey)?
            .ok_or_else(|| ControlError::not_found(crate::error::Resource::Volume, id))?;
        let mut nv = cur.clone();
        nv.node = self.node.clone();
        nv.copies = copies;
        let r = self.store.txn(
            Txn::new()
                .when(vkey.clone(), vrev)
                .when(owner_key(&v.id), orev)
                .put(vkey, enc(&nv))
                .put(owner_key(&v.id), enc(&next))
                .delete(held_key(&self.node, &v.id))
                .delete(super::cluster_rebuild::pending_key(&serving, &v.id)),
        )?;
        if !r.succeeded {
            return Err(ControlError::Busy(format!(
                "volume {} changed during the takeover: ask again",
                v.name
            )));
        }
        self.node_port.generations.saw(&v.id, next.generation);
        self.sets.sets.lock().remove(&v.id);
        self.sets.cells.lock().remove(&v.id);
        if self.get::<Attachment>(&attachment_key(&v.id))?.is_some() {
            self.exports.write().insert(v.id.clone());
        }
        tracing::warn!(volume = %v.id, from = %serving, generation = next.generation,
            "volume taken over: served by this node from now on");
        self.audit_event(
            Some(&v.tenant),
            "volume.taken_over",
            &v.id,
            &format!(
                "from node {serving} (down) to node {}, owner generation {}",
                self.node, next.generation
            ),
        );
        self.sets.signals.raise_work();
        Ok(nv)
    }

    /// Forgets the volumes this node served that another node took over: closes their
    /// sessions, drops their sets, exports and logs, and frees what its pool counted for them.
    /// Returns how many.
    pub(super) fn release_lost_volumes(&self) -> Result<usize, ControlError> {
        // The volumes this node opened for I/O (every attachment of the cluster is in
        // `exports`, served only by its volume's node: `VolumeSource::open`).
        let mut ids: Vec<String> = self.open_sets().into_iter().map(|(k, _)| k).collect();
        ids.extend(self.sets.cells.lock().keys().cloned());
        ids.sort();
        ids.dedup();
        let mut lost = 0;
        for id in ids {
            let Some(v) = self.volume_record(&id) else {
                continue;
            };
            if self.is_local(&v) {
                continue;
            }
            let closed = self.close_volume_sessions(&id);
            let had_set = self.sets.sets.lock().remove(&id).is_some();
            self.sets.cells.lock().remove(&id);
            {
                if had_set {
                    if let Ok(log) = self.intent_log(&v) {
                        let _ = std::fs::remove_file(log.path());
                    }
                }
                // The volume's local copy was counted in its pool here; the copy the new
                // owner names on this node is counted again when the agent makes it.
                self.provision(&v.pool, v.size, 0, false, || Ok(((), true)))?;
            }
            tracing::warn!(volume = %id, now = %self.volume_node(&v), sessions = closed,
                "volume taken over by another node: this node no longer serves it");
            lost += 1;
        }
        Ok(lost)
    }
}
