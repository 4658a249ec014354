//! The pool: devices, metadata, allocation and the data path.
//!
//! # Durability model
//! Data blocks are never overwritten while durable metadata may reference them: a block is
//! rewritten in place only if it was written in the current commit epoch (no durable metadata
//! refers to it yet); every other write goes to freshly allocated blocks (redirect-on-write).
//! The mapping change is appended to an in-memory journal buffer. A commit (on `flush`, on
//! every management operation, and whenever the buffer grows past a threshold) syncs the data
//! devices, then writes the buffered ops as one checksummed journal record and syncs the
//! metadata device. Blocks freed by an op become reusable only once that op is durable. Hence
//! after a power cut the metadata is that of some commit at or after the last acknowledged
//! flush, and every block it references holds exactly the bytes whose CRC it records: each
//! block reads back old or new, never an error.
//!
//! # Encryption at rest
//! A volume created encrypted has its lineage's data key (shared by its snapshots and clones).
//! Its blocks are sealed after placement (the nonce is the physical block, so it is known only
//! then) and their CRC is taken over the ciphertext; the tag is recorded beside the CRC in the
//! same map-run op, so the durability argument above covers it unchanged. A volume whose key is
//! locked (no master key, or another one) refuses every I/O before touching a device.
//!
//! # Space
//! Every device keeps a reserve of free blocks that new (thin) allocations may not take:
//! only a redirect of a block the volume's top layer already holds may use it, so rewriting
//! written data succeeds on a pool that is full, and the commit that makes the rewrite durable
//! frees the old copies, refilling the reserve. A write reserves every block it needs (all its
//! chunks) before it changes any map, so a write that fails for space changes nothing.
//! Metadata has its own preallocated areas (checkpoint slots, journal) and needs no data space.
//!
//! # Concurrency
//! - `meta` (a mutex) guards the metadata state, the allocator and the journal buffer; it is
//!   held only for map look-ups and updates, never across device I/O.
//! - `stripes` serialize writers of the same 1 MiB chunk of a volume (read-modify-write of
//!   partial blocks, rewrites in place), and a reader that found a bad checksum against them.
//! - `gate`: data I/O holds it shared, management operations and trims exclusively, so a layer
//!   never changes shape under an I/O in flight.
//! - `epoch_gate`: a write request holds it shared from its reservation (where it counts the
//!   blocks it may rewrite in place) to its last chunk's map update; a commit's epoch cut holds
//!   it exclusively. So no commit turns an in-place block into a redirect under a request, and
//!   the reservation covers every chunk.
//! - `commit` serializes commits. Lock order: gate, epoch_gate, stripe, meta; a commit takes
//!   `commit` then `epoch_gate`, so a writer holding `epoch_gate` never waits for a commit (it
//!   commits after releasing it).
//!
//! # Files (one operation family each; they import this module, never each other in a loop)
//! - `mod.rs`: the pool type, its shared state, and look-ups (info, volumes, snapshots).
//! - `open.rs`: create (format) and open (recovery: checkpoint, journal replay, free map).
//! - `admin.rs`: management operations through [`Pool::admin`] (plan ops, apply, journal,
//!   commit).
//! - `read.rs`: the read path, block status and changed blocks.
//! - `write.rs`: the write path (reserve, merge, place, write runs, record), zeroes and trim.
//! - `commit.rs`: commit (epoch cut, syncs, journal record or checkpoint) and block release.
//! - `keys.rs`: encryption at rest (encrypted volumes, the master key, rotation); the block
//!   cipher itself is `crate::crypt`, applied by `write.rs` and `read.rs`.

mod admin;
mod commit;
mod keys;
mod open;
mod read;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use strata_types::DeviceClass;
use uuid::Uuid;

use crate::alloc::Allocator;
use crate::codec::Writer;
use crate::crypt::{BlockCipher, KeyWrapper, TAG_LEN};
use crate::device::BlockDevice;
use crate::error::{AdminError, IoError};
use crate::format::{Superblock, BLOCK_SIZE, ENTRY_ENCODED_LEN};
use crate::map::Entry;
use crate::meta::{
    KeyId, LayerId, SnapshotId, SnapshotMeta, State, VolumeId, VolumeMeta, MAX_NAME,
};
use crate::qos::VolumeIo;

