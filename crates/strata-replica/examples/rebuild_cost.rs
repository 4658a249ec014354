//! Time of a rebuild inside the replication layer, without the daemon: a 2-copy set on two
//! devices is filled, its second copy is replaced by a new, empty volume on a third device, and
//! the resync is driven to completion by `--workers` threads calling `resync_step`
//! (`--step-mib` each call), as the daemon's resync workers do. Prints MiB/s, the time spent
//! in the final flush, and how many steps ran.
//!
//! The three devices are paths (loop devices, as `bench/data.sh` uses, or regular files that
//! exist); before the timed rebuild the source's page cache is dropped with `blockdev
//! --flushbufs` when it is a block device, so the rebuild reads the device.
//!
//! `cargo run --release -p strata-replica --example rebuild_cost -- SRC OLD NEW
//!  [--mib 512] [--workers 1] [--step-mib 4]`

use std::sync::Arc;
use std::time::Instant;

use strata_block::{DeviceSpec, FileDevice, Pool};
use strata_replica::{CopyTarget, LocalCopy, MemIntentLog, ReplicaSet};
use strata_types::DeviceClass;

fn pool(path: &str) -> Pool {
    Pool::create(vec![DeviceSpec {
        device: Arc::new(FileDevice::open(path).expect("device opens")),
        class: DeviceClass::Nvme,
    }])
    .expect("pool created")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut paths = Vec::new();
    let (mut mib, mut workers, mut step_mib) = (512u64, 1usize, 4u64);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--mib" => mib = args[i + 1].parse().expect("--mib N"),
            "--workers" => workers = args[i + 1].parse().expect("--workers N"),
            "--step-mib" => step_mib = args[i + 1].parse().expect("--step-mib N"),
            p => {
                paths.push(p.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert_eq!(paths.len(), 3, "three device paths: SRC OLD NEW");
    let size = mib << 20;
    let pools: Vec<Pool> = paths.iter().map(|p| pool(p)).collect();
    let copy = |k: usize| -> Arc<dyn CopyTarget> {
        let v = pools[k].create_volume("v", size, None).expect("volume");
        Arc::new(LocalCopy::new(pools[k].clone(), v, format!("c{k}")))
    };
    let set = ReplicaSet::create(vec![copy(0), copy(1)], Box::new(MemIntentLog::new()))
        .expect("set created");
    let mut data = vec![0u8; 1 << 20];
    for (j, b) in data.iter_mut().enumerate() {
        *b = (j % 251) as u8 | 1;
    }
    let t = Instant::now();
    for off in (0..size).step_by(1 << 20) {
        data[..8].copy_from_slice(&off.to_le_bytes());
        set.write(off, &data).expect("fill");
    }
    set.flush().expect("flush");
    println!(
        "filled {mib} MiB through the set in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    set.fault(1).expect("fault");
    set.replace(1, copy(2)).expect("replace");
    if std::fs::metadata(&paths[0]).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    }) {
        let _ = std::process::Command::new("blockdev")
            .args(["--flushbufs", &paths[0]])
            .status();
    }
    // REBUILD_PERF=FILE: `perf record -g` on this process during the rebuild only;
    // REBUILD_STRACE=FILE: `strace -f -c -w` instead (wall time by system call).
    let tracer = match (
        std::env::var("REBUILD_PERF"),
        std::env::var("REBUILD_STRACE"),
    ) {
        (Ok(out), _) => Some(
            vec!["perf", "record", "-q", "-g", "-F", "999", "-o"]
                .into_iter()
                .map(String::from)
                .chain([out, "-p".into()])
                .collect::<Vec<_>>(),
        ),
        (_, Ok(out)) => Some(
            vec!["strace", "-f", "-c", "-w", "-q", "-o"]
                .into_iter()
                .map(String::from)
                .chain([out, "-p".into()])
                .collect(),
        ),
        _ => None,
    };
    let perf = tracer.map(|args| {
        let c = std::process::Command::new(&args[0])
            .args(&args[1..])
            .arg(std::process::id().to_string())
            .spawn()
            .expect("tracer starts");
        std::thread::sleep(std::time::Duration::from_millis(500));
        c
    });
    let cpu0 = cpu_secs();
    let steps = std::sync::atomic::AtomicU64::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                match set.resync_step(step_mib << 20).expect("step") {
                    None => break,
                    Some(p) if p.finished => break,
                    Some(p) => assert!(!p.failed, "resync failed"),
                }
                steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    if let Some(mut c) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    assert!(!set.degraded(), "the copy is healthy at the end");
    println!(
        "rebuilt {mib} MiB in {secs:.2} s: {:.0} MiB/s ({workers} workers, steps of {step_mib} MiB, {} steps)",
        mib as f64 / secs,
        steps.into_inner()
    );
    println!(
        "process CPU during the rebuild: {cpu:.2} s ({:.0}% of one core)",
        100.0 * cpu / secs
    );
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    for off in (0..size).step_by(1 << 20) {
        set.copy_target(0).read(off, &mut a).expect("read 0");
        set.copy_target(1).read(off, &mut b).expect("read 1");
        assert!(a == b, "copies differ at {off}");
    }
    println!("copies agree");
}

/// User plus system CPU seconds of this process so far (`/proc/self/stat`).
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let f: Vec<&str> = s[s.rfind(')').expect("comm") + 2..].split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}
