//! The copy state machine and the events that record its transitions.
//!
//! ```text
//!             Fail (write/flush error, read errors, gone, operator)
//!   Healthy ──────────────────────────────────────────────> Faulted
//!      ^                                                    │    ^
//!      │ ResyncDone                          Return/Replace │    │ Fail
//!      │                                                    v    │
//!      └──────────────────────────────────────────────── Resyncing{done,total}
//!                                                  (Replace: restart, everything)
//! ```
//!
//! Every move not in [`next`]'s table is refused with [`IllegalTransition`] and changes
//! nothing. Each accepted move is recorded as an [`Event`] the caller drains; opening a set
//! records one event per copy with `from == to`, its initial state and why.

use thiserror::Error;

/// The state of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// In sync: takes writes, serves reads, counts for acknowledgement.
    Healthy,
    /// Out of the set: takes no I/O; the regions written meanwhile are tracked.
    Faulted,
    /// Coming back: takes writes (so copied regions stay current) but serves no reads and does
    /// not count for acknowledgement; a driven job copies the regions it lacks.
    Resyncing {
        /// Bytes copied so far.
        done: u64,
        /// Bytes to copy in all.
        total: u64,
        /// Whether everything is copied (a new copy), not only the dirty regions.
        full: bool,
    },
}

/// The kind of a state, for the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// [`CopyState::Healthy`].
    Healthy,
    /// [`CopyState::Faulted`].
    Faulted,
    /// [`CopyState::Resyncing`].
    Resyncing,
}

impl CopyState {
    /// Its kind.
    pub fn kind(&self) -> StateKind {
        match self {
            CopyState::Healthy => StateKind::Healthy,
            CopyState::Faulted => StateKind::Faulted,
            CopyState::Resyncing { .. } => StateKind::Resyncing,
        }
    }
}

/// What moves a copy between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// The copy failed (an error, or the operator took it out).
    Fail,
    /// The copy's device came back with its old contents: resync the dirty regions.
    Return,
    /// A new, empty copy takes the slot (rebuild onto another domain): copy everything.
    Replace,
    /// The resync job copied every region and flushed the copy.
    ResyncDone,
}

/// Why a transition happened (for the API, events and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A write failed on the copy.
    WriteError(String),
    /// A flush failed on the copy.
    FlushError(String),
    /// Reads kept failing ([`crate::MAX_READ_ERRORS`] in a row), or a repair write failed.
    ReadErrors(String),
    /// The copy answered that it is gone.
    Gone(String),
    /// A resync write to the copy failed.
    ResyncError(String),
    /// The copy did not answer when the set was opened.
    Unreachable(String),
    /// The caller took the copy out.
    Operator,
    /// The caller re-attached the copy.
    Returned,
    /// The caller put a new copy in the slot.
    Replaced,
    /// The set was opened after an unclean stop: the regions marked in the intent log are
    /// resynced from the source copy.
    Recovery,
    /// The resync job finished.
    ResyncComplete,
    /// The caller added the copy to the set (a new member, copied whole).
    Added,
    /// The caller retired the copy from the set (the event's index is the one it had).
    Retired,
}

/// A recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increases by one per event of the set (a gap means events were dropped).
    pub seq: u64,
    /// The copy's index in the set.
    pub copy: usize,
    /// The state before.
    pub from: StateKind,
    /// The state after.
    pub to: StateKind,
    /// Why.
    pub cause: Cause,
}

/// A move the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("copy {copy}: {input:?} is not allowed in state {from:?}")]
pub struct IllegalTransition {
    /// The copy.
    pub copy: usize,
    /// Its state.
    pub from: StateKind,
    /// The refused input.
    pub input: Input,
}

/// The transition table: the state `input` moves a copy in state `from` to.
pub fn next(copy: usize, from: StateKind, input: Input) -> Result<StateKind, IllegalTransition> {
    use Input::*;
    use StateKind::*;
    match (from, input) {
        (Healthy, Fail) | (Resyncing, Fail) => Ok(Faulted),
        (Faulted, Return) | (Faulted, Replace) | (Resyncing, Replace) => Ok(Resyncing),
        (Resyncing, ResyncDone) => Ok(Healthy),
        _ => Err(IllegalTransition { copy, from, input }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_accepts_exactly_the_drawn_moves() {
        use Input::*;
        use StateKind::*;
        let mut allowed = Vec::new();
        for from in [Healthy, Faulted, Resyncing] {
            for input in [Fail, Return, Replace, ResyncDone] {
                if let Ok(to) = next(0, from, input) {
                    allowed.push((from, input, to));
                }
            }
        }
        assert_eq!(
            allowed,
            vec![
                (Healthy, Fail, Faulted),
                (Faulted, Return, Resyncing),
                (Faulted, Replace, Resyncing),
                (Resyncing, Fail, Faulted),
                (Resyncing, Replace, Resyncing),
                (Resyncing, ResyncDone, Healthy),
            ]
        );
        assert_eq!(
            next(2, Healthy, Return),
            Err(IllegalTransition {
                copy: 2,
                from: Healthy,
                input: Return
            })
        );
    }
}
