//! Snapshots and clones.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;
use crate::model;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn request_id() -> Object {
    free_text(1, REQUEST_ID_MAX_LEN, true)
}

/// `POST /v1/volumes/{id}/snapshots` and `POST /v1/snapshots/{id}/clone`: the new name (a
/// clone is idempotent under `request_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewName {
    /// Name of the snapshot or the clone.
    #[schema(schema_with = name)]
    pub name: String,
    /// Client-chosen id making a clone idempotent.
    #[schema(schema_with = request_id)]
    pub request_id: Option<String>,
}

impl Check for NewName {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        if let Some(r) = &self.request_id {
            if r.is_empty() {
                return Err(ControlError::invalid("request_id", "1 to 128 characters"));
            }
            check_len("request_id", r, REQUEST_ID_MAX_LEN)?;
        }
        Ok(())
    }
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Volume id.
    pub volume: String,
    /// Name, unique within the volume.
    pub name: String,
    /// Size of the volume when taken.
    pub size: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Id of the checkpoint group it belongs to, if any.
    #[schema(nullable)]
    pub group: Option<String>,
    /// Id of the snapshot schedule that took it, if any (only its retention deletes it).
    #[serde(default)]
    #[schema(nullable)]
    pub schedule: Option<String>,
}

impl From<model::Snapshot> for Snapshot {
    fn from(s: model::Snapshot) -> Self {
        Snapshot {
            id: s.id,
            tenant: s.tenant,
            volume: s.volume,
            name: s.name,
            size: s.size,
            created: s.created,
            group: s.group,
            schedule: s.schedule,
        }
    }
}

/// A volume's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    /// Snapshots.
    pub items: Vec<Snapshot>,
}
