//! The control plane's logic, without HTTP: one [`Controller`] whose methods are grouped by
//! resource, one file each. Every method authorizes the caller first ([`auth`]), changes the
//! state store in transactions that keep quotas exact ([`tenants`]), then drives the engine.
//! Errors are [`ControlError`](crate::error::ControlError)s; the HTTP status and stable code of
//! each are decided in `api.rs` only.
//!
//! # Files
//! - `store.rs`: store keys and the record helpers (get, list, encode), ids and time.
//! - `auth.rs`: tokens, authentication and roles (`require`, `visible_tenant`, `acting_tenant`).
//! - `tenants.rs`: tenants, quotas and their arithmetic (`charge`).
//! - `tenant_txn.rs`: the quota transaction (`with_tenant`): a tenant's changes staged into
//!   batches, one durable commit per batch.
//! - `volumes.rs`, `snapshots.rs`, `qos.rs`: the volume lifecycle over the engine.
//! - `snapcopy.rs`: a new copy (rebuild, drain) given the volume's snapshots before it joins.
//! - `groups.rs`: checkpoint groups (snapshots of several volumes at one instant).
//! - `schedules.rs`: snapshot schedules (snapshots or groups taken every interval, with
//!   retention), the runner's tick and its pure parts (what is due, what retention deletes).
//! - `attachments.rs`: NBD exports of volumes and who may open them.
//! - `nbd_link.rs`: the running NBD server: tenant sockets, the authorize and admit hooks,
//!   closing the sessions of a detached volume or a revoked tenant.
//! - `certificates.rs`: TLS client certificates issued per tenant, and their revocation.
//! - `figures.rs`: live statistics and Prometheus metrics.
//! - `devices.rs`: pools of devices (records, opening each device's engine pool, adding and
//!   removing devices) and where a new volume's copies go.
//! - `pools.rs`: pool settings (the overcommit limit) and each pool's provisioned figure.
//! - `rebalance.rs`: rebalance rounds (`pool rebalance`, the daemon's timer) over
//!   `strata_place::rebalance`, each move carried by the drain's temporary set.
//! - `online.rs`: a faulted or missing device opened again, its copies catching up.
//! - `orphans.rs`: at start, deletes engine volumes no volume record names on their device.
//! - `switches.rs`: the switch methods, authorizing and delegating to `crate::net`.
//! - `networks/`: tenant networks (networks, subnets, ports, routers, security groups),
//!   compiled by `strata-vpc` onto the node's integration switch.
//! - `node_scope.rs`: which records are this node's (its pools, its volumes), and the move of
//!   a one-node install's pool records under its node.
//! - `liveness.rs`: on etcd, the node's lease and alive key, the leader's election, and the
//!   leader's record of nodes going down and up.
//! - `nodes.rs`: the placement pool's nodes (the local one, declared ones, cordons) and the
//!   placement revision.
//! - `jobs.rs`: jobs over `strata-place`: create, delete, the admission queue, dry-run plans.
//! - `job_slice/`: a job's slice (ports on a tenant subnet, clones of checkpoint groups)
//!   made at admission as a saga (`saga.rs`: steps as data, run and undone in order).
//! - `audit.rs`: the audit log.
//! - `events.rs`: the event journal (what happened to the objects, for `strata events`).
//! - `recovery.rs`: [`Controller::open`], which reconciles the store and the engine at start.
//!
//! # Consistency between the store and the engine
//! A volume is first recorded as `creating` (in the same store transaction that checks the
//! quota and reserves the name), then created in the engine, then marked `available`. A delete
//! marks `deleting`, deletes in the engine, then removes the records; if the engine refuses,
//! the volume is `available` again in the same call. [`Controller::open`] finishes or undoes
//! whatever a crash interrupted, so the two never disagree for long and a restart (also after
//! `kill -9`) recovers everything acknowledged.
//!
//! # Concurrency
//! This process's quota transactions on one tenant are staged in order into batches, each
//! committed as one transaction (`tenant_txn.rs`), and size changes reserve their growth of
//! the pool's provisioned figure before they commit (`pools.rs`), so concurrent requests
//! never lose a compare-and-swap to each other and no lock is held across a durable commit
//! but the store's own: an error always means the change was not applied.
//!
//! # Visibility
//! A caller sees its own tenant's resources (an admin sees all). Anything else answers
//! not-found with the same resource as one that does not exist, so existence never leaks.

mod attachments;
mod audit;
mod auth;
mod certificates;
pub mod cluster_ca;
pub mod cluster_copies;
pub mod cluster_fence;
pub mod cluster_rebuild;
mod copies;
mod devices;
mod drain;
mod events;
mod figures;
mod groups;
mod grow;
mod job_slice;
mod jobs;
mod liveness;
mod master_key;
mod nbd_link;
mod nbd_source;
mod networks;
mod node_scope;
mod nodes;
mod online;
mod orphans;
mod pools;
mod qos;
mod rebalance;
mod rebuild;
mod recovery;
mod replicas;
mod saga;
mod schedules;
mod scrub;
mod shares;
mod snapcopy;
mod snapshots;
mod store;
mod switches;
mod tenant_txn;
mod tenants;
mod volumes;

