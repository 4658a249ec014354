//! Jobs on the placement pool: create (gang: all of it or none), list, show, delete, the
//! admission queue and dry-run plans, over the engine in `strata-place`; a job's slice (its
//! ports and volume clones) is made with it at admission (`job_slice/`).
//!
//! # Store layout
//! `/jobs/TENANT/NAME`: a [`JobRecord`], `pending` (waiting, with the engine's explanation)
//! or `running` (with its parts: node, GPU indexes, CPU, memory, bandwidth, storage), with
//! the slice it asks for (resolved at create) and, once admitted, its slice's saga.
//!
//! # Invariants
//! - A job's GPUs are charged to its tenant's `gpus` usage when it is created (pending or
//!   not: a queue is a claim) and given back when it is deleted, in the same transaction as
//!   the record (`with_tenant`, `charge`): GPU usage never drifts and never wraps.
//! - Admission ([`Controller::reconcile_jobs`]) runs after every change that can free or add
//!   capacity or queue a job (create, delete, uncordon, a node registered or declared). It
//!   reads nodes and jobs at one placement revision, asks `strata_place::admit::admit`, and
//!   writes the outcome in one transaction compared on that revision: a decision made on a
//!   state another change replaced is never written (it is made again on the new state).
//! - A plan (dry run) reads and never writes. It carries the placement revision it was made
//!   from; a create naming that `revision` is refused with `plan_stale` if anything that
//!   places jobs changed since, so what was planned is what runs (admission is deterministic).
//! - A tenant sees only its jobs; another tenant's answers `job_not_found`, like a job that
//!   does not exist.
//! - A job that asks for a slice is running only with its slice made or being made (or
//!   undone): admission records the saga in the transaction that starts the job and then
//!   drives it; a slice that fails puts the job back in the queue with the reason, except
//!   the create call's own job, which goes (with its GPUs) and answers the step's error.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_place::admit::{admit, Pending};
use strata_place::bandwidth::NicShare;
use strata_place::{Explanation, Job, JobKey, Part, Placement, PlanOptions};
use strata_state::Txn;

use super::auth::Principal;
use super::job_slice::fault::record_fault;
use super::job_slice::steps::{
    slice_steps, view_of, AfterUndo, SliceRequest, SliceRun, SliceSpec, SliceState, SliceStep,
    SliceView,
};
use super::saga::{Saga, StepState};
use super::store::*;
use super::tenants::{charge, Charge};
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::Role;

pub(super) fn job_key(tenant: &str, name: &str) -> String {
    format!("/jobs/{tenant}/{name}")
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue for room.
    Pending,
    /// Placed: its parts hold their resources.
    Running,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// What it asks for.
    pub job: Job,
    /// Arrival order within the queue (creation time in nanoseconds).
    pub seq: u64,
    /// Pending or running.
    pub state: JobState,
    /// Where it runs (empty while pending).
    pub parts: Vec<Part>,
    /// Why it waits (pending only).
    pub explanation: Option<Explanation>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The slice it asks for (resolved at create).
    #[serde(default)]
    pub spec: SliceSpec,
    /// Its slice's saga, once admitted (none while pending).
    #[serde(default)]
    pub slice: Option<SliceRun>,
    /// The planner's assignment of its parts' bandwidth on their nodes' NICs, made at
    /// admission (empty while pending, or when it asks for no bandwidth).
    #[serde(default)]
    pub bandwidth: Vec<NicShare>,
    /// The NBD URIs of its attached clones (volume id → URI), filled in when read; never
    /// stored.
    #[serde(skip)]
    pub attached: BTreeMap<String, String>,
}

impl JobRecord {
    /// Its placement, when running.
    pub fn placement(&self) -> Option<Placement> {
        (self.state == JobState::Running).then(|| Placement {
            job: self.job.clone(),
            parts: self.parts.clone(),
        })
    }
}

