//! A job's slice: what is made with a job when it is placed — a port per placed part on the
//! job's tenant subnet with the part's bandwidth as its guarantee (the network slice), and
//! clones of checkpoint groups' members (its volumes) — as a saga (`saga.rs`) recorded in the
//! job record.
//!
//! # Steps
//! `place` (the job running on its parts: done by the admission transaction that records the
//! saga) → per part `port` (`job-NAME`, or `job-NAME-K` when the job spans parts) and, when
//! the part has bandwidth or the job a port cap, `guarantee` (the port's `min_bps` = the
//! part's bandwidth, `cap_bps` = the job's port cap) → per member of each named group `clone`
//! (`PREFIX-MEMBER`). Undone last first: clones deleted, ports deleted (a guarantee goes with
//! its port), and `place` undone as the saga says: the job back in the queue with the failing
//! step's error as its reason (`requeue`: an admission), removed with its GPUs given back
//! (`forget`: the create call's own job, which answers the error), or removed after its
//! slice (`delete`).
//!
//! # Invariants
//! - The slice is made at admission, not at create: a queued job holds nothing but its GPU
//!   claim (a waiting job's guarantees would hold network capacity from running ones, and a
//!   port per part cannot be made before the parts are known). What the create names is
//!   checked and resolved at create (the network and subnet, the groups and their members,
//!   the names to be made), so a create that names something wrong fails at once.
//! - Every step's object is found again by an identity recorded before it is made: a port by
//!   its network, name and a MAC drawn from the saga's id; a clone by its request id
//!   (`job-SAGA-I`, the volume create's idempotency key). So an undo after a crash between
//!   "started" and "done" finds what the step made, or finds nothing and is done.
//! - At start ([`Controller::recover_job_slices`]) a saga a crash interrupted is undone (not
//!   finished: finishing needs the steps' inputs to hold still, undoing does not), and its job
//!   queued again or removed as the saga says; a queued job's slice is made at its next
//!   admission. A saga whose undo failed stays recorded backward and is resumed there or by a
//!   delete of the job.
//! - A delete refuses, before changing anything, while a clone of the job's is attached
//!   (`volume_attached`) or has snapshots (`volume_has_snapshots`): the job's volumes may hold
//!   its results, so they go only when nothing uses them.
//! - Test-only fault point: `STRATA_TEST_JOB_SLICE_FAIL=KIND[#N][:crash]` (`record`, `port`,
//!   `guarantee`, `clone`; the N-th step of that kind in a saga, default the first) fails
//!   that step before its work with an `internal` error naming it, or with `:crash` aborts
//!   the daemon there (the step recorded started: what a restart must undo). Only tests set
//!   it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use strata_place::{Explanation, Part};
use strata_state::Txn;
use strata_vpc::model::fmt_mac;

use super::auth::Principal;
use super::jobs::JobRecord;
use super::networks::NewPort;
use super::saga::{drive, Outcome, Phase, Saga, SagaError, StepState};
use super::store::*;
use super::tenants::{charge, Charge};
use super::Controller;
use crate::error::{ControlError, InUse, Resource};
use crate::model::{Attachment, Role};

/// Most `--volume` entries one job names.
pub const JOB_VOLUMES_MAX: usize = 8;

/// The longest port-name suffix a spanning job's part adds (`-K`, K below 100,000).
const PART_SUFFIX_MAX: usize = 6;

/// The longest name a volume or port takes (the engine's name rule).
const NAME_MAX: usize = strata_block::meta::MAX_NAME;

/// The environment variable of the test-only fault point (see the module docs).
pub const FAULT_ENV: &str = "STRATA_TEST_JOB_SLICE_FAIL";

/// What a create asks to be made with the job, as named in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceRequest {
    /// The tenant network (id or name).
    pub network: Option<String>,
    /// Its subnet (id or name; default: the network's only subnet).
    pub subnet: Option<String>,
    /// A cap on each of the job's ports, bits per second.
    pub port_cap_bps: Option<u64>,
    /// Clones of checkpoint groups.
    pub volumes: Vec<VolumeRequest>,
}

/// `NAME=clone:GROUP`: each member of the group cloned as `NAME-MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    /// The clones' prefix (default: the job's name).
    pub name: Option<String>,
    /// The checkpoint group (id or name).
    pub group: String,
}

/// The slice a job asks for, resolved at create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSpec {
    /// The network and subnet its ports go on.
    #[serde(default)]
    pub network: Option<SliceNetwork>,
    /// A cap on each port, bits per second.
    #[serde(default)]
    pub port_cap_bps: Option<u64>,
    /// The groups cloned.
    #[serde(default)]
    pub volumes: Vec<SliceClones>,
}