const BS: u64 = BLOCK_SIZE;
const BSU: usize = BLOCK_SIZE as usize;
/// Blocks per I/O chunk (1 MiB): the unit of striping, of one map update and of the largest
/// single device read or write. Large enough that a 1 MiB request is one system call.
pub const CHUNK_BLOCKS: u64 = 256;
const CHUNK_BYTES: u64 = CHUNK_BLOCKS * BS;
const STRIPES: usize = 1024;
/// Largest journal buffer before a commit happens without a flush. Every commit syncs the data
/// devices, so commits the client did not ask for are kept rare: a quarter of the journal, at
/// most 16 MiB of ops (about 550,000 random 4 KiB writes, or 12 GiB of sequential ones).
const AUTO_COMMIT_MAX: usize = 16 << 20;

/// A device given to [`Pool::create`].
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// The backend.
    pub device: Arc<dyn BlockDevice>,
    /// Its class.
    pub class: DeviceClass,
}

/// What a read can address: a volume, or a snapshot (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A volume.
    Volume(VolumeId),
    /// A snapshot.
    Snapshot(SnapshotId),
}

impl From<VolumeId> for Target {
    fn from(v: VolumeId) -> Self {
        Target::Volume(v)
    }
}
impl From<SnapshotId> for Target {
    fn from(s: SnapshotId) -> Self {
        Target::Snapshot(s)
    }
}

/// A volume as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Id.
    pub id: VolumeId,
    /// Name.
    pub name: String,
    /// Provisioned size in bytes.
    pub size: u64,
    /// Bytes of physical space the volume's own writable layer holds (freed if it is deleted).
    pub allocated: u64,
    /// Device class restriction.
    pub class: Option<DeviceClass>,
    /// Snapshot it was cloned from.
    pub origin: Option<SnapshotId>,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// Encryption at rest, if the volume is encrypted.
    pub encryption: Option<EncryptionInfo>,
}

/// How a volume (or its lineage) is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionInfo {
    /// The data key's id (shared by the volume's snapshots and clones).
    pub key: KeyId,
    /// The id of the master key that wraps it.
    pub master_key_id: String,
    /// Whether the data key is unwrapped, so the volume serves I/O.
    pub available: bool,
}

/// What [`Pool::set_key_wrapper`] could unlock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyUnlock {
    /// Data keys unwrapped.
    pub unlocked: Vec<KeyId>,
    /// Data keys that did not unwrap, with the master key id each is wrapped by.
    pub locked: Vec<(KeyId, String)>,
}

/// A snapshot as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Id.
    pub id: SnapshotId,
    /// Name.
    pub name: String,
    /// The volume it was taken of.
    pub volume: VolumeId,
    /// Size of the volume when taken.
    pub size: u64,
    /// Bytes of physical space held by the snapshot's own layer.
    pub allocated: u64,
    /// Creation time.
    pub created: u64,
}

/// One device of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Index in the pool.
    pub index: usize,
    /// Device id.
    pub id: Uuid,
    /// Label (path).
    pub label: String,
    /// Class.
    pub class: DeviceClass,
    /// Data capacity in bytes.
    pub capacity: u64,
    /// Bytes in use.
    pub allocated: u64,
    /// Whether it holds the metadata.
    pub metadata: bool,
}

/// The pool's utilization, exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// Pool id.
    pub id: Uuid,
    /// Block size.
    pub block_size: u64,
    /// Data capacity in bytes.
    pub capacity: u64,
    /// Bytes referenced by volumes and snapshots.
    pub allocated: u64,
    /// Bytes freed by operations not yet durable (reusable after the next flush).
    pub pending_free: u64,
    /// Free bytes now (the reserve included).
    pub free: u64,
    /// Bytes of `free` held back for rewrites of blocks volumes already hold: new data cannot
    /// take them (so new data has `free - reserve`, when positive).
    pub reserve: u64,
    /// Sum of volume sizes (may exceed capacity: thin provisioning).
    pub provisioned: u64,
    /// Devices.
    pub devices: Vec<DeviceInfo>,
}