pub use attachments::Exports;
pub use auth::{parse_duration, Principal};
pub use certificates::Revoked;
pub use cluster_copies::{CopySource, RemoteCopy};
pub use copies::ResyncView;
pub use devices::{CreatePool, DeviceView, NewDevice, PoolView};
pub use events::{EventKind, EventQuery, EventRecord, Severity, KEEP_EVENTS, KEEP_SECONDS};
pub use groups::{NewGroup, GROUP_MAX_MEMBERS};
pub use job_slice::{
    SlicePortView, SliceRequest, SliceState, SliceView, SliceVolumeView, VolumeRequest,
    JOB_VOLUMES_MAX,
};
pub use jobs::{CreateJob, JobRecord, JobState, PlanView};
pub use liveness::{Alive, ClusterView, LEASE_TTL, RENEW_EVERY};
pub use master_key::Rotation;
pub use nbd_source::VolumeSource;
pub use networks::{
    health_check, monitor_namespace, LbProbeSet, MonitorSpec, NetworkStats, NetworkTrace,
    NewBackend, NewBalancer, NewListener, NewPort, NewRule, NewSubnet, PortFigures, PortProbe,
    TraceFrom, TraceLine, DEFAULT_GROUP, MONITOR_PORT,
};
pub use nodes::{NodeRecord, NodeView};
pub use pools::{OvercommitArg, PoolSettingsView, SetPoolSettings};
pub use rebalance::{
    RebalanceMoveView, RebalanceRequest, RebalanceSkip, RebalanceView, REBALANCE_DEFAULT_MOVES,
    REBALANCE_FAULT_ENV, REBALANCE_MAX_MOVES,
};
pub use rebuild::RebuildSignals;
pub use recovery::LOCAL_NODE;
pub use schedules::{
    interval_text, NewSchedule, SchedulePatch, INTERVAL_MAX, INTERVAL_MIN, SCHEDULE_KEEP_MAX,
    SCHEDULE_NAME_MAX_LEN,
};
pub use scrub::{BadBlock, ScrubView};
pub use shares::{class_of, PoolShareRecord, TenantShareRecord, TenantShareView, WEIGHT_MAX};
pub use volumes::{CreateVolume, SizeArg};

use strata_block::Pool;
use strata_state::Store;

/// The one pool the daemon has today.
pub const DEFAULT_POOL: &str = "default";

/// The tenant the daemon's first start makes, where an admin's volume creates act when they
/// name no tenant.
pub const DEFAULT_TENANT: &str = "default";

/// The control plane.
pub struct Controller {
    store: std::sync::Arc<dyn Store>,
    /// This daemon's node: its pools are `/nodes/{node}/pools/` (`node_scope.rs`).
    node: String,
    /// The node that owns volume records naming no node (`node_scope.rs`).
    legacy_node: parking_lot::RwLock<Option<String>>,
    pool: Pool,
    switches: crate::net::Switches,
    /// Where the NBD server listens, once the daemon started it.
    nbd_socket: parking_lot::RwLock<Option<std::path::PathBuf>>,
    /// Export names NBD clients may open: the attached volumes. Shared with the NBD server.
    exports: Exports,
    /// The NBD TCP listener's address and the CA that issues its client certificates.
    nbd_tcp: parking_lot::RwLock<Option<(String, std::sync::Arc<crate::pki::Pki>)>>,
    /// The NBD server itself, once the daemon connected it (tenant sockets, sessions).
    nbd: nbd_link::NbdLink,
    /// Per tenant, the batches this process's quota transactions are staged into.
    tenant_pipes: tenant_txn::TenantPipes,
    /// The pool's provisioned figure and its threshold crossings (`pools.rs`).
    allocation: parking_lot::Mutex<pools::Allocations>,
    /// Tenant networks on this node: topology, compiler, integration switch (`networks/`).
    vpc: networks::Vpc,
    /// The engine pools of every device of every pool (`devices.rs`).
    storage: std::sync::Arc<crate::storage::Storage>,
    /// The replica sets of replicated volumes (`replicas.rs`).
    sets: replicas::Sets,
    /// The pools' scrubs (`scrub.rs`).
    scrubs: scrub::Scrubs,
    /// One-copy volumes moving off draining devices (`drain.rs`).
    drains: drain::Drains,
    /// Rebalance rounds, one at a time (`rebalance.rs`).
    rounds: rebalance::Rounds,
    /// New copies being given their volume's snapshots before they join (`snapcopy.rs`).
    snapcopies: snapcopy::SnapCopies,
    /// The data dir (`master_key.rs`: key files must lie outside it).
    data_dir: parking_lot::RwLock<Option<std::path::PathBuf>>,
    /// Serializes changes to pool records (devices added and removed).
    pool_lock: parking_lot::Mutex<()>,
    /// Per volume, the gate writes pass and layer changes hold (`copies.rs`).
    gates: parking_lot::Mutex<
        std::collections::HashMap<String, std::sync::Arc<parking_lot::RwLock<()>>>,
    >,
    /// The event journal and its followers (`events.rs`).
    events: events::Journal,
    /// Per snapshot schedule, the lock its runs and its changes hold (`schedules.rs`).
    schedules: schedules::Runs,
    /// This node's lease, and what the leader saw (`liveness.rs`).
    liveness: liveness::Liveness,
    /// The node port's client side, once open (`cluster_copies.rs`).
    node_port: cluster_copies::NodePort,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("pool", &self.pool.id())
            .finish()
    }
}

impl Controller {
    /// The default pool's first device's engine pool (the data dir's own).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The engine pools of every device.
    pub fn storage(&self) -> &crate::storage::Storage {
        &self.storage
    }

    /// The export names attached volumes may be opened under (for the NBD server's filter).
    pub fn exports(&self) -> Exports {
        self.exports.clone()
    }

    /// Tells the controller where the NBD server listens (attachments return URIs for it).
    pub fn set_nbd_socket(&self, path: std::path::PathBuf) {
        *self.nbd_socket.write() = Some(path);
    }

    /// Tells the controller the NBD TCP listener's address and its CA.
    pub fn set_nbd_tcp(&self, addr: String, pki: std::sync::Arc<crate::pki::Pki>) {
        *self.nbd_tcp.write() = Some((addr, pki));
    }
}