impl SliceSpec {
    /// Whether nothing is to be made.
    pub fn is_empty(&self) -> bool {
        self.network.is_none() && self.volumes.is_empty()
    }
}

/// A network and subnet, by id (names kept for display).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceNetwork {
    /// Network id.
    pub id: String,
    /// Network name.
    pub name: String,
    /// Subnet id.
    pub subnet: String,
    /// Subnet name.
    pub subnet_name: String,
}

/// One `--volume`: a group and the clones it makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceClones {
    /// Prefix of the clones' names.
    pub name: String,
    /// Group id.
    pub group: String,
    /// Group name.
    pub group_name: String,
    /// Its members, in the group's order (a group never changes once taken).
    pub members: Vec<CloneMember>,
}

/// A member of a group to clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneMember {
    /// The member snapshot's id.
    pub snapshot: String,
    /// The clone's name (`PREFIX-VOLUME`, fixed at create).
    pub clone: String,
}

/// What becomes of the job when the saga's `place` step is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterUndo {
    /// Back to the queue, with the failing step's error as the reason (an admission).
    Requeue,
    /// Removed, its GPUs given back (the create call's own job: the call answers the error).
    Forget,
    /// Removed after its slice (a delete; clones in use refuse rather than go).
    Delete,
}

/// A job's slice saga and what its undo does with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceRun {
    /// The steps and how far they got.
    pub saga: Saga<SliceStep>,
    /// What undoing `place` does.
    pub then: AfterUndo,
    /// The id the saga's identities are drawn from.
    pub id: String,
}

/// One step of a slice (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SliceStep {
    /// The job placed on its parts.
    Place,
    /// A port for part `part`.
    Port {
        /// The part's index.
        part: usize,
        /// The part's node.
        node: String,
        /// Port name.
        name: String,
        /// Network id.
        network: String,
        /// Subnet id.
        subnet: String,
        /// The MAC the port is made with (its identity beside the name).
        mac: String,
        /// What was made.
        #[serde(default)]
        made: Option<MadePort>,
    },
    /// A port's guarantee and cap.
    Guarantee {
        /// Port name.
        name: String,
        /// Network id.
        network: String,
        /// Guarantee, bits per second.
        min_bps: Option<u64>,
        /// Cap, bits per second.
        cap_bps: Option<u64>,
    },
    /// A clone of one member of a group.
    Clone {
        /// The clone's name.
        name: String,
        /// Group name (display).
        group: String,
        /// The member snapshot.
        snapshot: String,
        /// The request id the clone is made under (its identity).
        request: String,
        /// The volume made.
        #[serde(default)]
        made: Option<String>,
    },
}

impl SliceStep {
    fn kind(&self) -> &'static str {
        match self {
            SliceStep::Place => "place",
            SliceStep::Port { .. } => "port",
            SliceStep::Guarantee { .. } => "guarantee",
            SliceStep::Clone { .. } => "clone",
        }
    }
}

/// A port the slice made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadePort {
    /// Port id.
    pub id: String,
    /// Its TAP on this node: what the job's VM or namespace plugs into.
    pub device: String,
    /// Its address.
    pub ip: String,
}

/// Where a slice is, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceState {
    /// A dry run: what would be made.
    Planned,
    /// Asked for by a job waiting in the queue: made when it is admitted.
    Waiting,
    /// Being made.
    Making,
    /// Made.
    Ready,
    /// Being undone (a failed step, a delete, or an undo to resume).
    Undoing,
}

/// A port of a slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePortView {
    /// Port name.
    pub name: String,
    /// The part's node.
    pub node: String,
    /// Port id (once made).
    pub id: Option<String>,
    /// The TAP to plug (once made).
    pub device: Option<String>,
    /// Its address (once made).
    pub ip: Option<String>,
    /// Its MAC (once made).
    pub mac: Option<String>,
    /// Guarantee, bits per second.
    pub min_bps: Option<u64>,
    /// Cap, bits per second.
    pub cap_bps: Option<u64>,
}

/// A volume of a slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceVolumeView {
    /// Volume name.
    pub name: String,
    /// The group it is a clone from.
    pub group: String,
    /// The member snapshot.
    pub snapshot: String,
    /// Volume id (once made).
    pub id: Option<String>,
}

/// A job's slice, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceView {
    /// Where it is.
    pub state: SliceState,
    /// Network name.
    pub network: Option<String>,
    /// Subnet name.
    pub subnet: Option<String>,
    /// Ports.
    pub ports: Vec<SlicePortView>,
    /// Volumes.
    pub volumes: Vec<SliceVolumeView>,
}

impl From<SagaError> for ControlError {
    fn from(e: SagaError) -> Self {
        ControlError::internal(e.to_string())
    }
}