#[derive(Debug)]
pub(crate) struct Dev {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    dirty: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct MetaState {
    state: State,
    alloc: Allocator,
    /// Encoded ops not yet committed.
    buf: Writer,
    /// The map-run ops in `buf` that are still the newest op for their blocks:
    /// (layer, first vblock) -> (offset of the first checksum in `buf`, blocks, first
    /// pblock, bytes per block's item: 4, or 20 with an encrypted block's tag). A rewrite in place of blocks mapped by one of them patches its checksums
    /// instead of appending an op, so rewriting the same blocks again and again within an
    /// epoch does not grow the journal record (nor force commits). Cleared whenever an op
    /// of another kind is appended and when a commit takes `buf`.
    patchable: std::collections::BTreeMap<(LayerId, u64), (usize, u32, u64, usize)>,
    /// Blocks freed by ops not yet committed.
    pending_free: Vec<u64>,
    /// Scratch for `State::apply`.
    freed: Vec<Entry>,
    /// Bytes of checkpoint payload the mapping entries may take (the slot, less headroom).
    meta_budget: u64,
    /// Unwrapped data keys, by key id (a key absent here is locked: its volumes refuse I/O).
    ciphers: crate::map::IdMap<KeyId, Arc<BlockCipher>>,
    /// The master key given to the pool, if any.
    wrapper: Option<Arc<dyn KeyWrapper>>,
    /// QoS state and live figures per volume (runtime only; limits are set by the caller).
    io: crate::map::IdMap<u64, Arc<VolumeIo>>,
    /// Management operations applied so far (their ops are in `buf` or committed).
    applied: u64,
}

impl MetaState {
    /// Whether `n` more entries (`sealed`: of an encrypted layer, with a tag each) fit the
    /// checkpoint slot.
    fn entries_fit(&self, n: u64, sealed: bool) -> bool {
        let tag = TAG_LEN as u64;
        let per = ENTRY_ENCODED_LEN + if sealed { tag } else { 0 };
        self.state.entries * ENTRY_ENCODED_LEN + self.state.tags.len() as u64 * tag + n * per
            <= self.meta_budget
    }

