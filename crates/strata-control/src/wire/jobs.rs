//! Jobs on the placement pool and dry-run plans, with the slice made with a job: a port per
//! placed part on a tenant subnet and clones of checkpoint groups.
//!
//! Quantities are plain integers: bytes for memory, bits per second for network bandwidth,
//! bytes per second for storage throughput (the CLI turns `512G` into them).

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object};
use utoipa::ToSchema;

use super::bounds::*;
use super::networks::BPS_MAX;
use super::Check;
use crate::controller::{
    self, JobRecord, JobState as CJobState, PlanView, SliceState as CSliceState, SliceView,
    JOB_VOLUMES_MAX,
};
use crate::error::ControlError;

/// Most GPUs one job asks for.
pub const JOB_GPUS_MAX: u64 = 65_536;
/// Most CPU cores one job asks for.
pub const JOB_CPU_MAX: u64 = 1 << 24;
/// Most memory one job asks for: 1 EiB.
pub const JOB_MEMORY_MAX: u64 = 1 << 60;
/// Most network bandwidth or storage throughput one job asks for (per second).
pub const JOB_RATE_MAX: u64 = 1 << 60;
/// Highest job priority.
pub const JOB_PRIORITY_MAX: u64 = 1_000_000;
/// Largest placement revision a create names.
pub const REVISION_MAX: u64 = (1 << 53) - 1;
/// A GPU model or label name.
pub const MODEL_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// Longest GPU model or label name.
pub const MODEL_MAX_LEN: usize = 64;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn opt_name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, true)
}
fn opt_model() -> Object {
    text(MODEL_PATTERN, MODEL_MAX_LEN, true)
}
fn gpus() -> Object {
    int(0, JOB_GPUS_MAX, true)
}
fn cpu() -> Object {
    int(0, JOB_CPU_MAX, true)
}
fn memory() -> Object {
    int(0, JOB_MEMORY_MAX, true)
}
fn rate() -> Object {
    int(0, JOB_RATE_MAX, true)
}
fn priority() -> Object {
    int(0, JOB_PRIORITY_MAX, true)
}
fn revision() -> Object {
    int(0, REVISION_MAX, true)
}
fn port_cap() -> Object {
    int(1, BPS_MAX, true)
}
fn volumes() -> Array {
    ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("JobVolume"))
        .max_items(Some(JOB_VOLUMES_MAX))
        .build()
}

/// One `volumes` entry of a job: every member of a checkpoint group cloned, named
/// `NAME-MEMBER` (the CLI's `--volume NAME=clone:GROUP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobVolume {
    /// The clones' prefix (default: the job's name).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub name: Option<String>,
    /// The checkpoint group (id or name) of the job's tenant.
    #[schema(schema_with = name)]
    pub clone_group: String,
}

/// `POST /v1/jobs` and `POST /v1/plans`: what a job asks for. All of it or none (gang).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateJob {
    /// Name, unique within the tenant.
    #[schema(schema_with = name)]
    pub name: String,
    /// Tenant (admins name it; others create in their own).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub tenant: Option<String>,
    /// GPUs, all of one model (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = gpus)]
    pub gpus: Option<u64>,
    /// GPU model wanted (default: any one model).
    #[serde(default)]
    #[schema(schema_with = opt_model)]
    pub gpu_model: Option<String>,
    /// CPU cores (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = cpu)]
    pub cpu_cores: Option<u64>,
    /// Memory, bytes (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = memory)]
    pub memory_bytes: Option<u64>,
    /// Network bandwidth, bits per second (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = rate)]
    pub bandwidth_bps: Option<u64>,
    /// Storage throughput, bytes per second (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = rate)]
    pub storage_bps: Option<u64>,
    /// All GPUs in one NVLink island.
    #[serde(default)]
    pub same_island: Option<bool>,
    /// May span nodes sharing this label's value (e.g. `rack`) when no one node could hold it.
    #[serde(default)]
    #[schema(schema_with = opt_model)]
    pub same_label: Option<String>,
    /// Higher goes first (default 0).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = priority)]
    pub priority: Option<u64>,
    /// Create only if the placement revision is still this one (the `revision` of a plan);
    /// else `plan_stale`. Ignored by `POST /v1/plans`.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = revision)]
    pub revision: Option<u64>,
    /// The tenant network (id or name) the job's ports go on: one per placed part, named
    /// `job-NAME` (`job-NAME-K` when the job spans parts), guaranteed the part's bandwidth
    /// (a share of the network's cap, which must hold it: `network_spec_conflict`).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub network: Option<String>,
    /// The subnet (id or name) of `network` (default: its only subnet).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub subnet: Option<String>,
    /// A cap on each of the job's ports, bits per second (at least its guarantee).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = port_cap)]
    pub port_cap_bps: Option<u64>,
    /// Checkpoint groups to clone for the job.
    #[serde(default)]
    #[schema(schema_with = volumes)]
    pub volumes: Vec<JobVolume>,
}

