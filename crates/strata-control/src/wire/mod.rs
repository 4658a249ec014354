//! The REST API's contract: every request and response body, query and error of `/v1`, one
//! module per resource. The server (`api.rs`) parses and answers with these types and the CLI
//! (`strata/src/client.rs`) sends and reads them, so a renamed field fails to compile on both
//! sides; `openapi.rs` generates the OpenAPI document from them.
//!
//! # Invariants
//! - Every numeric request field has a lower and an upper bound, named in `bounds.rs`, declared
//!   in the document and enforced by `check` before the controller runs (`invalid_argument`,
//!   naming the field).
//! - These types are the contract, not the store's records (`model.rs`): a record may grow a
//!   field without changing the API; the `From` conversions are the one place they meet.

pub mod attachments;
pub mod audit;
pub mod balancers;
pub mod bounds;
pub mod error;
pub mod events;
pub mod groups;
pub mod jobs;
pub mod latency;
pub mod networks;
pub mod nodes;
pub mod openapi;
pub mod patch;
pub mod pools;
pub mod rebalance;
pub mod schedules;
pub mod shares;
pub mod size;
pub mod snapshots;
pub mod switches;
pub mod tenants;
pub mod tokens;
pub mod volumes;
pub mod whole;

pub use attachments::*;
pub use audit::*;
pub use balancers::*;
pub use error::*;
pub use events::*;
pub use groups::*;
pub use jobs::*;
pub use latency::*;
pub use networks::*;
pub use nodes::*;
pub use pools::*;
pub use rebalance::*;
pub use schedules::*;
pub use shares::*;
pub use size::*;
pub use snapshots::*;
pub use switches::*;
pub use tenants::*;
pub use tokens::*;
pub use volumes::*;

use crate::error::ControlError;

/// `#[serde(deserialize_with = "super::object")]` for a nested request struct: only a JSON
/// object (serde would also read a struct from an array of its fields in order, which the
/// schema's `type: object` refuses).
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize;
    let m = serde_json::Map::deserialize(d)?;
    serde_json::from_value(serde_json::Value::Object(m)).map_err(serde::de::Error::custom)
}

/// A request whose fields are checked against their declared bounds before use.
pub trait Check {
    /// Refuses a field outside its declared bounds.
    fn check(&self) -> Result<(), ControlError>;
}
