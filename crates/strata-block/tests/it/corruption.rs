//! Corruption: bytes flipped in a device image are caught by checksums. The read that touches
//! them fails naming the volume and offset; every other byte reads correctly.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use strata_block::format::Superblock;
use strata_block::{BlockDevice, DeviceSpec, FileDevice, IoError, OpenError, Pool, BLOCK_SIZE};
use strata_types::DeviceClass;

const BS: usize = BLOCK_SIZE as usize;

fn marker(k: usize) -> Vec<u8> {
    format!("STRATA-BLOCK-{k:05}-")
        .into_bytes()
        .repeat(BS / 19 + 1)[..BS]
        .to_vec()
}

fn open(path: &std::path::Path) -> Result<Pool, OpenError> {
    let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(path).unwrap());
    Pool::open(vec![d])
}

fn flip(path: &std::path::Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn flipped_data_bytes_fail_only_the_reads_that_touch_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev0");
    let dev = Arc::new(FileDevice::create_file(&path, 32 << 20).unwrap());
    let pool = Pool::create(vec![DeviceSpec {
        device: dev,
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    let v = pool.create_volume("v", 256 * BS as u64, None).unwrap();
    for k in 0..256 {
        pool.write(v, (k * BS) as u64, &marker(k)).unwrap();
    }
    let snap = pool.create_snapshot(v, "s").unwrap();
    pool.flush().unwrap();
    drop(pool);

    // Find the blocks on the device by their contents and damage three of them.
    let image = std::fs::read(&path).unwrap();
    let bad = [3usize, 100, 255];
    for &k in &bad {
        let m = marker(k);
        let at = image
            .chunks(BS)
            .position(|c| c == m.as_slice())
            .expect("block on device");
        flip(&path, (at * BS + 1234) as u64);
    }

    let pool = open(&path).unwrap();
    for target in [strata_block::Target::Volume(v), snap.into()] {
        for k in 0..256 {
            let mut buf = vec![0u8; BS];
            let r = pool.read(target, (k * BS) as u64, &mut buf);
            if bad.contains(&k) {
                match r {
                    Err(e @ IoError::Checksum { .. }) => {
                        let msg = e.to_string();
                        assert!(msg.contains(&format!("at offset {}", k * BS)), "{msg}");
                        assert!(
                            msg.contains("volume v") || msg.contains("snapshot s"),
                            "{msg}"
                        );
                        assert_eq!(e.code().as_str(), "checksum_mismatch");
                        assert_eq!(e.errno(), 5);
                    }
                    other => panic!("block {k}: expected a checksum error, got {other:?}"),
                }
            } else {
                r.unwrap();
                assert!(buf == marker(k), "block {k} differs");
            }
        }
    }
    // A large read spanning a damaged block fails; one beside it succeeds.
    let mut big = vec![0u8; 50 * BS];
    assert!(pool.read(v, 60 * BS as u64, &mut big).is_err());
    pool.read(v, 4 * BS as u64, &mut big).unwrap();
    // A partial write into a damaged block needs its old contents, so it fails too...
    assert!(matches!(
        pool.write(v, (3 * BS + 10) as u64, b"x"),
        Err(IoError::Checksum { .. })
    ));
    // ...while a whole-block write replaces it, and the volume reads cleanly again there.
    pool.write(v, (3 * BS) as u64, &marker(9999)).unwrap();
    let mut buf = vec![0u8; BS];
    pool.read(v, (3 * BS) as u64, &mut buf).unwrap();
    assert!(buf == marker(9999));
    // The snapshot keeps its own (still damaged) copy.
    assert!(pool.read(snap, (3 * BS) as u64, &mut buf).is_err());
}

#[test]
fn damaged_superblock_and_checkpoint_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev0");
    let dev = Arc::new(FileDevice::create_file(&path, 16 << 20).unwrap());
    let pool = Pool::create(vec![DeviceSpec {
        device: dev,
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    pool.create_volume("v", 1 << 20, None).unwrap();
    drop(pool);
    let sb = Superblock::decode(&std::fs::read(&path).unwrap()[..BS]).unwrap();

    flip(&path, 100);
    let e = open(&path).unwrap_err();
    assert!(matches!(e, OpenError::SuperblockCorrupt { .. }), "{e}");
    assert_eq!(e.code().as_str(), "device_error");
    flip(&path, 100);
    open(&path).unwrap();

    // The only checkpoint so far is in slot A; damaging its payload is reported, not ignored.
    flip(&path, sb.ckpt_offset + BS as u64 + 3);
    let e = open(&path).unwrap_err();
    assert!(matches!(e, OpenError::CorruptMetadata(_)), "{e}");
    assert!(e.to_string().contains("checkpoint"), "{e}");
    assert_eq!(e.code().as_str(), "corrupt_metadata");
}
