//! Snapshot schedules: a snapshot of one volume, or a checkpoint group of several, every
//! interval, keeping the newest N the schedule took.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::controller::{
    interval_text, NewSchedule, SchedulePatch, INTERVAL_MAX, INTERVAL_MIN, SCHEDULE_KEEP_MAX,
};
use crate::error::ControlError;
use crate::model;

/// An interval: a count of seconds, minutes, hours or days. It only spells intervals from
/// 1 s to 999 days: up to 9,999,999 s, 999,999 min, 9,999 h, 999 d.
pub const INTERVAL_PATTERN: &str =
    "^([1-9][0-9]{0,6}s|[1-9][0-9]{0,5}m|[1-9][0-9]{0,3}h|[1-9][0-9]{0,2}d)$";
/// Longest interval text (`9999999s`).
pub const INTERVAL_MAX_LEN: usize = 8;
/// A schedule's name: [`NAME_PATTERN`] cut to 111 bytes, so that its snapshots' names
/// (`NAME-YYYYMMDDTHHMMSSZ`) are names too.
pub const SCHEDULE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,110}$";
/// Longest schedule name, in bytes.
pub const SCHEDULE_NAME_LEN: usize = crate::controller::SCHEDULE_NAME_MAX_LEN;

fn name() -> Object {
    text(SCHEDULE_NAME_PATTERN, SCHEDULE_NAME_LEN, false)
}
fn volume_ids() -> Array {
    ArrayBuilder::new()
        .items(text(NAME_PATTERN, NAME_MAX_LEN, false))
        .min_items(Some(1))
        .max_items(Some(crate::controller::GROUP_MAX_MEMBERS))
        .build()
}
fn interval() -> Object {
    text(INTERVAL_PATTERN, INTERVAL_MAX_LEN, false)
}
fn keep() -> Object {
    int(1, SCHEDULE_KEEP_MAX, false)
}
fn boolean() -> Object {
    ObjectBuilder::new().schema_type(Type::Boolean).build()
}

/// `#[serde(default, deserialize_with = "present")]`: absent is `None`, a value `Some`, and
/// `null` is refused (the field is not nullable: there is nothing to remove).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// [`present`] for an integer (whole floats included, as `whole::int`).
fn present_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    super::whole::int(d).map(Some)
}

/// Parses a checked interval text into seconds.
pub fn parse_interval(field: &'static str, s: &str) -> Result<u64, ControlError> {
    check_len(field, s, INTERVAL_MAX_LEN)?;
    check_text(field, s, INTERVAL_PATTERN)?;
    let secs = crate::controller::parse_duration(s)
        .ok_or_else(|| ControlError::invalid(field, format!("{s:?} is not an interval")))?;
    check_int(field, secs, INTERVAL_MIN, INTERVAL_MAX)?;
    Ok(secs)
}

/// `POST /v1/snapshot-schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotSchedule {
    /// Name, unique within the tenant; its snapshots are named `NAME-YYYYMMDDTHHMMSSZ` (UTC).
    #[schema(schema_with = name)]
    pub name: String,
    /// Ids of the volumes, each once, all of one tenant: one volume takes snapshots, several
    /// take checkpoint groups (one instant for all).
    #[schema(schema_with = volume_ids)]
    pub volumes: Vec<String>,
    /// Time between runs: `30s`, `15m`, `1h`, `1d` (1 s to 999 days).
    #[schema(schema_with = interval)]
    pub interval: String,
    /// How many of the snapshots (or groups) it took are kept, newest first; older ones it
    /// took are deleted after each run. Snapshots made by hand are never touched.
    #[serde(deserialize_with = "super::whole::int")]
    #[schema(schema_with = keep)]
    pub keep: u64,
    /// Made paused (it takes nothing until unpaused).
    #[serde(default)]
    pub paused: bool,
}

impl Check for CreateSnapshotSchedule {
    fn check(&self) -> Result<(), ControlError> {
        check_len("name", &self.name, SCHEDULE_NAME_LEN)?;
        check_text("name", &self.name, SCHEDULE_NAME_PATTERN)?;
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
        parse_interval("interval", &self.interval)?;
        check_int("keep", self.keep, 1, SCHEDULE_KEEP_MAX)
    }
}

impl CreateSnapshotSchedule {
    /// What the controller is asked.
    pub fn into_new(self) -> Result<NewSchedule, ControlError> {
        Ok(NewSchedule {
            interval: parse_interval("interval", &self.interval)?,
            name: self.name,
            volumes: self.volumes,
            keep: self.keep,
            paused: self.paused,
        })
    }
}

/// `PATCH /v1/snapshot-schedules/{id}`: changes only the fields given; an absent field keeps
/// its value (none of them is nullable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSchedulePatch {
    /// Time between runs (`15m`, `1h`, ...); the next run moves to one new interval after
    /// the last (never into the past).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = interval)]
    pub interval: Option<String>,
    /// How many are kept (applied at the next run).
    #[serde(
        default,
        deserialize_with = "present_int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = keep)]
    pub keep: Option<u64>,
    /// Paused (takes nothing) or not; unpaused, it runs at most once for what it missed.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = boolean)]
    pub paused: Option<bool>,
}

impl Check for SnapshotSchedulePatch {
    fn check(&self) -> Result<(), ControlError> {
        self.change().map(drop)
    }
}

