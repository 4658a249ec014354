//! Encryption at rest: no plaintext on the devices, snapshots and clones under their
//! origin's key, a wrong or missing master key (encrypted volumes refuse with a typed error,
//! plain ones serve), rotation, crypto-erase, and the checksum over the ciphertext.

use std::sync::Arc;

use strata_block::{IoError, KeyFile, KeyWrapper, MemDevice, Pool, BLOCK_SIZE};
use strata_types::DeviceClass;

use crate::{mem_pool, reopen_with, test_key};

const BS: usize = BLOCK_SIZE as usize;

/// A marker that cannot occur by chance: 32 distinct bytes, repeated.
fn marker(len: usize) -> Vec<u8> {
    let m = b"STRATA-PLAINTEXT-MARKER-0123456!";
    m.iter().cycle().take(len).copied().collect()
}

/// Whether `needle` (the marker's first 32 bytes) occurs on any device.
fn on_devices(mems: &[Arc<MemDevice>], needle: &[u8]) -> bool {
    mems.iter()
        .any(|m| m.image().windows(needle.len()).any(|w| w == needle))
}

fn key_code(r: Result<(), IoError>) -> String {
    match r {
        Err(e @ IoError::KeyUnavailable { .. }) => e.code().as_str().to_string(),
        other => panic!("expected a locked-key error, got {other:?}"),
    }
}

#[test]
fn a_flushed_marker_is_in_no_device_byte() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd), (8, DeviceClass::Hdd)]);
    pool.set_key_wrapper(test_key(1));
    let enc = pool
        .create_encrypted_volume("secret", 4 << 20, None)
        .unwrap();
    let plain = pool.create_volume("public", 4 << 20, None).unwrap();
    let data = marker(64 * BS);
    // Whole blocks, a partial block (read-modify-write), and a rewrite in place.
    pool.write(enc, 0, &data).unwrap();
    pool.write(enc, 70 * BS as u64 + 100, &data[..300]).unwrap();
    pool.write(enc, 0, &data[..8 * BS]).unwrap();
    pool.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    pool.read(enc, 0, &mut back).unwrap();
    assert!(back == data);
    let mut part = vec![0u8; 300];
    pool.read(enc, 70 * BS as u64 + 100, &mut part).unwrap();
    assert!(part == data[..300]);
    assert!(
        !on_devices(&mems, &data[..32]),
        "plaintext found on a device"
    );
    // The scan finds the marker where it is written in plain text (it can fail).
    pool.write(plain, 0, &data[..BS]).unwrap();
    pool.flush().unwrap();
    assert!(on_devices(&mems, &data[..32]));
    // And after a reopen (checkpoint and journal replay), still readable with the key.
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(1)));
    pool.read(enc, 0, &mut back).unwrap();
    assert!(back == data);
    pool.check_consistency().unwrap();
}

#[test]
fn snapshots_and_clones_read_the_origins_data_under_its_key() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    pool.set_key_wrapper(test_key(2));
    let v = pool.create_encrypted_volume("v", 1 << 20, None).unwrap();
    let old = marker(16 * BS);
    pool.write(v, 0, &old).unwrap();
    let s = pool.create_snapshot(v, "s").unwrap();
    let new = vec![0x42u8; 4 * BS];
    pool.write(v, 0, &new).unwrap();
    let c = pool.clone_snapshot(s, "c", None).unwrap();
    let (vi, ci) = (pool.volume(v).unwrap(), pool.volume(c).unwrap());
    let enc = vi.encryption.clone().expect("encrypted");
    assert_eq!(
        ci.encryption,
        Some(enc.clone()),
        "a clone shares its origin's key"
    );
    assert!(enc.available);
    assert_eq!(enc.master_key_id, test_key(2).key_id());
    assert_eq!(pool.data_keys().len(), 1, "one lineage, one key");
    pool.write(c, 8 * BS as u64, &[0x17; BS]).unwrap();
    for reopen in [false, true] {
        let pool = if reopen {
            pool.flush().unwrap();
            reopen_with(&mems, Some(test_key(2)))
        } else {
            pool.clone()
        };
        let mut buf = vec![0u8; old.len()];
        pool.read(s, 0, &mut buf).unwrap();
        assert!(buf == old, "snapshot (reopen {reopen})");
        pool.read(c, 0, &mut buf).unwrap();
        assert!(buf[..8 * BS] == old[..8 * BS] && buf[8 * BS..9 * BS] == [0x17; BS]);
        assert!(buf[9 * BS..] == old[9 * BS..]);
        pool.read(v, 0, &mut buf).unwrap();
        assert!(buf[..4 * BS] == new[..] && buf[4 * BS..] == old[4 * BS..]);
        pool.check_consistency().unwrap();
    }
}

