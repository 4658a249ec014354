//! The event journal: what happened to the platform's objects, in the user's terms (a device
//! faulted, a copy rebuilt, a volume throttled, a quota refused, a node up), for `strata events`
//! and the console. The audit log says who changed what; the journal says what happened,
//! whoever (or whatever) caused it.
//!
//! # Store layout
//! - `/events/{seq:020}`: an [`EventRecord`]; `seq` grows by one per event and is never reused
//!   (the follow cursor), so keys sort in the order events happened.
//!
//! # On a store shared by several nodes
//! Every daemon appends to the one journal: an event is stored only if its key is still free
//! (a compare on the key's absence); when another node took that number first, the daemon
//! reads what the others stored after its newest event and tries the next number. So numbers
//! stay unique and dense across the cluster, and each daemon's memory holds every node's
//! events: lists read what the others stored since (one range read), and followers look
//! again every [`FOLLOW_POLL`] while they wait.
//!
//! # Invariants
//! - Bounded: the newest [`KEEP_EVENTS`] events of at most [`KEEP_SECONDS`] (30 days) are
//!   kept; an append deletes, in its own transaction, the keys it pushes out. The journal is
//!   also held in memory (at most [`KEEP_EVENTS`] records), loaded once at open: reads never
//!   touch the store.
//! - A failure to store an event is logged, never turned into a failure of what it reports;
//!   the event is still served until the daemon stops.
//! - A tenant sees the events of its own objects only (`tenant` is its name); devices, pools
//!   and nodes belong to no tenant and are the admins'.
//! - Noisy sources are rate-limited where they are observed ([`Watch`]): at most one
//!   `volume.throttled` per volume and one `device.errors` per device per
//!   [`QUIET_SECONDS`]; each reports what accumulated since the previous one, so nothing is
//!   lost, only merged.
//! - Followers wait on a condition variable (`after` + `wait`), woken by every append and by
//!   [`Controller::close_events`] at shutdown, so a long poll never holds a stop back.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

/// Most events kept.
pub const KEEP_EVENTS: usize = 10_000;

/// Oldest event kept, seconds (30 days).
pub const KEEP_SECONDS: u64 = 30 * 86_400;

/// Shortest spell between two rate-limited events of one object, seconds.
pub const QUIET_SECONDS: u64 = 60;

/// Events answered when the caller names no limit.
pub const DEFAULT_EVENT_LIMIT: usize = 100;

/// How often a follower on a shared store looks for other nodes' events while it waits.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Tries of an append whose number other nodes keep taking first.
const APPEND_TRIES: usize = 16;

fn event_key(seq: u64) -> String {
    format!("/events/{seq:020}")
}

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Work done, things back to normal.
    Info,
    /// Worth a look.
    Warning,
    /// Something failed.
    Error,
}

/// What happened. The type string (`KIND.WHAT`) is the stable name clients filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A device stopped answering or failed an I/O: its copies are lost until it is back.
    DeviceFaulted,
    /// A device counted new read, write or checksum errors (rate-limited).
    DeviceErrors,
    /// A faulted or missing device was opened again.
    DeviceOnline,
    /// A device was found missing or unusable at start.
    DeviceOffline,
    /// A device started draining (its copies move off).
    DeviceDraining,
    /// A device left its pool.
    DeviceRemoved,
    /// A lost copy is being rebuilt on another device.
    RebuildStarted,
    /// A rebuilt copy is healthy.
    RebuildFinished,
    /// A copy that came back caught up with what it missed.
    ResyncFinished,
    /// A resync or rebuild failed: the copy is faulted.
    ResyncFailed,
    /// A copy started moving off a draining device.
    MoveStarted,
    /// A copy moved.
    Moved,
    /// A pool scrub finished (severity by what it found).
    ScrubFinished,
    /// A rebalance round of a pool started its moves.
    PoolRebalanced,
    /// A rebalance move did not start: the volume stays where it was.
    RebalanceMoveFailed,
    /// A volume waited for QoS admission (rate-limited).
    Throttled,
    /// A change was refused by the tenant's quota.
    QuotaRefused,
    /// A change was refused by the pool's overcommit limit.
    OvercommitRefused,
    /// A pool's provisioned figure passed a threshold of its allocation limit upwards.
    AllocationThreshold,
    /// A node's daemon started.
    NodeUp,
    /// A node's daemon stopped (or is found to have stopped without saying so).
    NodeDown,
    /// A node was cordoned: no new jobs.
    NodeCordoned,
    /// A node was uncordoned.
    NodeUncordoned,
    /// Nodes were declared for planning.
    NodeDeclared,
    /// A snapshot schedule's run (or its retention) failed, for a new reason.
    ScheduleFailed,
}

