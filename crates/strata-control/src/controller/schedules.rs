//! Snapshot schedules: every `interval`, a snapshot of one volume, or a checkpoint group of
//! several (taken by `groups.rs`, so the group's crash consistency is the schedule's), named
//! `SCHEDULE-YYYYMMDDTHHMMSSZ`, and retention of the newest `keep` the schedule took. The
//! daemon's runner thread calls [`Controller::run_snapshot_schedules`] twice a second; what is
//! due at a time and what retention deletes are pure functions ([`due_at`], [`next_slot`],
//! [`beyond_keep`]), tested with fake time below.
//!
//! # Store layout
//! - `/snapshot-schedules/{tenant}/{id}`: a [`SnapshotSchedule`];
//! - `/snapshot-schedule-ids/{id}`: its tenant; `/snapshot-schedule-names/{tenant}/{name}`: its
//!   id (names are unique per tenant).
//!
//! # Invariants
//! - A schedule's volumes are volumes of its tenant, each once (1 to [`GROUP_MAX_MEMBERS`]);
//!   it counts against the tenant's `snapshot_schedules` quota, charged in the transaction
//!   that records it.
//! - A slot is claimed before it is taken: the runner moves `next_run` on with a comparison on
//!   the record's revision before it takes anything, so a slot is taken at most once (also by
//!   two daemons sharing a store), and a crash between the claim and the snapshot loses that
//!   slot, never repeats it.
//! - Missed slots are not caught up: a run at `now` moves `next_run` to the first slot of the
//!   cadence after `now` ([`next_slot`]), so a daemon that was down (or a schedule that was
//!   paused) takes at most one snapshot for what it missed, then keeps its cadence.
//! - Retention deletes only what this schedule took (the `schedule` field of the snapshot or
//!   group record): snapshots made by hand, other schedules' and a deleted schedule's are
//!   never touched. A snapshot open over NBD is kept past the count (the run says why in
//!   `last_error`); the engine keeps the blocks a clone shares, so a clone never loses data.
//! - A run that fails records `last_error`, and an event when the reason is new (not once per
//!   run: a schedule every second on a deleted volume is one event); other schedules run on.
//! - A change or delete of a schedule holds its run lock: once a pause has answered, no run of
//!   the schedule is in flight and none starts.

use std::collections::HashMap;
use std::sync::Arc;

use strata_state::Txn;

use super::auth::Principal;
use super::events::EventKind;
use super::store::*;
use super::tenants::{charge, Charge};
use super::{Controller, NewGroup, GROUP_MAX_MEMBERS};
use crate::error::{ControlError, Resource};
use crate::model::*;

/// Shortest interval, seconds. Snapshot names have second precision, so two runs of one
/// schedule never fall in one second; a second also lets tests run a schedule quickly. A
/// schedule that often is seldom what a user wants, but nothing breaks: retention keeps its
/// count bounded.
pub const INTERVAL_MIN: u64 = 1;

/// Longest interval: 999 days, the longest the interval text spells (`999d`).
pub const INTERVAL_MAX: u64 = 999 * 86_400;

/// Most snapshots (or groups) a schedule keeps.
pub const SCHEDULE_KEEP_MAX: u64 = 10_000;

/// Longest schedule name: a snapshot name (128 bytes) less the run's stamp
/// (`-YYYYMMDDTHHMMSSZ`, 17 bytes).
pub const SCHEDULE_NAME_MAX_LEN: usize = 111;

/// Tries of a compare-and-swap on a schedule record before giving up (only another process
/// sharing the store can make one lose: this one's writers hold the run lock).
const CAS_TRIES: usize = 16;

fn schedule_key(t: &str, id: &str) -> String {
    format!("/snapshot-schedules/{t}/{id}")
}
fn schedule_index(id: &str) -> String {
    format!("/snapshot-schedule-ids/{id}")
}
fn schedule_name_key(t: &str, name: &str) -> String {
    format!("/snapshot-schedule-names/{t}/{name}")
}

