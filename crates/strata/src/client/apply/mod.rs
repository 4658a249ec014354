//! `strata apply -f FILE`: declarative configuration. Files name objects (`file.rs`); the
//! daemon's state is read through the API (`kinds.rs`); a pure planner compares the two
//! (`plan.rs`); the plan is run object by object with per-object outcomes (`run.rs`).
//! `strata get ... -o yaml` prints objects in the same format (`../get.rs`). The format,
//! the order, the prune scope and replacement are described in `docs/apply.md`.
//!
//! Files of this folder import one another downwards only: `model` ← `file` ← `kinds` ←
//! `run`, and `model` ← `plan` ← `run` (the tests of `file` and `plan` use the kind table).

pub(super) mod file;
pub(super) mod kinds;
pub(super) mod model;
pub(super) mod plan;
mod run;
pub use run::ApplyArgs;