impl EventKind {
    /// The stable type string.
    pub fn name(self) -> &'static str {
        use EventKind as K;
        match self {
            K::DeviceFaulted => "device.faulted",
            K::DeviceErrors => "device.errors",
            K::DeviceOnline => "device.online",
            K::DeviceOffline => "device.offline",
            K::DeviceDraining => "device.draining",
            K::DeviceRemoved => "device.removed",
            K::RebuildStarted => "volume.rebuild_started",
            K::RebuildFinished => "volume.rebuild_finished",
            K::ResyncFinished => "volume.resync_finished",
            K::ResyncFailed => "volume.resync_failed",
            K::MoveStarted => "volume.move_started",
            K::Moved => "volume.moved",
            K::ScrubFinished => "pool.scrub_finished",
            K::PoolRebalanced => "pool.rebalanced",
            K::RebalanceMoveFailed => "volume.rebalance_failed",
            K::Throttled => "volume.throttled",
            K::QuotaRefused => "tenant.quota_refused",
            K::OvercommitRefused => "volume.overcommit_refused",
            K::AllocationThreshold => "pool.allocation_threshold",
            K::NodeUp => "node.up",
            K::NodeDown => "node.down",
            K::NodeCordoned => "node.cordoned",
            K::NodeUncordoned => "node.uncordoned",
            K::NodeDeclared => "node.declared",
            K::ScheduleFailed => "snapshot_schedule.failed",
        }
    }

    /// How much it usually matters.
    pub fn severity(self) -> Severity {
        use EventKind as K;
        match self {
            K::DeviceFaulted | K::ResyncFailed | K::NodeDown => Severity::Error,
            K::DeviceErrors
            | K::DeviceOffline
            | K::RebuildStarted
            | K::QuotaRefused
            | K::OvercommitRefused
            | K::AllocationThreshold
            | K::RebalanceMoveFailed
            | K::NodeCordoned
            | K::ScheduleFailed => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The kind of object it happens to (the type's first part).
    pub fn object_kind(self) -> &'static str {
        self.name().split_once('.').map_or("", |(k, _)| k)
    }
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Position in the journal.
    pub seq: u64,
    /// Seconds since the epoch.
    pub time: u64,
    /// The type string ([`EventKind::name`]).
    pub kind: String,
    /// How much it matters.
    pub severity: Severity,
    /// `device`, `volume`, `pool`, `tenant`, `node`, `snapshot_schedule`.
    pub object_kind: String,
    /// The object's id or name.
    pub object: String,
    /// The object's name where it differs from its id.
    pub name: Option<String>,
    /// The object's tenant.
    pub tenant: Option<String>,
    /// What happened, for a person.
    pub message: String,
}

/// What a list of events asks for.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// At most this many (default [`DEFAULT_EVENT_LIMIT`]).
    pub limit: Option<usize>,
    /// Only at or after this time.
    pub since: Option<u64>,
    /// A type (`device.faulted`) or a kind (`device`).
    pub kind: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Follow: only after this position, oldest first.
    pub after: Option<u64>,
    /// With `after`: wait this long for one.
    pub wait: Duration,
}