/// A job to create or plan (the API's body, checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateJob {
    /// Name, unique within the tenant.
    pub name: String,
    /// Tenant (admins name it).
    pub tenant: Option<String>,
    /// The demand (tenant and name are filled in by the controller).
    pub job: Job,
    /// Create only if the placement revision is still this one (from a plan).
    pub revision: Option<u64>,
    /// What to make with it: ports on a tenant subnet, clones of checkpoint groups.
    pub slice: SliceRequest,
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanView {
    /// The placement revision the plan was made from.
    pub revision: u64,
    /// The job planned.
    pub job: JobKey,
    /// Whether it would start now.
    pub fits: bool,
    /// Where it would run.
    pub parts: Vec<Part>,
    /// What would change: the job starting on its nodes (jobs already running never move in
    /// this version).
    pub moves: Vec<strata_place::Move>,
    /// Why it would wait, when it would.
    pub explanation: Option<Explanation>,
    /// The slice that would be made with it (when it asks for one).
    pub slice: Option<SliceView>,
    /// The planner's assignment of its bandwidth on its nodes' NICs (when it would start).
    pub bandwidth: Vec<NicShare>,
}

fn model_error(e: strata_place::ModelError) -> ControlError {
    ControlError::internal(format!("placement state is inconsistent: {e}"))
}

