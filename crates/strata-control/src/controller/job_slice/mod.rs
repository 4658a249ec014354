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

pub(super) mod fault;
pub(super) mod steps;

pub use steps::*;

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
use fault::Faults;

/// The longest port-name suffix a spanning job's part adds (`-K`, K below 100,000).
const PART_SUFFIX_MAX: usize = 6;

/// The longest name a volume or port takes (the engine's name rule).
const NAME_MAX: usize = strata_block::meta::MAX_NAME;

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
                node,
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
                            veth_peer: None,
                            node: self.switch_node(node),
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
                rec.bandwidth.clear();
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