/// The journal in memory, and what followers wait on.
#[derive(Debug, Default)]
pub(super) struct Journal {
    state: parking_lot::Mutex<JournalState>,
    changed: parking_lot::Condvar,
    /// What the rate-limited sources last reported (`observe_for_events`).
    watch: parking_lot::Mutex<Watch>,
    /// The node this daemon runs on, once registered (its `node.up`/`node.down` events, and
    /// `strata_node_up`).
    local_node: parking_lot::Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct JournalState {
    events: VecDeque<EventRecord>,
    next: u64,
    closing: bool,
}

/// Per object, what a rate-limited source counted when it last reported, and when.
#[derive(Debug, Default)]
struct Watch {
    /// Volume id: (throttled microseconds seen, at the last event; time of the last event).
    throttled: HashMap<String, (u64, u64)>,
    /// Device id: (errors seen at the last event; time of the last event).
    errors: HashMap<String, (u64, u64)>,
}

impl Controller {
    /// Loads the journal from the store (at open), dropping what is past its bound.
    pub(super) fn load_events(&self) -> Result<(), ControlError> {
        let mut all: VecDeque<EventRecord> = self
            .list::<EventRecord>("/events/", None, 0)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let mut gone = Vec::new();
        let oldest = now().saturating_sub(KEEP_SECONDS);
        while all.len() > KEEP_EVENTS || all.front().is_some_and(|e| e.time < oldest) {
            gone.extend(all.pop_front().map(|e| e.seq));
        }
        if !gone.is_empty() {
            let txn = gone.iter().fold(Txn::new(), |t, s| t.delete(event_key(*s)));
            if let Err(e) = self.store.txn(txn) {
                tracing::warn!(error = %e, "old events not deleted");
            }
        }
        let mut st = self.events.state.lock();
        st.next = all.back().map_or(1, |e| e.seq + 1);
        st.events = all;
        Ok(())
    }

    /// Records an event of `kind` about `object` with its default severity.
    pub(super) fn event(
        &self,
        kind: EventKind,
        object: &str,
        tenant: Option<&str>,
        message: String,
    ) {
        self.event_full(kind, kind.severity(), object, None, tenant, message);
    }

    /// Records an event about a volume (named by its id; its name and tenant from its record
    /// when there is one).
    pub(super) fn volume_event(&self, kind: EventKind, id: &str, message: String) {
        let v = self.volume_record(id);
        self.event_full(
            kind,
            kind.severity(),
            id,
            v.as_ref().map(|v| v.name.clone()),
            v.as_ref().map(|v| v.tenant.as_str()),
            message,
        );
    }

