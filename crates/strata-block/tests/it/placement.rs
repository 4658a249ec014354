//! Thin provisioning, exact utilization figures, and placement across devices and classes.

use strata_block::{Target, BLOCK_SIZE};
use strata_types::DeviceClass;

use crate::{mem_pool, pattern, reopen};

const BS: u64 = BLOCK_SIZE;

#[test]
fn thin_volume_takes_space_on_first_write_only() {
    let (pool, _m) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let cap = pool.info().capacity;
    let v = pool.create_volume("big", 1 << 40, None).unwrap();
    let i = pool.info();
    assert_eq!(i.allocated, 0);
    assert_eq!(i.provisioned, 1 << 40);
    assert_eq!(i.free, cap);
    pool.write(v, (1 << 40) - 3 * BS, &pattern(1, 0, 3 * BS as usize))
        .unwrap();
    assert_eq!(pool.volume(v).unwrap().allocated, 3 * BS);
    assert_eq!(pool.info().allocated, 3 * BS);
    assert_eq!(pool.info().free, cap - 3 * BS);
    // Overwriting does not grow the allocation (the old blocks are reused at once or after
    // the next flush).
    pool.write(v, (1 << 40) - 3 * BS, &pattern(2, 0, 3 * BS as usize))
        .unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.info().allocated, 3 * BS);
    assert_eq!(pool.info().free, cap - 3 * BS);
    pool.trim(v, 0, 1 << 40).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.info().allocated, 0);
    assert_eq!(pool.info().free, cap);
}

#[test]
fn snapshot_accounting_is_exact() {
    let (pool, mems) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 20, None).unwrap();
    pool.write(v, 0, &pattern(1, 0, 64 * BS as usize)).unwrap();
    let s = pool.create_snapshot(v, "s1").unwrap();
    assert_eq!(pool.snapshot(s).unwrap().allocated, 64 * BS);
    assert_eq!(pool.volume(v).unwrap().allocated, 0);
    // Copy-on-write: 16 overwritten blocks cost 16 new blocks.
    pool.write(v, 0, &pattern(2, 0, 16 * BS as usize)).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.volume(v).unwrap().allocated, 16 * BS);
    assert_eq!(pool.info().allocated, 80 * BS);
    let c = pool.clone_snapshot(s, "c", None).unwrap();
    assert_eq!(pool.volume(c).unwrap().allocated, 0);
    // The snapshot is shared by the volume and the clone: deleting it frees nothing.
    pool.delete_snapshot(s).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.info().allocated, 80 * BS);
    // Deleting the volume frees its 16 own blocks; the 64 shared ones now belong to the clone.
    pool.delete_volume(v, false).unwrap();
    pool.flush().unwrap();
    assert_eq!(pool.info().allocated, 64 * BS);
    assert_eq!(pool.volume(c).unwrap().allocated, 64 * BS);
    let mut buf = vec![0; 64 * BS as usize];
    pool.read(c, 0, &mut buf).unwrap();
    assert_eq!(buf, pattern(1, 0, 64 * BS as usize));
    drop(pool);
    let pool = reopen(&mems);
    assert_eq!(pool.info().allocated, 64 * BS);
    pool.check_consistency().unwrap();
}

#[test]
fn many_snapshots_of_a_petabyte_thin_volume() {
    // Snapshots of a 1 PiB volume: each is one small journal op (its O(1) time is measured by
    // bench/block.sh, not asserted here); here only that they work and keep the data.
    let (pool, _m) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let v = pool.create_volume("huge", 1 << 50, None).unwrap();
    pool.write(v, 1 << 45, &[1; 4096]).unwrap();
    for i in 0..50 {
        pool.create_snapshot(v, &format!("s{i}")).unwrap();
    }
    assert_eq!(pool.snapshots(v).unwrap().len(), 50);
    let mut b = [0u8; 4096];
    pool.read(v, 1 << 45, &mut b).unwrap();
    assert_eq!(b, [1; 4096]);
}

