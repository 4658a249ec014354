//! strata-state's integration tests: the `Store` contract on every backend (`conformance`),
//! what only one backend does (`redb` below, `etcd`), and the etcd cluster the etcd tests run
//! (`etcd_cluster`).

mod conformance;
mod etcd;
mod etcd_cluster;
mod leases;

use strata_state::{RedbStore, Store, StoreError, Txn};

#[test]
fn history_is_bounded_in_bytes_and_the_file_stays_small() {
    // 2,000 rewrites of one 64 KiB value (125 MiB of history if it were all kept) under a
    // 1 MiB history bound: the log keeps about 16 revisions and the file stays a few MiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = RedbStore::open_with_limits(&path, 100_000, 1 << 20).unwrap();
    let value = vec![7u8; 64 << 10];
    for _ in 0..2000 {
        s.txn(Txn::new().put("/big", value.clone())).unwrap();
    }
    let rev = s.revision().unwrap();
    assert_eq!(rev, 2000);
    let kept = s.changes("/", rev - 10, 0).unwrap();
    assert_eq!(kept.len(), 10);
    assert!(matches!(
        s.changes("/", rev - 100, 0),
        Err(StoreError::Compacted { .. })
    ));
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 16 << 20, "store file is {size} bytes");
    // Reopening with a smaller bound trims at once.
    drop(s);
    let s = RedbStore::open_with_limits(&path, 3, 1 << 20).unwrap();
    assert_eq!(s.changes("/", rev - 3, 0).unwrap().len(), 3);
    assert!(s.changes("/", rev - 4, 0).is_err());
}

#[test]
fn the_store_file_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let s = RedbStore::open(&path);
    rustix::process::umask(old);
    drop(s.unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A file left world-readable by an older version is tightened on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(RedbStore::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