    /// The cipher a layer's blocks are sealed with: `Ok(None)` for a plain layer, an error
    /// naming `t` when its key is locked.
    fn cipher_of(&self, layer: LayerId, t: Target) -> Result<Option<Arc<BlockCipher>>, IoError> {
        let Some(k) = self.state.key_of_layer(layer) else {
            return Ok(None);
        };
        match self.ciphers.get(&k) {
            Some(c) => Ok(Some(c.clone())),
            None => Err(IoError::KeyUnavailable {
                target: target_name(&self.state, t),
                master_key_id: self
                    .state
                    .keys
                    .get(&k)
                    .map_or_else(String::new, |r| r.master.clone()),
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct JournalState {
    /// Sequence number of the last durable commit.
    seq: u64,
    /// Next write position in the journal.
    pos: u64,
    /// Slot (0 or 1) holding the newest checkpoint.
    slot: u64,
    /// Management operations (counted as `MetaState::applied`) made durable so far.
    durable: u64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    id: Uuid,
    devs: Vec<Dev>,
    meta_dev: usize,
    meta: Mutex<MetaState>,
    gate: RwLock<()>,
    /// Writers overwriting current-epoch blocks in place hold it shared; a commit's epoch cut
    /// holds it exclusively. Lock order: gate, epoch_gate, stripe, meta; a writer never
    /// holds it while committing.
    epoch_gate: RwLock<()>,
    stripes: Box<[RwLock<()>]>,
    commit: Mutex<JournalState>,
    failed: AtomicBool,
    /// The tenants' fair shares of the pool's capacity (runtime only: set by the caller).
    share: Arc<crate::share::PoolShare>,
    /// Journal buffer size that triggers a commit.
    auto_commit: usize,
}

/// A storage pool. Cheap to clone; all clones share the pool.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a volume or snapshot name.
pub fn validate_name(name: &str) -> Result<(), AdminError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME {
        Some("longer than 128 bytes")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("must start with a letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(AdminError::InvalidName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

impl Pool {
    /// The pool's id.
    pub fn id(&self) -> Uuid {
        self.inner.id
    }

    /// Whether the pool failed (a metadata write failed): it refuses writes until reopened.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::SeqCst)
    }

    /// Makes the pool refuse every write, commit and management operation from now on, as a
    /// failed one does (reads still answer from what it holds): its device is about to be
    /// opened again by another `Pool`, and two pools must never both write one device.
    pub fn retire(&self) {
        self.inner.failed.store(true, Ordering::SeqCst);
    }

    /// Utilization and devices.
    pub fn info(&self) -> PoolInfo {
        let m = self.inner.meta.lock();
        let mut devices = Vec::new();
        let (mut capacity, mut free) = (0, 0);
        for (i, d) in self.inner.devs.iter().enumerate() {
            let cap = d.sb.data_blocks * BS;
            let f = m.alloc.device_free(i) * BS;
            capacity += cap;
            free += f;
            devices.push(DeviceInfo {
                index: i,
                id: d.sb.device,
                label: d.dev.describe(),
                class: d.sb.class,
                capacity: cap,
                allocated: cap - f,
                metadata: i == self.inner.meta_dev,
            });
        }
        let pending = m.pending_free.len() as u64 * BS;
        PoolInfo {
            id: self.inner.id,
            block_size: BS,
            capacity,
            allocated: capacity - free - pending,
            pending_free: pending,
            free,
            reserve: m.alloc.reserve() * BS,
            provisioned: m.state.volumes.values().map(|v| v.size).sum(),
            devices,
        }
    }

    /// Finds a volume by name.
    pub fn volume_id(&self, name: &str) -> Result<VolumeId, AdminError> {
        let m = self.inner.meta.lock();
        m.state
            .volume_by_name(name)
            .map(|v| v.id)
            .ok_or_else(|| AdminError::VolumeNotFound(name.into()))
    }

    /// Describes one volume.
    pub fn volume(&self, id: VolumeId) -> Result<VolumeInfo, AdminError> {
        let m = self.inner.meta.lock();
        volume_info(&m, id).ok_or_else(|| AdminError::VolumeNotFound(id.0.to_string()))
    }

    /// All volumes, ordered by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let m = self.inner.meta.lock();
        m.state
            .volumes
            .keys()
            .filter_map(|&id| volume_info(&m, id))
            .collect()
    }

    /// Finds a snapshot of `volume` by name.
    pub fn snapshot_id(&self, volume: VolumeId, name: &str) -> Result<SnapshotId, AdminError> {
        let m = self.inner.meta.lock();
        m.state
            .snapshots
            .values()
            .find(|s| s.volume == volume && s.name == name)
            .map(|s| s.id)
            .ok_or_else(|| AdminError::SnapshotNotFound(name.into()))
    }

    /// Describes one snapshot.
    pub fn snapshot(&self, id: SnapshotId) -> Result<SnapshotInfo, AdminError> {
        let m = self.inner.meta.lock();
        m.state
            .snapshots
            .get(&id)
            .map(|s| snapshot_info(&m.state, s))
            .ok_or_else(|| AdminError::SnapshotNotFound(id.0.to_string()))
    }

    /// Snapshots of a volume, oldest first.
    pub fn snapshots(&self, volume: VolumeId) -> Result<Vec<SnapshotInfo>, AdminError> {
        let m = self.inner.meta.lock();
        vol(&m.state, volume)?;
        Ok(m.state
            .snapshots
            .values()
            .filter(|s| s.volume == volume)
            .map(|s| snapshot_info(&m.state, s))
            .collect())
    }

    /// Size in bytes of a volume or snapshot.
    pub fn size_of(&self, t: impl Into<Target>) -> Result<u64, IoError> {
        let m = self.inner.meta.lock();
        Ok(resolve_target(&m.state, t.into())?.1)
    }

    /// Reads `buf.len()` bytes at `offset`. Unwritten space reads as zeros; a block whose    /// The pool's fair share between classes (tenants, rebuild, scrub): its capacity and the
    /// classes' weights are set on it; [`Pool::set_volume_class`] puts a volume in a class.
    pub fn share(&self) -> &Arc<crate::share::PoolShare> {
        &self.inner.share
    }

    /// Puts `volume`'s requests in `class` of the pool's fair share.
    pub fn set_volume_class(
        &self,
        volume: VolumeId,
        class: crate::share::ClassId,
    ) -> Result<(), IoError> {
        self.io(volume)?.set_class(self.inner.share.clone(), class);
        Ok(())
    }

    /// The QoS state and figures of a volume.
    pub fn io(&self, volume: VolumeId) -> Result<Arc<VolumeIo>, IoError> {
        let mut m = self.inner.meta.lock();
        if !m.state.volumes.contains_key(&volume) {
            return Err(IoError::NotFound(format!("volume {}", volume.0)));
        }
        Ok(m.io.entry(volume.0).or_default().clone())
    }

    fn check_range(&self, t: Target, offset: u64, len: u64, size: u64) -> Result<(), IoError> {
        if offset.checked_add(len).is_none_or(|e| e > size) {
            let m = self.inner.meta.lock();
            return Err(IoError::OutOfRange {
                target: target_name(&m.state, t),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    /// The volume's top layer, class and cipher (an encrypted volume whose key is locked
    /// refuses), after checking the pool and the range.
    fn writable(&self, volume: VolumeId, offset: u64, len: u64) -> Result<Writable, IoError> {
        if self.inner.failed.load(Ordering::SeqCst) {
            return Err(IoError::PoolFailed);
        }
        let (w, size) = {
            let m = self.inner.meta.lock();
            let v = m
                .state
                .volumes
                .get(&volume)
                .ok_or_else(|| IoError::NotFound(format!("volume {}", volume.0)))?;
            let (top, size, class) = (v.top, v.size, v.class);
            let cipher = m.cipher_of(top, Target::Volume(volume))?;
            (Writable { top, class, cipher }, size)
        };
        self.check_range(Target::Volume(volume), offset, len, size)?;
        Ok(w)
    }

    fn stripe(&self, key: u64, chunk: u64) -> &RwLock<()> {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ chunk.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        &self.inner.stripes[(h >> 32) as usize % STRIPES]
    }

    /// Checks the metadata invariants and that the free map matches the metadata (tests).
    pub fn check_consistency(&self) -> Result<(), String> {
        let m = self.inner.meta.lock();
        m.state.check()?;
        let mapped: u64 = m.state.layers.values().map(|l| l.mapped).sum();
        let used = self
            .inner
            .devs
            .iter()
            .map(|d| d.sb.data_blocks)
            .sum::<u64>()
            - m.alloc.free_blocks(None);
        if used != mapped + m.pending_free.len() as u64 {
            return Err(format!(
                "allocator says {used} blocks used, metadata references {mapped} (+{} pending)",
                m.pending_free.len()
            ));
        }
        Ok(())
    }
}

/// What a write needs to know about its volume.
pub(crate) struct Writable {
    top: LayerId,
    class: Option<DeviceClass>,
    cipher: Option<Arc<BlockCipher>>,
}

fn vol(state: &State, id: VolumeId) -> Result<&VolumeMeta, AdminError> {
    state
        .volumes
        .get(&id)
        .ok_or_else(|| AdminError::VolumeNotFound(id.0.to_string()))
}

fn volume_info(m: &MetaState, id: VolumeId) -> Option<VolumeInfo> {
    let state = &m.state;
    let v = state.volumes.get(&id)?;
    Some(VolumeInfo {
        id,
        name: v.name.clone(),
        size: v.size,
        allocated: state.layers[&v.top].mapped * BS,
        class: v.class,
        origin: v.origin,
        snapshots: state.snapshots.values().filter(|s| s.volume == id).count(),
        created: v.created,
        encryption: v.key.map(|k| EncryptionInfo {
            key: k,
            master_key_id: state
                .keys
                .get(&k)
                .map_or_else(String::new, |r| r.master.clone()),
            available: m.ciphers.contains_key(&k),
        }),
    })
}

fn snapshot_info(state: &State, s: &SnapshotMeta) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id,
        name: s.name.clone(),
        volume: s.volume,
        size: s.size,
        allocated: state.layers[&s.layer].mapped * BS,
        created: s.created,
    }
}

fn resolve_target(state: &State, t: Target) -> Result<(LayerId, u64), IoError> {
    match t {
        Target::Volume(v) => state
            .volumes
            .get(&v)
            .map(|v| (v.top, v.size))
            .ok_or_else(|| IoError::NotFound(format!("volume {}", v.0))),
        Target::Snapshot(s) => state
            .snapshots
            .get(&s)
            .map(|s| (s.layer, s.size))
            .ok_or_else(|| IoError::NotFound(format!("snapshot {}", s.0))),
    }
}

fn target_name(state: &State, t: Target) -> String {
    match t {
        Target::Volume(v) => state.volumes.get(&v).map_or_else(
            || format!("volume {}", v.0),
            |v| format!("volume {}", v.name),
        ),
        Target::Snapshot(s) => state.snapshots.get(&s).map_or_else(
            || format!("snapshot {}", s.0),
            |s| format!("snapshot {}", s.name),
        ),
    }
}