#[test]
fn allocation_spreads_by_free_space_and_honours_class() {
    let (pool, mems) = mem_pool(&[
        (40, DeviceClass::Hdd),
        (40, DeviceClass::Hdd),
        (24, DeviceClass::Nvme),
    ]);
    let info = pool.info();
    // Metadata goes on the fastest device.
    assert!(info.devices[2].metadata);
    let v = pool.create_volume("spread", 64 << 20, None).unwrap();
    pool.write(v, 0, &pattern(3, 0, 32 << 20)).unwrap();
    pool.flush().unwrap();
    let info = pool.info();
    let used: Vec<u64> = info.devices.iter().map(|d| d.allocated).collect();
    assert_eq!(used.iter().sum::<u64>(), 32 << 20);
    // Free space ends up balanced within one chunk between the two large devices.
    let free: Vec<u64> = info
        .devices
        .iter()
        .map(|d| d.capacity - d.allocated)
        .collect();
    assert!(free[0].abs_diff(free[1]) <= 128 << 10, "free {free:?}");
    let fast = pool
        .create_volume("fast", 8 << 20, Some(DeviceClass::Nvme))
        .unwrap();
    let before = pool.info().devices[2].allocated;
    pool.write(fast, 0, &pattern(4, 0, 4 << 20)).unwrap();
    let info = pool.info();
    assert_eq!(info.devices[2].allocated - before, 4 << 20);
    let e = pool
        .create_volume("ssd", 8 << 20, Some(DeviceClass::Ssd))
        .unwrap_err();
    assert_eq!(e.code().as_str(), "invalid_argument");
    // Data spread over three devices reads back after reopen.
    pool.flush().unwrap();
    drop(pool);
    let pool = reopen(&mems);
    let mut buf = vec![0; 32 << 20];
    pool.read(v, 0, &mut buf).unwrap();
    assert!(buf == pattern(3, 0, 32 << 20));
}

#[test]
fn changed_blocks_since_a_snapshot() {
    let (pool, _m) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let v = pool.create_volume("ckpt", 64 * BS, None).unwrap();
    pool.write(v, 0, &pattern(1, 0, 64 * BS as usize)).unwrap();
    let s1 = pool.create_snapshot(v, "s1").unwrap();
    assert_eq!(
        pool.changed_blocks(v, s1, 0, 64 * BS).unwrap(),
        vec![(64 * BS, false)]
    );
    pool.write(v, 10 * BS, &[7; 4096]).unwrap();
    pool.write(v, 11 * BS + 5, &[7; 10]).unwrap();
    pool.trim(v, 40 * BS, 2 * BS).unwrap();
    let s2 = pool.create_snapshot(v, "s2").unwrap();
    pool.write(v, 63 * BS, &[8; 4096]).unwrap();
    let want = vec![
        (10 * BS, false),
        (2 * BS, true),
        (28 * BS, false),
        (2 * BS, true),
        (21 * BS, false),
        (BS, true),
    ];
    assert_eq!(pool.changed_blocks(v, s1, 0, 64 * BS).unwrap(), want);
    assert_eq!(
        pool.changed_blocks(v, s2, 0, 64 * BS).unwrap(),
        vec![(63 * BS, false), (BS, true)]
    );
    // Sub-ranges are clipped to the request.
    assert_eq!(
        pool.changed_blocks(v, s1, 11 * BS, 2 * BS).unwrap(),
        vec![(BS, true), (BS, false)]
    );
    // A later snapshot against an earlier one: what changed between them, not since.
    assert_eq!(
        pool.changed_blocks(Target::Snapshot(s2), s1, 0, 64 * BS)
            .unwrap(),
        vec![
            (10 * BS, false),
            (2 * BS, true),
            (28 * BS, false),
            (2 * BS, true),
            (22 * BS, false),
        ]
    );
    // Out of range is an error (answered, not a hang on the pool's lock).
    let e = pool
        .changed_blocks(Target::Snapshot(s2), s1, 60 * BS, 8 * BS)
        .unwrap_err();
    assert_eq!(e.code().as_str(), "invalid_argument", "{e}");
    let e = pool.block_status(v, 60 * BS, 8 * BS).unwrap_err();
    assert_eq!(e.code().as_str(), "invalid_argument", "{e}");
}