impl Check for CreateJob {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        if let Some(t) = &self.tenant {
            check_text("tenant", t, NAME_PATTERN)?;
        }
        if let Some(m) = &self.gpu_model {
            check_text("gpu_model", m, MODEL_PATTERN)?;
        }
        if let Some(l) = &self.same_label {
            check_text("same_label", l, MODEL_PATTERN)?;
        }
        let opt = |f, v: Option<u64>, max| v.map_or(Ok(()), |v| check_int(f, v, 0, max));
        opt("gpus", self.gpus, JOB_GPUS_MAX)?;
        opt("cpu_cores", self.cpu_cores, JOB_CPU_MAX)?;
        opt("memory_bytes", self.memory_bytes, JOB_MEMORY_MAX)?;
        opt("bandwidth_bps", self.bandwidth_bps, JOB_RATE_MAX)?;
        opt("storage_bps", self.storage_bps, JOB_RATE_MAX)?;
        opt("priority", self.priority, JOB_PRIORITY_MAX)?;
        opt("revision", self.revision, REVISION_MAX)?;
        for (f, v) in [("network", &self.network), ("subnet", &self.subnet)] {
            if let Some(v) = v {
                check_text(f, v, NAME_PATTERN)?;
            }
        }
        if let Some(c) = self.port_cap_bps {
            check_int("port_cap_bps", c, 1, BPS_MAX)?;
        }
        let vols = &self.volumes;
        if vols.len() > JOB_VOLUMES_MAX {
            return Err(ControlError::invalid(
                "volumes",
                format!("at most {JOB_VOLUMES_MAX} entries"),
            ));
        }
        for v in vols {
            if let Some(n) = &v.name {
                check_text("volumes", n, NAME_PATTERN)?;
            }
            check_text("volumes", &v.clone_group, NAME_PATTERN)?;
        }
        Ok(())
    }
}

impl CreateJob {
    /// The controller's request (bounds checked: every count fits its engine type).
    pub fn into_request(self) -> controller::CreateJob {
        let small = |v: Option<u64>| v.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        controller::CreateJob {
            job: strata_place::Job {
                tenant: String::new(),
                name: self.name.clone(),
                priority: small(self.priority),
                gpus: small(self.gpus),
                gpu_model: self.gpu_model,
                cpu_cores: small(self.cpu_cores),
                memory_bytes: self.memory_bytes.unwrap_or(0),
                bandwidth_bps: self.bandwidth_bps.unwrap_or(0),
                storage_bps: self.storage_bps.unwrap_or(0),
                same_island: self.same_island.unwrap_or(false),
                same_label: self.same_label,
            },
            name: self.name,
            tenant: self.tenant,
            revision: self.revision,
            slice: controller::SliceRequest {
                network: self.network,
                subnet: self.subnet,
                port_cap_bps: self.port_cap_bps,
                volumes: self
                    .volumes
                    .into_iter()
                    .map(|v| controller::VolumeRequest {
                        name: v.name,
                        group: v.clone_group,
                    })
                    .collect(),
            },
        }
    }
}

/// `GET /v1/jobs`, `GET|DELETE /v1/jobs/{name}`: the tenant (admins; others see their own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobQuery {
    /// Tenant.
    pub tenant: Option<String>,
}

impl Check for JobQuery {
    fn check(&self) -> Result<(), ControlError> {
        match &self.tenant {
            Some(t) => check_text("tenant", t, NAME_PATTERN),
            None => Ok(()),
        }
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue for room; `explanation` says why.
    Pending,
    /// Placed.
    Running,
}

/// The share of a job on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobPart {
    /// Node.
    pub node: String,
    /// GPU indexes on that node.
    pub gpus: Vec<u32>,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// Bandwidth, bits per second.
    pub bandwidth_bps: u64,
    /// Storage throughput, bytes per second.
    pub storage_bps: u64,
}

impl From<strata_place::Part> for JobPart {
    fn from(p: strata_place::Part) -> Self {
        JobPart {
            node: p.node,
            gpus: p.gpus,
            cpu_cores: p.cpu_cores,
            memory_bytes: p.memory_bytes,
            bandwidth_bps: p.bandwidth_bps,
            storage_bps: p.storage_bps,
        }
    }
}