/// The explanation of a job admission passed over although the planner could place it alone:
/// jobs ahead of it took the room.
fn behind_queue() -> Explanation {
    Explanation {
        message: "waits behind jobs ahead of it in the queue".into(),
        binding: vec!["queue".into()],
        drain: vec![],
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Controller {
    /// Creates a job; it starts at once if it fits, else waits in the queue (`pending`, with
    /// the reason). Members and above.
    pub fn create_job(&self, p: &Principal, req: CreateJob) -> Result<JobRecord, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        let tenant = self.acting_tenant(p, req.tenant.as_deref())?;
        self.visible_tenant(p, &tenant)?;
        let mut job = req.job.clone();
        job.tenant = tenant.clone();
        job.name = req.name.clone();
        let key = job_key(&tenant, &req.name);
        let spec = self.resolve_slice(p, &tenant, &req.name, &req.slice)?;
        record_fault()?;
        self.with_tenant(&tenant, |t| {
            let current = self.placement_revision()?;
            if let Some(want) = req.revision {
                if want != current {
                    return Err(ControlError::PlanStale(format!(
                        "the plan was made at placement revision {want}; it is {current} now: \
                         plan again"
                    )));
                }
            }
            if self.store.get(&key)?.is_some() {
                return Err(ControlError::exists(
                    Resource::Job,
                    format!("{tenant}/{}", req.name),
                ));
            }
            charge(
                t,
                Charge::default(),
                Charge {
                    gpus: u64::from(job.gpus),
                    ..Charge::default()
                },
            )?;
            let rec = JobRecord {
                job: job.clone(),
                seq: now_nanos(),
                state: JobState::Pending,
                parts: vec![],
                explanation: None,
                created: now(),
                spec: spec.clone(),
                slice: None,
                bandwidth: vec![],
                attached: BTreeMap::new(),
            };
            let mut txn = Txn::new().when(key.clone(), 0);
            if req.revision.is_some() {
                txn = txn.when(PLACEMENT_REVISION_KEY, current);
            }
            Ok((
                txn.put(key.clone(), enc(&rec))
                    .put(PLACEMENT_REVISION_KEY, enc(&0u8)),
                (),
            ))
        })?;
        // Its slice is made if it is admitted now; if that fails, the job is gone again
        // (the saga's `forget`) and the call answers the failing step's error.
        if let Some(e) = self.admit_jobs(Some(&job.key()))? {
            return Err(e);
        }
        let mut rec = self
            .get::<JobRecord>(&key)?
            .map(|(r, _)| r)
            .ok_or_else(|| ControlError::not_found(Resource::Job, &req.name))?;
        self.slice_uris(p, &mut rec);
        Ok(rec)
    }

    /// Lists the jobs the caller may see (an admin: all, or one tenant's).
    pub fn list_jobs(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<JobRecord>, ControlError> {
        Self::require(p, Role::Reader)?;
        let prefix = match (p.role, tenant, &p.tenant) {
            (Role::Admin, Some(t), _) => format!("/jobs/{t}/"),
            (Role::Admin, None, _) => "/jobs/".to_string(),
            (_, Some(t), Some(own)) if t != own => return Ok(vec![]),
            (_, _, Some(own)) => format!("/jobs/{own}/"),
            (_, _, None) => return Ok(vec![]),
        };
        Ok(self
            .list::<JobRecord>(&prefix, None, 0)?
            .into_iter()
            .map(|(_, mut r)| {
                self.slice_uris(p, &mut r);
                r
            })
            .collect())
    }

    /// One job by name: the caller's tenant's, or (admin) the named tenant's, or the only
    /// tenant's that has that name.
    pub fn get_job(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<JobRecord, ControlError> {
        let (t, _) = self.find_job(p, tenant, name)?;
        let mut rec = self
            .get::<JobRecord>(&job_key(&t, name))?
            .map(|(r, _)| r)
            .ok_or_else(|| ControlError::not_found(Resource::Job, name))?;
        self.slice_uris(p, &mut rec);
        Ok(rec)
    }

    fn find_job(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<(String, JobRecord), ControlError> {
        Self::require(p, Role::Reader)?;
        let nf = || ControlError::not_found(Resource::Job, name);
        let mut found: Vec<JobRecord> = self
            .list_jobs(p, tenant)?
            .into_iter()
            .filter(|r| r.job.name == name)
            .collect();
        match found.len() {
            0 => Err(nf()),
            1 => {
                let r = found.remove(0);
                Ok((r.job.tenant.clone(), r))
            }
            _ => Err(ControlError::invalid(
                "tenant",
                format!("several tenants have a job {name}: name the tenant"),
            )),
        }
    }

    /// Deletes a job: its resources and GPU quota are freed and the queue admitted.
    pub fn delete_job(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let (t, _) = self.find_job(p, tenant, name)?;
        let key = job_key(&t, name);
        let (rec, _) = self
            .get::<JobRecord>(&key)?
            .ok_or_else(|| ControlError::not_found(Resource::Job, name))?;
        if rec.slice.is_some() {
            // Its slice first, then the job itself (the saga's last undo).
            self.delete_slice(p, &rec)?;
            return self.reconcile_jobs();
        }
        self.with_tenant(&t, |ten| {
            let (rec, rev) = self
                .get::<JobRecord>(&key)?
                .ok_or_else(|| ControlError::not_found(Resource::Job, name))?;
            if rec.slice.is_some() {
                return Err(ControlError::Busy(format!(
                    "job {name} was admitted meanwhile: delete it again"
                )));
            }
            charge(
                ten,
                Charge {
                    gpus: u64::from(rec.job.gpus),
                    ..Charge::default()
                },
                Charge::default(),
            )?;
            Ok((
                Txn::new()
                    .when(key.clone(), rev)
                    .delete(key.clone())
                    .put(PLACEMENT_REVISION_KEY, enc(&0u8)),
                (),
            ))
        })?;
        self.reconcile_jobs()
    }

    /// A dry run: where the job would run if created now, or why it would wait, and the
    /// placement revision that answer holds for. Changes nothing. Any role may plan.
    pub fn plan_job(&self, p: &Principal, req: CreateJob) -> Result<PlanView, ControlError> {
        Self::require(p, Role::Reader)?;
        validate_name("name", &req.name)?;
        let tenant = self.acting_tenant(p, req.tenant.as_deref())?;
        let (mut t, _) = self.visible_tenant(p, &tenant)?;
        let mut job = req.job.clone();
        job.tenant = tenant.clone();
        job.name = req.name.clone();
        let spec = self.resolve_slice(p, &tenant, &req.name, &req.slice)?;
        if self
            .get::<JobRecord>(&job_key(&tenant, &req.name))?
            .is_some()
        {
            return Err(ControlError::exists(
                Resource::Job,
                format!("{tenant}/{}", req.name),
            ));
        }
        // What the create would answer on the quota, on a copy.
        charge(
            &mut t,
            Charge::default(),
            Charge {
                gpus: u64::from(job.gpus),
                ..Charge::default()
            },
        )?;
        let snap = self.placement_state()?;
        let cluster = snap.cluster();
        let mut pending = pending_of(&snap.jobs);
        let seq = pending
            .iter()
            .map(|p| p.seq)
            .max()
            .unwrap_or(0)
            .max(now_nanos());
        pending.push(Pending {
            job: job.clone(),
            seq,
        });
        let adm = admit(&cluster, &pending).map_err(model_error)?;
        let key = job.key();
        if let Some(pl) = adm.admitted.iter().find(|pl| pl.job.key() == key) {
            // What the create would answer of its slice, and what it would make.
            self.check_slice(p, &spec, &pl.parts)?;
            let bandwidth = nic_shares(&cluster, &adm.admitted, &key)?;
            let slice = (!spec.is_empty()).then(|| {
                let steps = slice_steps(&spec, &req.name, &pl.parts, "plan");
                view_of(
                    &spec,
                    steps.iter().map(|s| (s, StepState::Planned)),
                    SliceState::Planned,
                )
            });
            return Ok(PlanView {
                revision: snap.revision,
                job: key.clone(),
                fits: true,
                parts: pl.parts.clone(),
                moves: vec![strata_place::Move {
                    job: key,
                    from: vec![],
                    to: pl.parts.iter().map(|p| p.node.clone()).collect(),
                }],
                explanation: None,
                slice,
                bandwidth,
            });
        }
        let explanation = explain(&cluster, &adm.admitted, &job)?;
        Ok(PlanView {
            revision: snap.revision,
            job: key,
            fits: false,
            parts: vec![],
            moves: vec![],
            explanation: Some(explanation),
            slice: (!spec.is_empty()).then(|| {
                view_of(
                    &spec,
                    std::iter::empty::<(&SliceStep, StepState)>(),
                    SliceState::Waiting,
                )
            }),
            bandwidth: vec![],
        })
    }

    /// Admission: starts the waiting jobs that fit now and records why the others wait (see
    /// the module invariants). Runs until a decision is written on a current state.
    pub fn reconcile_jobs(&self) -> Result<(), ControlError> {
        self.admit_jobs(None).map(|_| ())
    }

    /// Admission, then the slices of the jobs it started. A job whose slice fails is queued
    /// again with the reason and left out of the rest of this call (its room goes to the
    /// others); `own` (the create call's job) is removed instead, and its slice's error
    /// returned.
    fn admit_jobs(&self, own: Option<&JobKey>) -> Result<Option<ControlError>, ControlError> {
        let mut failed: BTreeSet<JobKey> = BTreeSet::new();
        let mut own_error = None;
        loop {
            let snap = self.placement_state()?;
            let pending: Vec<Pending> = pending_of(&snap.jobs)
                .into_iter()
                .filter(|p| !failed.contains(&p.job.key()))
                .collect();
            if pending.is_empty() {
                return Ok(own_error);
            }
            let cluster = snap.cluster();
            let adm = admit(&cluster, &pending).map_err(model_error)?;
            let mut txn = Txn::new().when(PLACEMENT_REVISION_KEY, snap.revision);
            let mut changed = false;
            let mut slices = Vec::new();
            for pl in &adm.admitted {
                let Some(rec) = snap.jobs.iter().find(|j| j.job.key() == pl.job.key()) else {
                    continue;
                };
                let mut rec = rec.clone();
                rec.state = JobState::Running;
                rec.parts = pl.parts.clone();
                rec.explanation = None;
                rec.bandwidth = nic_shares(&cluster, &adm.admitted, &rec.job.key())?;
                if !rec.spec.is_empty() {
                    let id = super::store::new_id();
                    let steps = slice_steps(&rec.spec, &rec.job.name, &rec.parts, &id);
                    let then = if own == Some(&rec.job.key()) {
                        AfterUndo::Forget
                    } else {
                        AfterUndo::Requeue
                    };
                    rec.slice = Some(SliceRun {
                        saga: Saga::new(steps, 1),
                        then,
                        id,
                    });
                    slices.push(rec.job.key());
                }
                txn = txn.put(job_key(&rec.job.tenant, &rec.job.name), enc(&rec));
                changed = true;
            }
            for key in &adm.waiting {
                let Some(rec) = snap.jobs.iter().find(|j| &j.job.key() == key) else {
                    continue;
                };
                let why = explain(&cluster, &adm.admitted, &rec.job)?;
                if rec.explanation.as_ref() != Some(&why) {
                    let mut rec = rec.clone();
                    rec.explanation = Some(why);
                    txn = txn.put(job_key(&rec.job.tenant, &rec.job.name), enc(&rec));
                    changed = true;
                }
            }
            if !changed {
                return Ok(own_error);
            }
            if !adm.admitted.is_empty() {
                txn = txn.put(PLACEMENT_REVISION_KEY, enc(&0u8));
            }
            if !self.store.txn(txn)?.succeeded {
                continue;
            }
            let mut any_failed = false;
            for key in slices {
                if let Err(e) = self.make_slice(&job_key(&key.tenant, &key.name)) {
                    any_failed = true;
                    if own == Some(&key) {
                        own_error = Some(e);
                    } else {
                        tracing::warn!(job = %key, error = %e,
                            "a job's slice could not be made; it waits again");
                    }
                    failed.insert(key);
                }
            }
            // A failed slice gave its room back: admit again without it.
            if !any_failed {
                return Ok(own_error);
            }
        }
    }

    /// GPUs of every tenant's jobs (the usage recount at start).
    pub(super) fn job_gpus(&self) -> Result<Vec<(String, u64)>, ControlError> {
        let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, r) in self.list::<JobRecord>("/jobs/", None, 0)? {
            let s = sums.entry(r.job.tenant).or_default();
            *s = s.saturating_add(u64::from(r.job.gpus));
        }
        Ok(sums.into_iter().collect())
    }
}

/// The planner's bandwidth assignment of `job`'s parts when `admitted` start on `cluster`:
/// [`strata_place::bandwidth::assign_nics`] over every admitted job at once, so each NIC's
/// guarantees are counted together. Admission placed them within the NICs' free bandwidth, so
/// an infeasible answer is the two engines disagreeing: an internal error, nothing written.
fn nic_shares(
    cluster: &strata_place::Cluster,
    admitted: &[Placement],
    job: &JobKey,
) -> Result<Vec<NicShare>, ControlError> {
    let all = strata_place::bandwidth::assign_nics(cluster, admitted).map_err(|e| {
        ControlError::internal(format!(
            "bandwidth assignment disagrees with admission: {e}"
        ))
    })?;
    Ok(all.into_iter().filter(|s| &s.job == job).collect())
}

fn pending_of(jobs: &[JobRecord]) -> Vec<Pending> {
    jobs.iter()
        .filter(|j| j.state == JobState::Pending)
        .map(|j| Pending {
            job: j.job.clone(),
            seq: j.seq,
        })
        .collect()
}

/// Why `job` does not start on `cluster` once `admitted` run: the engine's explanation for it
/// planned alone on what is left (greedy, no solver time), or "behind the queue" when alone
/// it would fit.
fn explain(
    cluster: &strata_place::Cluster,
    admitted: &[Placement],
    job: &Job,
) -> Result<Explanation, ControlError> {
    let mut after = cluster.clone();
    after.running.extend(admitted.iter().cloned());
    let opts = PlanOptions {
        time_limit: std::time::Duration::ZERO,
        ..PlanOptions::default()
    };
    let plan = strata_place::plan(&after, std::slice::from_ref(job), &opts).map_err(model_error)?;
    Ok(plan
        .unplaced
        .into_iter()
        .next()
        .map_or_else(behind_queue, |u| u.explanation))
}