fn network_conflict(message: impl Into<String>) -> ControlError {
    ControlError::InUse {
        what: InUse::NetworkSpecConflict,
        message: message.into(),
    }
}

fn job_conflict(message: impl Into<String>) -> ControlError {
    ControlError::InUse {
        what: InUse::JobSpecConflict,
        message: message.into(),
    }
}

/// The port of part `k` of a job of `parts` parts.
fn port_name(job: &str, k: usize, parts: usize) -> String {
    if parts == 1 {
        format!("job-{job}")
    } else {
        format!("job-{job}-{k}")
    }
}

/// The steps of a job's slice on `parts`, the first (`place`) done by the caller.
pub(super) fn slice_steps(spec: &SliceSpec, job: &str, parts: &[Part], id: &str) -> Vec<SliceStep> {
    let mut steps = vec![SliceStep::Place];
    if let Some(net) = &spec.network {
        for (k, part) in parts.iter().enumerate() {
            let name = port_name(job, k, parts.len());
            let seed = strata_vpc::ipam::fnv(&format!("{id}/{k}"));
            let mac = strata_vpc::ipam::allocate_mac(seed, &Default::default());
            steps.push(SliceStep::Port {
                part: k,
                node: part.node.clone(),
                name: name.clone(),
                network: net.id.clone(),
                subnet: net.subnet.clone(),
                mac: fmt_mac(&mac),
                made: None,
            });
            let min_bps = (part.bandwidth_bps > 0).then_some(part.bandwidth_bps);
            if min_bps.is_some() || spec.port_cap_bps.is_some() {
                steps.push(SliceStep::Guarantee {
                    name,
                    network: net.id.clone(),
                    min_bps,
                    cap_bps: spec.port_cap_bps,
                });
            }
        }
    }
    let mut i = 0;
    for v in &spec.volumes {
        for m in &v.members {
            steps.push(SliceStep::Clone {
                name: m.clone.clone(),
                group: v.group_name.clone(),
                snapshot: m.snapshot.clone(),
                request: format!("job-{id}-{i}"),
                made: None,
            });
            i += 1;
        }
    }
    steps
}

/// The view of `steps` (with their states): ports and volumes made, or all when planned.
pub(super) fn view_of<'a>(
    spec: &SliceSpec,
    steps: impl Iterator<Item = (&'a SliceStep, StepState)> + Clone,
    state: SliceState,
) -> SliceView {
    let shown = |st: StepState| state == SliceState::Planned || st == StepState::Done;
    let mut ports = Vec::new();
    let mut volumes = Vec::new();
    for (step, st) in steps.clone() {
        match step {
            SliceStep::Port {
                node,
                name,
                mac,
                made,
                ..
            } if shown(st) => ports.push(SlicePortView {
                name: name.clone(),
                node: node.clone(),
                id: made.as_ref().map(|m| m.id.clone()),
                device: made.as_ref().map(|m| m.device.clone()),
                ip: made.as_ref().map(|m| m.ip.clone()),
                mac: made.as_ref().map(|_| mac.clone()),
                min_bps: None,
                cap_bps: None,
            }),
            SliceStep::Clone {
                name,
                group,
                snapshot,
                made,
                ..
            } if shown(st) => volumes.push(SliceVolumeView {
                name: name.clone(),
                group: group.clone(),
                snapshot: snapshot.clone(),
                id: made.clone(),
            }),
            _ => {}
        }
    }
    for (step, st) in steps {
        if let SliceStep::Guarantee {
            name,
            min_bps,
            cap_bps,
            ..
        } = step
        {
            if shown(st) {
                if let Some(p) = ports.iter_mut().find(|p| &p.name == name) {
                    p.min_bps = *min_bps;
                    p.cap_bps = *cap_bps;
                }
            }
        }
    }
    SliceView {
        state,
        network: spec.network.as_ref().map(|n| n.name.clone()),
        subnet: spec.network.as_ref().map(|n| n.subnet_name.clone()),
        ports,
        volumes,
    }
}

impl JobRecord {
    /// The job's slice as it is (what was asked, while nothing is made yet).
    pub fn slice_view(&self) -> Option<SliceView> {
        match &self.slice {
            Some(run) => {
                let state = match run.saga.phase() {
                    Phase::Forward => SliceState::Making,
                    Phase::Finished => SliceState::Ready,
                    Phase::Backward | Phase::RolledBack => SliceState::Undoing,
                };
                let steps = run.saga.entries().iter().map(|e| (&e.step, e.state));
                Some(view_of(&self.spec, steps, state))
            }
            None if !self.spec.is_empty() => Some(view_of(
                &self.spec,
                std::iter::empty::<(&SliceStep, StepState)>(),
                SliceState::Waiting,
            )),
            None => None,
        }
    }

