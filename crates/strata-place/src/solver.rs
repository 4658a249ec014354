//! The MILP/LP backend, chosen at build time: good_lp's pure-Rust microlp by default, HiGHS
//! with the `highs` feature (which builds HiGHS from source: cmake and a C++ compiler;
//! docs/placement.md, "Solver"). Every program of the crate goes through [`backend`], and
//! every plan names the backend in its `solver` field.
//!
//! # Invariants
//! - One backend per build: the same input gives the same plan within a build (HiGHS runs on
//!   one thread, so its search does not depend on scheduling).

use good_lp::variable::UnsolvedProblem;

/// The backend's name, as plans report it.
pub const SOLVER: &str = if cfg!(feature = "highs") {
    "highs"
} else {
    "microlp"
};

/// The model of `problem` for the build's backend.
#[cfg(not(feature = "highs"))]
pub(crate) fn backend(problem: UnsolvedProblem) -> good_lp::solvers::microlp::MicroLpProblem {
    good_lp::solvers::microlp::microlp(problem)
}

/// The model of `problem` for the build's backend: HiGHS, quiet, on one thread.
#[cfg(feature = "highs")]
pub(crate) fn backend(problem: UnsolvedProblem) -> good_lp::solvers::highs::HighsProblem {
    let mut p = good_lp::solvers::highs::highs(problem).set_threads(1);
    p.set_verbose(false);
    p
}
