//! Model-based test: random sequences of every volume operation against a trivial reference
//! (a `Vec<u8>` per volume and snapshot). proptest prints the failing sequence, shrinks it,
//! and records its seed in `proptest-regressions/` so it replays.

use proptest::prelude::*;
use strata_block::{Pool, SnapshotId, Target, VolumeId, BLOCK_SIZE};
use strata_types::DeviceClass;

use crate::{mem_pool, reopen_with, test_key};

const BS: u64 = BLOCK_SIZE;
const MAX_BLOCKS: u64 = 40;

#[derive(Debug, Clone)]
enum Act {
    Create {
        blocks: u64,
    },
    Write {
        v: usize,
        off: u64,
        len: u64,
        tag: u8,
    },
    Read {
        v: usize,
        off: u64,
        len: u64,
    },
    Trim {
        v: usize,
        off: u64,
        len: u64,
    },
    Zero {
        v: usize,
        off: u64,
        len: u64,
        unmap: bool,
    },
    Resize {
        v: usize,
        blocks: u64,
    },
    Snapshot {
        v: usize,
    },
    Clone {
        s: usize,
    },
    Rollback {
        v: usize,
        s: usize,
    },
    DeleteSnap {
        s: usize,
    },
    DeleteVol {
        v: usize,
    },
    ReadSnap {
        s: usize,
        off: u64,
        len: u64,
    },
    Flush,
    Reopen,
}

