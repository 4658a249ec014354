//! A saga: steps run in order, each with an undo; when a step fails, the steps already done
//! are undone in reverse and the saga ends rolled back. The steps and the saga are data
//! (serde: the owner records the saga beside its own state, so a restart finds how far it
//! got); the driving is here, without I/O: an [`Executor`] does each step's work and its
//! undo, and records the saga after every move. Used for a job's slice (`job_slice/`).
//!
//! # States
//! A step moves by this table; every other move is refused ([`SagaError`]):
//!
//! | from      | start   | finish | fail   | undo   |
//! |-----------|---------|--------|--------|--------|
//! | planned   | started | -      | -      | -      |
//! | started   | -       | done   | failed | undone |
//! | done      | -       | -      | -      | undone |
//! | failed    | -       | -      | -      | -      |
//! | undone    | -       | -      | -      | -      |
//!
//! The saga is `forward` while steps run, `finished` when every step is done, `backward`
//! while undoing (after a failed step, or [`Saga::abort`]: a delete undoes a finished saga,
//! a restart one a crash interrupted), `rolled_back` when nothing is left to undo.
//!
//! # Invariants
//! - A step is recorded `started` before its work begins and `done` after it: a crash in
//!   between leaves `started`, which backward undoes as "maybe done" (undos are idempotent and
//!   find their object by the identity the step carries).
//! - Backward undoes, last first, every step `done` or `started`, and nothing else: a `failed`
//!   step left nothing behind (each step's own work is all or nothing).
//! - A failed undo stops the saga where it is (backward, recorded); driving it again resumes.
//! - A saga found `forward` with a step `started` was interrupted: [`drive`] turns it backward
//!   rather than run that step a second time.

use serde::{Deserialize, Serialize};

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not begun.
    Planned,
    /// Begun, maybe done (recorded before the work).
    Started,
    /// Done.
    Done,
    /// Failed; left nothing.
    Failed,
    /// Undone (or found never done).
    Undone,
}

/// What happens to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    /// Its work begins.
    Start,
    /// Its work succeeded.
    Finish,
    /// Its work failed.
    Fail,
    /// Its work was undone.
    Undo,
}

/// Where the saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Running steps.
    Forward,
    /// Every step done.
    Finished,
    /// Undoing.
    Backward,
    /// Everything undone.
    RolledBack,
}

/// A move the table refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saga step {step}: {event:?} is not allowed from {from:?}")]
pub struct SagaError {
    /// The step's index.
    pub step: usize,
    /// Its state.
    pub from: StepState,
    /// The event refused.
    pub event: StepEvent,
}

/// The transition table (see the module docs).
pub fn transition(from: StepState, event: StepEvent) -> Option<StepState> {
    use StepEvent as E;
    use StepState as S;
    match (from, event) {
        (S::Planned, E::Start) => Some(S::Started),
        (S::Started, E::Finish) => Some(S::Done),
        (S::Started, E::Fail) => Some(S::Failed),
        (S::Started | S::Done, E::Undo) => Some(S::Undone),
        _ => None,
    }
}

/// A step and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<S> {
    /// The step (what to do, and what it made once done).
    pub step: S,
    /// Where it is.
    pub state: StepState,
}

/// A saga over steps `S`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga<S> {
    entries: Vec<Entry<S>>,
    phase: Phase,
}

/// What driving does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run step i.
    Run(usize),
    /// Undo step i.
    Undo(usize),
    /// Nothing: every step is done.
    Finished,
    /// Nothing: everything is undone.
    RolledBack,
}