#[test]
fn qos_limits_hold_back_admission_and_figures_count_every_request() {
    let (pool, _m) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let v = pool.create_volume("q", 64 << 20, None).unwrap();
    pool.set_qos(
        v,
        strata_block::QosLimits {
            iops: Some(100),
            burst_iops: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    let start = std::time::Instant::now();
    for i in 0..60u64 {
        pool.write(v, i * BS, &[1; 4096]).unwrap();
    }
    // 10 from the burst, 50 more at 100/s: at least half a second, however fast the machine.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
    let io = pool.io(v).unwrap();
    let t = io.totals();
    assert_eq!((t.writes, t.write_bytes), (60, 60 * BS));
    assert!(t.throttled_us >= 400_000, "{}", t.throttled_us);
    // The rates count whole seconds: the second under way shows one second later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(io.live().rates[1].iops > 0.0);
    // Lifting the limit: the next requests are not held.
    pool.set_qos(v, strata_block::QosLimits::default()).unwrap();
    let before = io.totals().throttled_us;
    let mut b = [0u8; 4096];
    for _ in 0..100 {
        pool.read(v, 0, &mut b).unwrap();
    }
    assert_eq!(io.totals().throttled_us, before);
    assert_eq!(io.totals().reads, 100);
    assert!(pool
        .set_qos(strata_block::VolumeId(12345), Default::default())
        .is_err());
}

/// A memory device that counts writes of each size and syncs (the test's window on placement
/// and commits).
#[derive(Debug)]
struct CountingDevice {
    inner: std::sync::Arc<strata_block::MemDevice>,
    writes: std::sync::Mutex<Vec<usize>>,
    syncs: std::sync::atomic::AtomicU64,
}

impl strata_block::BlockDevice for CountingDevice {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.writes.lock().unwrap().push(buf.len());
        self.inner.write_at(buf, off)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sync()
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

/// A pool on one 64 MiB counting memory device.
fn counting_pool() -> (strata_block::Pool, std::sync::Arc<CountingDevice>) {
    let dev = std::sync::Arc::new(CountingDevice {
        inner: strata_block::MemDevice::new(64 << 20, "mem0"),
        writes: std::sync::Mutex::new(Vec::new()),
        syncs: Default::default(),
    });
    let pool = strata_block::Pool::create(vec![strata_block::DeviceSpec {
        device: dev.clone(),
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    (pool, dev)
}

#[test]
fn a_write_over_scattered_blocks_of_this_epoch_moves_them_to_one_run() {
    let (pool, dev) = counting_pool();
    let v = pool.create_volume("v", 8 << 20, None).unwrap();
    // 16 single blocks in reverse order, each followed by a block elsewhere: their physical
    // blocks are scattered, and all belong to the current epoch (no flush in between).
    for i in (0..16u64).rev() {
        pool.write(v, i * BS, &pattern(i as u8, 0, BS as usize))
            .unwrap();
        pool.write(v, (4 << 20) + i * BS, &pattern(99, 0, BS as usize))
            .unwrap();
    }
    let before = pool.info().allocated;
    dev.writes.lock().unwrap().clear();
    let data = pattern(7, 0, 16 * BS as usize);
    pool.write(v, 0, &data).unwrap();
    assert_eq!(
        *dev.writes.lock().unwrap(),
        vec![16 * BS as usize],
        "one device write for the whole range"
    );
    // The scattered blocks were freed at once: the allocation did not grow.
    assert_eq!(pool.info().allocated, before);
    let mut back = vec![0u8; data.len()];
    pool.read(v, 0, &mut back).unwrap();
    assert!(back == data);
    // A rewrite of the now contiguous range goes in place: one write, same allocation.
    dev.writes.lock().unwrap().clear();
    pool.write(v, 0, &pattern(8, 0, 16 * BS as usize)).unwrap();
    assert_eq!(*dev.writes.lock().unwrap(), vec![16 * BS as usize]);
    assert_eq!(pool.info().allocated, before);
    pool.check_consistency().unwrap();
    pool.flush().unwrap();
    pool.check_consistency().unwrap();
}

#[test]
fn rewriting_the_same_blocks_in_place_does_not_grow_the_journal() {
    use std::sync::atomic::Ordering::SeqCst;
    let (pool, dev) = counting_pool();
    let v = pool.create_volume("v", 8 << 20, None).unwrap();
    let mib = 1 << 20;
    pool.write(v, 0, &pattern(0, 0, mib)).unwrap();
    let syncs = dev.syncs.load(SeqCst);
    // 2,000 rewrites of the same megabyte (and of pieces of it): appended, their map ops
    // would fill the journal buffer many times over and force commits; patched, none.
    for i in 1..=2000u64 {
        let (off, len) = match i % 3 {
            0 => (0, mib),
            1 => (64 * BS, 16 * BS as usize),
            _ => (255 * BS, BS as usize),
        };
        pool.write(v, off, &pattern(i as u8, off, len)).unwrap();
    }
    assert_eq!(
        dev.syncs.load(SeqCst),
        syncs,
        "no commit while rewriting in place"
    );
    let mut want = vec![0u8; mib];
    pool.read(v, 0, &mut want).unwrap();
    pool.flush().unwrap();
    pool.check_consistency().unwrap();
    drop(pool);
    // The journal replays to the last contents, every checksum right.
    let pool = reopen(std::slice::from_ref(&dev.inner));
    let mut got = vec![0u8; mib];
    pool.read(v, 0, &mut got).unwrap();
    assert!(got == want);
    pool.check_consistency().unwrap();
}
