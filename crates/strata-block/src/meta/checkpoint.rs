//! The checkpoint codec: the whole [`State`] as bytes (layout in `docs/block-format.md`).
//! Decoding checks every count against the bytes left, then the state's invariants
//! ([`State::check`]): what decodes is a state the pool can run on.

use strata_types::DeviceClass;
use uuid::Uuid;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypt::SCHEME_AES256_GCM_SIV;
use crate::map::{BlockMap, Entry, ZERO};

use super::ids::{
    class_code, class_from_code, split_paddr, LayerId, SnapshotId, VolumeId, MAX_NAME,
};
use super::op::decode_record;
use super::state::{DeviceMeta, Layer, Owner, SnapshotMeta, State, VolumeMeta};

/// Newest version of the checkpoint payload encoding: 2 adds the wrapped keys, a volume's
/// and a layer's key, and a tag per encrypted block. A state without keys is still written
/// as version 1, byte for byte what a build without encryption writes and reads.
pub const STATE_VERSION: u32 = 2;

impl State {
    /// Encodes the whole state (checkpoint payload).
    pub fn encode(&self) -> Vec<u8> {
        let v2 = !self.keys.is_empty();
        let mut w = Writer::new();
        w.u32(if v2 { 2 } else { 1 });
        w.u64(self.next_id);
        w.u64(self.devices.len() as u64);
        for d in &self.devices {
            w.bytes(d.uuid.as_bytes());
            w.u8(d.class.to_u8());
            w.u64(d.size);
            w.u64(d.data_offset);
            w.u64(d.data_blocks);
        }
        if v2 {
            w.u64(self.keys.len() as u64);
            for (id, r) in &self.keys {
                w.u64(*id);
                w.str(&r.master);
                w.u32(r.wrapped.len() as u32);
                w.bytes(&r.wrapped);
            }
        }
        w.u64(self.volumes.len() as u64);
        for v in self.volumes.values() {
            w.u64(v.id.0);
            w.str(&v.name);
            w.u64(v.size);
            w.u64(v.top);
            w.u8(class_code(v.class));
            w.u64(v.origin.map_or(0, |s| s.0));
            w.u64(v.created);
            // Replicas (reserved: 1), then the encryption scheme and, if any, the key.
            w.u8(1);
            match v.key {
                None => w.u8(0),
                Some(k) => {
                    w.u8(SCHEME_AES256_GCM_SIV);
                    w.u64(k);
                }
            }
        }
        w.u64(self.snapshots.len() as u64);
        for s in self.snapshots.values() {
            w.u64(s.id.0);
            w.str(&s.name);
            w.u64(s.volume.0);
            w.u64(s.layer);
            w.u64(s.size);
            w.u64(s.created);
        }
        let mut ids: Vec<&LayerId> = self.layers.keys().collect();
        ids.sort();
        w.u64(ids.len() as u64);
        for id in ids {
            let l = &self.layers[id];
            w.u64(*id);
            w.u64(l.parent.unwrap_or(0));
            match l.owner {
                Owner::None => {
                    w.u8(0);
                    w.u64(0)
                }
                Owner::Volume(v) => {
                    w.u8(1);
                    w.u64(v.0)
                }
                Owner::Snapshot(s) => {
                    w.u8(2);
                    w.u64(s.0)
                }
            }
            if v2 {
                w.u64(l.key.unwrap_or(0));
            }
            w.u64(l.map.len() as u64);
            for (b, e) in l.map.iter() {
                w.u64(b);
                w.u64(e.pblock);
                w.u32(e.csum);
                if l.key.is_some() && !e.is_zero() {
                    w.bytes(&self.tags[&e.pblock]);
                }
            }
        }
        w.buf
    }