    /// The ids of the volumes its slice made (or may have made).
    pub(super) fn slice_volumes(&self) -> Vec<String> {
        let Some(run) = &self.slice else {
            return vec![];
        };
        run.saga
            .entries()
            .iter()
            .filter(|e| matches!(e.state, StepState::Done | StepState::Started))
            .filter_map(|e| match &e.step {
                SliceStep::Clone { made, .. } => made.clone(),
                _ => None,
            })
            .collect()
    }
}

/// The test-only fault (see the module docs).
struct Fault {
    kind: String,
    nth: u32,
    crash: bool,
}

static FAULT: LazyLock<Option<Fault>> = LazyLock::new(|| {
    let v = std::env::var(FAULT_ENV).ok()?;
    let (v, crash) = match v.strip_suffix(":crash") {
        Some(v) => (v.to_string(), true),
        None => (v, false),
    };
    let (kind, nth) = match v.split_once('#') {
        Some((k, n)) => (k.to_string(), n.parse().ok()?),
        None => (v, 1),
    };
    tracing::warn!(
        kind = %kind,
        nth,
        crash,
        "{FAULT_ENV} is set: job slice steps fail on purpose (tests only)"
    );
    Some(Fault { kind, nth, crash })
});

/// Counts the steps of a saga by kind and fails the one the fault names.
#[derive(Default)]
struct Faults {
    seen: BTreeMap<&'static str, u32>,
}

impl Faults {
    fn hit(&mut self, kind: &'static str) -> Option<ControlError> {
        let f = FAULT.as_ref()?;
        let n = self.seen.entry(kind).or_default();
        *n += 1;
        if f.kind != kind || *n != f.nth {
            return None;
        }
        if f.crash {
            tracing::error!(kind, nth = f.nth, "{FAULT_ENV}: crashing on purpose");
            std::process::abort();
        }
        Some(injected(kind, f.nth))
    }
}

fn injected(kind: &str, nth: u32) -> ControlError {
    ControlError::internal(format!(
        "injected fault: job slice step {kind} #{nth} ({FAULT_ENV})"
    ))
}

/// Fails the create's `record` step when the fault names it.
pub(super) fn record_fault() -> Result<(), ControlError> {
    match FAULT.as_ref() {
        Some(f) if f.kind == "record" => Err(injected("record", 1)),
        _ => Ok(()),
    }
}

/// The principal a slice's steps act as: a member of the job's tenant (an admission may run
/// in anyone's call).
fn acting_for(tenant: &str) -> Principal {
    Principal {
        token_id: "job-slice".into(),
        tenant: Some(tenant.to_string()),
        role: Role::Member,
    }
}

/// Runs a slice's steps for the job at `key`.
struct SliceExec<'a> {
    c: &'a Controller,
    p: Principal,
    key: String,
    tenant: String,
    then: AfterUndo,
    id: String,
    /// The failing step's error, the reason a requeued job shows.
    reason: Option<String>,
    faults: Faults,
}

impl super::saga::Executor<SliceStep> for SliceExec<'_> {
    type Error = ControlError;

    fn run(&mut self, step: &mut SliceStep) -> Result<(), ControlError> {
        let r = match self.faults.hit(step.kind()) {
            Some(e) => Err(e),
            None => self.c.run_step(&self.p, step),
        };
        if let Err(e) = &r {
            self.reason = Some(e.to_string());
        }
        r
    }

    fn undo(&mut self, step: &SliceStep) -> Result<(), ControlError> {
        match step {
            SliceStep::Place => {
                self.c
                    .settle_job(&self.key, &self.tenant, self.then, self.reason.as_deref())
            }
            _ => self
                .c
                .undo_step(&self.p, step, self.then != AfterUndo::Delete),
        }
    }

    fn record(&mut self, saga: &Saga<SliceStep>) -> Result<(), ControlError> {
        // Rolled back: `place`'s undo settled the record already.
        if saga.phase() == Phase::RolledBack {
            return Ok(());
        }
        loop {
            let Some((mut rec, rev)) = self.c.get::<JobRecord>(&self.key)? else {
                return Err(ControlError::internal(format!(
                    "job record {} vanished under its slice",
                    self.key
                )));
            };
            rec.slice = Some(SliceRun {
                saga: saga.clone(),
                then: self.then,
                id: self.id.clone(),
            });
            let txn = Txn::new()
                .when(self.key.clone(), rev)
                .put(self.key.clone(), enc(&rec));
            if self.c.store.txn(txn)?.succeeded {
                return Ok(());
            }
        }
    }
}