/// Offsets and lengths: mostly block-aligned, sometimes arbitrary bytes.
fn span() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (0..MAX_BLOCKS, 1..8u64).prop_map(|(b, n)| (b * BS, n * BS)),
        (0..MAX_BLOCKS * BS, 1..3 * BS),
        (0..MAX_BLOCKS * BS, 1..200u64),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let v = 0..8usize;
    prop_oneof![
        2 => (1..MAX_BLOCKS).prop_map(|blocks| Act::Create { blocks }),
        8 => (v.clone(), span(), any::<u8>()).prop_map(|(v, (off, len), tag)| Act::Write { v, off, len, tag }),
        4 => (v.clone(), span()).prop_map(|(v, (off, len))| Act::Read { v, off, len }),
        2 => (v.clone(), span()).prop_map(|(v, (off, len))| Act::Trim { v, off, len }),
        2 => (v.clone(), span(), any::<bool>()).prop_map(|(v, (off, len), unmap)| Act::Zero { v, off, len, unmap }),
        1 => (v.clone(), 1..MAX_BLOCKS * 2).prop_map(|(v, blocks)| Act::Resize { v, blocks }),
        2 => v.clone().prop_map(|v| Act::Snapshot { v }),
        1 => (0..8usize).prop_map(|s| Act::Clone { s }),
        1 => (v.clone(), 0..8usize).prop_map(|(v, s)| Act::Rollback { v, s }),
        1 => (0..8usize).prop_map(|s| Act::DeleteSnap { s }),
        1 => v.clone().prop_map(|v| Act::DeleteVol { v }),
        2 => (0..8usize, span()).prop_map(|(s, (off, len))| Act::ReadSnap { s, off, len }),
        1 => Just(Act::Flush),
        1 => Just(Act::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct MVol {
    id: VolumeId,
    name: String,
    data: Vec<u8>,
    /// Per block: does the volume map it (written, not trimmed)?
    alloc: Vec<bool>,
    /// True while the volume's own layer is its whole chain (no snapshot, not a clone), so its
    /// `allocated` must equal its mapped blocks exactly.
    exact: bool,
}

#[derive(Debug, Clone)]
struct MSnap {
    id: SnapshotId,
    vol: VolumeId,
    data: Vec<u8>,
    alloc: Vec<bool>,
}

/// Clamps a generated span into a target of `size` bytes.
fn clamp(size: u64, off: u64, len: u64) -> (u64, u64) {
    let off = off % size;
    (off, len.min(size - off))
}

fn mark(alloc: &mut [bool], off: u64, len: u64, v: bool) {
    if len == 0 {
        return;
    }
    for b in off / BS..(off + len).div_ceil(BS) {
        alloc[b as usize] = v;
    }
}

/// How the model's volumes are created: the same operations run on plain volumes, and on a
/// pool with a master key whose new volumes are encrypted (clones inherit their origin's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Volumes {
    Plain,
    Encrypted,
}

fn run(acts: Vec<Act>, kind: Volumes) -> Result<(), TestCaseError> {
    let (mut pool, mems) = mem_pool(&[(12, DeviceClass::Ssd), (10, DeviceClass::Hdd)]);
    let key = (kind == Volumes::Encrypted).then(|| test_key(7));
    if let Some(k) = &key {
        pool.set_key_wrapper(k.clone());
    }
    let mut vols: Vec<MVol> = Vec::new();
    let mut snaps: Vec<MSnap> = Vec::new();
    let mut n = 0;
    for act in acts {
        match act {
            Act::Create { blocks } => {
                n += 1;
                let name = format!("v{n}");
                let id = match kind {
                    Volumes::Plain => pool.create_volume(&name, blocks * BS, None).unwrap(),
                    Volumes::Encrypted => pool
                        .create_encrypted_volume(&name, blocks * BS, None)
                        .unwrap(),
                };
                prop_assert_eq!(
                    pool.volume(id).unwrap().encryption.is_some(),
                    kind == Volumes::Encrypted
                );
                vols.push(MVol {
                    id,
                    name,
                    data: vec![0; (blocks * BS) as usize],
                    alloc: vec![false; blocks as usize],
                    exact: true,
                });
            }
            Act::Write { v, off, len, tag } if !vols.is_empty() => {
                let n_vols = vols.len();
                let m = &mut vols[v % n_vols];
                let (off, len) = clamp(m.data.len() as u64, off, len);
                let data: Vec<u8> = (0..len).map(|i| tag ^ (i as u8).wrapping_mul(13)).collect();
                pool.write(m.id, off, &data).unwrap();
                m.data[off as usize..(off + len) as usize].copy_from_slice(&data);
                mark(&mut m.alloc, off, len, true);
            }
            Act::Read { v, off, len } if !vols.is_empty() => {
                let m = &vols[v % vols.len()];
                let (off, len) = clamp(m.data.len() as u64, off, len);
                let mut buf = vec![0xEE; len as usize];
                pool.read(m.id, off, &mut buf).unwrap();
                prop_assert!(
                    buf == m.data[off as usize..(off + len) as usize],
                    "volume {} differs at {off}+{len}",
                    m.name
                );
            }
            Act::Trim { v, off, len }
            | Act::Zero {
                v,
                off,
                len,
                unmap: true,
            } if !vols.is_empty() => {
                let n_vols = vols.len();
                let m = &mut vols[v % n_vols];
                let (off, len) = clamp(m.data.len() as u64, off, len);
                pool.trim(m.id, off, len).unwrap();
                m.data[off as usize..(off + len) as usize].fill(0);
                let (first, last) = (off.div_ceil(BS), (off + len) / BS);
                if first < last {
                    mark(&mut m.alloc, off, first * BS - off, true);
                    mark(&mut m.alloc, last * BS, off + len - last * BS, true);
                    mark(&mut m.alloc, first * BS, (last - first) * BS, false);
                } else {
                    mark(&mut m.alloc, off, len, true);
                }
            }
            Act::Zero {
                v,
                off,
                len,
                unmap: false,
            } if !vols.is_empty() => {
                let n_vols = vols.len();
                let m = &mut vols[v % n_vols];
                let (off, len) = clamp(m.data.len() as u64, off, len);
                pool.write_zeroes(m.id, off, len, false).unwrap();
                m.data[off as usize..(off + len) as usize].fill(0);
                mark(&mut m.alloc, off, len, true);
            }
            Act::Resize { v, blocks } if !vols.is_empty() => {
                let n_vols = vols.len();
                let m = &mut vols[v % n_vols];
                let r = pool.resize_volume(m.id, blocks * BS);
                let beyond = m.alloc.iter().skip(blocks as usize).any(|&a| a);
                if (blocks as usize) < m.alloc.len() && beyond {
                    prop_assert!(r.is_err(), "shrink over data was accepted");
                    prop_assert_eq!(r.unwrap_err().code().as_str(), "conflict");
                } else {
                    r.unwrap();
                    m.data.resize((blocks * BS) as usize, 0);
                    m.alloc.resize(blocks as usize, false);
                }
            }
            Act::Snapshot { v } if !vols.is_empty() => {
                let n_vols = vols.len();
                let m = &mut vols[v % n_vols];
                n += 1;
                let id = pool.create_snapshot(m.id, &format!("s{n}")).unwrap();
                m.exact = false;
                snaps.push(MSnap {
                    id,
                    vol: m.id,
                    data: m.data.clone(),
                    alloc: m.alloc.clone(),
                });
            }
            Act::Clone { s } if !snaps.is_empty() => {
                let sm = &snaps[s % snaps.len()];
                n += 1;
                let name = format!("c{n}");
                let id = pool.clone_snapshot(sm.id, &name, None).unwrap();
                let origin = pool.volume(sm.vol).unwrap().encryption;
                prop_assert_eq!(pool.volume(id).unwrap().encryption, origin);
                vols.push(MVol {
                    id,
                    name,
                    data: sm.data.clone(),
                    alloc: sm.alloc.clone(),
                    exact: false,
                });
            }
            Act::Rollback { v, s } if !vols.is_empty() && !snaps.is_empty() => {
                let vi = v % vols.len();
                let sm = &snaps[s % snaps.len()];
                let r = pool.rollback(vols[vi].id, sm.id);
                if sm.vol == vols[vi].id {
                    r.unwrap();
                    vols[vi].data = sm.data.clone();
                    vols[vi].alloc = sm.alloc.clone();
                    vols[vi].exact = false;
                } else {
                    prop_assert_eq!(r.unwrap_err().code().as_str(), "conflict");
                }
            }
            Act::DeleteSnap { s } if !snaps.is_empty() => {
                let sm = snaps.remove(s % snaps.len());
                pool.delete_snapshot(sm.id).unwrap();
            }
            Act::DeleteVol { v } if !vols.is_empty() => {
                let m = vols.remove(v % vols.len());
                let has = snaps.iter().any(|s| s.vol == m.id);
                if has {
                    let e = pool.delete_volume(m.id, false).unwrap_err();
                    prop_assert_eq!(e.code().as_str(), "conflict");
                }
                pool.delete_volume(m.id, true).unwrap();
                snaps.retain(|s| s.vol != m.id);
            }
            Act::ReadSnap { s, off, len } if !snaps.is_empty() => {
                let sm = &snaps[s % snaps.len()];
                let (off, len) = clamp(sm.data.len() as u64, off, len);
                let mut buf = vec![0xEE; len as usize];
                pool.read(sm.id, off, &mut buf).unwrap();
                prop_assert!(buf == sm.data[off as usize..(off + len) as usize]);
                let st = pool
                    .block_status(Target::Snapshot(sm.id), 0, sm.data.len() as u64)
                    .unwrap();
                prop_assert_eq!(expand(&st), sm.alloc.clone());
            }
            Act::Flush => pool.flush().unwrap(),
            Act::Reopen => {
                pool.flush().unwrap();
                drop(pool);
                pool = reopen_with(&mems, key.clone());
            }
            _ => {}
        }
        check(&pool, &vols)?;
    }
    // Everything read back, then everything deleted: the pool is exactly empty again.
    for m in &vols {
        let mut buf = vec![0; m.data.len()];
        pool.read(m.id, 0, &mut buf).unwrap();
        prop_assert!(buf == m.data, "volume {} differs at the end", m.name);
    }
    for m in &vols {
        pool.delete_volume(m.id, true).unwrap();
    }
    pool.flush().unwrap();
    let info = pool.info();
    prop_assert_eq!(info.allocated, 0);
    prop_assert_eq!(info.pending_free, 0);
    prop_assert_eq!(info.free, info.capacity);
    prop_assert_eq!(info.provisioned, 0);
    // Crypto-erase: no volume left, no data key left.
    prop_assert!(pool.data_keys().is_empty());
    Ok(())
}

/// Expands block-status runs to one bool per block.
fn expand(runs: &[(u64, bool)]) -> Vec<bool> {
    runs.iter()
        .flat_map(|&(len, a)| std::iter::repeat_n(a, (len / BS) as usize))
        .collect()
}

fn check(pool: &Pool, vols: &[MVol]) -> Result<(), TestCaseError> {
    pool.check_consistency().map_err(TestCaseError::fail)?;
    let info = pool.info();
    prop_assert_eq!(
        info.provisioned,
        vols.iter().map(|v| v.data.len() as u64).sum::<u64>()
    );
    for m in vols {
        let vi = pool.volume(m.id).unwrap();
        prop_assert_eq!(vi.size, m.data.len() as u64);
        let st = pool.block_status(m.id, 0, vi.size).unwrap();
        prop_assert_eq!(expand(&st), m.alloc.clone(), "block status of {}", m.name);
        if m.exact {
            let mapped = m.alloc.iter().filter(|&&a| a).count() as u64;
            prop_assert_eq!(vi.allocated, mapped * BS, "allocated bytes of {}", m.name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn volume_ops_match_reference(acts in proptest::collection::vec(act(), 1..120)) {
        run(acts, Volumes::Plain)?;
    }

    #[test]
    fn encrypted_volume_ops_match_reference(acts in proptest::collection::vec(act(), 1..120)) {
        run(acts, Volumes::Encrypted)?;
    }
}