    /// Records an event: appended in memory, stored, followers woken.
    pub(super) fn event_full(
        &self,
        kind: EventKind,
        severity: Severity,
        object: &str,
        name: Option<String>,
        tenant: Option<&str>,
        message: String,
    ) {
        let time = now();
        let mut st = self.events.state.lock();
        let mut e = EventRecord {
            seq: 0,
            time,
            kind: kind.name().to_string(),
            severity,
            object_kind: kind.object_kind().to_string(),
            object: object.to_string(),
            name,
            tenant: tenant.map(str::to_string),
            message,
        };
        // Stored under the lock: keys reach the store in sequence order, so a restart never
        // finds a gap followed by older events.
        for _ in 0..APPEND_TRIES {
            e.seq = st.next.max(1);
            let key = event_key(e.seq);
            match self
                .store
                .txn(Txn::new().when(key.clone(), 0).put(key, enc(&e)))
            {
                Ok(r) if !r.succeeded => {
                    // Another node stored an event under this number first.
                    self.follow_store(&mut st);
                    st.next = st.next.max(e.seq + 1);
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::error!(%err, event = kind.name(), "event not stored"),
            }
            break;
        }
        st.next = e.seq + 1;
        st.events.push_back(e);
        let gone = Self::trim(&mut st, time);
        if !gone.is_empty() {
            let txn = gone.iter().fold(Txn::new(), |t, s| t.delete(event_key(*s)));
            if let Err(err) = self.store.txn(txn) {
                tracing::warn!(%err, "old events not deleted");
            }
        }
        drop(st);
        self.events.changed.notify_all();
    }

    /// Drops from memory what is past the journal's bound; returns the numbers dropped.
    fn trim(st: &mut JournalState, time: u64) -> Vec<u64> {
        let oldest = time.saturating_sub(KEEP_SECONDS);
        let mut gone = Vec::new();
        while st.events.len() > KEEP_EVENTS || st.events.front().is_some_and(|e| e.time < oldest) {
            gone.extend(st.events.pop_front().map(|e| e.seq));
        }
        gone
    }

    /// On a store shared with other nodes, takes into memory the events they stored after
    /// the newest one held here. Nothing on a store of this daemon's own.
    fn follow_store(&self, st: &mut JournalState) {
        if self.store.leases().is_none() {
            return;
        }
        let newest = st.next.saturating_sub(1);
        match self.list::<EventRecord>("/events/", Some(&event_key(newest)), 0) {
            Ok(more) => {
                let mut any = false;
                for (_, e) in more {
                    if e.seq >= st.next {
                        st.next = e.seq + 1;
                        st.events.push_back(e);
                        any = true;
                    }
                }
                if any {
                    // Memory only: the node that pushes an event out deletes it.
                    Self::trim(st, now());
                }
            }
            Err(e) => tracing::warn!(%e, "other nodes' events not read"),
        }
    }

    /// Events the caller may see: newest first, or with `after`, those after it oldest first
    /// (waiting up to `wait` for one). The cursor is the journal's newest position.
    pub fn list_events(
        &self,
        p: &Principal,
        q: &EventQuery,
    ) -> Result<(Vec<EventRecord>, u64), ControlError> {
        Self::require(p, Role::Reader)?;
        if let (Some(t), Some(own)) = (&q.tenant, &p.tenant) {
            if t != own {
                return Err(ControlError::not_found(Resource::Tenant, t));
            }
        }
        let tenant = p.tenant.as_ref().or(q.tenant.as_ref());
        let wanted = |e: &EventRecord| {
            tenant.is_none_or(|t| e.tenant.as_ref() == Some(t))
                && q.since.is_none_or(|s| e.time >= s)
                && q.kind.as_ref().is_none_or(|k| {
                    e.kind == *k
                        || e.kind
                            .strip_prefix(k.as_str())
                            .is_some_and(|r| r.starts_with('.'))
                })
        };
        let limit = q.limit.unwrap_or(DEFAULT_EVENT_LIMIT).max(1);
        let mut st = self.events.state.lock();
        self.follow_store(&mut st);
        let Some(after) = q.after else {
            let items = st
                .events
                .iter()
                .rev()
                .filter(|e| wanted(e))
                .take(limit)
                .cloned()
                .collect();
            return Ok((items, st.next.saturating_sub(1)));
        };
        let deadline = std::time::Instant::now() + q.wait;
        let mut from = after;
        loop {
            let newest = st.next.saturating_sub(1);
            let items: Vec<EventRecord> = st
                .events
                .iter()
                .filter(|e| e.seq > from && wanted(e))
                .take(limit)
                .cloned()
                .collect();
            if !items.is_empty() {
                let cursor = if items.len() == limit {
                    items.last().map_or(newest, |e| e.seq)
                } else {
                    newest
                };
                return Ok((items, cursor));
            }
            // Nothing for this caller up to `newest`: wait for what comes after it.
            from = from.max(newest);
            // On a shared store other nodes' events wake nobody here: look again each poll.
            let until = if self.store.leases().is_some() {
                deadline.min(std::time::Instant::now() + FOLLOW_POLL)
            } else {
                deadline
            };
            let woke = !st.closing && !self.events.changed.wait_until(&mut st, until).timed_out();
            self.follow_store(&mut st);
            if !woke && (st.closing || std::time::Instant::now() >= deadline) {
                let newest = st.next.saturating_sub(1);
                let items: Vec<EventRecord> = st
                    .events
                    .iter()
                    .filter(|e| e.seq > from && wanted(e))
                    .take(limit)
                    .cloned()
                    .collect();
                let cursor = items.last().map_or(newest.max(from), |e| e.seq);
                return Ok((items, cursor));
            }
        }
    }

    /// Records a change refused by a quota or by a pool's overcommit limit (the API's change
    /// path calls it with every error; others are not events).
    pub fn note_refusal(
        &self,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        e: &ControlError,
    ) {
        match e {
            // The tenant is the quota's: for an admin acting for a tenant it is not the
            // caller's, and the resource of a refused create names no tenant yet.
            ControlError::QuotaExceeded { tenant: t, message } => self.event(
                EventKind::QuotaRefused,
                t,
                Some(t.as_str()),
                format!("{action} {resource} refused by the tenant's quota: {message}"),
            ),
            ControlError::PoolOvercommitted(why) => self.event(
                EventKind::OvercommitRefused,
                resource,
                tenant,
                format!("{action} {resource} refused by the pool's overcommit limit: {why}"),
            ),
            _ => {}
        }
    }

    /// Wakes every follower and makes later ones answer at once (shutdown).
    pub fn close_events(&self) {
        self.events.state.lock().closing = true;
        self.events.changed.notify_all();
    }

    /// Looks at the rate-limited sources (QoS waits per volume, error counts per device) and
    /// records an event for each that grew, at most one per object per [`QUIET_SECONDS`].
    /// Called by a daemon thread every few seconds. Returns how many events it recorded.
    pub fn observe_for_events(&self) -> usize {
        let t = now();
        let mut n = 0;
        if let Ok(vols) = self.local_volumes() {
            for (_, v) in vols {
                if v.state != VolumeState::Available {
                    continue;
                }
                let Some(us) = self
                    .primary(&v)
                    .ok()
                    .and_then(|c| c.pool.io(c.volume).ok())
                    .map(|io| io.totals().throttled_us)
                else {
                    continue;
                };
                let mut w = self.events.watch.lock();
                let (seen, at) = *w.throttled.entry(v.id.clone()).or_insert((0, 0));
                if us <= seen || t < at + QUIET_SECONDS {
                    continue;
                }
                w.throttled.insert(v.id.clone(), (us, t));
                drop(w);
                let span = if at == 0 {
                    String::new()
                } else {
                    format!(" in the last {} s", t - at)
                };
                self.event_full(
                    EventKind::Throttled,
                    Severity::Info,
                    &v.id,
                    Some(v.name.clone()),
                    Some(&v.tenant),
                    format!(
                        "volume {} waited {:.1} s for QoS admission{span} (limits: {})",
                        v.name,
                        (us - seen) as f64 / 1e6,
                        qos_text(&v.qos)
                    ),
                );
                n += 1;
            }
        }
        for (dev, d) in self.storage.all() {
            let c = d.counters.values();
            let errors = c.read_errors + c.write_errors + c.checksum_errors;
            let mut w = self.events.watch.lock();
            let (seen, at) = *w.errors.entry(dev.clone()).or_insert((0, 0));
            if errors <= seen || t < at + QUIET_SECONDS {
                continue;
            }
            w.errors.insert(dev.clone(), (errors, t));
            drop(w);
            self.event(
                EventKind::DeviceErrors,
                &dev,
                None,
                format!(
                    "device {dev} counted {} new errors (in all: {} read, {} write, {} checksum)",
                    errors - seen,
                    c.read_errors,
                    c.write_errors,
                    c.checksum_errors
                ),
            );
            n += 1;
        }
        n
    }

    /// Whether the newest rebuild event of `volume`'s copy `copy` is a start not yet finished.
    pub(super) fn rebuild_open(&self, volume: &str, copy: usize) -> bool {
        let tag = format!("copy {copy} ");
        self.events
            .state
            .lock()
            .events
            .iter()
            .rev()
            .filter(|e| e.object == volume && e.message.starts_with(&tag))
            .find(|e| {
                e.kind == EventKind::RebuildStarted.name()
                    || e.kind == EventKind::RebuildFinished.name()
                    || e.kind == EventKind::ResyncFailed.name()
            })
            .is_some_and(|e| e.kind == EventKind::RebuildStarted.name())
    }

    /// The newest node event of `node` (`node.up` or `node.down`), if any.
    pub(super) fn last_node_state(&self, node: &str) -> Option<String> {
        self.events
            .state
            .lock()
            .events
            .iter()
            .rev()
            .find(|e| {
                e.object == node
                    && (e.kind == EventKind::NodeUp.name() || e.kind == EventKind::NodeDown.name())
            })
            .map(|e| e.kind.clone())
    }

    /// Records that this daemon's node started: a `node.down` first when its last event is a
    /// `node.up` (the daemon stopped without saying so: a crash or a kill), then `node.up`.
    pub(super) fn node_started(&self, name: &str, node: &strata_place::Node) {
        if self.last_node_state(name).as_deref() == Some(EventKind::NodeUp.name()) {
            self.event(
                EventKind::NodeDown,
                name,
                None,
                format!("node {name}: the daemon had stopped without a clean shutdown"),
            );
        }
        let gpus: usize = node.gpus.iter().map(|g| g.count as usize).sum();
        self.event(
            EventKind::NodeUp,
            name,
            None,
            format!(
                "node {name} up: {} CPU cores, {} memory, {gpus} GPUs{}",
                node.cpu_cores,
                strata_types::format_size(node.memory_bytes),
                if node.cordoned { " (cordoned)" } else { "" }
            ),
        );
        *self.events.local_node.lock() = Some(name.to_string());
    }

    /// The node this daemon registered, if any.
    pub fn local_node(&self) -> Option<String> {
        self.events.local_node.lock().clone()
    }

    /// Records that this daemon's node stops (a clean shutdown), and wakes every follower so
    /// no long poll holds the stop back.
    pub fn close_events_at_stop(&self) {
        if let Some(node) = self.local_node() {
            self.event(
                EventKind::NodeDown,
                &node,
                None,
                format!("node {node}: the daemon stopped cleanly"),
            );
        }
        self.close_events();
    }
}

fn qos_text(q: &Qos) -> String {
    let mut parts = Vec::new();
    if let Some(i) = q.iops_limit {
        parts.push(format!("{i} IOPS"));
    }
    if let Some(b) = q.bandwidth_limit {
        parts.push(format!("{}/s", strata_types::format_size(b)));
    }
    if parts.is_empty() {
        "the pool's fair share".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_kind_dot_what_and_their_kind_is_the_object() {
        let pattern = regex::Regex::new(crate::wire::EVENT_TYPE_PATTERN).unwrap();
        for k in [
            EventKind::DeviceFaulted,
            EventKind::RebuildStarted,
            EventKind::QuotaRefused,
            EventKind::NodeUp,
            EventKind::ScrubFinished,
            EventKind::PoolRebalanced,
            EventKind::RebalanceMoveFailed,
            EventKind::ScheduleFailed,
        ] {
            let (kind, what) = k.name().split_once('.').expect("KIND.WHAT");
            assert_eq!(kind, k.object_kind());
            assert!(!what.is_empty());
            assert!(pattern.is_match(k.name()), "{}", k.name());
        }
        assert_eq!(EventKind::DeviceFaulted.severity(), Severity::Error);
        assert_eq!(EventKind::Throttled.severity(), Severity::Info);
    }
}
