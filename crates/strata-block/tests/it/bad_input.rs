//! Bad input: every case gets a clear, typed error with a stable code and changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_block::testing::FaultDevice;
use strata_block::{
    AdminError, BlockDevice, DeviceSpec, FileDevice, IoError, MemDevice, OpenError, Pool,
    PoolFailure, VolumeId, BLOCK_SIZE,
};
use strata_types::DeviceClass;

use crate::{mem_pool, pattern, reopen};

const BS: u64 = BLOCK_SIZE;

fn file_pool(dir: &Path, names: &[&str], mib: u64) -> (Pool, Vec<PathBuf>) {
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let specs = paths
        .iter()
        .map(|p| DeviceSpec {
            device: Arc::new(FileDevice::create_file(p, mib << 20).unwrap()),
            class: DeviceClass::Ssd,
        })
        .collect();
    (Pool::create(specs).unwrap(), paths)
}

fn open(paths: &[&PathBuf]) -> Result<Pool, OpenError> {
    Pool::open(
        paths
            .iter()
            .map(|p| Arc::new(FileDevice::open(p).unwrap()) as Arc<dyn BlockDevice>)
            .collect(),
    )
}

fn digest(paths: &[PathBuf]) -> Vec<u32> {
    paths
        .iter()
        .map(|p| strata_block::format::crc32c(&std::fs::read(p).unwrap()))
        .collect()
}

