//! Journal ops: what one change of the metadata is, and its byte encoding (a tag byte, then
//! the fields, little-endian; the table is in `docs/block-format.md`). Decoding checks every
//! length against the bytes left, so a hostile record cannot make it allocate.

use strata_types::DeviceClass;

use crate::codec::{DecodeError, Reader, Writer};

use crate::crypt::{BlockTag, TAG_LEN};

use super::ids::{
    class_code, class_from_code, KeyId, KeyRecord, LayerId, SnapshotId, VolumeId, MAX_MASTER_ID,
    MAX_NAME, MAX_WRAPPED,
};

/// An operation on the metadata: what the journal records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new empty volume.
    CreateVolume {
        /// New volume id.
        id: VolumeId,
        /// Its top layer id.
        layer: LayerId,
        /// Name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Class restriction.
        class: Option<DeviceClass>,
        /// Creation time.
        created: u64,
        /// Its data key (an encrypted volume: the key's lineage starts here), if any.
        key: Option<KeyId>,
    },
    /// Records a new wrapped data key (followed by the volume that uses it, same record).
    CreateKey {
        /// Key id (from the shared id sequence).
        id: KeyId,
        /// The key, wrapped.
        record: KeyRecord,
    },
    /// Replaces every listed key's wrapped form (master key rotation).
    Rewrap {
        /// Keys and their new wrapped forms.
        keys: Vec<(KeyId, KeyRecord)>,
    },
    /// Removes a volume that has no snapshots.
    DeleteVolume {
        /// Volume.
        id: VolumeId,
    },
    /// Changes a volume's size.
    ResizeVolume {
        /// Volume.
        id: VolumeId,
        /// New size in bytes.
        size: u64,
    },
    /// Maps `csums.len()` consecutive virtual blocks to consecutive physical blocks.
    MapRun {
        /// The (top) layer written.
        layer: LayerId,
        /// First virtual block.
        vblock: u64,
        /// First physical address.
        pblock: u64,
        /// CRC of each block (of its ciphertext, for an encrypted volume).
        csums: Vec<u32>,
        /// Authentication tag of each block for an encrypted volume; empty otherwise.
        tags: Vec<BlockTag>,
    },
    /// Makes virtual blocks `[start, end)` of a top layer read as zeros, freeing what it owned.
    Trim {
        /// The (top) layer.
        layer: LayerId,
        /// First block.
        start: u64,
        /// End block (exclusive).
        end: u64,
    },
    /// Freezes a volume's top layer as a snapshot and gives the volume a new one.
    CreateSnapshot {
        /// New snapshot id.
        id: SnapshotId,
        /// The volume.
        volume: VolumeId,
        /// The volume's new top layer.
        layer: LayerId,
        /// Name.
        name: String,
        /// Creation time.
        created: u64,
    },
    /// Removes a snapshot.
    DeleteSnapshot {
        /// Snapshot.
        id: SnapshotId,
    },
    /// A new volume on top of a snapshot.
    Clone {
        /// New volume id.
        id: VolumeId,
        /// Source snapshot.
        snapshot: SnapshotId,
        /// New top layer.
        layer: LayerId,
        /// Name.
        name: String,
        /// Class restriction.
        class: Option<DeviceClass>,
        /// Creation time.
        created: u64,
    },
    /// Returns a volume to a snapshot's contents and size.
    Rollback {
        /// Volume.
        volume: VolumeId,
        /// One of its snapshots.
        snapshot: SnapshotId,
        /// The volume's new top layer.
        layer: LayerId,
    },
}