#[test]
fn a_wrong_or_missing_master_key_locks_only_the_encrypted_volumes() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    pool.set_key_wrapper(test_key(3));
    let enc = pool.create_encrypted_volume("enc", 1 << 20, None).unwrap();
    let plain = pool.create_volume("plain", 1 << 20, None).unwrap();
    pool.write(enc, 0, &marker(4 * BS)).unwrap();
    pool.write(plain, 0, &[9u8; 4 * BS]).unwrap();
    let snap = pool.create_snapshot(enc, "s").unwrap();
    pool.flush().unwrap();
    drop(pool);
    for key in [Some(test_key(4)), None] {
        let pool = reopen_with(&mems, key.clone());
        let mut buf = vec![0u8; 4 * BS];
        // Plain data is served.
        pool.read(plain, 0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 9));
        pool.write(plain, 4 * BS as u64, &[8u8; BS]).unwrap();
        // Encrypted data is refused with the typed error: reads, writes, trims, snapshots.
        assert_eq!(
            key_code(pool.read(enc, 0, &mut buf)),
            "volume_key_unavailable"
        );
        assert_eq!(
            key_code(pool.read(snap, 0, &mut buf)),
            "volume_key_unavailable"
        );
        assert_eq!(
            key_code(pool.write(enc, 0, &[1u8; BS])),
            "volume_key_unavailable"
        );
        assert_eq!(
            key_code(pool.trim(enc, 0, BS as u64)),
            "volume_key_unavailable"
        );
        let e = pool.read(enc, 0, &mut buf).unwrap_err();
        assert!(e.to_string().contains(&test_key(3).key_id()), "{e}");
        let info = pool.volume(enc).unwrap().encryption.unwrap();
        assert!(!info.available);
        assert_eq!(info.master_key_id, test_key(3).key_id());
        // The metadata is untouched: the right key, given later, unlocks it.
        let unlock = pool.set_key_wrapper(test_key(3));
        assert_eq!(unlock.unlocked.len(), 1);
        pool.read(enc, 0, &mut buf).unwrap();
        assert!(buf == marker(4 * BS));
        pool.flush().unwrap();
    }
    // Locked, the lineage can still be managed: snapshot, clone, delete (no key needed).
    let pool = reopen_with(&mems, None);
    let s2 = pool.create_snapshot(enc, "s2").unwrap();
    let c = pool.clone_snapshot(s2, "c", None).unwrap();
    assert!(!pool.volume(c).unwrap().encryption.unwrap().available);
    pool.delete_volume(c, false).unwrap();
    assert_eq!(pool.data_keys().len(), 1);
    pool.check_consistency().unwrap();
}

#[test]
fn creating_an_encrypted_volume_needs_a_master_key() {
    let (pool, _) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let e = pool
        .create_encrypted_volume("e", 1 << 20, None)
        .unwrap_err();
    assert_eq!(e.code().as_str(), "master_key_missing");
    assert!(pool.volumes().is_empty());
    assert!(pool.rotate_master_key(test_key(1)).is_err());
}

