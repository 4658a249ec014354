//! The pool: devices, metadata, allocation and the data path.
//!
//! # Durability model
//! Data blocks are never overwritten while durable metadata may reference them: every write goes
//! to freshly allocated blocks (redirect-on-write) and the mapping change is appended to an
//! in-memory journal buffer. A commit (on `flush`, on every management operation, and whenever
//! the buffer grows past a threshold) syncs the data devices, then writes the buffered ops as one
//! checksummed journal record and syncs the metadata device. Blocks freed by an op become
//! reusable only once that op is durable. Hence after a power cut the metadata is that of some
//! commit at or after the last acknowledged flush, and every block it references holds exactly
//! the bytes whose CRC it records: each block reads back old or new, never an error.
//!
//! # Concurrency
//! - `meta` (a mutex) guards the metadata state, the allocator and the journal buffer; it is
//!   held only for map look-ups and updates, never across device I/O.
//! - `stripes` serialize I/O to the same 128 KiB chunk of a volume (read-modify-write of partial
//!   blocks, and readers against a writer that frees the block they read).
//! - `gate`: data I/O holds it shared, management operations and trims exclusively, so a layer
//!   never changes shape under an I/O in flight.
//! - `commit` serializes commits. Lock order: gate, stripe, commit, meta.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use strata_types::DeviceClass;
use uuid::Uuid;

use crate::alloc::{Allocator, Run};
use crate::codec::Writer;
use crate::device::BlockDevice;
use crate::error::{AdminError, IoError, OpenError};
use crate::format::*;
use crate::meta::{
    encode_map_run, split_paddr, DeviceMeta, Entry, LayerId, Op, SnapshotId, State, VolumeId,
    MAX_NAME,
};
use crate::qos::{QosLimits, VolumeIo};

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
    /// Bytes available for new data now.
    pub free: u64,
    /// Sum of volume sizes (may exceed capacity: thin provisioning).
    pub provisioned: u64,
    /// Devices.
    pub devices: Vec<DeviceInfo>,
}

#[derive(Debug)]
struct Dev {
    dev: Arc<dyn BlockDevice>,
    sb: Superblock,
    dirty: AtomicBool,
}

#[derive(Debug)]
struct MetaState {
    state: State,
    alloc: Allocator,
    /// Encoded ops not yet committed.
    buf: Writer,
    /// The map-run ops in `buf` that are still the newest op for their blocks:
    /// (layer, first vblock) -> (offset of the first checksum in `buf`, blocks, first
    /// pblock). A rewrite in place of blocks mapped by one of them patches its checksums
    /// instead of appending an op, so rewriting the same blocks again and again within an
    /// epoch does not grow the journal record (nor force commits). Cleared whenever an op
    /// of another kind is appended and when a commit takes `buf`.
    patchable: std::collections::BTreeMap<(LayerId, u64), (usize, u32, u64)>,
    /// Blocks freed by ops not yet committed.
    pending_free: Vec<u64>,
    /// Scratch for `State::apply`.
    freed: Vec<Entry>,
    /// Entries the checkpoint slot can hold.
    max_entries: u64,
    /// QoS state and live figures per volume (runtime only; limits are set by the caller).
    io: crate::map::IdMap<u64, Arc<VolumeIo>>,
}

#[derive(Debug)]
struct JournalState {
    /// Sequence number of the last durable commit.
    seq: u64,
    /// Next write position in the journal.
    pos: u64,
    /// Slot (0 or 1) holding the newest checkpoint.
    slot: u64,
}

#[derive(Debug)]
struct Inner {
    id: Uuid,
    devs: Vec<Dev>,
    meta_dev: usize,
    meta: Mutex<MetaState>,
    gate: RwLock<()>,
    /// Writers overwriting current-epoch blocks in place hold it shared; a commit's epoch cut
    /// holds it exclusively. Lock order: gate, stripe, epoch_gate, commit, meta; a writer never
    /// holds it while committing.
    epoch_gate: RwLock<()>,
    stripes: Box<[RwLock<()>]>,
    commit: Mutex<JournalState>,
    failed: AtomicBool,
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

fn io_err(dev: &Dev) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        device: dev.dev.describe(),
        source,
    }
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

fn validate_size(size: u64) -> Result<(), AdminError> {
    let why = if size == 0 {
        "must be greater than zero".to_string()
    } else if !size.is_multiple_of(BS) {
        format!("must be a multiple of {BS} bytes")
    } else if size > MAX_VOLUME_SIZE {
        format!("larger than the maximum of {MAX_VOLUME_SIZE} bytes")
    } else {
        return Ok(());
    };
    Err(AdminError::InvalidSize { size, why })
}

