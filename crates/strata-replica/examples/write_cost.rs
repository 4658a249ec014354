//! Cost of the replication layer per 4 KiB write, in memory: the same random 4 KiB writes
//! straight to one engine volume, through a 1-copy set, and through 2- and 3-copy sets (each
//! copy its own pool on its own memory device, a memory intent log).
//!
//! Then the cost of one store of the file intent log (temp file, sync, rename, directory
//! sync) for a 256 MiB and a 1 TiB volume, in the system's temp directory.
//!
//! `cargo run --release -p strata-replica --example write_cost`

use std::sync::Arc;
use std::time::Instant;

use strata_block::{DeviceSpec, MemDevice, Pool, VolumeId};
use strata_replica::{
    CopyFlag, CopyTarget, FileIntentLog, IntentLog, IntentRecord, LocalCopy, MemIntentLog,
    ReplicaSet,
};
use strata_types::DeviceClass;

const VOL: u64 = 256 << 20;
const N: u64 = 200_000;

fn domain(i: usize) -> (Pool, VolumeId) {
    let pool = Pool::create(vec![DeviceSpec {
        device: MemDevice::new(VOL + (64 << 20), format!("m{i}")),
        class: DeviceClass::Nvme,
    }])
    .unwrap();
    let vol = pool.create_volume("v", VOL, None).unwrap();
    (pool, vol)
}

fn offsets() -> impl Iterator<Item = u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..N).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (VOL / 4096)) * 4096
    })
}

fn report(what: &str, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / N as f64;
    println!("{what:>14}: {ns:7.0} ns per 4 KiB write");
}

fn main() {
    let data = [0x5au8; 4096];
    let (pool, vol) = domain(9);
    // A first pass allocates every block (and faults the memory in); the second, measured,
    // rewrites them, as a long-running volume does.
    for off in offsets() {
        pool.write(vol, off, &data).unwrap();
    }
    let t = Instant::now();
    for off in offsets() {
        pool.write(vol, off, &data).unwrap();
    }
    report("engine", t);
    for n in 1..=3 {
        let targets: Vec<Arc<dyn CopyTarget>> = (0..n)
            .map(|i| {
                let (p, v) = domain(i);
                Arc::new(LocalCopy::new(p, v, format!("c{i}"))) as Arc<dyn CopyTarget>
            })
            .collect();
        let set = ReplicaSet::create(targets, Box::new(MemIntentLog::new())).unwrap();
        for off in offsets() {
            set.write(off, &data).unwrap();
        }
        let t = Instant::now();
        for off in offsets() {
            set.write(off, &data).unwrap();
        }
        report(&format!("{n}-copy set"), t);
    }
    let dir = std::env::temp_dir().join(format!("strata-intent-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, regions) in [("256 MiB", 256u64), ("1 TiB", 1 << 20)] {
        let mut log = FileIntentLog::new(dir.join("v.intent"));
        let rec = IntentRecord {
            generation: 0,
            region_size: strata_replica::REGION_SIZE,
            regions,
            copies: vec![CopyFlag::InSync; 2],
            dirty: (0..regions).step_by(7).collect(),
        };
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            log.store(&rec).unwrap();
        }
        let us = t.elapsed().as_micros() as f64 / n as f64;
        println!("intent store, {what:>7} volume: {us:7.0} us");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