#[test]
fn reopen_with_missing_foreign_duplicate_truncated_or_blank_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (a, pa) = file_pool(dir.path(), &["a0", "a1"], 8);
    let va = a.create_volume("v", 1 << 20, None).unwrap();
    a.write(va, 0, &[7; 4096]).unwrap();
    a.flush().unwrap();
    drop(a);
    let (b, pb) = file_pool(dir.path(), &["b0"], 8);
    drop(b);
    let before = digest(&pa);

    let e = open(&[&pa[0]]).unwrap_err();
    assert!(
        matches!(e, OpenError::MissingDevice { index: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("missing"), "{e}");
    let e = open(&[&pa[1]]).unwrap_err();
    assert!(
        matches!(e, OpenError::MissingDevice { index: 0, .. }),
        "{e}"
    );

    let e = open(&[&pa[0], &pa[1], &pb[0]]).unwrap_err();
    assert!(matches!(e, OpenError::ForeignDevice { .. }), "{e}");
    assert!(e.to_string().contains("belongs to pool"), "{e}");

    let e = open(&[&pa[0], &pa[1], &pa[1]]).unwrap_err();
    assert!(matches!(e, OpenError::DuplicateDevice { .. }), "{e}");

    let blank = dir.path().join("blank");
    std::fs::write(&blank, vec![0u8; 8 << 20]).unwrap();
    let e = open(&[&pa[0], &blank]).unwrap_err();
    assert!(matches!(e, OpenError::NotStrata { .. }), "{e}");
    assert_eq!(e.code().as_str(), "device_error");

    // Nothing above changed a byte of the pool's devices.
    assert_eq!(digest(&pa), before);

    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&pa[1])
        .unwrap();
    f.set_len(6 << 20).unwrap();
    let e = open(&[&pa[0], &pa[1]]).unwrap_err();
    assert!(matches!(e, OpenError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    // Restored to its size, the pool opens and its data is there.
    f.set_len(8 << 20).unwrap();
    let p = open(&[&pa[1], &pa[0]]).unwrap();
    let mut buf = [0u8; 4096];
    p.read(va, 0, &mut buf).unwrap();
    assert_eq!(buf, [7; 4096]);
}

#[test]
fn create_rejects_bad_device_sets() {
    assert!(matches!(Pool::create(vec![]), Err(OpenError::NoDevices)));
    assert!(matches!(Pool::open(vec![]), Err(OpenError::NoDevices)));
    let tiny = MemDevice::new(1 << 20, "tiny");
    let e = Pool::create(vec![DeviceSpec {
        device: tiny,
        class: DeviceClass::Hdd,
    }])
    .unwrap_err();
    assert!(matches!(e, OpenError::DeviceTooSmall { .. }), "{e}");
    assert_eq!(e.code().as_str(), "invalid_argument");
}

#[test]
fn out_of_range_io_and_unknown_targets() {
    let (pool, _m) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 64 * BS, None).unwrap();
    pool.write(v, 0, &pattern(1, 0, (64 * BS) as usize))
        .unwrap();
    let cases: [(u64, usize); 4] = [
        (64 * BS, 1),
        (63 * BS, 2 * BS as usize),
        (u64::MAX, 1),
        (u64::MAX - 10, 20),
    ];
    for (off, len) in cases {
        let e = pool.write(v, off, &vec![9; len]).unwrap_err();
        assert!(matches!(e, IoError::OutOfRange { .. }), "{e}");
        assert_eq!(e.code().as_str(), "invalid_argument");
        assert_eq!(e.errno(), 22);
        let mut buf = vec![0; len];
        assert!(matches!(
            pool.read(v, off, &mut buf),
            Err(IoError::OutOfRange { .. })
        ));
        assert!(pool.trim(v, off, len as u64).is_err());
        assert!(pool.write_zeroes(v, off, len as u64, false).is_err());
    }
    let mut all = vec![0; (64 * BS) as usize];
    pool.read(v, 0, &mut all).unwrap();
    assert!(
        all == pattern(1, 0, (64 * BS) as usize),
        "failed I/O changed data"
    );
    let ghost = VolumeId(999_999);
    assert!(matches!(
        pool.write(ghost, 0, &[1]),
        Err(IoError::NotFound(_))
    ));
    assert!(matches!(
        pool.read(ghost, 0, &mut [0]),
        Err(IoError::NotFound(_))
    ));
    assert!(matches!(
        pool.volume(ghost),
        Err(AdminError::VolumeNotFound(_))
    ));
    assert!(pool.delete_volume(ghost, true).is_err());
    pool.check_consistency().unwrap();
}

#[test]
fn absurd_sizes_and_names_change_nothing() {
    let (pool, _m) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 20, None).unwrap();
    for size in [
        0,
        1,
        1000,
        4097,
        (1 << 50) + 4096,
        u64::MAX,
        u64::MAX - 4095,
    ] {
        let e = pool.create_volume("x", size, None).unwrap_err();
        assert!(matches!(e, AdminError::InvalidSize { .. }), "{size}: {e}");
        assert_eq!(e.code().as_str(), "invalid_argument");
        assert!(pool.resize_volume(v, size).is_err());
    }
    let long = "a".repeat(129);
    for name in ["", "-x", ".x", "a/b", "a b", "ü", long.as_str()] {
        let e = pool.create_volume(name, 1 << 20, None).unwrap_err();
        assert!(matches!(e, AdminError::InvalidName { .. }), "{name:?}: {e}");
    }
    let e = pool.create_volume("v", 1 << 20, None).unwrap_err();
    assert!(matches!(e, AdminError::AlreadyExists { .. }));
    assert_eq!(e.code().as_str(), "already_exists");
    assert_eq!(pool.volumes().len(), 1);
    assert_eq!(pool.volume(v).unwrap().size, 1 << 20);
    // Shrinking over data is refused; shrinking over trimmed space is fine.
    pool.write(v, 200 * BS, &[1; 10]).unwrap();
    let e = pool.resize_volume(v, 100 * BS).unwrap_err();
    assert!(matches!(e, AdminError::ShrinkOverData { .. }), "{e}");
    assert_eq!(pool.volume(v).unwrap().size, 1 << 20);
    pool.trim(v, 200 * BS, BS).unwrap();
    pool.resize_volume(v, 100 * BS).unwrap();
    pool.resize_volume(v, 1 << 20).unwrap();
    let mut b = [9u8; 10];
    pool.read(v, 200 * BS, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
    pool.check_consistency().unwrap();
}

#[test]
fn full_pool_fails_the_write_and_damages_nothing() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let cap = pool.info().capacity;
    let a = pool.create_volume("a", 1 << 30, None).unwrap();
    let b = pool.create_volume("b", 1 << 30, None).unwrap();
    let chunk = 256 * BS;
    let mut written = 0;
    let err = loop {
        match pool.write(a, written, &pattern(5, written / chunk, chunk as usize)) {
            Ok(()) => written += chunk,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, IoError::OutOfSpace { .. }), "{err}");
    assert_eq!(err.code().as_str(), "out_of_space");
    assert_eq!(err.errno(), 28);
    assert!(written > 0 && written <= cap);
    // The failed write left its range untouched (still unallocated zeros), all else intact.
    let mut buf = vec![0u8; chunk as usize];
    pool.read(a, written, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    for i in 0..written / chunk {
        pool.read(a, i * chunk, &mut buf).unwrap();
        assert!(buf == pattern(5, i, chunk as usize), "chunk {i} damaged");
    }
    assert!(pool.write(b, 0, &vec![1; chunk as usize]).is_err());
    pool.check_consistency().unwrap();
    // Metadata operations still work when data space is exhausted.
    let s = pool.create_snapshot(a, "full").unwrap();
    pool.delete_snapshot(s).unwrap();
    // Freeing space (trim + flush) lets writes succeed again.
    pool.trim(a, 0, 2 * chunk).unwrap();
    pool.flush().unwrap();
    pool.write(b, 0, &vec![1; chunk as usize]).unwrap();
    pool.flush().unwrap();
    drop(pool);
    let pool = reopen(&mems);
    pool.check_consistency().unwrap();
    pool.read(b, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 1));
}

