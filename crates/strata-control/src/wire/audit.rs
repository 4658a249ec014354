//! The audit log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;
use crate::model;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Time, seconds since the epoch.
    pub time: u64,
    /// Token id of the caller.
    pub actor: String,
    /// Tenant acted on, if any.
    pub tenant: Option<String>,
    /// What was done, e.g. `volume.create`.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// `ok` or the error code.
    pub outcome: String,
}

impl From<model::AuditEntry> for AuditEntry {
    fn from(e: model::AuditEntry) -> Self {
        AuditEntry {
            time: e.time,
            actor: e.actor,
            tenant: e.tenant,
            action: e.action,
            resource: e.resource,
            outcome: e.outcome,
        }
    }
}

/// Audit entries, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Entries.
    pub items: Vec<AuditEntry>,
}

/// The query of `GET /v1/audit`: the newest `limit` entries from `since` on, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAudit {
    /// At most this many entries (the newest).
    pub limit: Option<u64>,
    /// Only entries at or after this time, seconds since the epoch.
    pub since: Option<u64>,
}

impl Check for ListAudit {
    fn check(&self) -> Result<(), ControlError> {
        self.limit
            .map_or(Ok(()), |l| check_int("limit", l, 1, LIST_LIMIT_MAX))?;
        self.since
            .map_or(Ok(()), |t| check_int("since", t, 0, TIME_MAX))
    }
}
