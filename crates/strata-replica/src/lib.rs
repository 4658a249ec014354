//! Strata's replication layer: a volume kept as N copies (1 to 3) on independent failure
//! domains, above the storage engine.
//!
//! Each copy is a [`CopyTarget`]: today a volume of an engine pool of its own ([`LocalCopy`],
//! one pool per device, so a lost device loses only its copies), or a remote node's export
//! ([`WriteBehind`] over it, so a write does not wait for the network round trip).
//! The layer never reaches into a copy's map or format. A [`ReplicaSet`] acknowledges a write
//! when every healthy copy has it, serves reads from one healthy copy with failover and read
//! repair, moves copies through an explicit state machine ([`state`]) whose transitions it
//! records as events, tracks the regions a faulted copy misses, resyncs them in a driven job,
//! and keeps a write-intent log ([`intent`]) so the copies agree again after a crash.
//!
//! The design, the state diagram and the intent log's bytes are in `docs/replicas.md`.

pub mod behind;
pub mod error;
pub mod intent;
pub mod local;
pub mod set;
pub mod state;
pub mod target;
pub mod types;

pub use behind::WriteBehind;
pub use error::ReplicaError;
pub use intent::IntentError;
pub use intent::{CopyFlag, FileIntentLog, IntentLog, IntentRecord, MemIntentLog};
pub use local::LocalCopy;
pub use set::{CopyInfo, CopyStats, ReplicaSet, ResyncProgress};
pub use state::{Cause, CopyState, Event, StateKind};
pub use target::{CopyError, CopyTarget};
pub use types::{RegionSet, MAX_COPIES, MAX_READ_ERRORS, REGION_SIZE};