impl Controller {
    /// Checks and resolves what a create names for the job's slice, in `tenant` (see the
    /// module invariants). Changes nothing.
    pub(super) fn resolve_slice(
        &self,
        p: &Principal,
        tenant: &str,
        job: &str,
        req: &SliceRequest,
    ) -> Result<SliceSpec, ControlError> {
        let mut spec = SliceSpec {
            port_cap_bps: req.port_cap_bps,
            ..SliceSpec::default()
        };
        match (&req.network, &req.subnet, req.port_cap_bps) {
            (None, Some(_), _) => {
                return Err(network_conflict(
                    "a subnet names no network: name the network",
                ))
            }
            (None, None, Some(_)) => {
                return Err(network_conflict(
                    "a port cap needs a network for the job's ports",
                ))
            }
            (None, None, None) => {}
            (Some(n), s, _) => {
                if job.len() + "job-".len() + PART_SUFFIX_MAX > NAME_MAX {
                    return Err(job_conflict(format!(
                        "job name too long for its ports' names (job-NAME-K): at most {} \
                         characters with a network",
                        NAME_MAX - "job-".len() - PART_SUFFIX_MAX
                    )));
                }
                let net = self
                    .list_networks(p, Some(tenant))?
                    .into_iter()
                    .find(|x| &x.id == n || &x.name == n)
                    .ok_or_else(|| ControlError::Unresolved {
                        resource: Resource::Network,
                        name: crate::error::clip(n),
                        field: "network",
                    })?;
                let subnets = self.list_subnets(p, &net.id)?;
                let sub = match s {
                    Some(s) => subnets
                        .into_iter()
                        .find(|x| &x.id == s || &x.name == s)
                        .ok_or_else(|| ControlError::Unresolved {
                            resource: Resource::Subnet,
                            name: crate::error::clip(s),
                            field: "subnet",
                        })?,
                    None if subnets.len() == 1 => subnets.into_iter().next().expect("one"),
                    None => {
                        return Err(network_conflict(format!(
                            "network {} has {} subnets: name the job's subnet",
                            net.name,
                            subnets.len()
                        )))
                    }
                };
                spec.network = Some(SliceNetwork {
                    id: net.id,
                    name: net.name,
                    subnet: sub.id,
                    subnet_name: sub.name,
                });
            }
        }
        if req.volumes.len() > JOB_VOLUMES_MAX {
            return Err(ControlError::invalid(
                "volumes",
                format!("at most {JOB_VOLUMES_MAX} entries"),
            ));
        }
        let groups = if req.volumes.is_empty() {
            vec![]
        } else {
            self.list_snapshot_groups(p, Some(tenant))?
        };
        let mut names: Vec<String> = Vec::new();
        for v in &req.volumes {
            let prefix = v.name.clone().unwrap_or_else(|| job.to_string());
            validate_name("volumes", &prefix)?;
            let g = groups
                .iter()
                .find(|g| g.ready && (g.id == v.group || g.name == v.group))
                .ok_or_else(|| ControlError::Unresolved {
                    resource: Resource::SnapshotGroup,
                    name: crate::error::clip(&v.group),
                    field: "volumes",
                })?;
            let mut members = Vec::with_capacity(g.members.len());
            for m in &g.members {
                let vol = self
                    .get_volume(p, &m.volume)
                    .map_err(ControlError::named_by("volumes"))?;
                let clone = format!("{prefix}-{}", vol.name);
                if clone.len() > NAME_MAX {
                    return Err(job_conflict(format!(
                        "clone name {} is longer than {} characters: give the clones a \
                         shorter name",
                        crate::error::clip(&clone),
                        NAME_MAX
                    )));
                }
                if names.contains(&clone) {
                    return Err(job_conflict(format!(
                        "two volume entries would both make volume {clone}: give them \
                         different names"
                    )));
                }
                if self.name_taken(tenant, &clone) {
                    return Err(ControlError::exists(Resource::Volume, &clone));
                }
                names.push(clone.clone());
                members.push(CloneMember {
                    snapshot: m.snapshot.clone(),
                    clone,
                });
            }
            spec.volumes.push(SliceClones {
                name: prefix,
                group: g.id.clone(),
                group_name: g.name.clone(),
                members,
            });
        }
        Ok(spec)
    }