impl SnapshotSchedulePatch {
    /// The change, checked against the declared bounds.
    pub fn change(&self) -> Result<SchedulePatch, ControlError> {
        if let Some(k) = self.keep {
            check_int("keep", k, 1, SCHEDULE_KEEP_MAX)?;
        }
        Ok(SchedulePatch {
            interval: self
                .interval
                .as_deref()
                .map(|i| parse_interval("interval", i))
                .transpose()?,
            keep: self.keep,
            paused: self.paused,
        })
    }
}

/// The query of `GET /v1/snapshot-schedules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSchedules {
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl Check for ListSchedules {
    fn check(&self) -> Result<(), ControlError> {
        self.tenant
            .as_deref()
            .map_or(Ok(()), |t| check_text("tenant", t, NAME_PATTERN))
    }
}

/// A snapshot schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotSchedule {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Volume ids: one (snapshots) or several (checkpoint groups).
    pub volumes: Vec<String>,
    /// Time between runs, in its largest unit (`1h`, `90m`).
    pub interval: String,
    /// The same, in seconds.
    pub interval_seconds: u64,
    /// How many of what it took are kept.
    pub keep: u64,
    /// Paused: takes nothing.
    pub paused: bool,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// When it runs next (if not paused), seconds since the epoch.
    pub next_run: u64,
    /// When it last ran.
    #[schema(nullable)]
    pub last_run: Option<u64>,
    /// Why its last run, or that run's retention, failed; null after a clean run.
    #[schema(nullable)]
    pub last_error: Option<String>,
    /// Snapshots (or groups) it took, in all.
    pub taken: u64,
}

impl From<model::SnapshotSchedule> for SnapshotSchedule {
    fn from(s: model::SnapshotSchedule) -> Self {
        SnapshotSchedule {
            id: s.id,
            tenant: s.tenant,
            name: s.name,
            volumes: s.volumes,
            interval: interval_text(s.interval),
            interval_seconds: s.interval,
            keep: s.keep,
            paused: s.paused,
            created: s.created,
            next_run: s.next_run,
            last_run: s.last_run,
            last_error: s.last_error,
            taken: s.taken,
        }
    }
}

/// Schedules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotScheduleList {
    /// Schedules.
    pub items: Vec<SnapshotSchedule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_pattern_spells_only_intervals_in_bounds() {
        for (text, secs) in [
            ("1s", 1),
            ("9999999s", 9_999_999),
            ("999999m", 59_999_940),
            ("9999h", 35_996_400),
            ("999d", INTERVAL_MAX),
            ("15m", 900),
        ] {
            assert_eq!(parse_interval("interval", text).unwrap(), secs, "{text}");
        }
        for bad in [
            "0s",
            "0",
            "1",
            "10000000s",
            "1000d",
            "1w",
            "1h30m",
            "01h",
            "-1s",
            "",
        ] {
            assert!(parse_interval("interval", bad).is_err(), "{bad}");
        }
        // What the API writes back is always input it takes.
        for secs in [1, 59, 60, 5400, 86_400, 9_999_999, INTERVAL_MAX] {
            let t = interval_text(secs);
            assert_eq!(parse_interval("interval", &t).unwrap(), secs, "{t}");
        }
    }

    #[test]
    fn bodies_parse_with_their_bounds_and_a_patch_refuses_null() {
        let ok: CreateSnapshotSchedule = serde_json::from_str(
            r#"{"name":"hourly","volumes":["v1"],"interval":"1h","keep":24.0}"#,
        )
        .unwrap();
        ok.check().unwrap();
        let n = ok.into_new().unwrap();
        assert_eq!((n.interval, n.keep, n.paused), (3600, 24, false));
        for bad in [
            r#"{"name":"h","volumes":["v1"],"interval":"0s","keep":1}"#,
            r#"{"name":"h","volumes":["v1"],"interval":"1h","keep":0}"#,
            r#"{"name":"h","volumes":[],"interval":"1h","keep":1}"#,
        ] {
            let b: CreateSnapshotSchedule = serde_json::from_str(bad).unwrap();
            assert!(
                matches!(b.check(), Err(ControlError::Invalid { .. })),
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"name":"{}","volumes":["v"],"interval":"1h","keep":1}}"#,
            "n".repeat(112)
        );
        let b: CreateSnapshotSchedule = serde_json::from_str(&long).unwrap();
        assert!(b.check().is_err());
        let p: SnapshotSchedulePatch = serde_json::from_str(r#"{"keep": 3}"#).unwrap();
        let c = p.change().unwrap();
        assert_eq!((c.interval, c.keep, c.paused), (None, Some(3), None));
        assert!(serde_json::from_str::<SnapshotSchedulePatch>(r#"{"paused": null}"#).is_err());
        assert!(serde_json::from_str::<SnapshotSchedulePatch>(r#"{"keep": null}"#).is_err());
        assert!(serde_json::from_str::<SnapshotSchedulePatch>(r#"{"every": "1h"}"#).is_err());
        let p: SnapshotSchedulePatch = serde_json::from_str(r#"{"keep": 0}"#).unwrap();
        assert!(p.check().is_err());
        assert_eq!(
            serde_json::to_string(&SnapshotSchedulePatch {
                paused: Some(true),
                ..Default::default()
            })
            .unwrap(),
            r#"{"paused":true}"#
        );
    }
}
