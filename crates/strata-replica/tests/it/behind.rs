//! A set with a copy writing behind ([`WriteBehind`]) beside a plain one: what it answers
//! when the plain copy fails.

use std::sync::Arc;
use std::time::Duration;

use strata_replica::{CopyError, CopyTarget, MemIntentLog, ReplicaSet, WriteBehind};

use crate::{Domain, HookTarget};

/// A copy that refuses every write (its reads and flushes pass through).
#[derive(Debug)]
struct RefusesWrites(Arc<dyn CopyTarget>);

impl CopyTarget for RefusesWrites {
    fn size(&self) -> Result<u64, CopyError> {
        self.0.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        self.0.read(offset, buf)
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), CopyError> {
        Err(CopyError::Io {
            copy: "refuses".into(),
            detail: "told to refuse".into(),
        })
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), CopyError> {
        self.write(0, &[])
    }
    fn flush(&self) -> Result<(), CopyError> {
        self.0.flush()
    }
    fn describe(&self) -> String {
        "refuses".into()
    }
}

#[test]
fn a_write_the_plain_copy_fails_is_answered_once_the_copy_behind_has_it() {
    const VOL: u64 = 4 << 20;
    let (d0, d1) = (Domain::new("dom0", VOL), Domain::new("dom1", VOL));
    // The copy behind takes a while to carry out its next write.
    let slow = HookTarget::new(d1.copy());
    slow.on_next_write(|| std::thread::sleep(Duration::from_millis(300)));
    let behind: Arc<dyn CopyTarget> = Arc::new(WriteBehind::new(slow, 1).unwrap());
    let set = ReplicaSet::create(
        vec![Arc::new(RefusesWrites(d0.copy())), behind],
        Box::new(MemIntentLog::new()),
    )
    .unwrap();
    set.write(8192, &[7; 4096]).unwrap();
    // Answered: so the copy behind has it already, read straight from its own volume.
    let mut b = vec![0u8; 4096];
    d1.copy().read(8192, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 7),
        "the answered write is on no copy"
    );
    let mut b = vec![0u8; 4096];
    set.read(8192, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 7));
}