/// What `create_snapshot_schedule` is asked.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Name, unique within the tenant (the prefix of its snapshots' names).
    pub name: String,
    /// Volume ids, each once: one takes snapshots, several take checkpoint groups.
    pub volumes: Vec<String>,
    /// Seconds between runs.
    pub interval: u64,
    /// How many of its snapshots (or groups) are kept.
    pub keep: u64,
    /// Made paused.
    pub paused: bool,
}

/// What `update_snapshot_schedule` changes: the fields given, only.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulePatch {
    /// Seconds between runs.
    pub interval: Option<u64>,
    /// How many are kept.
    pub keep: Option<u64>,
    /// Paused or not.
    pub paused: Option<bool>,
}

/// Per schedule, the lock its runs and its changes hold.
#[derive(Debug, Default)]
pub(super) struct Runs {
    locks: parking_lot::Mutex<HashMap<String, Arc<parking_lot::Mutex<()>>>>,
}

impl Runs {
    fn of(&self, id: &str) -> Arc<parking_lot::Mutex<()>> {
        self.locks.lock().entry(id.to_string()).or_default().clone()
    }
    fn forget(&self, id: &str) {
        self.locks.lock().remove(id);
    }
}

// ----- the pure parts: what is due, where the cadence goes, what retention deletes -----

/// Whether schedule `s` runs at `now`: not paused, and its slot has come. A slot more than
/// one interval ahead cannot come from the cadence (the clock went back): it is due too, so
/// a clock set back never stops a schedule for as long as it jumped.
pub fn is_due(s: &SnapshotSchedule, now: u64) -> bool {
    !s.paused && (now >= s.next_run || s.next_run > now.saturating_add(s.interval))
}

/// The schedules due at `now`, the longest overdue first (then by id, so the order is total).
pub fn due_at(all: Vec<SnapshotSchedule>, now: u64) -> Vec<SnapshotSchedule> {
    let mut due: Vec<SnapshotSchedule> = all.into_iter().filter(|s| is_due(s, now)).collect();
    due.sort_by(|a, b| a.next_run.cmp(&b.next_run).then(a.id.cmp(&b.id)));
    due
}

/// Where the cadence `due + k * interval` goes after a run at `now` of the slot `due`: its
/// first slot after `now`, so slots missed while the daemon was down are skipped, not caught
/// up. A slot after `now` (the clock went back) starts the cadence again from `now`.
pub fn next_slot(due: u64, interval: u64, now: u64) -> u64 {
    let interval = interval.max(INTERVAL_MIN);
    if now < due {
        return now.saturating_add(interval);
    }
    let k = (now - due) / interval + 1;
    due.saturating_add(k.saturating_mul(interval))
}

/// Where `next_run` goes when the interval of `s` changes to `interval` at `now`: one new
/// interval after its last run (or its creation), never in the past, never in the second
/// of its last run (whose name is taken).
pub fn next_after_change(s: &SnapshotSchedule, interval: u64, now: u64) -> u64 {
    let base = s.last_run.unwrap_or(s.created);
    let floor = s.last_run.map_or(now, |l| now.max(l.saturating_add(1)));
    base.saturating_add(interval).max(floor)
}

/// What retention deletes of what a schedule took: all but the newest `keep`, by
/// `(creation time, name)` (names end in their UTC stamp, so they order as times do),
/// newest first.
pub fn beyond_keep<T>(mut taken: Vec<T>, keep: u64, order: impl Fn(&T) -> (u64, String)) -> Vec<T> {
    taken.sort_by_key(|t| std::cmp::Reverse(order(t)));
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    if taken.len() <= keep {
        return Vec::new();
    }
    taken.split_off(keep)
}