#[test]
fn rotation_rewraps_every_key_without_rewriting_data() {
    // Data on the hdd device, metadata on the ssd one: rotation must leave the hdd untouched.
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd), (8, DeviceClass::Hdd)]);
    pool.set_key_wrapper(test_key(5));
    let a = pool
        .create_encrypted_volume("a", 1 << 20, Some(DeviceClass::Hdd))
        .unwrap();
    let b = pool
        .create_encrypted_volume("b", 1 << 20, Some(DeviceClass::Hdd))
        .unwrap();
    pool.write(a, 0, &marker(8 * BS)).unwrap();
    pool.write(b, 0, &[3u8; 8 * BS]).unwrap();
    pool.flush().unwrap();
    let before = pool.data_keys();
    let data_dev = mems[1].image();
    pool.rotate_master_key(test_key(6)).unwrap();
    assert!(mems[1].image() == data_dev, "rotation rewrote data");
    let after = pool.data_keys();
    assert_eq!(after.len(), 2);
    for ((k0, r0), (k1, r1)) in before.iter().zip(&after) {
        assert_eq!(k0, k1);
        assert_ne!(r0.wrapped, r1.wrapped);
        assert_eq!(r1.master, test_key(6).key_id());
    }
    assert_eq!(pool.master_key_id(), Some(test_key(6).key_id()));
    // The old wrapped forms stay in older records until compaction removes them.
    assert!(on_devices(&mems, &before[0].1.wrapped));
    pool.compact_metadata().unwrap();
    for (_, r) in &before {
        assert!(
            !on_devices(&mems, &r.wrapped),
            "an old wrapped key survived compaction"
        );
    }
    // Still served in this process, then after a reopen with the new key.
    let mut buf = vec![0u8; 8 * BS];
    pool.read(a, 0, &mut buf).unwrap();
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(6)));
    pool.read(a, 0, &mut buf).unwrap();
    assert!(buf == marker(8 * BS));
    pool.read(b, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 3));
    drop(pool);
    // The old key opens nothing any more.
    let pool = reopen_with(&mems, Some(test_key(5)));
    assert_eq!(
        key_code(pool.read(a, 0, &mut buf)),
        "volume_key_unavailable"
    );
    assert_eq!(
        key_code(pool.read(b, 0, &mut buf)),
        "volume_key_unavailable"
    );
    // And a rotation is refused while a key is locked (nothing changes).
    let e = pool.rotate_master_key(test_key(7)).unwrap_err();
    assert_eq!(e.code().as_str(), "volume_key_unavailable");
    assert_eq!(pool.data_keys()[0].1.master, test_key(6).key_id());
}

#[test]
fn deleting_the_last_volume_of_a_key_erases_it() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    pool.set_key_wrapper(test_key(8));
    let v = pool.create_encrypted_volume("v", 1 << 20, None).unwrap();
    let other = pool
        .create_encrypted_volume("other", 1 << 20, None)
        .unwrap();
    pool.write(v, 0, &marker(4 * BS)).unwrap();
    let s = pool.create_snapshot(v, "s").unwrap();
    let c = pool.clone_snapshot(s, "c", None).unwrap();
    let keys = pool.data_keys();
    assert_eq!(keys.len(), 2);
    let vkey = pool.volume(v).unwrap().encryption.unwrap().key;
    // The origin goes (with its snapshot): the clone still holds the lineage's key.
    pool.delete_volume(v, true).unwrap();
    assert!(pool.data_keys().iter().any(|(k, _)| *k == vkey));
    let mut buf = vec![0u8; 4 * BS];
    pool.read(c, 0, &mut buf).unwrap();
    assert!(buf == marker(4 * BS));
    // The last volume of the lineage goes: its wrapped key leaves the live metadata.
    let wrapped = keys
        .iter()
        .find(|(k, _)| *k == vkey)
        .unwrap()
        .1
        .wrapped
        .clone();
    assert!(
        on_devices(&mems, &wrapped),
        "the journal holds the wrapped key"
    );
    pool.delete_volume(c, false).unwrap();
    let left = pool.data_keys();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].0, vkey);
    assert_eq!(
        Some(left[0].0),
        pool.volume(other).unwrap().encryption.map(|e| e.key)
    );
    pool.check_consistency().unwrap();
    // Replay erases it too.
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(8)));
    assert_eq!(pool.data_keys().len(), 1);
    // Until the metadata is compacted, older records still hold the wrapped form; after,
    // no byte of it is left on the media, and the pool opens and serves as before.
    assert!(on_devices(&mems, &wrapped));
    pool.write(other, 0, &[6u8; BS]).unwrap();
    pool.compact_metadata().unwrap();
    assert!(
        !on_devices(&mems, &wrapped),
        "compaction left the erased key on a device"
    );
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(8)));
    let mut one = vec![0u8; BS];
    pool.read(other, 0, &mut one).unwrap();
    assert!(one.iter().all(|&b| b == 6));
    pool.delete_volume(other, false).unwrap();
    assert!(pool.data_keys().is_empty());
    pool.check_consistency().unwrap();
}

