//! The event journal (`GET /v1/events`): what happened to the platform's objects, in the
//! user's terms, newest first; with a cursor, a long poll for what happens next.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;

/// Longest a follow request waits for a new event, seconds.
pub const EVENT_WAIT_MAX: u64 = 5;

/// Pattern of an event type filter: a type (`device.faulted`) or its kind (`device`).
pub const EVENT_TYPE_PATTERN: &str = "^[a-z][a-z_]{0,31}(\\.[a-z][a-z_]{0,47})?$";

/// Longest event type filter.
pub const EVENT_TYPE_MAX_LEN: usize = 80;

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Work done, things back to normal.
    Info,
    /// Worth a look: degraded, throttled, refused, nearly full.
    Warning,
    /// Something failed: a device faulted, a copy lost, blocks not repaired.
    Error,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Position in the journal: grows by one per event, never reused (the follow cursor).
    pub seq: u64,
    /// Time, seconds since the epoch.
    pub time: u64,
    /// What happened, `KIND.WHAT` (e.g. `device.faulted`, `volume.rebuild_started`).
    #[serde(rename = "type")]
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// The kind of object it happened to: `device`, `volume`, `pool`, `tenant`, `node`.
    pub object_kind: String,
    /// The object: a device id, a volume id, a pool, tenant or node name.
    pub object: String,
    /// The object's name where it differs from its id (a volume's name).
    pub name: Option<String>,
    /// The tenant the object belongs to (none for devices, pools, nodes).
    pub tenant: Option<String>,
    /// What happened, for a person.
    pub message: String,
}

/// Events, and the cursor to follow from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Events: newest first, or with `after`, oldest first (in the order they happened).
    pub items: Vec<Event>,
    /// The journal's newest position when answered (matching or not): pass it as `after` to
    /// get only what happens next.
    pub cursor: u64,
}

/// The query of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEvents {
    /// At most this many events (default 100).
    pub limit: Option<u64>,
    /// Only events at or after this time, seconds since the epoch.
    pub since: Option<u64>,
    /// Only events of this type (`device.faulted`) or kind (`device`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only this tenant's events (admins; others see only their own anyway).
    pub tenant: Option<String>,
    /// Follow: only events after this position, oldest first.
    pub after: Option<u64>,
    /// With `after`: wait up to this many seconds for one to happen (long poll).
    pub wait: Option<u64>,
}

impl Check for ListEvents {
    fn check(&self) -> Result<(), ControlError> {
        self.limit
            .map_or(Ok(()), |l| check_int("limit", l, 1, LIST_LIMIT_MAX))?;
        self.since
            .map_or(Ok(()), |t| check_int("since", t, 0, TIME_MAX))?;
        self.after
            .map_or(Ok(()), |t| check_int("after", t, 0, u64::MAX >> 1))?;
        self.wait
            .map_or(Ok(()), |t| check_int("wait", t, 0, EVENT_WAIT_MAX))?;
        if let Some(k) = &self.kind {
            check_len("type", k, EVENT_TYPE_MAX_LEN)?;
            check_text("type", k, EVENT_TYPE_PATTERN)?;
        }
        if let Some(t) = &self.tenant {
            check_len("tenant", t, TENANT_NAME_MAX_LEN)?;
            check_text("tenant", t, TENANT_NAME_PATTERN)?;
        }
        Ok(())
    }
}

impl From<crate::controller::Severity> for Severity {
    fn from(s: crate::controller::Severity) -> Self {
        use crate::controller::Severity as S;
        match s {
            S::Info => Severity::Info,
            S::Warning => Severity::Warning,
            S::Error => Severity::Error,
        }
    }
}

impl From<crate::controller::EventRecord> for Event {
    fn from(e: crate::controller::EventRecord) -> Self {
        Event {
            seq: e.seq,
            time: e.time,
            kind: e.kind,
            severity: e.severity.into(),
            object_kind: e.object_kind,
            object: e.object,
            name: e.name,
            tenant: e.tenant,
            message: e.message,
        }
    }
}
