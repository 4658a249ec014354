//! Placement for AI jobs: a resource pool of GPUs, CPU, memory, storage and bandwidth, and the
//! engines that decide where things go. No I/O, no clock, no global state: callers hand in a
//! snapshot ([`Cluster`]) and get back a plan or an answer; the daemon stores, checks the
//! revision, and applies.
//!
//! - [`model`]: nodes, jobs, placements (serde data).
//! - [`inventory`]: the YAML inventory of (hypothetical) nodes, parsed from a `&str`.
//! - [`plan()`]: jobs onto nodes: spanning jobs, then a greedy and a MILP (good_lp + microlp).
//! - [`admit`]: the admission queue: priority, then tenant fair share, as capacity frees.
//! - [`bandwidth`]: the seed's share model and its generalization to flows on links.
//! - [`copies`]: a straw2-style deterministic rule for volume copies across failure domains,
//!   and [`rebalance`]: a bounded-moves rebalancing plan.
//!
//! Design, formulation and decisions: `docs/placement.md`.

pub mod admit;
pub mod bandwidth;
pub mod copies;
pub mod error;
mod explain;
mod free;
mod greedy;
pub mod inventory;
mod milp;
pub mod model;
mod plan;
pub mod rebalance;
mod slots;
pub mod solver;
mod span;
mod validate;

pub use error::{BandwidthError, CopyError, LoadError, ModelError};
pub use explain::Explanation;
pub use model::{Cluster, GpuGroup, Job, JobKey, Node, Part, Placement, StorageDevice};
pub use plan::{plan, Method, Move, Plan, PlanOptions, Unplaced};
pub use solver::SOLVER;