    /// What a dry run checks of a slice on `parts` beyond [`Controller::resolve_slice`]: the
    /// network's cap holds the guarantees beside its ports' (the checks `set_port_bandwidth`
    /// makes, with its errors). Changes nothing.
    pub(super) fn check_slice(
        &self,
        p: &Principal,
        spec: &SliceSpec,
        parts: &[Part],
    ) -> Result<(), ControlError> {
        let Some(net) = &spec.network else {
            return Ok(());
        };
        let mins: Vec<u64> = parts
            .iter()
            .map(|x| x.bandwidth_bps)
            .filter(|&b| b > 0)
            .collect();
        if let Some(cap) = spec.port_cap_bps {
            if mins.iter().any(|&m| m > cap) {
                return Err(network_conflict("the guarantee is above the cap"));
            }
        }
        if mins.is_empty() {
            return Ok(());
        }
        let n = self
            .get_network(p, &net.id)
            .map_err(ControlError::named_by("network"))?;
        let Some(cap) = n.cap_bps else {
            return Err(network_conflict(format!(
                "a guarantee is a share of the network's cap: network {} has none",
                n.name
            )));
        };
        let others: u64 = self
            .list_ports(p, &n.id)?
            .iter()
            .filter_map(|x| x.min_bps)
            .sum();
        let want = others.saturating_add(mins.iter().sum());
        if want > cap {
            return Err(network_conflict(format!(
                "the network's ports would be guaranteed {want} bit/s, more than its cap {cap}"
            )));
        }
        Ok(())
    }

    /// Makes the slice of the job at `key` (recorded forward by its admission): the saga
    /// driven to its end. The failing step's error when it rolled back (or got stuck).
    pub(super) fn make_slice(&self, key: &str) -> Result<(), ControlError> {
        self.drive_slice(key, None)
    }

    /// Drives the saga recorded in the job at `key`, turned backward first with `then` when
    /// given (a delete, a restart).
    fn drive_slice(&self, key: &str, abort: Option<AfterUndo>) -> Result<(), ControlError> {
        let Some((rec, _)) = self.get::<JobRecord>(key)? else {
            return Ok(());
        };
        let Some(run) = rec.slice.clone() else {
            return Ok(());
        };
        let mut saga = run.saga;
        let mut then = run.then;
        let mut reason = None;
        if let Some(t) = abort {
            // A delete of a job whose failed make was stuck keeps the make's disposition:
            // the job goes either way, and a requeue would bring it back.
            if t == AfterUndo::Delete || saga.phase() != Phase::Backward {
                then = t;
            }
            if saga.phase() == Phase::Forward {
                reason = Some("its slice was interrupted by a restart".to_string());
            }
            saga.abort();
        }
        let mut x = SliceExec {
            c: self,
            p: acting_for(&rec.job.tenant),
            key: key.to_string(),
            tenant: rec.job.tenant.clone(),
            then,
            id: run.id,
            reason,
            faults: Faults::default(),
        };
        if abort.is_some() {
            use super::saga::Executor;
            x.record(&saga)?;
        }
        match drive(&mut saga, &mut x) {
            Outcome::Finished | Outcome::RolledBack(None) => Ok(()),
            Outcome::RolledBack(Some(e)) => Err(e),
            Outcome::Stuck { error, cause } => {
                tracing::warn!(job = %key, error = %error,
                    "a job slice's undo failed; it is resumed at the next start or delete");
                Err(cause.unwrap_or(error))
            }
        }
    }

    /// Undoes the slice of the job at `key` and removes the job (a delete). Refuses, changing
    /// nothing, while the job's clones are attached or have snapshots.
    pub(super) fn delete_slice(&self, p: &Principal, rec: &JobRecord) -> Result<(), ControlError> {
        let key = super::jobs::job_key(&rec.job.tenant, &rec.job.name);
        if rec
            .slice
            .as_ref()
            .is_some_and(|r| r.saga.phase() == Phase::Forward)
        {
            return Err(ControlError::Busy(format!(
                "job {}'s slice is being made: delete it once that is done",
                rec.job.name
            )));
        }
        for id in rec.slice_volumes() {
            let Ok(v) = self.get_volume(p, &id) else {
                continue; // deleted by hand
            };
            if self.store.get(&attachment_key(&v.id))?.is_some() {
                return Err(ControlError::InUse {
                    what: InUse::VolumeAttached,
                    message: format!(
                        "volume {} of job {} is attached: detach it first",
                        v.name, rec.job.name
                    ),
                });
            }
            let snaps = self.volume_snapshots(&v)?;
            if !snaps.is_empty() {
                return Err(ControlError::InUse {
                    what: InUse::VolumeHasSnapshots,
                    message: format!(
                        "volume {} of job {} has {} snapshot(s): delete them first",
                        v.name,
                        rec.job.name,
                        snaps.len()
                    ),
                });
            }
        }
        self.drive_slice(&key, Some(AfterUndo::Delete))
    }