    /// Decodes a checkpoint payload and checks its invariants.
    pub fn decode(buf: &[u8]) -> Result<State, DecodeError> {
        let mut r = Reader::new(buf);
        let at = r.pos();
        let version = r.u32()?;
        if version != 1 && version != 2 {
            return Err(DecodeError::Invalid {
                what: "state version",
                at,
            });
        }
        let v2 = version == 2;
        let mut st = State::new(Vec::new());
        st.next_id = r.u64()?;
        let n = r.count(41)?;
        for _ in 0..n {
            let uuid = Uuid::from_bytes(r.array()?);
            let at = r.pos();
            let class = DeviceClass::from_u8(r.u8()?).ok_or(DecodeError::Invalid {
                what: "device class",
                at,
            })?;
            st.devices.push(DeviceMeta {
                uuid,
                class,
                size: r.u64()?,
                data_offset: r.u64()?,
                data_blocks: r.u64()?,
            });
        }
        if v2 {
            let n = r.count(17)?;
            for _ in 0..n {
                let at = r.pos();
                let id = r.u64()?;
                let rec = decode_record(&mut r)?;
                if id == 0 || st.keys.insert(id, rec).is_some() {
                    return Err(DecodeError::Invalid { what: "key id", at });
                }
            }
        }
        let n = r.count(46)?;
        for _ in 0..n {
            let id = VolumeId(r.u64()?);
            let name = r.str(MAX_NAME)?;
            let size = r.u64()?;
            let top = r.u64()?;
            let at = r.pos();
            let class = class_from_code(r.u8()?).ok_or(DecodeError::Invalid {
                what: "volume class",
                at,
            })?;
            let origin = match r.u64()? {
                0 => None,
                s => Some(SnapshotId(s)),
            };
            let created = r.u64()?;
            let _replicas = r.u8()?;
            let at = r.pos();
            let key = match r.u8()? {
                0 => None,
                SCHEME_AES256_GCM_SIV if v2 => Some(r.u64()?),
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "encryption scheme",
                        at,
                    })
                }
            };
            st.volumes.insert(
                id,
                VolumeMeta {
                    id,
                    name,
                    size,
                    top,
                    class,
                    origin,
                    created,
                    key,
                },
            );
        }
        let n = r.count(44)?;
        for _ in 0..n {
            let id = SnapshotId(r.u64()?);
            let name = r.str(MAX_NAME)?;
            st.snapshots.insert(
                id,
                SnapshotMeta {
                    id,
                    name,
                    volume: VolumeId(r.u64()?),
                    layer: r.u64()?,
                    size: r.u64()?,
                    created: r.u64()?,
                },
            );
        }
        let n = r.count(33)?;
        for _ in 0..n {
            let id = r.u64()?;
            let parent = match r.u64()? {
                0 => None,
                p => Some(p),
            };
            let at = r.pos();
            let kind = r.u8()?;
            let oid = r.u64()?;
            let owner = match kind {
                0 => Owner::None,
                1 => Owner::Volume(VolumeId(oid)),
                2 => Owner::Snapshot(SnapshotId(oid)),
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "layer owner",
                        at,
                    })
                }
            };
            let key = match v2 {
                true => Some(r.u64()?).filter(|&k| k != 0),
                false => None,
            };
            let m = r.count(20)?;
            let mut map = BlockMap::new();
            let mut mapped = 0;
            for _ in 0..m {
                let b = r.u64()?;
                let at = r.pos();
                let pblock = r.u64()?;
                let csum = r.u32()?;
                if pblock != ZERO && key.is_some() {
                    let tag = r.array()?;
                    if st.tags.insert(pblock, tag).is_some() {
                        return Err(DecodeError::Invalid {
                            what: "physical block",
                            at,
                        });
                    }
                }
                if pblock != ZERO {
                    let (d, blk) = split_paddr(pblock);
                    if st.devices.get(d).is_none_or(|dm| blk >= dm.data_blocks) {
                        return Err(DecodeError::Invalid {
                            what: "physical block",
                            at,
                        });
                    }
                    mapped += 1;
                }
                map.insert(
                    b,
                    Entry {
                        pblock,
                        csum,
                        epoch: 0,
                    },
                );
            }
            st.entries += map.len() as u64;
            if st
                .layers
                .insert(
                    id,
                    Layer {
                        parent,
                        children: Vec::new(),
                        owner,
                        map,
                        mapped,
                        key,
                    },
                )
                .is_some()
            {
                return Err(DecodeError::Invalid {
                    what: "duplicate layer",
                    at,
                });
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::Invalid {
                what: "trailing bytes",
                at: r.pos(),
            });
        }
        let links: Vec<(LayerId, LayerId)> = st
            .layers
            .iter()
            .filter_map(|(&id, l)| l.parent.map(|p| (p, id)))
            .collect();
        for (p, c) in links {
            match st.layers.get_mut(&p) {
                Some(pl) => pl.children.push(c),
                None => {
                    return Err(DecodeError::Invalid {
                        what: "missing parent layer",
                        at: 0,
                    })
                }
            }
        }
        for l in st.layers.values_mut() {
            l.children.sort();
        }
        if st.check().is_err() {
            return Err(DecodeError::Invalid {
                what: "state invariants",
                at: 0,
            });
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::super::op::Op;
    use super::super::state::tests::{create, map, st};
    use super::*;

    #[test]
    fn state_and_ops_round_trip() {
        let mut s = st();
        let (v, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 3);
        let ops = vec![
            Op::ResizeVolume { id: v, size: 4096 },
            Op::Trim {
                layer: l0,
                start: 1,
                end: 2,
            },
            Op::MapRun {
                layer: l0,
                vblock: 3,
                pblock: 9,
                csums: vec![1, 2],
                tags: vec![],
            },
            Op::Rollback {
                volume: v,
                snapshot: SnapshotId(4),
                layer: 5,
            },
        ];
        let mut w = Writer::new();
        for o in &ops {
            o.encode(&mut w);
        }
        assert_eq!(Op::decode_all(&w.buf).unwrap(), ops);
        let d = State::decode(&s.encode()).unwrap();
        assert_eq!(d.volumes, s.volumes);
        assert_eq!(d.layers[&l0].map.len(), 3);
        d.check().unwrap();
    }

    /// Fuzz finding: a checkpoint entry whose address was the map's empty-slot sentinel.
    #[test]
    fn fuzz_regressions_decode_without_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
        let mut n = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(f.unwrap().path()).unwrap();
            if let Ok(st) = State::decode(&data) {
                st.check().unwrap();
                State::decode(&st.encode()).unwrap();
            }
            let _ = Op::decode_all(&data);
            n += 1;
        }
        assert!(n > 0);
    }

    /// A state with an encrypted lineage: version 2, keys, tags; it round-trips, and a state
    /// without keys is still written as version 1.
    fn sealed_state() -> (State, LayerId) {
        use crate::meta::ids::KeyRecord;
        let mut s = st();
        let mut f = Vec::new();
        s.apply(
            &Op::CreateKey {
                id: 50,
                record: KeyRecord {
                    master: "kcv-0011".into(),
                    wrapped: vec![9; 61],
                },
            },
            &mut f,
        )
        .unwrap();
        let (id, layer) = (VolumeId(s.alloc_id()), s.alloc_id());
        s.apply(
            &Op::CreateVolume {
                id,
                layer,
                name: "e".into(),
                size: 10 * 4096,
                class: None,
                created: 0,
                key: Some(50),
            },
            &mut f,
        )
        .unwrap();
        s.apply(
            &Op::MapRun {
                layer,
                vblock: 0,
                pblock: 200,
                csums: vec![1, 2, 3],
                tags: vec![[7; 16], [8; 16], [9; 16]],
            },
            &mut f,
        )
        .unwrap();
        s.check().unwrap();
        (s, layer)
    }

    #[test]
    fn version_2_round_trips_and_version_1_stays_for_plain_pools() {
        let (s, layer) = sealed_state();
        let b = s.encode();
        assert_eq!(&b[..4], &2u32.to_le_bytes());
        let d = State::decode(&b).unwrap();
        assert_eq!(d.keys, s.keys);
        assert_eq!(d.volumes, s.volumes);
        assert_eq!(d.tags.get(&201), Some(&[8; 16]));
        assert_eq!(d.layers[&layer].key, Some(50));
        assert_eq!(d.encode(), b);
        let mut plain = st();
        create(&mut plain, "a", 4);
        assert_eq!(&plain.encode()[..4], &1u32.to_le_bytes());
        // A run without tags into an encrypted layer (or with tags into a plain one) is
        // refused, so no encrypted block is ever mapped without its tag.
        let (mut s, layer) = sealed_state();
        let mut f = Vec::new();
        let bad = Op::MapRun {
            layer,
            vblock: 5,
            pblock: 300,
            csums: vec![1],
            tags: vec![],
        };
        assert!(s.apply(&bad, &mut f).is_err());
        // Deleting the last volume of the key removes it.
        let v = *s.volumes.keys().next().unwrap();
        s.apply(&Op::DeleteVolume { id: v }, &mut f).unwrap();
        assert!(s.keys.is_empty() && s.tags.is_empty());
        s.check().unwrap();
    }

    #[test]
    fn sealed_decode_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let good = sealed_state().0.encode();
        for _ in 0..3000 {
            let mut b = good.clone();
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
            if let Ok(st) = State::decode(&b) {
                st.check().unwrap();
            }
            let cut = rng.gen_range(0..b.len());
            assert!(State::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = st();
        let (_, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 3);
        let good = s.encode();
        for _ in 0..2000 {
            let mut b = good.clone();
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
            let _ = State::decode(&b);
            let _ = Op::decode_all(&b);
            let cut = rng.gen_range(0..b.len());
            let _ = State::decode(&b[..cut]);
        }
    }
}
