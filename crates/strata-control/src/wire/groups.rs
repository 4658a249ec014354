//! Checkpoint groups: snapshots of several volumes at one instant.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object};
use utoipa::ToSchema;

use super::bounds::*;
use super::volumes::Volume;
use super::Check;
use crate::error::ControlError;
use crate::model;

/// Most groups a series keeps.
pub const KEEP_MAX: u64 = 10_000;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn volume_ids() -> Array {
    ArrayBuilder::new()
        .items(name())
        .min_items(Some(1))
        .max_items(Some(crate::controller::GROUP_MAX_MEMBERS))
        .build()
}
fn keep() -> Object {
    int(1, KEEP_MAX, true)
}

/// `POST /v1/snapshot-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotGroup {
    /// Group name, unique within the tenant; also each member snapshot's name.
    #[schema(schema_with = name)]
    pub name: String,
    /// Ids of the volumes, each once, all of one tenant.
    #[schema(schema_with = volume_ids)]
    pub volumes: Vec<String>,
    /// The series the group belongs to, and its retention.
    #[schema(nullable)]
    pub series: Option<Series>,
}

/// A series of checkpoint groups (a job's hourly checkpoints, say) and how many it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Series name.
    #[schema(schema_with = name)]
    pub name: String,
    /// Keep the newest this many groups of the series; older ones are deleted once the new
    /// one is taken. Absent: keep all.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = keep)]
    pub keep: Option<u64>,
}

impl Check for CreateSnapshotGroup {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        let max = crate::controller::GROUP_MAX_MEMBERS;
        if self.volumes.is_empty() || self.volumes.len() > max {
            return Err(ControlError::invalid(
                "volumes",
                format!("1 to {max} volumes"),
            ));
        }
        for v in &self.volumes {
            check_text("volumes", v, NAME_PATTERN)?;
        }
        if let Some(s) = &self.series {
            check_text("series.name", &s.name, NAME_PATTERN)?;
            if let Some(k) = s.keep {
                if !(1..=KEEP_MAX).contains(&k) {
                    return Err(ControlError::invalid(
                        "series.keep",
                        format!("1 to {KEEP_MAX}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `POST /v1/snapshot-groups/{id}/clone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneGroup {
    /// Each clone is named `PREFIX-VOLUME`.
    #[schema(schema_with = name)]
    pub prefix: String,
}

impl Check for CloneGroup {
    fn check(&self) -> Result<(), ControlError> {
        check_text("prefix", &self.prefix, NAME_PATTERN)
    }
}

/// The query of `GET /v1/snapshot-groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGroups {
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl Check for ListGroups {
    fn check(&self) -> Result<(), ControlError> {
        self.tenant
            .as_deref()
            .map_or(Ok(()), |t| check_text("tenant", t, NAME_PATTERN))
    }
}

/// One volume's snapshot in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupMember {
    /// Volume id.
    pub volume: String,
    /// Snapshot id.
    pub snapshot: String,
}

/// A checkpoint group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotGroup {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Series, if any.
    #[schema(nullable)]
    pub series: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Taken (false only while being taken).
    pub ready: bool,
    /// Its snapshots.
    pub members: Vec<GroupMember>,
    /// Id of the snapshot schedule that took it, if any.
    #[serde(default)]
    #[schema(nullable)]
    pub schedule: Option<String>,
}

impl From<model::SnapshotGroup> for SnapshotGroup {
    fn from(g: model::SnapshotGroup) -> Self {
        SnapshotGroup {
            id: g.id,
            tenant: g.tenant,
            name: g.name,
            series: g.series,
            created: g.created,
            ready: g.ready,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    volume: m.volume,
                    snapshot: m.snapshot,
                })
                .collect(),
            schedule: g.schedule,
        }
    }
}

/// Groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotGroupList {
    /// Groups.
    pub items: Vec<SnapshotGroup>,
}

/// The volumes a group's clone made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClonedVolumes {
    /// New volumes, in the group's member order.
    pub items: Vec<Volume>,
}