#[test]
fn device_faults_fail_the_io_not_the_data() {
    let mem = MemDevice::new(16 << 20, "m0");
    let fault = FaultDevice::new(mem.clone());
    let pool = Pool::create(vec![DeviceSpec {
        device: fault.clone(),
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    let v = pool.create_volume("v", 1 << 20, None).unwrap();
    pool.write(v, 0, &[1; 8192]).unwrap();
    pool.flush().unwrap();

    fault.set_fail_writes(true);
    let e = pool.write(v, 0, &[2; 8192]).unwrap_err();
    assert!(matches!(e, IoError::Device { .. }), "{e}");
    assert_eq!(e.errno(), 5);
    fault.set_fail_writes(false);
    let mut buf = [0u8; 8192];
    pool.read(v, 0, &mut buf).unwrap();
    assert_eq!(buf, [1; 8192]);
    pool.check_consistency().unwrap();

    fault.set_fail_reads(true);
    assert!(matches!(
        pool.read(v, 0, &mut buf),
        Err(IoError::Device { .. })
    ));
    fault.set_fail_reads(false);

    // A failed flush stops the pool taking writes; reopening recovers the last durable state.
    pool.write(v, 0, &[3; 8192]).unwrap();
    fault.set_fail_syncs(true);
    // A management operation whose commit fails says why, with the device error as source.
    let e = pool.create_volume("w", 1 << 20, None).unwrap_err();
    assert!(
        matches!(
            &e,
            AdminError::Failed(PoolFailure::Commit(IoError::Device { .. }))
        ),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(e.code().as_str(), "io_error");
    assert!(pool.flush().is_err());
    let e = pool.create_volume("x", 1 << 20, None).unwrap_err();
    assert!(
        matches!(e, AdminError::Failed(PoolFailure::EarlierFailure)),
        "{e}"
    );
    assert!(matches!(
        pool.write(v, 0, &[4; 10]),
        Err(IoError::PoolFailed)
    ));
    pool.read(v, 0, &mut buf).unwrap();
    drop(pool);
    fault.set_fail_syncs(false);
    let pool = Pool::open(vec![fault.clone()]).unwrap();
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf == [1; 8192] || buf == [3; 8192]);
    pool.check_consistency().unwrap();
}

/// A 1 MiB run goes to the device in pieces (`NEW_BLOCK_PIECE` when newly placed,
/// `FILE_WRITE_PIECE` when rewritten in place; each CRC'd just before it is written): a device
/// error on a later piece, after earlier ones reached the device, fails the write whole.
/// Nothing maps the chunk's new blocks (the old contents read back, flushed or not, and after
/// a reopen), and they are free again.
#[test]
fn a_device_error_after_the_first_piece_of_a_run_maps_nothing() {
    use strata_block::device::{FILE_WRITE_PIECE, NEW_BLOCK_PIECE};
    const MIB: usize = 1 << 20;
    let mem = MemDevice::new(64 << 20, "m0");
    let fault = FaultDevice::new(mem.clone());
    let pool = Pool::create(vec![DeviceSpec {
        device: fault.clone(),
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    let v = pool.create_volume("v", 4 << 20, None).unwrap();
    let old = pattern(1, 0, MIB);
    pool.write(v, 0, &old).unwrap();
    pool.flush().unwrap();
    let allocated = pool.info().allocated;
    // A redirect (the old blocks are durable) and a rewrite in place (written this epoch).
    pool.write(v, MIB as u64, &old).unwrap();
    for (at, piece) in [(0u64, NEW_BLOCK_PIECE), (MIB as u64, FILE_WRITE_PIECE)] {
        let pieces = (MIB / piece) as u64;
        assert!(pieces > 1, "a 1 MiB run is written in several pieces");
        for k in 1..pieces {
            fault.fail_writes_after(k);
            let e = pool.write(v, at, &pattern(2, 0, MIB)).unwrap_err();
            assert!(matches!(e, IoError::Device { .. }), "{e}");
            fault.fail_writes_after(u64::MAX);
            let mut buf = vec![0u8; MIB];
            if at == 0 {
                pool.read(v, at, &mut buf).unwrap();
                assert!(
                    buf == old,
                    "the durable block reads old after piece {k} failed"
                );
            }
            pool.check_consistency().unwrap();
        }
    }
    pool.flush().unwrap();
    assert_eq!(pool.info().allocated, allocated + MIB as u64);
    drop(pool);
    let pool = Pool::open(vec![fault.clone()]).unwrap();
    let mut buf = vec![0u8; MIB];
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf == old);
    pool.check_consistency().unwrap();
}