impl<S> Saga<S> {
    /// A saga of `steps`, the first `done` of which are done already (work its owner did
    /// in the transaction that recorded the saga).
    pub fn new(steps: Vec<S>, done: usize) -> Saga<S> {
        let entries: Vec<Entry<S>> = steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| Entry {
                step,
                state: if i < done {
                    StepState::Done
                } else {
                    StepState::Planned
                },
            })
            .collect();
        let phase = if entries.iter().all(|e| e.state == StepState::Done) {
            Phase::Finished
        } else {
            Phase::Forward
        };
        Saga { entries, phase }
    }

    /// Where the saga is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The steps, in order.
    pub fn entries(&self) -> &[Entry<S>] {
        &self.entries
    }

    /// Step `i`, to fill in what its work made.
    pub fn step_mut(&mut self, i: usize) -> &mut S {
        &mut self.entries[i].step
    }

    /// What to do next.
    pub fn next(&self) -> Next {
        match self.phase {
            Phase::Finished => Next::Finished,
            Phase::RolledBack => Next::RolledBack,
            Phase::Forward => self
                .entries
                .iter()
                .position(|e| e.state == StepState::Planned)
                .map_or(Next::Finished, Next::Run),
            Phase::Backward => self
                .entries
                .iter()
                .rposition(|e| matches!(e.state, StepState::Done | StepState::Started))
                .map_or(Next::RolledBack, Next::Undo),
        }
    }

    /// Whether a crash interrupted it: forward with a step started.
    pub fn interrupted(&self) -> bool {
        self.phase == Phase::Forward && self.entries.iter().any(|e| e.state == StepState::Started)
    }

    /// Moves step `i` by `event` (the table), and the saga with it.
    pub fn mark(&mut self, i: usize, event: StepEvent) -> Result<(), SagaError> {
        let from = self.entries[i].state;
        let to = transition(from, event).ok_or(SagaError {
            step: i,
            from,
            event,
        })?;
        self.entries[i].state = to;
        match event {
            StepEvent::Fail => self.phase = Phase::Backward,
            StepEvent::Finish
                if self.phase == Phase::Forward
                    && self.entries.iter().all(|e| e.state == StepState::Done) =>
            {
                self.phase = Phase::Finished
            }
            _ => {}
        }
        if self.phase == Phase::Backward && self.next() == Next::RolledBack {
            self.phase = Phase::RolledBack;
        }
        Ok(())
    }

    /// Turns the saga backward: every step done (or maybe done) is to be undone.
    pub fn abort(&mut self) {
        if matches!(self.phase, Phase::Forward | Phase::Finished) {
            self.phase = Phase::Backward;
            if self.next() == Next::RolledBack {
                self.phase = Phase::RolledBack;
            }
        }
    }
}

/// Does the steps' work and records the saga.
pub trait Executor<S> {
    /// What the work fails with.
    type Error;
    /// Runs a step (it may fill in what it made). A failure leaves nothing of it.
    fn run(&mut self, step: &mut S) -> Result<(), Self::Error>;
    /// Undoes a step done or maybe done; finding nothing to undo is success.
    fn undo(&mut self, step: &S) -> Result<(), Self::Error>;
    /// Records the saga where its owner keeps it.
    fn record(&mut self, saga: &Saga<S>) -> Result<(), Self::Error>;
}

/// How driving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<E> {
    /// Every step is done.
    Finished,
    /// Everything was undone; the error of the step that failed, if one did (an abort has
    /// none).
    RolledBack(Option<E>),
    /// An undo (or recording it) failed: the saga stays backward, recorded as far as it got.
    Stuck {
        /// What the undo failed with.
        error: E,
        /// What the failed step failed with, if one did.
        cause: Option<E>,
    },
}

/// Runs the saga to its end: forward until a step fails, then backward (see the module
/// invariants).
pub fn drive<S, X: Executor<S>>(saga: &mut Saga<S>, x: &mut X) -> Outcome<X::Error>
where
    X::Error: From<SagaError>,
{
    let mut cause: Option<X::Error> = None;
    if saga.interrupted() {
        saga.abort();
    }
    loop {
        match saga.next() {
            Next::Run(i) => {
                if let Err(e) = saga.mark(i, StepEvent::Start) {
                    return stuck(e.into(), cause);
                }
                // Recorded as started before the work: a crash now is undone as "maybe done".
                if let Err(e) = x.record(saga) {
                    let _ = saga.mark(i, StepEvent::Fail);
                    cause = Some(e);
                    continue;
                }
                match x.run(saga.step_mut(i)) {
                    Ok(()) => {
                        if let Err(e) = saga.mark(i, StepEvent::Finish) {
                            return stuck(e.into(), cause);
                        }
                        if let Err(e) = x.record(saga) {
                            // Done, but recorded only as started: undone as maybe done.
                            saga.abort();
                            cause = Some(e);
                        }
                    }
                    Err(e) => {
                        if let Err(se) = saga.mark(i, StepEvent::Fail) {
                            return stuck(se.into(), Some(e));
                        }
                        cause = Some(e);
                    }
                }
            }
            Next::Undo(i) => {
                if let Err(e) = x.undo(&saga.entries[i].step) {
                    let _ = x.record(saga);
                    return Outcome::Stuck { error: e, cause };
                }
                if let Err(e) = saga.mark(i, StepEvent::Undo) {
                    return stuck(e.into(), cause);
                }
                if let Err(e) = x.record(saga) {
                    return Outcome::Stuck { error: e, cause };
                }
            }
            Next::Finished => {
                return Outcome::Finished;
            }
            Next::RolledBack => {
                if let Err(e) = x.record(saga) {
                    return Outcome::Stuck { error: e, cause };
                }
                return Outcome::RolledBack(cause);
            }
        }
    }
}