/// Encodes an [`Op::MapRun`] from borrowed parts (the write path's allocation-free form).
/// With tags (an encrypted volume), each block's item is its CRC then its tag (tag 12);
/// without, its CRC alone (tag 4). Returns the item size: the write path patches items in
/// place at `buf.len() - n * size + i * size`.
pub fn encode_map_run(
    w: &mut Writer,
    layer: LayerId,
    vblock: u64,
    pblock: u64,
    csums: &[u32],
    tags: Option<&[BlockTag]>,
) -> usize {
    w.u8(if tags.is_some() {
        OP_MAP_RUN_SEALED
    } else {
        OP_MAP_RUN
    });
    w.u64(layer);
    w.u64(vblock);
    w.u64(pblock);
    w.u32(csums.len() as u32);
    match tags {
        None => {
            for c in csums {
                w.u32(*c);
            }
            4
        }
        Some(tags) => {
            debug_assert_eq!(tags.len(), csums.len());
            for (c, t) in csums.iter().zip(tags) {
                w.u32(*c);
                w.bytes(t);
            }
            4 + TAG_LEN
        }
    }
}

fn encode_record(w: &mut Writer, r: &KeyRecord) {
    w.str(&r.master);
    w.u32(r.wrapped.len() as u32);
    w.bytes(&r.wrapped);
}

/// Decodes a wrapped-key record (`master:str wrapped:u32 length + bytes`), bounded.
pub(crate) fn decode_record(r: &mut Reader<'_>) -> Result<KeyRecord, DecodeError> {
    let master = r.str(MAX_MASTER_ID)?;
    let at = r.pos();
    let n = r.u32()? as usize;
    if n == 0 || n > MAX_WRAPPED {
        return Err(DecodeError::Invalid {
            what: "wrapped key length",
            at,
        });
    }
    Ok(KeyRecord {
        master,
        wrapped: r.take(n)?.to_vec(),
    })
}

const OP_CREATE_VOLUME: u8 = 1;
const OP_DELETE_VOLUME: u8 = 2;
const OP_RESIZE_VOLUME: u8 = 3;
const OP_MAP_RUN: u8 = 4;
const OP_TRIM: u8 = 5;
const OP_CREATE_SNAPSHOT: u8 = 6;
const OP_DELETE_SNAPSHOT: u8 = 7;
const OP_CLONE: u8 = 8;
const OP_ROLLBACK: u8 = 9;
const OP_CREATE_KEY: u8 = 10;
const OP_CREATE_VOLUME_KEYED: u8 = 11;
const OP_MAP_RUN_SEALED: u8 = 12;
const OP_REWRAP: u8 = 13;