#[test]
fn the_checksum_covers_the_ciphertext() {
    // A flipped byte of ciphertext is a checksum error (found without the key), not
    // garbage and not an authentication error.
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd), (8, DeviceClass::Hdd)]);
    pool.set_key_wrapper(test_key(9));
    let v = pool
        .create_encrypted_volume("v", 1 << 20, Some(DeviceClass::Hdd))
        .unwrap();
    pool.write(v, 0, &[0u8; BS]).unwrap();
    pool.flush().unwrap();
    let img = mems[1].image();
    // The hdd device holds only this block past its superblock region.
    let at = (BS..img.len())
        .step_by(BS)
        .find(|&o| img[o..o + BS].iter().any(|&b| b != 0))
        .expect("the ciphertext of a zero block is not zero");
    mems[1].poke(at as u64 + 7, &[img[at + 7] ^ 0x10]);
    let mut buf = vec![0u8; BS];
    let e = pool.read(v, 0, &mut buf).unwrap_err();
    assert!(matches!(e, IoError::Checksum { .. }), "{e:?}");
}

#[test]
fn a_key_file_master_key_opens_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let kf: Arc<dyn KeyWrapper> = Arc::new(KeyFile::generate(&path).unwrap());
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    pool.set_key_wrapper(kf.clone());
    let v = pool.create_encrypted_volume("v", 1 << 20, None).unwrap();
    pool.write(v, 0, &marker(BS)).unwrap();
    pool.flush().unwrap();
    drop(pool);
    // The key is not on the devices.
    let raw = std::fs::read(&path).unwrap();
    assert!(!on_devices(&mems, &raw));
    let pool = Pool::open_with_keys(
        mems.iter()
            .map(|m| m.clone() as Arc<dyn strata_block::BlockDevice>)
            .collect(),
        Some(Arc::new(KeyFile::open(&path).unwrap())),
    )
    .unwrap();
    let mut buf = vec![0u8; BS];
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf == marker(BS));
}

/// `tests/fixtures/pool-v1.bin`: a 16 MiB pool written by the build before encryption (commit
/// 682f565: checkpoint version 1, slot of 24 bytes per block), as (offset:u64, 4 KiB) records
/// of its non-zero blocks. Volume "old" (1 MiB): blocks 0..8 hold `i % 251`, block 1 then
/// rewritten with 0xAB; snapshot "before" holds the first contents.
fn old_pool() -> Arc<MemDevice> {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pool-v1.bin"
    ))
    .unwrap();
    let mut img = vec![0u8; 16 << 20];
    for rec in raw.chunks(8 + BS) {
        let off = u64::from_le_bytes(rec[..8].try_into().unwrap()) as usize;
        img[off..off + BS].copy_from_slice(&rec[8..]);
    }
    MemDevice::from_image(img, "old")
}

