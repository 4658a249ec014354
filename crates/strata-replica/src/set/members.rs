//! Changing who is in a set: [`ReplicaSet::add`] grows it by a new, empty member that is
//! copied whole while the others keep serving; [`ReplicaSet::retire`] takes a member out, the
//! last member taking its index. Together they move a copy without lowering redundancy: grow
//! to n + 1, wait until the new member is healthy, retire the old one (docs/replicas.md,
//! "Growing and retiring members").
//!
//! # Invariants
//! - A change of members holds `members` exclusive: no read, write, flush or resync step is
//!   in flight, so no operation holds an index that moves or vanishes.
//! - The intent record changes with the members and is stored before the change returns; a
//!   store that fails undoes the change in memory, so the set and its stored log agree.
//! - A new member starts flagged new and resyncing every region (like a replaced copy): it is
//!   never read before the resync job made it healthy.
//! - Retire never leaves a set without a healthy member.
//! - A log naming more members than [`ReplicaSet::open`] is given opens with the extras
//!   dropped: a member added and not retired is dropped at the next open. The caller retires
//!   first and then records the change, so a record names the new member only once the log
//!   does.

use std::sync::Arc;

use super::{bytes_of, push_event, CopyMeta, CopyStats, ReplicaSet};
use crate::error::ReplicaError;
use crate::intent::CopyFlag;
use crate::state::{Cause, CopyState, StateKind};
use crate::target::CopyTarget;
use crate::types::{region_count, RegionSet, MAX_COPIES};

impl ReplicaSet {
    /// Adds `target`, a new, empty copy of the volume's size, as the last member: it takes
    /// every client write from now on and the resync job copies every region onto it, from
    /// the healthy members. Returns its index. Refused when the set already has
    /// [`MAX_COPIES`] members.
    pub fn add(&self, target: Arc<dyn CopyTarget>) -> Result<usize, ReplicaError> {
        let size = target
            .size()
            .map_err(|source| ReplicaError::CopyUnreachable {
                copy: self.copy_count(),
                source,
            })?;
        let _m = self.members.write();
        let n = self.targets.read().len();
        if n >= MAX_COPIES {
            return Err(ReplicaError::CopyCount(n + 1));
        }
        if size != self.size {
            return Err(ReplicaError::SizeMismatch {
                copy: n,
                size,
                expected: self.size,
            });
        }
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        let all: RegionSet = (0..region_count(self.size)).collect();
        let total = bytes_of(&all, self.size);
        st.copies.push(CopyMeta {
            state: CopyState::Resyncing {
                done: 0,
                total,
                full: true,
            },
            dirty: all,
            read_errors: 0,
            incarnation: 0,
            claimed: RegionSet::new(),
            finishing: false,
            stats: CopyStats::default(),
        });
        il.rec.copies.push(CopyFlag::New);
        self.targets.write().push(target);
        push_event(
            &mut st,
            n,
            StateKind::Faulted,
            StateKind::Resyncing,
            Cause::Added,
        );
        let upto = il.flag_changed();
        drop(st);
        drop(il);
        if let Err(e) = self.persist(upto) {
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            st.copies.pop();
            il.rec.copies.pop();
            self.targets.write().pop();
            return Err(e);
        }
        Ok(n)
    }