impl Op {
    /// Appends the op's encoding (journal payload).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::CreateVolume {
                id,
                layer,
                name,
                size,
                class,
                created,
                key,
            } => {
                w.u8(if key.is_some() {
                    OP_CREATE_VOLUME_KEYED
                } else {
                    OP_CREATE_VOLUME
                });
                w.u64(id.0);
                w.u64(*layer);
                w.str(name);
                w.u64(*size);
                w.u8(class_code(*class));
                w.u64(*created);
                if let Some(k) = key {
                    w.u64(*k);
                }
            }
            Op::CreateKey { id, record } => {
                w.u8(OP_CREATE_KEY);
                w.u64(*id);
                encode_record(w, record);
            }
            Op::Rewrap { keys } => {
                w.u8(OP_REWRAP);
                w.u32(keys.len() as u32);
                for (id, r) in keys {
                    w.u64(*id);
                    encode_record(w, r);
                }
            }
            Op::DeleteVolume { id } => {
                w.u8(OP_DELETE_VOLUME);
                w.u64(id.0);
            }
            Op::ResizeVolume { id, size } => {
                w.u8(OP_RESIZE_VOLUME);
                w.u64(id.0);
                w.u64(*size);
            }
            Op::MapRun {
                layer,
                vblock,
                pblock,
                csums,
                tags,
            } => {
                let tags = (!tags.is_empty()).then_some(&tags[..]);
                encode_map_run(w, *layer, *vblock, *pblock, csums, tags);
            }
            Op::Trim { layer, start, end } => {
                w.u8(OP_TRIM);
                w.u64(*layer);
                w.u64(*start);
                w.u64(*end);
            }
            Op::CreateSnapshot {
                id,
                volume,
                layer,
                name,
                created,
            } => {
                w.u8(OP_CREATE_SNAPSHOT);
                w.u64(id.0);
                w.u64(volume.0);
                w.u64(*layer);
                w.str(name);
                w.u64(*created);
            }
            Op::DeleteSnapshot { id } => {
                w.u8(OP_DELETE_SNAPSHOT);
                w.u64(id.0);
            }
            Op::Clone {
                id,
                snapshot,
                layer,
                name,
                class,
                created,
            } => {
                w.u8(OP_CLONE);
                w.u64(id.0);
                w.u64(snapshot.0);
                w.u64(*layer);
                w.str(name);
                w.u8(class_code(*class));
                w.u64(*created);
            }
            Op::Rollback {
                volume,
                snapshot,
                layer,
            } => {
                w.u8(OP_ROLLBACK);
                w.u64(volume.0);
                w.u64(snapshot.0);
                w.u64(*layer);
            }
        }
    }

    /// Decodes every op of a journal record payload.
    pub fn decode_all(buf: &[u8]) -> Result<Vec<Op>, DecodeError> {
        let mut r = Reader::new(buf);
        let mut ops = Vec::new();
        while r.remaining() > 0 {
            ops.push(Op::decode(&mut r)?);
        }
        Ok(ops)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
        let at = r.pos();
        let class = |r: &mut Reader<'_>| {
            let at = r.pos();
            class_from_code(r.u8()?).ok_or(DecodeError::Invalid { what: "class", at })
        };
        Ok(match r.u8()? {
            tag @ (OP_CREATE_VOLUME | OP_CREATE_VOLUME_KEYED) => Op::CreateVolume {
                id: VolumeId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                size: r.u64()?,
                class: class(r)?,
                created: r.u64()?,
                key: if tag == OP_CREATE_VOLUME_KEYED {
                    let at = r.pos();
                    match r.u64()? {
                        0 => return Err(DecodeError::Invalid { what: "key id", at }),
                        k => Some(k),
                    }
                } else {
                    None
                },
            },
            OP_CREATE_KEY => {
                let at = r.pos();
                let id = r.u64()?;
                if id == 0 {
                    return Err(DecodeError::Invalid { what: "key id", at });
                }
                Op::CreateKey {
                    id,
                    record: decode_record(r)?,
                }
            }
            OP_REWRAP => {
                let at = r.pos();
                let n = r.u32()? as usize;
                // Each item takes at least 8 + 4 + 4 + 1 bytes.
                if n == 0 || n.saturating_mul(17) > r.remaining() {
                    return Err(DecodeError::Invalid {
                        what: "rewrap count",
                        at,
                    });
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push((r.u64()?, decode_record(r)?));
                }
                Op::Rewrap { keys }
            }
            OP_DELETE_VOLUME => Op::DeleteVolume {
                id: VolumeId(r.u64()?),
            },
            OP_RESIZE_VOLUME => Op::ResizeVolume {
                id: VolumeId(r.u64()?),
                size: r.u64()?,
            },
            tag @ (OP_MAP_RUN | OP_MAP_RUN_SEALED) => {
                let sealed = tag == OP_MAP_RUN_SEALED;
                let item = if sealed { 4 + TAG_LEN } else { 4 };
                let layer = r.u64()?;
                let vblock = r.u64()?;
                let pblock = r.u64()?;
                let at = r.pos();
                let n = r.u32()? as usize;
                if n == 0 || n.saturating_mul(item) > r.remaining() {
                    return Err(DecodeError::Invalid {
                        what: "run length",
                        at,
                    });
                }
                let mut csums = Vec::with_capacity(n);
                let mut tags = Vec::with_capacity(if sealed { n } else { 0 });
                for _ in 0..n {
                    csums.push(r.u32()?);
                    if sealed {
                        tags.push(r.array()?);
                    }
                }
                Op::MapRun {
                    layer,
                    vblock,
                    pblock,
                    csums,
                    tags,
                }
            }
            OP_TRIM => Op::Trim {
                layer: r.u64()?,
                start: r.u64()?,
                end: r.u64()?,
            },
            OP_CREATE_SNAPSHOT => Op::CreateSnapshot {
                id: SnapshotId(r.u64()?),
                volume: VolumeId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                created: r.u64()?,
            },
            OP_DELETE_SNAPSHOT => Op::DeleteSnapshot {
                id: SnapshotId(r.u64()?),
            },
            OP_CLONE => Op::Clone {
                id: VolumeId(r.u64()?),
                snapshot: SnapshotId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                class: class(r)?,
                created: r.u64()?,
            },
            OP_ROLLBACK => Op::Rollback {
                volume: VolumeId(r.u64()?),
                snapshot: SnapshotId(r.u64()?),
                layer: r.u64()?,
            },
            _ => return Err(DecodeError::Invalid { what: "op tag", at }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = KeyRecord> {
        (
            "[a-z0-9-]{0,64}",
            proptest::collection::vec(any::<u8>(), 1..=MAX_WRAPPED),
        )
            .prop_map(|(master, wrapped)| KeyRecord { master, wrapped })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1..u64::MAX, record()).prop_map(|(id, record)| Op::CreateKey { id, record }),
            proptest::collection::vec((any::<u64>(), record()), 1..4)
                .prop_map(|keys| Op::Rewrap { keys }),
            (
                any::<u64>(),
                any::<u64>(),
                "[a-z]{1,20}",
                proptest::option::of(1..u64::MAX)
            )
                .prop_map(|(id, layer, name, key)| Op::CreateVolume {
                    id: VolumeId(id),
                    layer,
                    name,
                    size: 4096,
                    class: None,
                    created: 7,
                    key,
                }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                1..40usize,
                any::<bool>(),
                any::<u8>()
            )
                .prop_map(|(layer, vblock, pblock, n, sealed, t)| Op::MapRun {
                    layer,
                    vblock,
                    pblock,
                    csums: (0..n as u32).collect(),
                    tags: if sealed {
                        vec![[t; TAG_LEN]; n]
                    } else {
                        vec![]
                    },
                }),
        ]
    }

    proptest! {
        /// Every op, old and new, decodes to itself; any strict prefix of a stream is refused
        /// or decodes to fewer ops, never to different ones.
        #[test]
        fn ops_round_trip(ops in proptest::collection::vec(op(), 1..6)) {
            let mut w = Writer::new();
            for o in &ops {
                o.encode(&mut w);
            }
            prop_assert_eq!(&Op::decode_all(&w.buf).unwrap(), &ops);
            for cut in 0..w.buf.len() {
                if let Ok(got) = Op::decode_all(&w.buf[..cut]) {
                    prop_assert!(got.len() < ops.len());
                    prop_assert_eq!(&got[..], &ops[..got.len()]);
                }
            }
        }

        /// Hostile bytes after a new op's tag never panic.
        #[test]
        fn new_ops_decode_garbage(tag in 10u8..14, rest in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = vec![tag];
            b.extend(rest);
            let _ = Op::decode_all(&b);
        }
    }

    #[test]
    fn plain_ops_keep_their_old_bytes() {
        // A pool that never uses encryption journals exactly what a build without it did.
        let mut w = Writer::new();
        Op::MapRun {
            layer: 1,
            vblock: 2,
            pblock: 3,
            csums: vec![4],
            tags: vec![],
        }
        .encode(&mut w);
        let mut want = vec![4u8];
        for v in [1u64, 2, 3] {
            want.extend(v.to_le_bytes());
        }
        want.extend(1u32.to_le_bytes());
        want.extend(4u32.to_le_bytes());
        assert_eq!(w.buf, want);
        let mut w = Writer::new();
        Op::CreateVolume {
            id: VolumeId(1),
            layer: 2,
            name: "a".into(),
            size: 4096,
            class: None,
            created: 0,
            key: None,
        }
        .encode(&mut w);
        assert_eq!(w.buf[0], OP_CREATE_VOLUME);
        assert_eq!(w.buf.len(), 1 + 8 + 8 + 4 + 1 + 8 + 1 + 8);
    }
}