    /// At start: undoes every slice a crash interrupted (or whose undo failed), and settles
    /// its job as its saga says. A slice that cannot be undone now is left recorded (logged).
    pub(super) fn recover_job_slices(&self) -> Result<(), ControlError> {
        for (key, rec) in self.list::<JobRecord>("/jobs/", None, 0)? {
            let Some(run) = &rec.slice else { continue };
            if !matches!(run.saga.phase(), Phase::Forward | Phase::Backward) {
                continue;
            }
            tracing::warn!(job = %key, "undoing a job slice a restart interrupted");
            if let Err(e) = self.drive_slice(&key, Some(run.then)) {
                tracing::warn!(job = %key, error = %e, "a job slice is left to undo");
            }
        }
        Ok(())
    }

    /// The NBD URIs of a job's attached clones (volume id → URI).
    pub(super) fn slice_uris(&self, p: &Principal, rec: &mut JobRecord) {
        for id in rec.slice_volumes() {
            if let Ok(Some((a, _))) = self.get::<Attachment>(&attachment_key(&id)) {
                let uri = self.attachment(p, &a.volume).map_or(a.uri, |a| a.uri);
                rec.attached.insert(id, uri);
            }
        }
    }

    fn run_step(&self, p: &Principal, step: &mut SliceStep) -> Result<(), ControlError> {
        match step {
            // Done by the admission that recorded the saga.
            SliceStep::Place => Ok(()),
            SliceStep::Port {
                name,
                network,
                subnet,
                mac,
                made,
                ..
            } => {
                let port = self
                    .create_port(
                        p,
                        network,
                        NewPort {
                            name: name.clone(),
                            subnet: subnet.clone(),
                            ip: None,
                            mac: Some(mac.clone()),
                            security_groups: None,
                        },
                    )
                    .map_err(ControlError::named_by("network"))?;
                *made = Some(MadePort {
                    id: port.id,
                    device: port.device,
                    ip: port.ip.to_string(),
                });
                Ok(())
            }
            SliceStep::Guarantee {
                name,
                network,
                min_bps,
                cap_bps,
            } => {
                let port = self
                    .list_ports(p, network)
                    .map_err(ControlError::named_by("network"))?
                    .into_iter()
                    .find(|x| &x.name == name)
                    .ok_or_else(|| ControlError::Unresolved {
                        resource: Resource::NetworkPort,
                        name: name.clone(),
                        field: "network",
                    })?;
                self.set_port_bandwidth(p, &port.id, *cap_bps, *min_bps)?;
                Ok(())
            }
            SliceStep::Clone {
                name,
                snapshot,
                request,
                made,
                ..
            } => {
                let v = self
                    .clone_snapshot(p, snapshot, name, Some(request.clone()))
                    .map_err(ControlError::named_by("volumes"))?;
                *made = Some(v.id);
                Ok(())
            }
        }
    }

