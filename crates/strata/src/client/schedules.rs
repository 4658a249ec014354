//! `strata snapshot schedule ...`: snapshot schedules. Every interval a schedule takes a
//! snapshot of its volume (or a checkpoint group of its several volumes, at one instant),
//! named `NAME-YYYYMMDDTHHMMSSZ`, and deletes what it took beyond the newest `--keep`.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use strata_control::wire;

use super::{body, enc, Client, Output};

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Makes a schedule: every --every, a snapshot of the volume named NAME-YYYYMMDDTHHMMSSZ
    /// (UTC), or with several --volume a checkpoint group of them at one instant. The newest
    /// --keep it took are kept; older ones it took are deleted after each run (snapshots
    /// made by hand, never). The first run is one interval from now.
    Create {
        /// Schedule name, unique within the tenant (at most 111 bytes).
        name: String,
        /// A volume name; repeat for a checkpoint group of several (all of one tenant).
        #[arg(long = "volume", value_name = "VOLUME", required = true)]
        volumes: Vec<String>,
        /// Time between runs: 30s, 15m, 1h, 1d (1 s to 999 days).
        #[arg(long, value_name = "INTERVAL")]
        every: String,
        /// How many of the snapshots (or groups) it took are kept, newest first (1 to 10000).
        #[arg(long, value_name = "N")]
        keep: u64,
        /// Make it paused: it takes nothing until `set NAME --paused false`.
        #[arg(long)]
        paused: bool,
        /// Tenant of the volumes (admins, when a name is in several tenants).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Lists schedules with their last and next runs.
    List {
        /// Only this tenant's (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Shows a schedule: its volumes, last run, next run, last error and count taken.
    Show {
        /// Schedule name (or id).
        name: String,
        /// Tenant of the schedule (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Changes a schedule's interval, retention or pause; only what is given changes. A new
    /// interval moves the next run to one new interval after the last; a new --keep applies
    /// at the next run; unpaused, it runs at most once for what it missed.
    Set {
        /// Schedule name (or id).
        name: String,
        /// Time between runs: 30s, 15m, 1h, 1d.
        #[arg(long, value_name = "INTERVAL")]
        every: Option<String>,
        /// How many of what it took are kept.
        #[arg(long, value_name = "N")]
        keep: Option<u64>,
        /// Pause (true) or resume (false).
        #[arg(long, value_name = "true|false")]
        paused: Option<bool>,
        /// Tenant of the schedule (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Deletes a schedule (after its run in flight, if any). The snapshots it took stay, and
    /// are then like snapshots made by hand.
    Delete {
        /// Schedule name (or id).
        name: String,
        /// Tenant of the schedule (admins).
        #[arg(long)]
        tenant: Option<String>,
    },
}

const COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("TENANT", "tenant"),
    ("VOLUMES", "volume_names"),
    ("EVERY", "interval"),
    ("KEEP", "keep"),
    ("PAUSED", "paused"),
    ("TAKEN", "taken"),
    ("LAST RUN (UTC)", "last_run:seconds"),
    ("NEXT RUN (UTC)", "next_run:seconds"),
    ("LAST ERROR", "last_error"),
];

impl Client {
    /// `strata snapshot schedule ...`.
    pub fn schedule(&self, cmd: ScheduleCmd) -> Result<()> {
        let v = match cmd {
            ScheduleCmd::Create {
                name,
                volumes,
                every,
                keep,
                paused,
                tenant,
            } => {
                let ids = volumes
                    .iter()
                    .map(|v| self.volume_id(v, tenant.as_deref()))
                    .collect::<Result<Vec<_>>>()?;
                self.req(
                    "POST",
                    "/v1/snapshot-schedules",
                    body(&wire::CreateSnapshotSchedule {
                        name,
                        volumes: ids,
                        interval: every,
                        keep,
                        paused,
                    }),
                )?
            }
            ScheduleCmd::List { tenant } => {
                let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(&t)));
                let mut v = self.req("GET", &format!("/v1/snapshot-schedules{q}"), None)?;
                if self.out == Output::Table {
                    for s in v["items"].as_array_mut().into_iter().flatten() {
                        self.name_volumes(s);
                    }
                }
                return self.print(&v, COLS);
            }
            ScheduleCmd::Show { name, tenant } => {
                let id = self.schedule_id(&name, tenant.as_deref())?;
                self.req("GET", &format!("/v1/snapshot-schedules/{}", enc(&id)), None)?
            }
            ScheduleCmd::Set {
                name,
                every,
                keep,
                paused,
                tenant,
            } => {
                if every.is_none() && keep.is_none() && paused.is_none() {
                    bail!("invalid_argument: nothing to set: give --every, --keep or --paused");
                }
                let id = self.schedule_id(&name, tenant.as_deref())?;
                self.req(
                    "PATCH",
                    &format!("/v1/snapshot-schedules/{}", enc(&id)),
                    body(&wire::SnapshotSchedulePatch {
                        interval: every,
                        keep,
                        paused,
                    }),
                )?
            }
            ScheduleCmd::Delete { name, tenant } => {
                let id = self.schedule_id(&name, tenant.as_deref())?;
                self.req(
                    "DELETE",
                    &format!("/v1/snapshot-schedules/{}", enc(&id)),
                    None,
                )?;
                return self.done(&format!("snapshot schedule {name} deleted"));
            }
        };
        let mut v = v;
        if self.out == Output::Table {
            self.name_volumes(&mut v);
        }
        self.print(&v, COLS)
    }

    /// A schedule's id from its name (in `tenant`, or the caller's) or its id.
    pub(super) fn schedule_id(&self, name: &str, tenant: Option<&str>) -> Result<String> {
        let q = tenant.map_or(String::new(), |t| format!("?tenant={}", enc(t)));
        let v = self.req("GET", &format!("/v1/snapshot-schedules{q}"), None)?;
        let found: Vec<&Value> = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["name"] == name || s["id"] == name)
                    .collect()
            })
            .unwrap_or_default();
        match found.len() {
            0 => bail!("snapshot_schedule_not_found: snapshot schedule {name} not found"),
            1 => Ok(found[0]["id"].as_str().unwrap_or_default().to_string()),
            _ => {
                bail!("snapshot schedule {name} exists in several tenants: name one with --tenant")
            }
        }
    }

    /// The names of the schedules of `tenant` by id (for `snapshot list`); empty when they
    /// cannot be read.
    pub(super) fn schedule_names(
        &self,
        tenant: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.req(
            "GET",
            &format!("/v1/snapshot-schedules?tenant={}", enc(tenant)),
            None,
        )
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
    }

    /// Adds `volume_names` (the volumes' names, comma-separated) to a shown schedule.
    fn name_volumes(&self, s: &mut Value) {
        let names: Vec<String> = s["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|id| {
                let id = id.as_str().unwrap_or_default();
                self.req("GET", &format!("/v1/volumes/{}", enc(id)), None)
                    .ok()
                    .and_then(|v| v["name"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{id} (gone)"))
            })
            .collect();
        s["volume_names"] = json!(names.join(","));
    }
}
