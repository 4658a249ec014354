//! Typed errors per operation family. The engine never fails a plan because a solver failed
//! (it falls back to the greedy answer); it fails only on input that breaks the model's
//! invariants, and then it changes nothing.

use thiserror::Error;

use crate::model::JobKey;

/// The model handed in breaks an invariant of [`crate::model`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// Two nodes share a name.
    #[error("duplicate node {0}")]
    DuplicateNode(String),
    /// Two jobs share a key.
    #[error("duplicate job {0}")]
    DuplicateJob(JobKey),
    /// A placement names a node that does not exist.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// A node's description is inconsistent.
    #[error("node {0}: {1}")]
    BadNode(String, &'static str),
    /// A running placement is inconsistent.
    #[error("placement of {0}: {1}")]
    BadPlacement(JobKey, &'static str),
    /// The running placements take more than a node has.
    #[error("node {0} is overcommitted by its running jobs")]
    Overcommitted(String),
}

/// Reading an inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    /// Not valid YAML of the expected shape.
    #[error("inventory is not valid: {0}")]
    Syntax(String),
    /// Valid YAML that breaks a model invariant.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Placing volume copies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CopyError {
    /// Fewer distinct failure domains with room than copies wanted.
    #[error(
        "{wanted} copies wanted, only {found} failure domains have a {class} device with room"
    )]
    NotEnoughDomains {
        /// Copies asked for.
        wanted: usize,
        /// Domains that could take one.
        found: usize,
        /// Device class asked for.
        class: String,
    },
    /// Two devices share a name on one node.
    #[error("duplicate device {0}")]
    DuplicateDevice(String),
}

/// Sharing bandwidth.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BandwidthError {
    /// The input is malformed (mismatched lengths, negative or non-finite figures, a flow on a
    /// link that does not exist).
    #[error("invalid bandwidth model: {0}")]
    Invalid(String),
    /// The guarantees cannot all be met (or the shares cannot add up to one).
    #[error("infeasible: {0}")]
    Infeasible(String),
}
