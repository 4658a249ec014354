//! The pool's metadata as a pure state machine: volumes, snapshots, the tree of mapping layers,
//! and the operations that change them. No I/O happens here: the pool applies an [`Op`] to the
//! [`State`] and, separately, appends the same op to the journal, so replaying the journal after
//! a restart runs exactly the code that ran live.
//!
//! # The layer tree
//! A volume's data is a chain of *layers*. Each layer maps virtual block numbers to entries:
//! a physical block with its CRC-32C, or a zero tombstone that hides whatever lies beneath. A
//! read walks the chain from the volume's top layer towards the root and takes the first entry
//! it finds; none at all reads as zeros.
//! - Only a volume's top layer is ever written. A snapshot freezes the top layer and gives the
//!   volume a fresh empty one above it: O(1) whatever the volume's size.
//! - A clone is a new volume whose empty top layer sits on the snapshot's layer; layers form a
//!   tree, since one layer can carry both the volume's chain and clones.
//! - Every physical block is owned by exactly one layer (one entry anywhere references it). So
//!   no reference counts are needed, and freeing is exact: a block is freed when its entry is
//!   overwritten or trimmed in the top layer, when an unowned layer with no children is dropped,
//!   or when it is shadowed during a merge.
//! - A layer nobody owns (its snapshot was deleted, or its volume rolled back or deleted) is
//!   collected: with no children it is dropped, with one child it is merged into that child,
//!   with several (a snapshot with clones) it stays until only one remains.
//!
//! Invariants checked by the tests: every owned layer's owner points back to it; a layer's
//! `children` are exactly the layers whose parent it is; `mapped` and `entries` equal the counts
//! of entries; no physical block appears twice.
//!
//! # Files
//! - `ids.rs`: the vocabulary (volume, snapshot, layer and key ids, physical addresses, names,
//!   the wrapped-key record).
//! - `state.rs`: the [`State`] and its transitions ([`State::apply`], used live and in replay).
//! - `op.rs`: the journal ops and their byte encoding.
//! - `checkpoint.rs`: the checkpoint codec (the whole state as bytes).
//!
//! A map entry ([`Entry`]) and the tombstone address ([`ZERO`]) belong to `crate::map` and are
//! re-exported here. The files below import each other directly, never through this module.

mod checkpoint;
mod ids;
mod op;
mod state;

pub use crate::error::ApplyError;
pub use crate::map::{Entry, ZERO};
pub use checkpoint::STATE_VERSION;
pub use ids::{
    paddr, split_paddr, KeyId, KeyRecord, LayerId, SnapshotId, VolumeId, MAX_MASTER_ID, MAX_NAME,
    MAX_WRAPPED, PBLOCK_SHIFT,
};
pub use op::{encode_map_run, Op};
pub use state::{DeviceMeta, Layer, Owner, SnapshotMeta, State, VolumeMeta};
