//! Creating (formatting) and opening a pool. Open is the recovery path: it trusts nothing it
//! reads before checking it (superblocks field by field, checkpoint and journal checksums, the
//! pool id in every record), replays the journal through [`State::apply`] (the code the live
//! path runs), and rebuilds the free map from the layers, so it cannot disagree with them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::alloc::Allocator;
use crate::codec::Writer;
use crate::device::BlockDevice;
use crate::error::OpenError;
use crate::format::*;
use crate::meta::{split_paddr, DeviceMeta, Op, State};

use super::commit::write_checkpoint;
use super::{
    now, Dev, DeviceSpec, Inner, JournalState, MetaState, Pool, AUTO_COMMIT_MAX, BS, BSU, STRIPES,
};

fn io_err(dev: &Dev) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        device: dev.dev.describe(),
        source,
    }
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
        let meta_budget = m.sb.ckpt_len - BS - (256 << 10);
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
                    meta_budget,
                    ciphers: Default::default(),
                    wrapper: None,
                    io: Default::default(),
                    applied: 0,
                }),
                gate: RwLock::new(()),
                epoch_gate: RwLock::new(()),
                stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
                commit: Mutex::new(JournalState {
                    seq: last,
                    pos,
                    slot,
                    durable: 0,
                }),
                failed: AtomicBool::new(false),
                share: Default::default(),
                auto_commit: ((m.sb.journal_len / 4) as usize).clamp(64 << 10, AUTO_COMMIT_MAX),
                devs,
            }),
        })
    }
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