    /// Undoes a step done or maybe done, finding its object by the identity it carries.
    /// `force`: a rollback deletes clones whatever uses them; a delete refuses.
    fn undo_step(&self, p: &Principal, step: &SliceStep, force: bool) -> Result<(), ControlError> {
        match step {
            SliceStep::Place => Ok(()),
            SliceStep::Port {
                name, network, mac, ..
            } => {
                let ports = match self.list_ports(p, network) {
                    Ok(ps) => ps,
                    // No network: no port of it either.
                    Err(ControlError::NotFound { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let ours = ports
                    .into_iter()
                    .find(|x| &x.name == name && &fmt_mac(&x.mac) == mac);
                match ours {
                    Some(port) => match self.delete_port(p, &port.id) {
                        Ok(()) | Err(ControlError::NotFound { .. }) => Ok(()),
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                }
            }
            // The guarantee goes with its port.
            SliceStep::Guarantee { .. } => Ok(()),
            SliceStep::Clone { request, made, .. } => {
                let tenant = p.tenant.clone().unwrap_or_default();
                let rkey = request_key(&tenant, request);
                let id = match made {
                    Some(id) => Some(id.clone()),
                    None => self.get::<String>(&rkey)?.map(|(id, _)| id),
                };
                if let Some(id) = id {
                    match self.delete_volume(p, &id, force) {
                        Ok(()) | Err(ControlError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.store.txn(Txn::new().delete(rkey))?;
                Ok(())
            }
        }
    }

    /// Undoes `place`: the job back in the queue with `reason`, or removed with its GPUs
    /// given back; capacity freed either way (the placement revision moves).
    fn settle_job(
        &self,
        key: &str,
        tenant: &str,
        then: AfterUndo,
        reason: Option<&str>,
    ) -> Result<(), ControlError> {
        match then {
            AfterUndo::Requeue => loop {
                let Some((mut rec, rev)) = self.get::<JobRecord>(key)? else {
                    return Ok(());
                };
                rec.state = super::jobs::JobState::Pending;
                rec.parts.clear();
                rec.slice = None;
                rec.explanation = Some(Explanation {
                    message: format!(
                        "its slice could not be made ({}); it is made again when the job is \
                         next admitted",
                        reason.unwrap_or("undone")
                    ),
                    binding: vec!["slice".into()],
                    drain: vec![],
                });
                let txn = Txn::new()
                    .when(key, rev)
                    .put(key, enc(&rec))
                    .put(PLACEMENT_REVISION_KEY, enc(&0u8));
                if self.store.txn(txn)?.succeeded {
                    return Ok(());
                }
            },
            AfterUndo::Forget | AfterUndo::Delete => self.with_tenant(tenant, |t| {
                let Some((rec, rev)) = self.get::<JobRecord>(key)? else {
                    return Ok((Txn::new(), ()));
                };
                charge(
                    t,
                    Charge {
                        gpus: u64::from(rec.job.gpus),
                        ..Charge::default()
                    },
                    Charge::default(),
                )?;
                Ok((
                    Txn::new()
                        .when(key, rev)
                        .delete(key)
                        .put(PLACEMENT_REVISION_KEY, enc(&0u8)),
                    (),
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(node: &str, bw: u64) -> Part {
        Part {
            node: node.into(),
            gpus: vec![],
            cpu_cores: 1,
            memory_bytes: 0,
            bandwidth_bps: bw,
            storage_bps: 0,
        }
    }

    fn spec() -> SliceSpec {
        SliceSpec {
            network: Some(SliceNetwork {
                id: "n1".into(),
                name: "vpc".into(),
                subnet: "s1".into(),
                subnet_name: "web".into(),
            }),
            port_cap_bps: None,
            volumes: vec![SliceClones {
                name: "data".into(),
                group: "g1".into(),
                group_name: "ckpt".into(),
                members: vec![
                    CloneMember {
                        snapshot: "a".into(),
                        clone: "data-shard0".into(),
                    },
                    CloneMember {
                        snapshot: "b".into(),
                        clone: "data-shard1".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn steps_are_place_then_a_port_and_guarantee_per_part_then_the_clones() {
        let steps = slice_steps(&spec(), "train", &[part("a", 10), part("b", 0)], "S");
        let kinds: Vec<&str> = steps.iter().map(SliceStep::kind).collect();
        // Part b has no bandwidth and the job no cap: no guarantee step for it.
        assert_eq!(
            kinds,
            ["place", "port", "guarantee", "port", "clone", "clone"]
        );
        let names: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                SliceStep::Port { name, .. } | SliceStep::Clone { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            ["job-train-0", "job-train-1", "data-shard0", "data-shard1"]
        );
        let one = slice_steps(&spec(), "train", &[part("a", 5)], "S");
        assert!(matches!(&one[1], SliceStep::Port { name, .. } if name == "job-train"));
        assert!(matches!(
            &one[2],
            SliceStep::Guarantee {
                min_bps: Some(5),
                cap_bps: None,
                ..
            }
        ));
    }

    #[test]
    fn identities_differ_per_saga_and_per_part() {
        let macs = |id: &str| -> Vec<String> {
            slice_steps(&spec(), "t", &[part("a", 1), part("b", 1)], id)
                .into_iter()
                .filter_map(|s| match s {
                    SliceStep::Port { mac, .. } => Some(mac),
                    SliceStep::Clone { request, .. } => Some(request),
                    _ => None,
                })
                .collect()
        };
        let (a, b) = (macs("one"), macs("two"));
        assert_eq!(a, macs("one"), "drawn from the saga's id: the same again");
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
        let unique: std::collections::BTreeSet<&String> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
    }

    #[test]
    fn the_view_shows_what_is_done_and_a_plan_shows_everything() {
        let steps = slice_steps(&spec(), "t", &[part("a", 7)], "S");
        let planned = view_of(
            &spec(),
            steps.iter().map(|s| (s, StepState::Planned)),
            SliceState::Planned,
        );
        assert_eq!(planned.ports.len(), 1);
        assert_eq!(planned.ports[0].min_bps, Some(7));
        assert_eq!(planned.volumes.len(), 2);
        // Only the port done: no guarantee shown, no volumes.
        let states = [
            StepState::Done,
            StepState::Done,
            StepState::Failed,
            StepState::Planned,
            StepState::Planned,
        ];
        let made = view_of(&spec(), steps.iter().zip(states), SliceState::Undoing);
        assert_eq!(made.ports.len(), 1);
        assert_eq!(made.ports[0].min_bps, None);
        assert!(made.volumes.is_empty());
        assert_eq!(made.network.as_deref(), Some("vpc"));
    }
}
