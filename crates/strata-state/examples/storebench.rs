//! Single-key compare-and-put throughput and p99 latency, on redb and (when given) etcd, with
//! 1 and 16 threads. Each thread owns one key and puts it with a comparison against the
//! revision its last put returned, so every transaction succeeds and none conflicts.
//!
//! ```sh
//! cargo run --release -p strata-state --example storebench -- [etcd://H:P[,H:P...]] [--secs N]
//! ```
//!
//! Prints one line per backend and thread count:
//! `backend=redb threads=16 txns=... txn_per_s=... p50_us=... p99_us=...`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_state::{EtcdConfig, EtcdStore, RedbStore, Store, Txn};

fn run(name: &str, store: Arc<dyn Store>, threads: usize, secs: u64) {
    let root = format!("/bench/{}/{threads}/", std::process::id());
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            let key = format!("{root}{t}");
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut rev = s.get(&key).unwrap().map_or(0, |kv| kv.mod_revision);
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = s
                        .txn(Txn::new().when(&key, rev).put(&key, vec![7u8; 256]))
                        .unwrap();
                    lat.push(t.elapsed());
                    assert!(r.succeeded, "compare-and-put on an owned key failed");
                    rev = r.revision;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let wall = t0.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_micros();
    println!(
        "backend={name} threads={threads} txns={} txn_per_s={:.0} p50_us={} p99_us={}",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99)
    );
}

fn main() {
    let mut etcd = None;
    let mut secs = 3u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--secs" {
            secs = args.next().and_then(|s| s.parse().ok()).expect("--secs N");
        } else {
            etcd = Some(a);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let redb: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
    let etcd: Option<Arc<dyn Store>> = etcd.map(|url| {
        let cfg = EtcdConfig::from_url(&url).unwrap();
        Arc::new(EtcdStore::connect(cfg).unwrap()) as Arc<dyn Store>
    });
    for threads in [1, 16] {
        run("redb", redb.clone(), threads, secs);
        if let Some(e) = &etcd {
            run("etcd", e.clone(), threads, secs);
        }
    }
}