    /// Takes member `copy` out of the set; the last member takes its index (so a copy moved
    /// by [`ReplicaSet::add`] then `retire(old)` sits where the old one was). Refused when no
    /// healthy member would be left. The caller deletes the retired copy's data.
    pub fn retire(&self, copy: usize) -> Result<(), ReplicaError> {
        let _m = self.members.write();
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        let n = st.copies.len();
        if copy >= n {
            return Err(ReplicaError::NoSuchCopy(copy));
        }
        let healthy_left = st
            .copies
            .iter()
            .enumerate()
            .any(|(i, c)| i != copy && c.state == CopyState::Healthy);
        if !healthy_left {
            return Err(ReplicaError::Unavailable);
        }
        let from = st.copies[copy].state.kind();
        let meta = st.copies.swap_remove(copy);
        let flag = il.rec.copies.swap_remove(copy);
        let target = self.targets.write().swap_remove(copy);
        if copy < n - 1 {
            // The member that moved: steps planned against its old index record nothing.
            st.copies[copy].new_incarnation();
        }
        push_event(&mut st, copy, from, StateKind::Faulted, Cause::Retired);
        let upto = il.flag_changed();
        drop(st);
        drop(il);
        if let Err(e) = self.persist(upto) {
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            let mut targets = self.targets.write();
            // Undo the swap: the moved member goes back to the end, the retired one returns.
            st.copies.push(meta);
            il.rec.copies.push(flag);
            targets.push(target);
            let last = st.copies.len() - 1;
            st.copies.swap(copy, last);
            il.rec.copies.swap(copy, last);
            targets.swap(copy, last);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The member changes against a model: copies in memory (no I/O), random writes, resync
    //! steps, adds and retires; every read equals the model, the log always names the set's
    //! members, and every healthy copy ends equal to the model.

    use std::sync::Arc;

    use parking_lot::Mutex;
    use proptest::prelude::*;

    use crate::intent::{IntentLog, MemIntentLog};
    use crate::target::{CopyError, CopyTarget};
    use crate::types::REGION_SIZE;
    use crate::{CopyFlag, CopyState, ReplicaError, ReplicaSet};

    const VOL: u64 = 4 * REGION_SIZE;

    /// A copy in memory.
    #[derive(Debug)]
    struct MemCopy {
        name: String,
        data: Mutex<Vec<u8>>,
        fail: Mutex<bool>,
    }

    impl MemCopy {
        fn new(name: &str) -> Arc<MemCopy> {
            Arc::new(MemCopy {
                name: name.into(),
                data: Mutex::new(vec![0; VOL as usize]),
                fail: Mutex::new(false),
            })
        }
        fn check(&self) -> Result<(), CopyError> {
            if *self.fail.lock() {
                return Err(CopyError::Gone {
                    copy: self.name.clone(),
                    detail: "failed on purpose".into(),
                });
            }
            Ok(())
        }
    }

    impl CopyTarget for MemCopy {
        fn size(&self) -> Result<u64, CopyError> {
            Ok(VOL)
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), CopyError> {
            self.check()?;
            let d = self.data.lock();
            buf.copy_from_slice(&d[off as usize..off as usize + buf.len()]);
            Ok(())
        }
        fn write(&self, off: u64, data: &[u8]) -> Result<(), CopyError> {
            self.check()?;
            self.data.lock()[off as usize..off as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn write_zeroes(&self, off: u64, len: u64, _: bool) -> Result<(), CopyError> {
            self.check()?;
            self.data.lock()[off as usize..(off + len) as usize].fill(0);
            Ok(())
        }
        fn flush(&self) -> Result<(), CopyError> {
            self.check()
        }
        fn describe(&self) -> String {
            self.name.clone()
        }
    }

    fn two() -> (ReplicaSet, Vec<Arc<MemCopy>>, MemIntentLog) {
        let copies = vec![MemCopy::new("a"), MemCopy::new("b")];
        let log = MemIntentLog::new();
        let set = ReplicaSet::create(
            copies
                .iter()
                .map(|c| c.clone() as Arc<dyn CopyTarget>)
                .collect(),
            Box::new(log.clone()),
        )
        .unwrap();
        (set, copies, log)
    }

    fn resync(set: &ReplicaSet) {
        while set.resync_step(REGION_SIZE).unwrap().is_some() {}
    }

    fn healthy(set: &ReplicaSet) -> usize {
        set.copies()
            .iter()
            .filter(|c| c.state == CopyState::Healthy)
            .count()
    }

    #[test]
    fn a_copy_moves_without_the_set_dropping_below_two_healthy() {
        let (set, copies, log) = two();
        set.write(100, &[7; 5000]).unwrap();
        let new = MemCopy::new("c");
        assert_eq!(set.add(new.clone()).unwrap(), 2);
        assert_eq!(
            log.peek().unwrap().copies,
            vec![CopyFlag::InSync, CopyFlag::InSync, CopyFlag::New]
        );
        // Writes while it joins reach it too.
        set.write(REGION_SIZE * 3, &[9; 100]).unwrap();
        while let Some(p) = set.resync_step(REGION_SIZE).unwrap() {
            assert!(healthy(&set) >= 2, "{p:?}");
        }
        assert_eq!(healthy(&set), 3);
        set.flush().unwrap();
        set.retire(0).unwrap();
        // The new copy took index 0; the log names two members, both in sync.
        assert_eq!(set.copies()[0].label, "c");
        assert_eq!(set.copies()[1].label, "b");
        assert_eq!(log.peek().unwrap().copies, vec![CopyFlag::InSync; 2]);
        assert_eq!(*new.data.lock(), *copies[1].data.lock());
        // The retired copy takes nothing more.
        set.write(0, &[1; 10]).unwrap();
        assert_eq!(copies[0].data.lock()[0], 0);
        assert_eq!(new.data.lock()[0], 1);
    }

    #[test]
    fn refusals_change_nothing() {
        let (set, _copies, log) = two();
        set.add(MemCopy::new("c")).unwrap();
        let e = set.add(MemCopy::new("d")).unwrap_err();
        assert!(matches!(e, ReplicaError::CopyCount(4)));
        assert!(matches!(set.retire(3), Err(ReplicaError::NoSuchCopy(3))));
        assert_eq!(set.copy_count(), 3);
        // A failing store undoes the change.
        resync(&set);
        log.set_fail(true);
        assert!(set.retire(1).is_err());
        log.set_fail(false);
        let labels: Vec<String> = set.copies().into_iter().map(|c| c.label).collect();
        assert_eq!(labels, ["a", "b", "c"]);
        assert_eq!(log.peek().unwrap().copies.len(), 3);
        // The last healthy member stays.
        set.retire(2).unwrap();
        set.fault(1).unwrap();
        assert!(matches!(set.retire(0), Err(ReplicaError::Unavailable)));
    }

    #[test]
    fn an_added_member_not_retired_is_dropped_at_the_next_open() {
        let (set, copies, log) = two();
        set.write(0, &[3; 4096]).unwrap();
        set.add(MemCopy::new("c")).unwrap();
        set.write(REGION_SIZE, &[4; 4096]).unwrap();
        drop(set);
        // The caller's record names the two old copies: they open, in sync on what they had.
        let set = ReplicaSet::open(
            copies
                .iter()
                .map(|c| c.clone() as Arc<dyn CopyTarget>)
                .collect(),
            Box::new(log.clone()),
        )
        .unwrap();
        resync(&set);
        assert_eq!(set.copy_count(), 2);
        assert_eq!(healthy(&set), 2);
        let mut b = vec![0; 4096];
        set.read(REGION_SIZE, &mut b).unwrap();
        assert_eq!(b, vec![4; 4096]);
        let mut log2: Box<dyn IntentLog> = Box::new(log.clone());
        assert_eq!(log2.load().unwrap().unwrap().copies.len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { off: u64, len: u64, byte: u8 },
        Read { off: u64, len: u64 },
        Flush,
        Step,
        Add,
        Retire { copy: usize },
        Fail { copy: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        let range = (0..VOL, 1u64..(200 << 10)).prop_map(|(o, l)| (o, l.min(VOL - o)));
        prop_oneof![
            5 => (range.clone(), any::<u8>()).prop_map(|((off, len), byte)| Op::Write { off, len, byte }),
            4 => range.prop_map(|(off, len)| Op::Read { off, len }),
            1 => Just(Op::Flush),
            4 => Just(Op::Step),
            1 => Just(Op::Add),
            1 => (0usize..3).prop_map(|copy| Op::Retire { copy }),
            1 => (0usize..3).prop_map(|copy| Op::Fail { copy }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn members_change_under_io_and_reads_match_the_model(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let (set, copies, log) = two();
            let mut members: Vec<Arc<MemCopy>> = copies;
            let mut model = vec![0u8; VOL as usize];
            let mut names = 2;
            for o in ops {
                match o {
                    Op::Write { off, len, byte } => {
                        set.write(off, &vec![byte; len as usize]).unwrap();
                        model[off as usize..(off + len) as usize].fill(byte);
                    }
                    Op::Read { off, len } => {
                        let mut b = vec![0; len as usize];
                        set.read(off, &mut b).unwrap();
                        prop_assert_eq!(&b[..], &model[off as usize..(off + len) as usize]);
                    }
                    Op::Flush => set.flush().unwrap(),
                    Op::Step => { set.resync_step(REGION_SIZE).unwrap(); }
                    Op::Add => {
                        names += 1;
                        let c = MemCopy::new(&format!("m{names}"));
                        match set.add(c.clone()) {
                            Ok(i) => { prop_assert_eq!(i, members.len()); members.push(c); }
                            Err(e) => prop_assert!(matches!(e, ReplicaError::CopyCount(_))),
                        }
                    }
                    Op::Retire { copy } => match set.retire(copy) {
                        Ok(()) => { members.swap_remove(copy); }
                        Err(e) => prop_assert!(matches!(
                            e, ReplicaError::NoSuchCopy(_) | ReplicaError::Unavailable
                        )),
                    },
                    Op::Fail { copy } => {
                        // A copy that is not the last healthy one goes away for good.
                        let others = set.copies().iter()
                            .filter(|c| c.index != copy && c.state == CopyState::Healthy).count();
                        let up = set.copies().get(copy).is_some_and(|c| c.state != CopyState::Faulted);
                        if up && others > 0 {
                            set.fault(copy).unwrap();
                        }
                    }
                }
                let labels: Vec<String> = set.copies().into_iter().map(|c| c.label).collect();
                let want: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
                prop_assert_eq!(labels, want);
                prop_assert_eq!(log.peek().unwrap().copies.len(), members.len());
                prop_assert!(healthy(&set) >= 1);
            }
            resync(&set);
            set.flush().unwrap();
            for (c, m) in set.copies().iter().zip(&members) {
                if c.state == CopyState::Healthy {
                    prop_assert!(*m.data.lock() == model, "copy {} differs", c.label);
                }
            }
        }
    }
}