impl Pool {
    /// Formats `devices` as a new pool and opens it. Everything on them is overwritten.
    pub fn create(devices: Vec<DeviceSpec>) -> Result<Pool, OpenError> {
        if devices.is_empty() {
            return Err(OpenError::NoDevices);
        }
        if devices.len() > MAX_DEVICES {
            return Err(OpenError::TooManyDevices(devices.len()));
        }
        let mut sizes = Vec::new();
        for d in &devices {
            let size = d.device.len().map_err(|source| OpenError::Io {
                device: d.device.describe(),
                source,
            })?;
            if size < MIN_DEVICE_SIZE {
                return Err(OpenError::DeviceTooSmall {
                    device: d.device.describe(),
                    size,
                    min: MIN_DEVICE_SIZE,
                });
            }
            sizes.push(size);
        }
        // Metadata goes on the fastest class, then the largest device.
        let meta_dev = (0..devices.len())
            .max_by_key(|&i| (devices[i].class, sizes[i], std::cmp::Reverse(i)))
            .expect("non-empty");
        let (ckpt_len, journal_len) = meta_sizes(sizes.iter().sum());
        let pool = Uuid::new_v4();
        let ids: Vec<Uuid> = devices.iter().map(|_| Uuid::new_v4()).collect();
        let created = now();
        let mut sbs = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let mut sb = Superblock {
                pool,
                device: ids[i],
                index: i as u32,
                count: devices.len() as u32,
                class: d.class,
                flags: 0,
                size: sizes[i],
                data_offset: SUPERBLOCK_REGION,
                data_blocks: 0,
                meta_device: ids[meta_dev],
                ckpt_offset: 0,
                ckpt_len: 0,
                journal_offset: 0,
                journal_len: 0,
                created,
            };
            if i == meta_dev {
                sb.flags = SB_FLAG_META;
                sb.ckpt_offset = SUPERBLOCK_REGION;
                sb.ckpt_len = ckpt_len;
                sb.journal_offset = SUPERBLOCK_REGION + 2 * ckpt_len;
                sb.journal_len = journal_len;
                sb.data_offset = align_up(sb.journal_offset + journal_len, ALIGN);
            }
            if sb.data_offset + BS > sizes[i] {
                return Err(OpenError::DeviceTooSmall {
                    device: d.device.describe(),
                    size: sizes[i],
                    min: sb.data_offset + BS,
                });
            }
            sb.data_blocks = (sizes[i] - sb.data_offset) / BS;
            sbs.push(sb);
        }
        let state = State::new(
            sbs.iter()
                .map(|sb| DeviceMeta {
                    uuid: sb.device,
                    class: sb.class,
                    size: sb.size,
                    data_offset: sb.data_offset,
                    data_blocks: sb.data_blocks,
                })
                .collect(),
        );
        let msb = &sbs[meta_dev];
        let mdev = &devices[meta_dev].device;
        let wrap = |source| OpenError::Io {
            device: mdev.describe(),
            source,
        };
        // Metadata first (checkpoint 0 in slot A, slot B and the journal head cleared), then the
        // superblocks: a device is a pool member only once all it refers to is in place.
        let payload = state.encode();
        write_checkpoint(mdev.as_ref(), msb, pool, 0, 0, &payload).map_err(wrap)?;
        mdev.write_at(&[0u8; BSU], msb.ckpt_offset + ckpt_len)
            .map_err(wrap)?;
        mdev.write_at(&[0u8; BSU], msb.journal_offset)
            .map_err(wrap)?;
        mdev.sync().map_err(wrap)?;
        for (d, sb) in devices.iter().zip(&sbs) {
            let w = |source| OpenError::Io {
                device: d.device.describe(),
                source,
            };
            d.device.write_at(&sb.encode(), 0).map_err(w)?;
            d.device.sync().map_err(w)?;
        }
        Pool::open(devices.into_iter().map(|d| d.device).collect())
    }

    /// Opens a pool from its devices (in any order).
    pub fn open(devices: Vec<Arc<dyn BlockDevice>>) -> Result<Pool, OpenError> {
        if devices.is_empty() {
            return Err(OpenError::NoDevices);
        }
        let mut found: Vec<Dev> = Vec::new();
        for d in devices {
            let label = d.describe();
            let len = d.len().map_err(|source| OpenError::Io {
                device: label.clone(),
                source,
            })?;
            if len < BS {
                return Err(OpenError::NotStrata { device: label });
            }
            let mut b = vec![0u8; BSU];
            d.read_at(&mut b, 0).map_err(|source| OpenError::Io {
                device: label.clone(),
                source,
            })?;
            let sb = Superblock::decode(&b).map_err(|e| match e {
                SuperblockError::BadMagic => OpenError::NotStrata {
                    device: label.clone(),
                },
                SuperblockError::BadChecksum => OpenError::SuperblockCorrupt {
                    device: label.clone(),
                },
                SuperblockError::UnsupportedVersion(version) => OpenError::UnsupportedVersion {
                    device: label.clone(),
                    version,
                },
                SuperblockError::Invalid(what) => OpenError::SuperblockInvalid {
                    device: label.clone(),
                    what,
                },
            })?;
            if len < sb.size {
                return Err(OpenError::Truncated {
                    device: label,
                    expected: sb.size,
                    actual: len,
                });
            }
            found.push(Dev {
                dev: d,
                sb,
                dirty: AtomicBool::new(false),
            });
        }
        // The pool is the one the metadata device names; without one, the first device's.
        let pool = found
            .iter()
            .find(|d| d.sb.flags & SB_FLAG_META != 0)
            .unwrap_or(&found[0])
            .sb
            .pool;
        let count = found
            .iter()
            .find(|d| d.sb.pool == pool)
            .expect("one matches")
            .sb
            .count;
        let mut slots: Vec<Option<Dev>> = (0..count).map(|_| None).collect();
        for d in found {
            if d.sb.pool != pool {
                return Err(OpenError::ForeignDevice {
                    device: d.dev.describe(),
                    found: d.sb.pool,
                    expected: pool,
                });
            }
            if d.sb.count != count {
                return Err(OpenError::SuperblockInvalid {
                    device: d.dev.describe(),
                    what: "device count disagrees with the other devices",
                });
            }
            let i = d.sb.index as usize;
            if let Some(other) = &slots[i] {
                return Err(OpenError::DuplicateDevice {
                    device: d.dev.describe(),
                    id: other.sb.device,
                });
            }
            slots[i] = Some(d);
        }
        let meta_id = slots
            .iter()
            .flatten()
            .next()
            .expect("non-empty")
            .sb
            .meta_device;
        for (i, s) in slots.iter().enumerate() {
            if s.is_none() {
                return Err(OpenError::MissingDevice {
                    pool,
                    index: i as u32,
                });
            }
        }
        let devs: Vec<Dev> = slots.into_iter().map(|s| s.expect("checked")).collect();
        let meta_dev = devs
            .iter()
            .position(|d| d.sb.device == meta_id && d.sb.flags & SB_FLAG_META != 0)
            .ok_or_else(|| OpenError::CorruptMetadata("no device holds the metadata".into()))?;
        let m = &devs[meta_dev];
        let (seq, slot, payload) =
            read_best_checkpoint(m).map_err(io_err(m))?.ok_or_else(|| {
                OpenError::CorruptMetadata("no valid checkpoint in either slot".into())
            })?;
        let mut state = State::decode(&payload)
            .map_err(|e| OpenError::CorruptMetadata(format!("checkpoint: {e}")))?;
        if state.devices.len() != devs.len() {
            return Err(OpenError::CorruptMetadata(
                "checkpoint and superblocks disagree on the device count".into(),
            ));
        }
        for (d, dm) in devs.iter().zip(&state.devices) {
            if d.sb.device != dm.uuid || d.sb.data_blocks != dm.data_blocks {
                return Err(OpenError::CorruptMetadata(format!(
                    "device {} does not match the metadata's device #{}",
                    d.dev.describe(),
                    d.sb.index
                )));
            }
        }
        // Replay the journal: records with consecutive sequence numbers after the checkpoint.
        let (mut last, mut pos) = (seq, 0u64);
        let mut freed = Vec::new();
        let jl = m.sb.journal_len;
        loop {
            if pos + META_HEADER_LEN as u64 > jl {
                break;
            }
            let mut h = [0u8; META_HEADER_LEN];
            m.dev
                .read_at(&mut h, m.sb.journal_offset + pos)
                .map_err(io_err(m))?;
            let Some(hdr) = MetaHeader::decode(&h, JOURNAL_MAGIC) else {
                break;
            };
            if hdr.pool != pool
                || hdr.seq != last + 1
                || hdr.len > jl - pos - META_HEADER_LEN as u64
            {
                break;
            }
            let mut payload = vec![0u8; hdr.len as usize];
            m.dev
                .read_at(
                    &mut payload,
                    m.sb.journal_offset + pos + META_HEADER_LEN as u64,
                )
                .map_err(io_err(m))?;
            if crc32c(&payload) != hdr.payload_crc {
                break;
            }
            let ops = Op::decode_all(&payload).map_err(|e| {
                OpenError::CorruptMetadata(format!("journal record {}: {e}", hdr.seq))
            })?;
            for op in &ops {
                state.apply(op, &mut freed).map_err(|e| {
                    OpenError::CorruptMetadata(format!("journal record {}: {e}", hdr.seq))
                })?;
            }
            freed.clear();
            last = hdr.seq;
            pos += align_up(META_HEADER_LEN as u64 + hdr.len, BS);
        }
        // Everything loaded is durable: new writes belong to a later epoch.
        state.next_epoch();
        let mut alloc = Allocator::new(
            &devs
                .iter()
                .map(|d| (d.sb.class, d.sb.data_blocks))
                .collect::<Vec<_>>(),
        );
        for l in state.layers.values() {
            for e in l.map.values().filter(|e| !e.is_zero()) {
                let (d, b) = split_paddr(e.pblock);
                if d >= devs.len() || b >= devs[d].sb.data_blocks || !alloc.mark_used(d, b) {
                    return Err(OpenError::CorruptMetadata(format!(
                        "physical block {d}:{b} is out of range or referenced twice"
                    )));
                }
            }
        }
        let max_entries = (m.sb.ckpt_len - BS - (256 << 10)) / ENTRY_ENCODED_LEN;
        Ok(Pool {
            inner: Arc::new(Inner {
                id: pool,
                meta_dev,
                meta: Mutex::new(MetaState {
                    state,
                    alloc,
                    buf: Writer::new(),
                    pending_free: Vec::new(),
                    freed: Vec::new(),
                    patchable: std::collections::BTreeMap::new(),
                    max_entries,
                    io: Default::default(),
                }),
                gate: RwLock::new(()),
                epoch_gate: RwLock::new(()),
                stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
                commit: Mutex::new(JournalState {
                    seq: last,
                    pos,
                    slot,
                }),
                failed: AtomicBool::new(false),
                auto_commit: ((m.sb.journal_len / 4) as usize).clamp(64 << 10, AUTO_COMMIT_MAX),
                devs,
            }),
        })
    }

    /// The pool's id.
    pub fn id(&self) -> Uuid {
        self.inner.id
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
            provisioned: m.state.volumes.values().map(|v| v.size).sum(),
            devices,
        }
    }

    // ----- management -----

    /// Creates an empty thin volume. Durable on return.
    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        class: Option<DeviceClass>,
    ) -> Result<VolumeId, AdminError> {
        validate_name(name)?;
        validate_size(size)?;
        self.admin(|m| {
            if m.state.volume_by_name(name).is_some() {
                return Err(AdminError::AlreadyExists {
                    kind: "volume",
                    name: name.into(),
                });
            }
            self.check_class(class)?;
            let id = VolumeId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::CreateVolume {
                    id,
                    layer,
                    name: name.into(),
                    size,
                    class,
                    created: now(),
                }],
                id,
            ))
        })
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
        volume_info(&m.state, id).ok_or_else(|| AdminError::VolumeNotFound(id.0.to_string()))
    }

    /// All volumes, ordered by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let m = self.inner.meta.lock();
        m.state
            .volumes
            .keys()
            .filter_map(|&id| volume_info(&m.state, id))
            .collect()
    }

    /// Grows or shrinks a volume. Shrinking is refused while data lies beyond the new end.
    pub fn resize_volume(&self, id: VolumeId, size: u64) -> Result<(), AdminError> {
        validate_size(size)?;
        self.admin(|m| {
            let v = vol(&m.state, id)?;
            if size < v.size && m.state.has_data_from(v.top, size / BS) {
                return Err(AdminError::ShrinkOverData {
                    volume: v.name.clone(),
                    size,
                });
            }
            Ok((vec![Op::ResizeVolume { id, size }], ()))
        })
    }

    /// Deletes a volume. With snapshots it is refused unless `force`, which deletes them too.
    pub fn delete_volume(&self, id: VolumeId, force: bool) -> Result<(), AdminError> {
        self.admin(|m| {
            let v = vol(&m.state, id)?;
            let snaps: Vec<SnapshotId> = m
                .state
                .snapshots
                .values()
                .filter(|s| s.volume == id)
                .map(|s| s.id)
                .collect();
            if !snaps.is_empty() && !force {
                return Err(AdminError::HasSnapshots {
                    volume: v.name.clone(),
                    count: snaps.len(),
                });
            }
            let mut ops: Vec<Op> = snaps
                .into_iter()
                .map(|id| Op::DeleteSnapshot { id })
                .collect();
            ops.push(Op::DeleteVolume { id });
            m.io.remove(&id.0);
            Ok((ops, ()))
        })
    }

    /// Takes a snapshot in O(1). Durable on return, and so is every write before it.
    pub fn create_snapshot(&self, volume: VolumeId, name: &str) -> Result<SnapshotId, AdminError> {
        validate_name(name)?;
        self.admin(|m| {
            vol(&m.state, volume)?;
            if m.state
                .snapshots
                .values()
                .any(|s| s.volume == volume && s.name == name)
            {
                return Err(AdminError::AlreadyExists {
                    kind: "snapshot",
                    name: name.into(),
                });
            }
            let id = SnapshotId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::CreateSnapshot {
                    id,
                    volume,
                    layer,
                    name: name.into(),
                    created: now(),
                }],
                id,
            ))
        })
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

    /// Deletes a snapshot; frees exactly the blocks nothing else references.
    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<(), AdminError> {
        self.admin(|m| {
            if !m.state.snapshots.contains_key(&id) {
                return Err(AdminError::SnapshotNotFound(id.0.to_string()));
            }
            Ok((vec![Op::DeleteSnapshot { id }], ()))
        })
    }

    /// Creates a writable volume from a snapshot in O(1).
    pub fn clone_snapshot(
        &self,
        snapshot: SnapshotId,
        name: &str,
        class: Option<DeviceClass>,
    ) -> Result<VolumeId, AdminError> {
        validate_name(name)?;
        self.admin(|m| {
            if !m.state.snapshots.contains_key(&snapshot) {
                return Err(AdminError::SnapshotNotFound(snapshot.0.to_string()));
            }
            if m.state.volume_by_name(name).is_some() {
                return Err(AdminError::AlreadyExists {
                    kind: "volume",
                    name: name.into(),
                });
            }
            self.check_class(class)?;
            let id = VolumeId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::Clone {
                    id,
                    snapshot,
                    layer,
                    name: name.into(),
                    class,
                    created: now(),
                }],
                id,
            ))
        })
    }

    /// Returns a volume to the contents and size of one of its snapshots.
    pub fn rollback(&self, volume: VolumeId, snapshot: SnapshotId) -> Result<(), AdminError> {
        self.admin(|m| {
            let v = vol(&m.state, volume)?;
            let Some(s) = m.state.snapshots.get(&snapshot) else {
                return Err(AdminError::SnapshotNotFound(snapshot.0.to_string()));
            };
            if s.volume != volume {
                return Err(AdminError::NotOfVolume {
                    snapshot: s.name.clone(),
                    volume: v.name.clone(),
                });
            }
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::Rollback {
                    volume,
                    snapshot,
                    layer,
                }],
                (),
            ))
        })
    }

    fn check_class(&self, class: Option<DeviceClass>) -> Result<(), AdminError> {
        match class {
            Some(c) if !self.inner.devs.iter().any(|d| d.sb.class == c) => {
                Err(AdminError::ClassUnavailable(c))
            }
            _ => Ok(()),
        }
    }

    /// Runs a management operation: `plan` validates against the state and returns the ops;
    /// they are applied, journaled and committed before returning. With I/O excluded (gate),
    /// a layer never changes shape under a read or write in flight.
    fn admin<T>(
        &self,
        plan: impl FnOnce(&mut MetaState) -> Result<(Vec<Op>, T), AdminError>,
    ) -> Result<T, AdminError> {
        let _g = self.inner.gate.write();
        if self.inner.failed.load(Ordering::SeqCst) {
            return Err(AdminError::Failed("an earlier commit failed".into()));
        }
        let out = {
            let mut m = self.inner.meta.lock();
            let (ops, out) = plan(&mut m)?;
            for op in &ops {
                let mut freed = std::mem::take(&mut m.freed);
                m.state
                    .apply(op, &mut freed)
                    .map_err(|e| AdminError::Failed(format!("internal: {e}")))?;
                op.encode(&mut m.buf);
                m.patchable.clear();
                release(&mut m, &mut freed);
                m.freed = freed;
            }
            out
        };
        self.commit()
            .map_err(|e| AdminError::Failed(e.to_string()))?;
        Ok(out)
    }

    // ----- data path -----

    /// Size in bytes of a volume or snapshot.
    pub fn size_of(&self, t: impl Into<Target>) -> Result<u64, IoError> {
        let m = self.inner.meta.lock();
        Ok(resolve_target(&m.state, t.into())?.1)
    }

    /// Reads `buf.len()` bytes at `offset`. Unwritten space reads as zeros; a block whose
    /// checksum fails is an error naming the place, never wrong data.
    pub fn read(&self, t: impl Into<Target>, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let t = t.into();
        match t {
            Target::Volume(v) => {
                let io = self.io(v)?;
                let start = std::time::Instant::now();
                io.admit(buf.len() as u64);
                let r = self.read_inner(t, offset, buf);
                io.record(false, buf.len() as u64, start.elapsed());
                r
            }
            Target::Snapshot(_) => self.read_inner(t, offset, buf),
        }
    }

    /// [`Pool::read`] without QoS admission or figures, for a caller that reads one request in
    /// several pieces and meters the whole request itself (`io()`: `admit` before the first
    /// piece, `record` after the last), so a request counts once against IOPS limits.
    pub fn read_unmetered(
        &self,
        t: impl Into<Target>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        self.read_inner(t.into(), offset, buf)
    }

    fn read_inner(&self, t: Target, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        // Reads take no gate and no stripe: they resolve under the metadata lock, read, and
        // verify. A block freed and reused under a racing read fails its checksum; the read
        // then re-resolves, and only a mismatch on an unchanged mapping is reported.
        let mut done = 0usize;
        loop {
            let off = offset + done as u64;
            let n = ((CHUNK_BYTES - off % CHUNK_BYTES) as usize).min(buf.len() - done);
            let mut attempts = 0;
            // Taken only after a mismatch on an unchanged mapping: a writer may be rewriting
            // a current-epoch block in place; under the stripe the read cannot overlap it.
            let mut stripe = None;
            loop {
                let mut ents: SmallVec<[Option<Entry>; 8]> = SmallVec::new();
                {
                    let m = self.inner.meta.lock();
                    let (top, size) = resolve_target(&m.state, t)?;
                    if done == 0
                        && offset
                            .checked_add(buf.len() as u64)
                            .is_none_or(|e| e > size)
                    {
                        return Err(IoError::OutOfRange {
                            target: target_name(&m.state, t),
                            offset,
                            len: buf.len() as u64,
                            size,
                        });
                    }
                    let b0 = off / BS;
                    let nb = (off + n as u64).div_ceil(BS) - b0;
                    ents.extend((b0..b0 + nb).map(|vb| m.state.resolve(top, vb)));
                }
                match self.read_chunk(off, &mut buf[done..done + n], &ents) {
                    Ok(()) => break,
                    Err(ReadFail::Device(e)) => return Err(e),
                    Err(ReadFail::Mismatch(vb, e)) => {
                        let now = {
                            let m = self.inner.meta.lock();
                            let (top, _) = resolve_target(&m.state, t)?;
                            m.state.resolve(top, vb)
                        };
                        attempts += 1;
                        if now != Some(e) && attempts <= 3 {
                            continue;
                        }
                        if let (None, Target::Volume(v)) = (&stripe, t) {
                            stripe = Some(self.stripe(v.0, (off / BS) / CHUNK_BLOCKS).read());
                            continue;
                        }
                        return Err(self.checksum_error(t, vb, e.pblock));
                    }
                }
            }
            done += n;
            if done >= buf.len() {
                return Ok(());
            }
        }
    }

    /// Writes `data` at `offset` of a volume. Acknowledged writes are durable after `flush`.
    pub fn write(&self, volume: VolumeId, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let io = self.io(volume)?;
        let start = std::time::Instant::now();
        io.admit(data.len() as u64);
        let r = self.write_inner(volume, offset, data);
        io.record(true, data.len() as u64, start.elapsed());
        r
    }

    /// The QoS state and figures of a volume.
    pub fn io(&self, volume: VolumeId) -> Result<Arc<VolumeIo>, IoError> {
        let mut m = self.inner.meta.lock();
        if !m.state.volumes.contains_key(&volume) {
            return Err(IoError::NotFound(format!("volume {}", volume.0)));
        }
        Ok(m.io.entry(volume.0).or_default().clone())
    }

    /// Sets a volume's QoS limits; they apply to requests in flight within 20 ms.
    pub fn set_qos(&self, volume: VolumeId, limits: QosLimits) -> Result<(), AdminError> {
        self.io(volume)
            .map_err(|_| AdminError::VolumeNotFound(volume.0.to_string()))?
            .set_limits(limits);
        Ok(())
    }

    fn write_inner(&self, volume: VolumeId, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let _g = self.inner.gate.read();
        let (top, class) = self.writable(volume, offset, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let off = offset + done as u64;
            let n = ((CHUNK_BYTES - off % CHUNK_BYTES) as usize).min(data.len() - done);
            self.write_chunk(volume, top, class, off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Makes `[offset, offset+len)` read as zeros. Whole blocks are unmapped when `unmap` is
    /// true (space is freed) and written as zero blocks otherwise (space stays allocated).
    pub fn write_zeroes(
        &self,
        volume: VolumeId,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), IoError> {
        let io = self.io(volume)?;
        let start = std::time::Instant::now();
        io.admit(len);
        let r = self.write_zeroes_inner(volume, offset, len, unmap);
        io.record(true, len, start.elapsed());
        r
    }

    fn write_zeroes_inner(
        &self,
        volume: VolumeId,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), IoError> {
        static ZEROS: [u8; CHUNK_BYTES as usize] = [0; CHUNK_BYTES as usize];
        {
            let _g = self.inner.gate.read();
            self.writable(volume, offset, len)?;
        }
        let end = offset + len;
        let (first, last) = (offset.div_ceil(BS), end / BS);
        if unmap && first < last {
            // Head and tail partial blocks are written; the whole blocks between are unmapped.
            self.write_zeroes_inner(volume, offset, first * BS - offset, false)?;
            self.write_zeroes_inner(volume, last * BS, end - last * BS, false)?;
            return self.unmap(volume, first, last);
        }
        let mut off = offset;
        while off < end {
            let n = (CHUNK_BYTES - off % CHUNK_BYTES).min(end - off);
            self.write_inner(volume, off, &ZEROS[..n as usize])?;
            off += n;
        }
        Ok(())
    }

    /// Discards `[offset, offset+len)`: afterwards it reads as zeros and whole blocks are freed.
    pub fn trim(&self, volume: VolumeId, offset: u64, len: u64) -> Result<(), IoError> {
        self.write_zeroes(volume, offset, len, true)
    }

    fn unmap(&self, volume: VolumeId, first: u64, last: u64) -> Result<(), IoError> {
        {
            // Exclusive: the blocks freed here may be under a reader of another chunk's stripe.
            let _g = self.inner.gate.write();
            let mut m = self.inner.meta.lock();
            let top = resolve_target(&m.state, Target::Volume(volume))?.0;
            let op = Op::Trim {
                layer: top,
                start: first,
                end: last,
            };
            let mut freed = std::mem::take(&mut m.freed);
            m.state
                .apply(&op, &mut freed)
                .expect("trim range was validated");
            op.encode(&mut m.buf);
            m.patchable.clear();
            release(&mut m, &mut freed);
            m.freed = freed;
            if m.buf.buf.len() < self.inner.auto_commit {
                return Ok(());
            }
        }
        self.commit()
    }

    /// Makes every write acknowledged before it durable.
    pub fn flush(&self) -> Result<(), IoError> {
        self.commit()
    }

    /// Allocation status of `[offset, offset+len)`: runs of (length, allocated). Unallocated
    /// runs read as zeros; allocated runs hold data (or are zero tombstones over a snapshot:
    /// reported as not allocated, since they read as zeros and own no space).
    pub fn block_status(
        &self,
        t: impl Into<Target>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, bool)>, IoError> {
        let t = t.into();
        let m = self.inner.meta.lock();
        let (top, size) = resolve_target(&m.state, t)?;
        self.check_range(t, offset, len, size)?;
        let (first, last) = (offset / BS, (offset + len).div_ceil(BS));
        // Which blocks in range show data: walk the chain, first entry per block wins.
        let mut seen = std::collections::BTreeMap::new();
        let mut l = Some(top);
        while let Some(id) = l {
            let layer = &m.state.layers[&id];
            for (b, e) in layer.map.range(first, last) {
                seen.entry(b).or_insert(!e.is_zero());
            }
            l = layer.parent;
        }
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut push = |from: u64, to: u64, alloc: bool| {
            let (s, e) = (from.max(offset), to.min(offset + len));
            if s >= e {
                return;
            }
            match out.last_mut() {
                Some((l, a)) if *a == alloc => *l += e - s,
                _ => out.push((e - s, alloc)),
            }
        };
        let mut cur = first;
        for (&b, &data) in &seen {
            if !data {
                continue;
            }
            push(cur * BS, b * BS, false);
            push(b * BS, (b + 1) * BS, true);
            cur = b + 1;
        }
        push(cur * BS, last * BS, false);
        Ok(out)
    }

    /// Which blocks of `volume` in `[offset, offset+len)` differ from snapshot `since` (any
    /// snapshot of the pool): runs of (length, changed). For incremental backup: a block is
    /// changed when the volume and the snapshot resolve it to different physical blocks or one
    /// maps it and the other does not. Layers both chains share are skipped, so the cost is
    /// the number of entries written since the snapshot, not the volume size.
    pub fn changed_blocks(
        &self,
        volume: VolumeId,
        since: SnapshotId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, bool)>, IoError> {
        let m = self.inner.meta.lock();
        let (top, size) = resolve_target(&m.state, Target::Volume(volume))?;
        let (base, _) = resolve_target(&m.state, Target::Snapshot(since))?;
        self.check_range(Target::Volume(volume), offset, len, size)?;
        let (first, last) = (offset / BS, (offset + len).div_ceil(BS));
        let chain = |mut l: Option<LayerId>| {
            let mut v = Vec::new();
            while let Some(id) = l {
                v.push(id);
                l = m.state.layers[&id].parent;
            }
            v
        };
        let (a, b) = (chain(Some(top)), chain(Some(base)));
        let shared: std::collections::HashSet<LayerId> =
            a.iter().filter(|x| b.contains(x)).copied().collect();
        let mut keys = std::collections::BTreeSet::new();
        for id in a.iter().chain(b.iter()).filter(|x| !shared.contains(x)) {
            keys.extend(m.state.layers[id].map.range(first, last).map(|(k, _)| k));
        }
        let pb = |e: Option<Entry>| e.filter(|e| !e.is_zero()).map(|e| e.pblock);
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut push = |from: u64, to: u64, changed: bool| {
            let (s, e) = (from.max(offset), to.min(offset + len));
            if s >= e {
                return;
            }
            match out.last_mut() {
                Some((l, c)) if *c == changed => *l += e - s,
                _ => out.push((e - s, changed)),
            }
        };
        let mut cur = first;
        for k in keys {
            if pb(m.state.resolve(top, k)) != pb(m.state.resolve(base, k)) {
                push(cur * BS, k * BS, false);
                push(k * BS, (k + 1) * BS, true);
                cur = k + 1;
            }
        }
        push(cur * BS, last * BS, false);
        Ok(out)
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

    fn writable(
        &self,
        volume: VolumeId,
        offset: u64,
        len: u64,
    ) -> Result<(LayerId, Option<DeviceClass>), IoError> {
        if self.inner.failed.load(Ordering::SeqCst) {
            return Err(IoError::PoolFailed);
        }
        let (top, size, class) = {
            let m = self.inner.meta.lock();
            let v = m
                .state
                .volumes
                .get(&volume)
                .ok_or_else(|| IoError::NotFound(format!("volume {}", volume.0)))?;
            (v.top, v.size, v.class)
        };
        self.check_range(Target::Volume(volume), offset, len, size)?;
        Ok((top, class))
    }

    fn stripe(&self, key: u64, chunk: u64) -> &RwLock<()> {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ chunk.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        &self.inner.stripes[(h >> 32) as usize % STRIPES]
    }

    /// Reads one chunk given its resolved entries.
    fn read_chunk(&self, off: u64, buf: &mut [u8], ents: &[Option<Entry>]) -> Result<(), ReadFail> {
        let b0 = off / BS;
        let end = off + buf.len() as u64;
        let n = (end.div_ceil(BS) - b0) as usize;
        let mut i = 0;
        while i < n {
            let vb = b0 + i as u64;
            let bstart = (vb * BS).max(off);
            let bend = ((vb + 1) * BS).min(end);
            let dst = (bstart - off) as usize..(bend - off) as usize;
            let e = match ents[i] {
                Some(e) if !e.is_zero() => e,
                _ => {
                    buf[dst].fill(0);
                    i += 1;
                    continue;
                }
            };
            if bend - bstart < BS {
                let mut blk = [0u8; BSU];
                self.read_verified(vb, e, &mut blk)?;
                let s = (bstart - vb * BS) as usize;
                buf[dst.clone()].copy_from_slice(&blk[s..s + dst.len()]);
                i += 1;
                continue;
            }
            // A run of whole blocks that are also consecutive on one device: one read.
            let mut k = 1;
            while i + k < n && (vb + k as u64 + 1) * BS <= end {
                match ents[i + k] {
                    Some(ek) if !ek.is_zero() && ek.pblock == e.pblock + k as u64 => k += 1,
                    _ => break,
                }
            }
            let region = &mut buf[dst.start..dst.start + k * BSU];
            self.read_run(e.pblock, region).map_err(ReadFail::Device)?;
            for j in 0..k {
                let ej = ents[i + j].expect("mapped");
                if checksum(&region[j * BSU..(j + 1) * BSU]) != ej.csum {
                    return Err(ReadFail::Mismatch(vb + j as u64, ej));
                }
            }
            i += k;
        }
        Ok(())
    }

    fn read_run(&self, pblock: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let (d, b) = split_paddr(pblock);
        let dev = &self.inner.devs[d];
        dev.dev
            .read_at(buf, dev.sb.data_offset + b * BS)
            .map_err(|source| IoError::Device {
                device: dev.dev.describe(),
                source,
            })
    }

    /// Reads one block and checks it against its entry.
    fn read_verified(&self, vb: u64, e: Entry, blk: &mut [u8; BSU]) -> Result<(), ReadFail> {
        self.read_run(e.pblock, blk).map_err(ReadFail::Device)?;
        if checksum(blk) != e.csum {
            return Err(ReadFail::Mismatch(vb, e));
        }
        Ok(())
    }

    fn checksum_error(&self, t: Target, vb: u64, pblock: u64) -> IoError {
        let (d, b) = split_paddr(pblock);
        let dev = &self.inner.devs[d];
        let m = self.inner.meta.lock();
        IoError::Checksum {
            target: target_name(&m.state, t),
            offset: vb * BS,
            device: dev.dev.describe(),
            device_offset: dev.sb.data_offset + b * BS,
        }
    }

    fn write_chunk(
        &self,
        volume: VolumeId,
        top: LayerId,
        class: Option<DeviceClass>,
        off: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        let (b0, b1) = (off / BS, (off + data.len() as u64).div_ceil(BS));
        let n = (b1 - b0) as usize;
        let _s = self.stripe(volume.0, b0 / CHUNK_BLOCKS).write();
        // Partial blocks are merged with their old contents in a scratch buffer.
        let mut scratch: SmallVec<[u8; 2 * BSU]>;
        let src: &[u8] = if off.is_multiple_of(BS) && (data.len() as u64).is_multiple_of(BS) {
            data
        } else {
            scratch = smallvec::smallvec![0u8; n * BSU];
            let t = Target::Volume(volume);
            let fill = |vb: u64, dst: &mut [u8]| -> Result<(), IoError> {
                let e = self.inner.meta.lock().state.resolve(top, vb);
                match e {
                    Some(e) if !e.is_zero() => {
                        let mut blk = [0u8; BSU];
                        // Writers hold the stripe: the mapping cannot change under this read.
                        self.read_verified(vb, e, &mut blk).map_err(|f| match f {
                            ReadFail::Device(e) => e,
                            ReadFail::Mismatch(vb, e) => self.checksum_error(t, vb, e.pblock),
                        })?;
                        dst.copy_from_slice(&blk);
                    }
                    _ => dst.fill(0),
                }
                Ok(())
            };
            if !off.is_multiple_of(BS) {
                fill(b0, &mut scratch[..BSU])?;
            }
            let end = off + data.len() as u64;
            if !end.is_multiple_of(BS) && (b1 - 1 != b0 || off.is_multiple_of(BS)) {
                fill(b1 - 1, &mut scratch[(n - 1) * BSU..])?;
            }
            let s = (off - b0 * BS) as usize;
            scratch[s..s + data.len()].copy_from_slice(data);
            &scratch
        };
        let csums: SmallVec<[u32; 32]> = src.chunks(BSU).map(checksum).collect();
        // Where each block goes. A block of the top layer written in the current epoch is
        // referenced by no durable metadata, so it is overwritten in place; every other block
        // goes to a newly allocated one (redirect-on-write). The epoch gate, held from this
        // decision until the map update, keeps a commit from making such a block durable
        // while it is being rewritten.
        let mut attempt = 0;
        let (_eg, pbs, fresh_runs) = loop {
            let eg = self.inner.epoch_gate.read();
            let mut m = self.inner.meta.lock();
            let epoch = m.state.epoch;
            let layer = &m.state.layers[&top];
            let mut pbs: SmallVec<[u64; 32]> = SmallVec::with_capacity(n);
            let mut need = 0u64;
            for vb in b0..b1 {
                match layer.map.get(vb) {
                    Some(e) if !e.is_zero() && e.epoch == epoch => pbs.push(e.pblock),
                    _ => {
                        pbs.push(u64::MAX);
                        need += 1;
                    }
                }
            }
            let mut runs: SmallVec<[Run; 4]> = SmallVec::new();
            // Blocks of this epoch scattered over the device (left by small random writes)
            // are not rewritten in place by a write that covers several of them: the whole
            // range moves to a fresh run, so it is one device write now and later sequential
            // reads of it are one read per run. The old blocks, referenced by no durable
            // metadata, are free at once. Without the space, they are rewritten in place.
            let scattered = n > 1
                && (need as usize) < n
                && !pbs.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
            if scattered
                && m.state.entries + n as u64 <= m.max_entries
                && m.alloc.alloc(n as u64, class, &mut runs)
            {
                pbs.fill(u64::MAX);
                need = n as u64;
            }
            let room = m.state.entries + need <= m.max_entries;
            if need == 0 || !runs.is_empty() || (room && m.alloc.alloc(need, class, &mut runs)) {
                let mut next = runs
                    .iter()
                    .flat_map(|r| (0..r.len).map(move |i| r.paddr() + i));
                for p in pbs.iter_mut().filter(|p| **p == u64::MAX) {
                    *p = next.next().expect("allocated as many as needed");
                }
                break (eg, pbs, runs);
            }
            let pending = !m.pending_free.is_empty();
            drop(m);
            drop(eg);
            if attempt == 1 || !pending {
                let m = self.inner.meta.lock();
                let name = m
                    .state
                    .volumes
                    .get(&volume)
                    .map_or_else(|| volume.0.to_string(), |v| v.name.clone());
                return Err(IoError::OutOfSpace { target: name });
            }
            attempt += 1;
            // Only frees that are not yet durable stand in the way: commit them.
            self.commit()?;
        };
        // Write runs of blocks that are consecutive on a device, one call each.
        let mut k = 0usize;
        while k < n {
            let mut len = 1;
            while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                len += 1;
            }
            let (d, b) = split_paddr(pbs[k]);
            let dev = &self.inner.devs[d];
            let bytes = &src[k * BSU..(k + len) * BSU];
            if let Err(source) = dev.dev.write_at(bytes, dev.sb.data_offset + b * BS) {
                let mut m = self.inner.meta.lock();
                for r in &fresh_runs {
                    m.alloc.free_run(*r);
                }
                return Err(IoError::Device {
                    device: dev.dev.describe(),
                    source,
                });
            }
            dev.dirty.store(true, Ordering::SeqCst);
            k += len;
        }
        // Point the map at it.
        let need_commit = {
            let mut m = self.inner.meta.lock();
            let mut freed = std::mem::take(&mut m.freed);
            let patched = fresh_runs.is_empty() && patch_in_place(&mut m, top, b0, &pbs, &csums);
            let mut k = 0usize;
            while k < n {
                let mut len = 1;
                while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                    len += 1;
                }
                let cs = &csums[k..k + len];
                let vb = b0 + k as u64;
                m.state
                    .map_run(top, vb, pbs[k], cs, &mut freed)
                    .expect("validated run");
                if !patched {
                    encode_map_run(&mut m.buf, top, vb, pbs[k], cs);
                    let at = m.buf.buf.len() - 4 * len;
                    register_run(&mut m, top, vb, len, pbs[k], at);
                }
                k += len;
            }
            release(&mut m, &mut freed);
            m.freed = freed;
            m.buf.buf.len() >= self.inner.auto_commit
        };
        drop(_eg);
        if need_commit {
            self.commit()?;
        }
        Ok(())
    }

    /// Makes all ops so far durable: sync data devices, write a journal record (or a
    /// checkpoint when the journal is full), sync the metadata device, then release the blocks
    /// those ops freed.
    fn commit(&self) -> Result<(), IoError> {
        let inner = &*self.inner;
        let mut js = inner.commit.lock();
        if inner.failed.load(Ordering::SeqCst) {
            return Err(IoError::PoolFailed);
        }
        let m = &inner.devs[inner.meta_dev];
        let jl = m.sb.journal_len;
        let (ops, frees, checkpoint) = {
            let _cut = inner.epoch_gate.write();
            let mut ms = inner.meta.lock();
            if ms.buf.buf.is_empty() && ms.pending_free.is_empty() {
                drop(ms);
                // Nothing new in the metadata, but writes may still sit in device caches.
                return self.sync_data();
            }
            ms.state.next_epoch();
            let ops = std::mem::take(&mut ms.buf.buf);
            ms.patchable.clear();
            let frees = std::mem::take(&mut ms.pending_free);
            let rec = align_up(META_HEADER_LEN as u64 + ops.len() as u64, BS);
            let checkpoint = (js.pos + rec > jl).then(|| ms.state.encode());
            (ops, frees, checkpoint)
        };
        let seq = js.seq + 1;
        let res = (|| {
            self.sync_data()?;
            let wrap = |source| IoError::Device {
                device: m.dev.describe(),
                source,
            };
            if let Some(payload) = checkpoint {
                if payload.len() as u64 > m.sb.ckpt_len - BS {
                    return Err(IoError::Device {
                        device: m.dev.describe(),
                        source: std::io::Error::other("checkpoint larger than its slot"),
                    });
                }
                let slot = 1 - js.slot;
                write_checkpoint(m.dev.as_ref(), &m.sb, inner.id, slot, seq, &payload)
                    .map_err(wrap)?;
                m.dev.sync().map_err(wrap)?;
                js.slot = slot;
                js.pos = 0;
            } else {
                let mut rec = Vec::with_capacity(META_HEADER_LEN + ops.len());
                rec.extend_from_slice(
                    &MetaHeader {
                        magic: JOURNAL_MAGIC,
                        seq,
                        len: ops.len() as u64,
                        payload_crc: crc32c(&ops),
                        pool: inner.id,
                    }
                    .encode(),
                );
                rec.extend_from_slice(&ops);
                rec.resize(align_up(rec.len() as u64, BS) as usize, 0);
                m.dev
                    .write_at(&rec, m.sb.journal_offset + js.pos)
                    .map_err(wrap)?;
                m.dev.sync().map_err(wrap)?;
                js.pos += rec.len() as u64;
            }
            Ok(())
        })();
        if let Err(e) = res {
            // The in-memory state is ahead of what is durable and cannot be reconciled here:
            // stop accepting changes; reopening recovers the last durable state.
            inner.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        js.seq = seq;
        let mut ms = inner.meta.lock();
        for p in frees {
            let (d, b) = split_paddr(p);
            ms.alloc.free(d, b);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), IoError> {
        for d in &self.inner.devs {
            if d.dirty.swap(false, Ordering::SeqCst) {
                if let Err(source) = d.dev.sync() {
                    self.inner.failed.store(true, Ordering::SeqCst);
                    return Err(IoError::Device {
                        device: d.dev.describe(),
                        source,
                    });
                }
            }
        }
        Ok(())
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

/// Why a chunk read failed.
enum ReadFail {
    /// The device failed.
    Device(IoError),
    /// Block `.0`, mapped by entry `.1`, failed its checksum.
    Mismatch(u64, Entry),
}

/// CRC-32C of a data block.
#[inline]
fn checksum(block: &[u8]) -> u32 {
    crc32c(block)
}

/// Rewrites the checksums of blocks `b0..` (rewritten in place at `pbs`) in the map-run ops
/// of the uncommitted journal buffer that mapped them, if every block has one; `false` (and
/// nothing changed) otherwise. Equivalent to appending a map-run op with the new checksums:
/// the patched op is the newest for those blocks and maps them to the same physical blocks.
fn patch_in_place(m: &mut MetaState, layer: LayerId, b0: u64, pbs: &[u64], csums: &[u32]) -> bool {
    let mut at: SmallVec<[usize; 32]> = SmallVec::with_capacity(pbs.len());
    for (k, &pb) in pbs.iter().enumerate() {
        let vb = b0 + k as u64;
        let hit = m.patchable.range(..=(layer, vb)).next_back().and_then(
            |(&(l, start), &(pos, len, p0))| {
                // An entry of a lower layer may sort last: it is no hit.
                let i = vb.checked_sub(start).filter(|_| l == layer)?;
                (i < u64::from(len) && p0 + i == pb).then_some(pos + 4 * i as usize)
            },
        );
        match hit {
            Some(pos) => at.push(pos),
            None => return false,
        }
    }
    for (pos, c) in at.into_iter().zip(csums) {
        m.buf.buf[pos..pos + 4].copy_from_slice(&c.to_le_bytes());
    }
    true
}

/// Records a map-run op just appended to the journal buffer (its checksums at `at`) as the
/// newest for its blocks, dropping the older ones it overlaps.
fn register_run(m: &mut MetaState, layer: LayerId, vb: u64, len: usize, pblock: u64, at: usize) {
    let end = vb + len as u64;
    let lo = (layer, vb.saturating_sub(CHUNK_BLOCKS));
    let stale: SmallVec<[(LayerId, u64); 4]> = m
        .patchable
        .range(lo..(layer, end))
        .filter(|(&(_, start), &(_, n, _))| start + u64::from(n) > vb)
        .map(|(&k, _)| k)
        .collect();
    for k in stale {
        m.patchable.remove(&k);
    }
    m.patchable.insert((layer, vb), (at, len as u32, pblock));
}

/// Returns freed blocks: at once if written in the current epoch (no durable metadata refers to
/// them), otherwise once the freeing op is durable.
fn release(m: &mut MetaState, freed: &mut Vec<Entry>) {
    let epoch = m.state.epoch;
    for e in freed.drain(..) {
        if e.epoch == epoch {
            let (d, b) = split_paddr(e.pblock);
            m.alloc.free(d, b);
        } else {
            m.pending_free.push(e.pblock);
        }
    }
}

fn write_checkpoint(
    dev: &dyn BlockDevice,
    sb: &Superblock,
    pool: Uuid,
    slot: u64,
    seq: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let base = sb.ckpt_offset + slot * sb.ckpt_len;
    let mut head = vec![0u8; BSU];
    head[..META_HEADER_LEN].copy_from_slice(
        &MetaHeader {
            magic: CKPT_MAGIC,
            seq,
            len: payload.len() as u64,
            payload_crc: crc32c(payload),
            pool,
        }
        .encode(),
    );
    dev.write_at(payload, base + BS)?;
    dev.write_at(&head, base)
}

/// Reads both checkpoint slots; returns (seq, slot, payload) of the newest valid one.
fn read_best_checkpoint(m: &Dev) -> std::io::Result<Option<(u64, u64, Vec<u8>)>> {
    let mut best: Option<(u64, u64, Vec<u8>)> = None;
    for slot in 0..2 {
        let base = m.sb.ckpt_offset + slot * m.sb.ckpt_len;
        let mut h = [0u8; META_HEADER_LEN];
        m.dev.read_at(&mut h, base)?;
        let Some(hdr) = MetaHeader::decode(&h, CKPT_MAGIC) else {
            continue;
        };
        if hdr.pool != m.sb.pool || hdr.len > m.sb.ckpt_len - BS {
            continue;
        }
        if best.as_ref().is_some_and(|b| b.0 >= hdr.seq) {
            continue;
        }
        let mut payload = vec![0u8; hdr.len as usize];
        m.dev.read_at(&mut payload, base + BS)?;
        if crc32c(&payload) == hdr.payload_crc {
            best = Some((hdr.seq, slot, payload));
        }
    }
    Ok(best)
}

fn vol(state: &State, id: VolumeId) -> Result<&crate::meta::VolumeMeta, AdminError> {
    state
        .volumes
        .get(&id)
        .ok_or_else(|| AdminError::VolumeNotFound(id.0.to_string()))
}

fn volume_info(state: &State, id: VolumeId) -> Option<VolumeInfo> {
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
    })
}

fn snapshot_info(state: &State, s: &crate::meta::SnapshotMeta) -> SnapshotInfo {
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