fn stuck<E>(error: E, cause: Option<E>) -> Outcome<E> {
    Outcome::Stuck { error, cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake step list: each step is a number; the executor logs what it does, fails the
    /// steps and undos it is told to, and keeps the last recorded saga.
    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        fail_run: Option<u32>,
        fail_undo: Option<u32>,
        fail_record_after: Option<usize>,
        records: usize,
        recorded: Option<Saga<u32>>,
    }

    #[derive(Debug, PartialEq, Eq)]
    enum FakeError {
        Step(u32),
        Undo(u32),
        Record,
        Saga,
    }

    impl From<SagaError> for FakeError {
        fn from(_: SagaError) -> Self {
            FakeError::Saga
        }
    }

    impl Executor<u32> for Fake {
        type Error = FakeError;
        fn run(&mut self, step: &mut u32) -> Result<(), FakeError> {
            if self.fail_run == Some(*step) {
                self.log.push(format!("fail {step}"));
                return Err(FakeError::Step(*step));
            }
            self.log.push(format!("run {step}"));
            Ok(())
        }
        fn undo(&mut self, step: &u32) -> Result<(), FakeError> {
            if self.fail_undo == Some(*step) {
                self.fail_undo = None; // fails once
                return Err(FakeError::Undo(*step));
            }
            self.log.push(format!("undo {step}"));
            Ok(())
        }
        fn record(&mut self, saga: &Saga<u32>) -> Result<(), FakeError> {
            self.records += 1;
            if self.fail_record_after == Some(self.records) {
                return Err(FakeError::Record);
            }
            self.recorded = Some(saga.clone());
            Ok(())
        }
    }

    fn log(x: &Fake) -> String {
        x.log.join(", ")
    }

    #[test]
    fn every_step_runs_in_order_and_the_saga_finishes() {
        let mut s = Saga::new(vec![0, 1, 2, 3], 1);
        let mut x = Fake::default();
        assert_eq!(drive(&mut s, &mut x), Outcome::Finished);
        assert_eq!(log(&x), "run 1, run 2, run 3");
        assert_eq!(s.phase(), Phase::Finished);
        assert_eq!(
            x.recorded.as_ref(),
            Some(&s),
            "the last record is the finished saga"
        );
    }

    #[test]
    fn a_failed_step_undoes_the_done_ones_last_first_and_answers_its_error() {
        for k in 1..5u32 {
            let mut s = Saga::new(vec![0, 1, 2, 3, 4], 1);
            let mut x = Fake {
                fail_run: Some(k),
                ..Fake::default()
            };
            let out = drive(&mut s, &mut x);
            assert_eq!(out, Outcome::RolledBack(Some(FakeError::Step(k))));
            let mut want: Vec<String> = (1..k).map(|i| format!("run {i}")).collect();
            want.push(format!("fail {k}"));
            want.extend((0..k).rev().map(|i| format!("undo {i}")));
            assert_eq!(log(&x), want.join(", "), "failing step {k}");
            assert_eq!(s.phase(), Phase::RolledBack);
            let states: Vec<StepState> = s.entries().iter().map(|e| e.state).collect();
            for (i, st) in states.iter().enumerate() {
                let want = match (i as u32).cmp(&k) {
                    std::cmp::Ordering::Less => StepState::Undone,
                    std::cmp::Ordering::Equal => StepState::Failed,
                    std::cmp::Ordering::Greater => StepState::Planned,
                };
                assert_eq!(*st, want, "step {i} after failing {k}");
            }
        }
    }

    #[test]
    fn abort_undoes_a_finished_saga_in_reverse() {
        let mut s = Saga::new(vec![0, 1, 2], 3);
        assert_eq!(s.phase(), Phase::Finished);
        s.abort();
        let mut x = Fake::default();
        assert_eq!(drive(&mut s, &mut x), Outcome::RolledBack(None));
        assert_eq!(log(&x), "undo 2, undo 1, undo 0");
    }

    #[test]
    fn a_crash_between_start_and_done_is_undone_as_maybe_done() {
        // Recorded state after "started 2" and a crash: steps 0, 1 done, 2 started.
        let mut s = Saga::new(vec![0, 1, 2, 3], 2);
        s.mark(2, StepEvent::Start).unwrap();
        assert!(s.interrupted());
        let mut x = Fake::default();
        assert_eq!(drive(&mut s, &mut x), Outcome::RolledBack(None));
        assert_eq!(
            log(&x),
            "undo 2, undo 1, undo 0",
            "step 2 is never run again"
        );
        assert_eq!(s.entries()[3].state, StepState::Planned);
    }

    #[test]
    fn a_failed_undo_stops_and_driving_again_resumes() {
        let mut s = Saga::new(vec![0, 1, 2, 3], 1);
        let mut x = Fake {
            fail_run: Some(3),
            fail_undo: Some(1),
            ..Fake::default()
        };
        let out = drive(&mut s, &mut x);
        assert_eq!(
            out,
            Outcome::Stuck {
                error: FakeError::Undo(1),
                cause: Some(FakeError::Step(3))
            }
        );
        assert_eq!(log(&x), "run 1, run 2, fail 3, undo 2");
        // What was recorded is what a restart resumes from.
        let mut again = x.recorded.clone().unwrap();
        assert_eq!(again.phase(), Phase::Backward);
        let mut y = Fake::default();
        assert_eq!(drive(&mut again, &mut y), Outcome::RolledBack(None));
        assert_eq!(log(&y), "undo 1, undo 0");
    }

    #[test]
    fn a_step_not_recorded_as_started_is_not_run() {
        // The first record (step 1 started) fails: step 1 never runs, step 0 is undone.
        let mut s = Saga::new(vec![0, 1, 2], 1);
        let mut x = Fake {
            fail_record_after: Some(1),
            ..Fake::default()
        };
        let out = drive(&mut s, &mut x);
        assert_eq!(out, Outcome::RolledBack(Some(FakeError::Record)));
        assert_eq!(log(&x), "undo 0");
    }

    #[test]
    fn a_step_done_but_not_recorded_done_is_undone() {
        // Records: 1 = step 1 started, 2 = step 1 done (fails).
        let mut s = Saga::new(vec![0, 1, 2], 1);
        let mut x = Fake {
            fail_record_after: Some(2),
            ..Fake::default()
        };
        let out = drive(&mut s, &mut x);
        assert_eq!(out, Outcome::RolledBack(Some(FakeError::Record)));
        assert_eq!(log(&x), "run 1, undo 1, undo 0");
    }

    #[test]
    fn the_table_refuses_illegal_moves() {
        use StepEvent as E;
        use StepState as S;
        let states = [S::Planned, S::Started, S::Done, S::Failed, S::Undone];
        let events = [E::Start, E::Finish, E::Fail, E::Undo];
        let mut allowed = 0;
        for s in states {
            for e in events {
                if transition(s, e).is_some() {
                    allowed += 1;
                }
            }
        }
        assert_eq!(allowed, 5, "exactly the table's five moves");
        let mut saga = Saga::new(vec![0, 1], 0);
        assert!(saga.mark(0, E::Finish).is_err(), "done before started");
        assert!(saga.mark(0, E::Undo).is_err(), "undo of a planned step");
        saga.mark(0, E::Start).unwrap();
        saga.mark(0, E::Fail).unwrap();
        assert!(
            saga.mark(0, E::Undo).is_err(),
            "a failed step has nothing to undo"
        );
        assert_eq!(saga.phase(), Phase::RolledBack);
    }

    #[test]
    fn the_saga_round_trips_through_its_record() {
        let mut s = Saga::new(vec![7u32, 8, 9], 1);
        s.mark(1, StepEvent::Start).unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: Saga<u32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert!(back.interrupted());
    }
}