/// One part's bandwidth on its node's NIC, as the planner assigns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobBandwidth {
    /// Node whose NIC carries the part.
    pub node: String,
    /// Guaranteed rate (the part's share of the job's bandwidth), bits per second.
    pub guarantee_bps: u64,
    /// The rate the planner gives it when every flow on the NIC wants the whole link (its
    /// guarantee plus its share of what no guarantee holds, higher priorities first), bits
    /// per second.
    pub rate_bps: u64,
    /// The NIC's capacity, bits per second.
    pub nic_bps: u64,
    /// Guarantees on the NIC with this part (running jobs' and this one's), bits per second.
    pub nic_guaranteed_bps: u64,
}

impl From<strata_place::bandwidth::NicShare> for JobBandwidth {
    fn from(s: strata_place::bandwidth::NicShare) -> Self {
        JobBandwidth {
            node: s.node,
            guarantee_bps: s.guarantee_bps,
            rate_bps: s.rate_bps,
            nic_bps: s.link_bps,
            nic_guaranteed_bps: s.link_guaranteed_bps,
        }
    }
}

/// Why a job does not fit, in the user's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobExplanation {
    /// One sentence, e.g. "needs 16 H200 in one NVLink island; the largest free island has 8;
    /// draining node-3 would make room".
    pub message: String,
    /// The constraint families that bind: gpu_model, cordoned, island, gpus, cpu, memory,
    /// bandwidth, storage_throughput, label_group, combination, queue.
    pub binding: Vec<String>,
    /// Nodes whose draining would make room.
    pub drain: Vec<String>,
}

impl From<strata_place::Explanation> for JobExplanation {
    fn from(e: strata_place::Explanation) -> Self {
        JobExplanation {
            message: e.message,
            binding: e.binding,
            drain: e.drain,
        }
    }
}

/// Where a job's slice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobSliceState {
    /// A dry run: what creating the job now would make.
    Planned,
    /// The job waits in the queue: its slice is made when it is admitted.
    Waiting,
    /// Being made.
    Making,
    /// Made.
    Ready,
    /// Being undone (a failed step, a delete, or an undo the next start resumes).
    Undoing,
}

/// A port of a job's slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobSlicePort {
    /// Port name (`job-NAME`, or `job-NAME-K` per part of a spanning job).
    pub name: String,
    /// The part's node.
    pub node: String,
    /// Port id (once made).
    pub id: Option<String>,
    /// The TAP device to plug the job's VM or namespace into (once made).
    pub device: Option<String>,
    /// Its address (once made).
    pub ip: Option<String>,
    /// Its MAC (once made).
    pub mac: Option<String>,
    /// Guarantee, bits per second: the part's bandwidth.
    pub min_bps: Option<u64>,
    /// Cap, bits per second.
    pub cap_bps: Option<u64>,
}

/// A volume of a job's slice: a clone of a checkpoint group's member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobSliceVolume {
    /// Volume name (`PREFIX-MEMBER`).
    pub name: String,
    /// The checkpoint group it is a clone from.
    pub group: String,
    /// The member snapshot's id.
    pub snapshot: String,
    /// Volume id (once made).
    pub id: Option<String>,
    /// The NBD URI to open it with, while it is attached (`strata volume attach`).
    pub uri: Option<String>,
}

/// What is made with a job: its network slice and its volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobSlice {
    /// Where it is.
    pub state: JobSliceState,
    /// The tenant network of its ports.
    pub network: Option<String>,
    /// Their subnet.
    pub subnet: Option<String>,
    /// Its ports, one per placed part.
    pub ports: Vec<JobSlicePort>,
    /// Its volumes.
    pub volumes: Vec<JobSliceVolume>,
}