#[test]
fn a_pool_of_the_format_before_encryption_opens_and_takes_encrypted_volumes() {
    let dev = old_pool();
    let mems = vec![dev];
    let pool = reopen_with(&mems, Some(test_key(11)));
    pool.check_consistency().unwrap();
    let v = pool.volume_id("old").unwrap();
    assert!(pool.volume(v).unwrap().encryption.is_none());
    let first: Vec<u8> = (0..8 * BS).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 8 * BS];
    let s = pool.snapshot_id(v, "before").unwrap();
    pool.read(s, 0, &mut buf).unwrap();
    assert!(buf == first);
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf[BS..2 * BS].iter().all(|&b| b == 0xAB));
    assert!(buf[..BS] == first[..BS] && buf[2 * BS..] == first[2 * BS..]);
    // An encrypted volume on it, through a journal wrap into a version-2 checkpoint.
    let e = pool.create_encrypted_volume("new", 1 << 20, None).unwrap();
    pool.write(e, 0, &marker(4 * BS)).unwrap();
    pool.compact_metadata().unwrap();
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(11)));
    pool.read(e, 0, &mut buf[..4 * BS]).unwrap();
    assert!(buf[..4 * BS] == marker(4 * BS));
    pool.read(s, 0, &mut buf).unwrap();
    assert!(buf == first);
    pool.check_consistency().unwrap();
}

/// `tests/fixtures/pool-enc-v1.bin`: a 16 MiB pool whose encrypted volume was sealed by the
/// build that used RustCrypto `aes-gcm-siv` 0.11 (commit 9fcf253), master key
/// `test_key(0x42)`, in the records of [`old_pool`]. Volume "sealed" (1 MiB, encrypted):
/// blocks 0..8 hold `i % 251`; snapshot "before" taken; then block 1 rewritten with 0xAB and
/// bytes 100..400 of block 5 with 0xCD (a read-modify-write).
fn sealed_pool() -> Arc<MemDevice> {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pool-enc-v1.bin"
    ))
    .unwrap();
    let mut img = vec![0u8; 16 << 20];
    for rec in raw.chunks(8 + BS) {
        let off = u64::from_le_bytes(rec[..8].try_into().unwrap()) as usize;
        img[off..off + BS].copy_from_slice(&rec[8..]);
    }
    MemDevice::from_image(img, "sealed")
}

#[test]
fn blocks_and_keys_sealed_by_the_previous_cipher_implementation_open_unchanged() {
    let mems = vec![sealed_pool()];
    // Another master key: the volume stays locked (the fixture is really encrypted).
    let locked = reopen_with(&mems, Some(test_key(0x43)));
    let v = locked.volume_id("sealed").unwrap();
    let mut buf = vec![0u8; 8 * BS];
    assert_eq!(
        key_code(locked.read(v, 0, &mut buf)),
        "volume_key_unavailable"
    );
    drop(locked);

    let pool = reopen_with(&mems, Some(test_key(0x42)));
    pool.check_consistency().unwrap();
    let info = pool.volume(v).unwrap().encryption.expect("encrypted");
    assert!(info.available);
    let first: Vec<u8> = (0..8 * BS).map(|i| (i % 251) as u8).collect();
    let s = pool.snapshot_id(v, "before").unwrap();
    pool.read(s, 0, &mut buf).unwrap();
    assert!(buf == first, "the snapshot's blocks open as written");
    let mut now = first.clone();
    now[BS..2 * BS].fill(0xAB);
    now[5 * BS + 100..5 * BS + 400].fill(0xCD);
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf == now, "the volume's blocks open as written");
    // The old blocks stay readable beside new ones sealed by this build.
    pool.write(v, 2 * BS as u64, &marker(BS)).unwrap();
    pool.flush().unwrap();
    drop(pool);
    let pool = reopen_with(&mems, Some(test_key(0x42)));
    pool.read(v, 0, &mut buf).unwrap();
    now[2 * BS..3 * BS].copy_from_slice(&marker(BS));
    assert!(buf == now);
    pool.check_consistency().unwrap();
}