/// The name of what a run of schedule `name` at `t` takes: `NAME-YYYYMMDDTHHMMSSZ` (UTC).
pub fn snapshot_name(name: &str, t: u64) -> String {
    let (days, rem) = ((t / 86_400) as i64, t % 86_400);
    // Civil from days (proleptic Gregorian), as `client.rs` renders times.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{name}-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An interval as the API writes it: the largest unit that divides it (`1d`, `90m`, `45s`).
pub fn interval_text(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

fn check_bounds(interval: Option<u64>, keep: Option<u64>) -> Result<(), ControlError> {
    if let Some(i) = interval {
        if !(INTERVAL_MIN..=INTERVAL_MAX).contains(&i) {
            return Err(ControlError::invalid(
                "interval",
                format!("{i} s is out of range ({INTERVAL_MIN} s to {INTERVAL_MAX} s)"),
            ));
        }
    }
    if let Some(k) = keep {
        if !(1..=SCHEDULE_KEEP_MAX).contains(&k) {
            return Err(ControlError::invalid(
                "keep",
                format!("keep {k} is out of range (1 to {SCHEDULE_KEEP_MAX})"),
            ));
        }
    }
    Ok(())
}

impl Controller {
    /// Makes a snapshot schedule; its first run is one interval from now.
    pub fn create_snapshot_schedule(
        &self,
        p: &Principal,
        req: NewSchedule,
    ) -> Result<SnapshotSchedule, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        if req.name.len() > SCHEDULE_NAME_MAX_LEN {
            return Err(ControlError::invalid(
                "name",
                format!("a schedule's name has at most {SCHEDULE_NAME_MAX_LEN} bytes"),
            ));
        }
        check_bounds(Some(req.interval), Some(req.keep))?;
        if req.volumes.is_empty() || req.volumes.len() > GROUP_MAX_MEMBERS {
            return Err(ControlError::invalid(
                "volumes",
                format!("1 to {GROUP_MAX_MEMBERS} volumes"),
            ));
        }
        let mut vols: Vec<Volume> = Vec::with_capacity(req.volumes.len());
        for id in &req.volumes {
            let v = self
                .get_volume(p, id)
                .map_err(ControlError::named_by("volumes"))?;
            if vols.iter().any(|o| o.id == v.id) {
                return Err(ControlError::invalid(
                    "volumes",
                    format!("volume {} is named twice", v.name),
                ));
            }
            if vols.first().is_some_and(|f| f.tenant != v.tenant) {
                return Err(ControlError::invalid(
                    "volumes",
                    "the volumes of a schedule belong to one tenant",
                ));
            }
            vols.push(v);
        }
        let tenant = vols[0].tenant.clone();
        let created = now();
        let s = SnapshotSchedule {
            id: new_id(),
            tenant: tenant.clone(),
            name: req.name.clone(),
            volumes: vols.iter().map(|v| v.id.clone()).collect(),
            interval: req.interval,
            keep: req.keep,
            paused: req.paused,
            created,
            next_run: created.saturating_add(req.interval),
            last_run: None,
            last_error: None,
            taken: 0,
        };
        self.with_tenant(&tenant, |t| {
            let name_key = schedule_name_key(&tenant, &s.name);
            if self.store.get(&name_key)?.is_some() {
                return Err(ControlError::exists(Resource::SnapshotSchedule, &s.name));
            }
            let one = Charge {
                schedules: 1,
                ..Charge::default()
            };
            charge(t, Charge::default(), one)?;
            Ok((
                Txn::new()
                    .when(&name_key, 0)
                    .put(name_key.clone(), enc(&s.id))
                    .put(schedule_index(&s.id), enc(&tenant))
                    .put(schedule_key(&tenant, &s.id), enc(&s)),
                (),
            ))
        })?;
        Ok(s)
    }

    fn tenant_schedules(&self, tenant: &str) -> Result<Vec<SnapshotSchedule>, ControlError> {
        Ok(self
            .list::<SnapshotSchedule>(&format!("/snapshot-schedules/{tenant}/"), None, 0)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The schedules the caller may see (an admin may name a tenant).
    pub fn list_snapshot_schedules(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<SnapshotSchedule>, ControlError> {
        Self::require(p, Role::Reader)?;
        match (&p.role, &p.tenant, tenant) {
            (Role::Admin, _, None) => Ok(self
                .list::<SnapshotSchedule>("/snapshot-schedules/", None, 0)?
                .into_iter()
                .map(|(_, s)| s)
                .collect()),
            (_, _, Some(t)) => {
                self.visible_tenant(p, t)?;
                self.tenant_schedules(t)
            }
            (_, Some(t), None) => self.tenant_schedules(t),
            _ => Ok(Vec::new()),
        }
    }

    /// A schedule the caller may see, by id.
    pub fn get_snapshot_schedule(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<SnapshotSchedule, ControlError> {
        Self::require(p, Role::Reader)?;
        let nf = || ControlError::not_found(Resource::SnapshotSchedule, id);
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&schedule_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<SnapshotSchedule>(&schedule_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    /// Changes a schedule's interval, retention or pause: only the fields `patch` gives, on
    /// the fresh record. A new interval moves the next run to one new interval after the last
    /// (never into the past); a new `keep` applies at the next run.
    pub fn update_snapshot_schedule(
        &self,
        p: &Principal,
        id: &str,
        patch: SchedulePatch,
    ) -> Result<SnapshotSchedule, ControlError> {
        Self::require(p, Role::Member)?;
        check_bounds(patch.interval, patch.keep)?;
        let s = self.get_snapshot_schedule(p, id)?;
        let lock = self.schedules.of(&s.id);
        let _run = lock.lock();
        let key = schedule_key(&s.tenant, &s.id);
        for _ in 0..CAS_TRIES {
            let Some((mut cur, rev)) = self.get::<SnapshotSchedule>(&key)? else {
                return Err(ControlError::not_found(Resource::SnapshotSchedule, id));
            };
            if let Some(i) = patch.interval {
                cur.next_run = next_after_change(&cur, i, now());
                cur.interval = i;
            }
            if let Some(k) = patch.keep {
                cur.keep = k;
            }
            if let Some(paused) = patch.paused {
                cur.paused = paused;
            }
            if self
                .store
                .txn(Txn::new().when(&key, rev).put(key.clone(), enc(&cur)))?
                .succeeded
            {
                return Ok(cur);
            }
        }
        Err(ControlError::Busy(format!(
            "snapshot schedule {} changed meanwhile, retry",
            s.name
        )))
    }

    /// Deletes a schedule (after its run in flight, if any). The snapshots it took stay, as
    /// if made by hand: no retention touches them any more.
    pub fn delete_snapshot_schedule(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let s = self.get_snapshot_schedule(p, id)?;
        let lock = self.schedules.of(&s.id);
        let run = lock.lock();
        let key = schedule_key(&s.tenant, &s.id);
        self.with_tenant(&s.tenant, |t| {
            let Some((_, rev)) = self.get::<SnapshotSchedule>(&key)? else {
                return Ok((Txn::new(), ()));
            };
            let one = Charge {
                schedules: 1,
                ..Charge::default()
            };
            charge(t, one, Charge::default())?;
            Ok((
                Txn::new()
                    .when(&key, rev)
                    .delete(key.clone())
                    .delete(schedule_index(&s.id))
                    .delete(schedule_name_key(&s.tenant, &s.name)),
                (),
            ))
        })?;
        drop(run);
        self.schedules.forget(&s.id);
        Ok(())
    }

    /// The runner's tick: runs every schedule due now, one after the other (a failure of one
    /// is recorded on it and does not stop the others). Returns how many ran.
    pub fn run_snapshot_schedules(&self) -> usize {
        self.run_schedules_at(now())
    }

    fn run_schedules_at(&self, now: u64) -> usize {
        let all = match self.list::<SnapshotSchedule>("/snapshot-schedules/", None, 0) {
            Ok(all) => all.into_iter().map(|(_, s)| s).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "snapshot schedules not read");
                return 0;
            }
        };
        let mut ran = 0;
        for s in due_at(all, now) {
            ran += usize::from(self.run_schedule(&s, now));
        }
        ran
    }

    /// One run of `s` at `now`: claim the slot, take, apply retention, record the outcome.
    /// Whether it ran (it may have been paused, changed or deleted since it was listed).
    fn run_schedule(&self, listed: &SnapshotSchedule, now: u64) -> bool {
        let lock = self.schedules.of(&listed.id);
        let _run = lock.lock();
        let key = schedule_key(&listed.tenant, &listed.id);
        let Some(s) = self.claim(&key, now) else {
            return false;
        };
        let (took, error) = match self.take_scheduled(&s, now) {
            Ok(()) => (true, self.retain(&s)),
            Err(e) => (false, Some(e.to_string())),
        };
        let mut was = None;
        for _ in 0..CAS_TRIES {
            let Ok(Some((mut cur, rev))) = self.get::<SnapshotSchedule>(&key) else {
                break; // deleted meanwhile (by another process)
            };
            was = cur.last_error.clone();
            cur.taken += u64::from(took);
            cur.last_error = error.clone();
            match self
                .store
                .txn(Txn::new().when(&key, rev).put(key.clone(), enc(&cur)))
            {
                Ok(r) if r.succeeded => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "snapshot schedule's run not recorded");
                    break;
                }
            }
        }
        if let Some(e) = error.filter(|e| was.as_ref() != Some(e)) {
            tracing::warn!(schedule = %s.id, tenant = %s.tenant, error = %e, "snapshot schedule failed");
            self.event_full(
                EventKind::ScheduleFailed,
                EventKind::ScheduleFailed.severity(),
                &s.id,
                Some(s.name.clone()),
                Some(&s.tenant),
                format!("snapshot schedule {}: {e}", s.name),
            );
        }
        true
    }

    /// Claims the slot due at `now` of the schedule at `key`: `next_run` moved on and
    /// `last_run` set, compared on the record's revision. The claimed record, or `None` when
    /// it is not due (any more) or is gone.
    fn claim(&self, key: &str, now: u64) -> Option<SnapshotSchedule> {
        for _ in 0..CAS_TRIES {
            let (mut s, rev) = self.get::<SnapshotSchedule>(key).ok()??;
            if !is_due(&s, now) {
                return None;
            }
            s.next_run = next_slot(s.next_run, s.interval, now);
            s.last_run = Some(now);
            match self
                .store
                .txn(Txn::new().when(key, rev).put(key.to_string(), enc(&s)))
            {
                Ok(r) if r.succeeded => return Some(s),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "snapshot schedule's slot not claimed");
                    return None;
                }
            }
        }
        None
    }

    /// Takes the run's snapshot (one volume) or checkpoint group (several), as the
    /// schedule's tenant: a volume that left the tenant or was deleted is not found.
    fn take_scheduled(&self, s: &SnapshotSchedule, now: u64) -> Result<(), ControlError> {
        let p = Principal {
            token_id: format!("schedule:{}", s.id),
            tenant: Some(s.tenant.clone()),
            role: Role::Member,
        };
        let name = snapshot_name(&s.name, now);
        match s.volumes.as_slice() {
            [one] => self
                .take_snapshot(&p, one, &name, Some(s.id.as_str()))
                .map(drop),
            _ => self
                .take_snapshot_group(
                    &p,
                    NewGroup {
                        name,
                        volumes: s.volumes.clone(),
                        series: None,
                        keep: None,
                    },
                    Some(s.id.as_str()),
                )
                .map(drop),
        }
    }

    /// Deletes what `s` took beyond its newest `keep`; why it kept or failed to delete any,
    /// if it did (each goes on to the next).
    fn retain(&self, s: &SnapshotSchedule) -> Option<String> {
        let mut errors: Vec<String> = Vec::new();
        if s.volumes.len() == 1 {
            let taken: Vec<Snapshot> =
                match self.list::<Snapshot>(&format!("/snapshots/{}/", s.tenant), None, 0) {
                    Ok(l) => l
                        .into_iter()
                        .map(|(_, x)| x)
                        .filter(|x| {
                            x.schedule.as_deref() == Some(s.id.as_str()) && x.group.is_none()
                        })
                        .collect(),
                    Err(e) => return Some(format!("retention: {e}")),
                };
            for x in beyond_keep(taken, s.keep, |x| (x.created, x.name.clone())) {
                if self.snapshot_open(&x) {
                    errors.push(format!(
                        "snapshot {} is open over NBD: kept past keep {}",
                        x.name, s.keep
                    ));
                    continue;
                }
                if let Err(e) = self
                    .drop_snapshot_copies(&x)
                    .and_then(|()| self.forget_snapshot(&x))
                {
                    errors.push(format!("snapshot {} not deleted: {e}", x.name));
                }
            }
        } else {
            let taken: Vec<SnapshotGroup> = match self.tenant_groups(&s.tenant) {
                Ok(l) => l
                    .into_iter()
                    .filter(|g| g.ready && g.schedule.as_deref() == Some(s.id.as_str()))
                    .collect(),
                Err(e) => return Some(format!("retention: {e}")),
            };
            for g in beyond_keep(taken, s.keep, |g| (g.created, g.name.clone())) {
                let open = g.members.iter().any(|m| {
                    matches!(self.get::<Snapshot>(&snapshot_key(&g.tenant, &m.snapshot)),
                        Ok(Some((x, _))) if self.snapshot_open(&x))
                });
                if open {
                    errors.push(format!(
                        "checkpoint group {} has a member open over NBD: kept past keep {}",
                        g.name, s.keep
                    ));
                    continue;
                }
                if let Err(e) = self.delete_group_now(&g) {
                    errors.push(format!("checkpoint group {} not deleted: {e}", g.name));
                }
            }
        }
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(id: &str, next_run: u64, interval: u64, paused: bool) -> SnapshotSchedule {
        SnapshotSchedule {
            id: id.into(),
            tenant: "t".into(),
            name: id.into(),
            volumes: vec!["v".into()],
            interval,
            keep: 3,
            paused,
            created: next_run.saturating_sub(interval),
            next_run,
            last_run: None,
            last_error: None,
            taken: 0,
        }
    }

    #[test]
    fn due_is_a_slot_come_and_not_paused_longest_overdue_first() {
        let all = vec![
            sched("b", 100, 10, false),
            sched("a", 90, 10, false),
            sched("later", 101, 10, false),
            sched("paused", 50, 10, true),
            sched("c", 90, 10, false),
        ];
        let ids: Vec<String> = due_at(all, 100).into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!(!is_due(&sched("x", 101, 10, false), 100));
        assert!(is_due(&sched("x", 101, 10, false), 101));
        // A slot more than an interval ahead: the clock went back, the schedule runs.
        assert!(is_due(&sched("x", 200, 10, false), 100));
        assert!(!is_due(&sched("x", 110, 10, false), 100));
    }

    #[test]
    fn the_cadence_skips_missed_slots_so_a_long_stop_takes_one_run() {
        // On time: the next slot.
        assert_eq!(next_slot(100, 10, 100), 110);
        // A tick a little late keeps the phase.
        assert_eq!(next_slot(100, 10, 104), 110);
        // Down for a day at an hourly cadence: one run now, the next at the first slot after.
        let due = 1_000_000;
        let now = due + 86_400 + 1800;
        let next = next_slot(due, 3600, now);
        assert_eq!(next, due + 25 * 3600);
        assert!(next > now && next - now <= 3600);
        // Driven by fake time: a schedule every 10 s whose daemon was down from 100 to 1000
        // runs once at 1000, then every 10 s again (no burst for the 90 slots missed).
        let mut s = sched("s", 100, 10, false);
        let mut runs = Vec::new();
        for now in 1000..1031 {
            if is_due(&s, now) {
                runs.push(now);
                s.next_run = next_slot(s.next_run, s.interval, now);
            }
        }
        assert_eq!(runs, [1000, 1010, 1020, 1030]);
        // The clock set back: the cadence starts again from now.
        assert_eq!(next_slot(5000, 10, 100), 110);
        // Every slot the fake clock passes through is taken once and only once.
        let mut s = sched("one", 10, 1, false);
        let mut n = 0;
        for tenth in 100..200 {
            let now = tenth / 10;
            if is_due(&s, now) {
                n += 1;
                s.next_run = next_slot(s.next_run, s.interval, now);
            }
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn an_interval_change_moves_the_next_run_from_the_last_one_never_into_the_past() {
        let mut s = sched("s", 200, 100, false);
        s.last_run = Some(100);
        // Shorter: one new interval after the last run.
        assert_eq!(next_after_change(&s, 30, 110), 130);
        // Shorter than the time since the last run: now.
        assert_eq!(next_after_change(&s, 5, 150), 150);
        // Never in the second of the last run (its name is taken).
        assert_eq!(next_after_change(&s, 1, 100), 101);
        // Never run: from its creation.
        let t = sched("t", 200, 100, false);
        assert_eq!(next_after_change(&t, 50, 120), 150);
    }

    #[test]
    fn retention_deletes_all_but_the_newest_keep() {
        let taken: Vec<(u64, String)> = (0..6)
            .map(|i| (100 + i, snapshot_name("s", 100 + i)))
            .collect();
        let gone = beyond_keep(taken.clone(), 3, |x| x.clone());
        let gone: Vec<u64> = gone.into_iter().map(|x| x.0).collect();
        assert_eq!(gone, [102, 101, 100]);
        assert!(beyond_keep(taken.clone(), 6, |x| x.clone()).is_empty());
        assert!(beyond_keep(taken.clone(), 10_000, |x| x.clone()).is_empty());
        assert_eq!(beyond_keep(taken, 1, |x| x.clone()).len(), 5);
        // Equal times: by name, so the order is total.
        let same = vec![(7, "s-b".to_string()), (7, "s-a".to_string())];
        assert_eq!(
            beyond_keep(same, 1, |x| x.clone()),
            [(7, "s-a".to_string())]
        );
    }

    #[test]
    fn names_are_the_schedule_and_a_sortable_utc_stamp() {
        assert_eq!(snapshot_name("hourly", 0), "hourly-19700101T000000Z");
        assert_eq!(snapshot_name("h", 951_782_400), "h-20000229T000000Z");
        assert_eq!(snapshot_name("h", 1_796_118_421), "h-20261201T094701Z");
        let a = snapshot_name("h", 1_796_118_421);
        let b = snapshot_name("h", 1_796_118_422 + 86_400 * 40);
        assert!(a < b);
        let longest = "n".repeat(SCHEDULE_NAME_MAX_LEN);
        assert_eq!(snapshot_name(&longest, 1_796_118_421).len(), 128);
        assert!(strata_block::pool::validate_name(&snapshot_name(&longest, 1)).is_ok());
    }

    #[test]
    fn intervals_are_written_in_their_largest_unit() {
        assert_eq!(interval_text(86_400), "1d");
        assert_eq!(interval_text(3600), "1h");
        assert_eq!(interval_text(5400), "90m");
        assert_eq!(interval_text(45), "45s");
        assert_eq!(interval_text(INTERVAL_MAX), "999d");
        for s in ["1s", "90m", "36h", "7d", "15m"] {
            let secs = crate::controller::parse_duration(s).unwrap();
            assert_eq!(
                crate::controller::parse_duration(&interval_text(secs)),
                Some(secs)
            );
        }
        assert!(check_bounds(Some(0), None).is_err());
        assert!(check_bounds(None, Some(0)).is_err());
        assert!(check_bounds(Some(INTERVAL_MAX + 1), None).is_err());
        assert!(check_bounds(Some(1), Some(SCHEDULE_KEEP_MAX)).is_ok());
    }
}