impl JobSlice {
    fn of(v: SliceView, uris: &std::collections::BTreeMap<String, String>) -> JobSlice {
        JobSlice {
            state: match v.state {
                CSliceState::Planned => JobSliceState::Planned,
                CSliceState::Waiting => JobSliceState::Waiting,
                CSliceState::Making => JobSliceState::Making,
                CSliceState::Ready => JobSliceState::Ready,
                CSliceState::Undoing => JobSliceState::Undoing,
            },
            network: v.network,
            subnet: v.subnet,
            ports: v
                .ports
                .into_iter()
                .map(|p| JobSlicePort {
                    name: p.name,
                    node: p.node,
                    id: p.id,
                    device: p.device,
                    ip: p.ip,
                    mac: p.mac,
                    min_bps: p.min_bps,
                    cap_bps: p.cap_bps,
                })
                .collect(),
            volumes: v
                .volumes
                .into_iter()
                .map(|x| JobSliceVolume {
                    uri: x.id.as_ref().and_then(|id| uris.get(id).cloned()),
                    name: x.name,
                    group: x.group,
                    snapshot: x.snapshot,
                    id: x.id,
                })
                .collect(),
        }
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    /// Tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Pending or running.
    pub state: JobState,
    /// Priority.
    pub priority: u32,
    /// GPUs.
    pub gpus: u32,
    /// GPU model asked for.
    pub gpu_model: Option<String>,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// Bandwidth, bits per second.
    pub bandwidth_bps: u64,
    /// Storage throughput, bytes per second.
    pub storage_bps: u64,
    /// One NVLink island.
    pub same_island: bool,
    /// Label a spanning job keeps to.
    pub same_label: Option<String>,
    /// Where it runs (empty while pending).
    pub placement: Vec<JobPart>,
    /// Its parts' bandwidth on their nodes' NICs, assigned at admission (empty while pending
    /// or without bandwidth).
    pub bandwidth: Vec<JobBandwidth>,
    /// Nodes it runs on, comma-separated (for tables).
    pub nodes: String,
    /// Why it waits (pending only).
    pub explanation: Option<JobExplanation>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// What is made with it (when it asks for a network or volumes).
    pub slice: Option<JobSlice>,
}

impl From<JobRecord> for JobInfo {
    fn from(r: JobRecord) -> Self {
        let slice = r.slice_view().map(|v| JobSlice::of(v, &r.attached));
        let j = r.job;
        JobInfo {
            slice,
            nodes: r
                .parts
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>()
                .join(","),
            tenant: j.tenant,
            name: j.name,
            state: match r.state {
                CJobState::Pending => JobState::Pending,
                CJobState::Running => JobState::Running,
            },
            priority: j.priority,
            gpus: j.gpus,
            gpu_model: j.gpu_model,
            cpu_cores: j.cpu_cores,
            memory_bytes: j.memory_bytes,
            bandwidth_bps: j.bandwidth_bps,
            storage_bps: j.storage_bps,
            same_island: j.same_island,
            same_label: j.same_label,
            placement: r.parts.into_iter().map(Into::into).collect(),
            bandwidth: r.bandwidth.into_iter().map(Into::into).collect(),
            explanation: r.explanation.map(Into::into),
            created: r.created,
        }
    }
}

/// Jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Jobs, by tenant and name.
    pub items: Vec<JobInfo>,
}

/// One change a plan would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanMove {
    /// The job, `TENANT/NAME`.
    pub job: String,
    /// Nodes it leaves (empty: it starts).
    pub from: Vec<String>,
    /// Nodes it goes to.
    pub to: Vec<String>,
}

/// `POST /v1/plans`: what creating the job now would do. Nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanResult {
    /// The placement revision the plan was made from: pass it as `revision` to
    /// `POST /v1/jobs` to create the job only while the plan holds.
    pub revision: u64,
    /// Tenant.
    pub tenant: String,
    /// Job name.
    pub name: String,
    /// Whether it would start now (else it would wait in the queue).
    pub fits: bool,
    /// Where it would run.
    pub placement: Vec<JobPart>,
    /// Its bandwidth on its nodes' NICs, as the planner would assign it (when it would start
    /// and asks for bandwidth).
    pub bandwidth: Vec<JobBandwidth>,
    /// What would change.
    pub moves: Vec<PlanMove>,
    /// Why it would wait (the binding constraints, what draining would make room).
    pub explanation: Option<JobExplanation>,
    /// The slice creating it would make (when it asks for one; nothing is made by a plan).
    pub slice: Option<JobSlice>,
}

impl From<PlanView> for PlanResult {
    fn from(p: PlanView) -> Self {
        PlanResult {
            slice: p.slice.map(|v| JobSlice::of(v, &Default::default())),
            revision: p.revision,
            tenant: p.job.tenant,
            name: p.job.name,
            fits: p.fits,
            placement: p.parts.into_iter().map(Into::into).collect(),
            bandwidth: p.bandwidth.into_iter().map(Into::into).collect(),
            moves: p
                .moves
                .into_iter()
                .map(|m| PlanMove {
                    job: m.job.to_string(),
                    from: m.from,
                    to: m.to,
                })
                .collect(),
            explanation: p.explanation.map(Into::into),
        }
    }
}
