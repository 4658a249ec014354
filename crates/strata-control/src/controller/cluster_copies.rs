//! Copies of a volume on other nodes (issue 14 step 3, `docs/cluster.md`): the node port that
//! exports the copies this node holds to the node that serves their volume, over NBD with
//! mutual TLS; the agent that makes and removes those copies from the volume records; and the
//! [`RemoteCopy`] target a serving node's replica set writes through (behind a
//! [`WriteBehind`], so a client write does not wait for the round trip to the copy's node).
//!
//! # Store layout
//! - A volume's `copies` name a copy on another node as `NODE:DEVICE` (a qualified id);
//!   unqualified ids are devices of the volume's own `node`, as before.
//! - `/nodes/{n}/endpoint`: a [`NodeEndpoint`], where node `n` exports copies (`--advertise`).
//! - `/nodes/{n}/status/copies/{volume}`: a [`HeldCopy`], written by node `n`'s agent once
//!   it made the engine volume of its copy, deleted once it removed it.
//!
//! # Invariants
//! - A copy export is `copy:{volume}:{generation}` (a node holds at most one copy of a volume:
//!   the failure domain is the node). It opens only for a client whose certificate is the
//!   cluster CA's `node:NAME` where NAME is the volume's serving node, only while the volume's
//!   record names a copy on this node, and only at the owner record's generation
//!   (`cluster_fence.rs`).
//! - The agent creates a copy only for a record naming it, and removes only copies it
//!   recorded in `status/copies` whose volume no longer names them: it never deletes an
//!   engine volume it did not make for a remote copy.
//! - A serving node builds a set with a remote copy only after the copy's node recorded it
//!   (`status/copies`): a fresh volume's copies all read as zeros when the set is made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use strata_nbd::client::{ClientConfig, ClientError, ClientPool, ClientTls, Target};
use strata_nbd::{Authorizer, ExportIo, ExportSource, PoolSource};
use strata_replica::{CopyError, CopyTarget, WriteBehind};
use strata_state::Txn;
use strata_types::DeviceClass;

use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::pki::NODE_IDENTITY_PREFIX;

/// Where a node exports the copies it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEndpoint {
    /// `HOST:PORT` of its node port (NBD, TLS with node certificates only).
    pub copies: String,
}

/// A copy a node's agent made for a volume served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCopy {
    /// The device (of this node) it is on.
    pub device: String,
    /// The volume's size when it was made.
    pub size: u64,
}

/// Connections per remote copy (NBD multi-conn): each carries its own TLS stream, so one
/// stream's thread is not the limit of a copy's throughput.
pub const REMOTE_CONNECTIONS: usize = 4;

/// How long a remote copy stays faulted before it is rebuilt on another node
/// (`cluster_rebuild.rs`), unless the daemon is told otherwise (`strata serve
/// --rebuild-after`). Ceph waits 10 minutes before marking a down OSD out; a node that
/// reboots is back well within 5.
pub const DEFAULT_REBUILD_AFTER: Duration = Duration::from_secs(300);

/// How long a create waits for the copies' nodes to make their copies.
const COPY_WAIT: Duration = Duration::from_secs(15);

/// The export name of volume `id`'s copy at owner generation `generation`.
pub fn copy_export(id: &str, generation: u64) -> String {
    format!("copy:{id}:{generation}")
}

/// `(volume, generation)` of a copy export name.
pub fn parse_copy_export(export: &str) -> Option<(&str, u64)> {
    let (id, g) = export.strip_prefix("copy:")?.rsplit_once(':')?;
    if id.is_empty() || id.len() > 64 || id.contains('/') {
        return None;
    }
    Some((id, g.parse().ok()?))
}

/// The newest owner generation this node has seen of each volume it holds a copy of.
#[derive(Debug, Default)]
pub(super) struct Generations {
    cells: parking_lot::Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Generations {
    pub(super) fn cell(&self, volume: &str) -> Arc<AtomicU64> {
        self.cells
            .lock()
            .entry(volume.to_string())
            .or_default()
            .clone()
    }

    /// Records that `volume` is at least at `generation`.
    pub(super) fn saw(&self, volume: &str, generation: u64) {
        self.cell(volume).fetch_max(generation, Ordering::SeqCst);
    }
}

/// `NODE:DEVICE` split, for a copy on another node.
pub fn split_copy(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

fn endpoint_key(node: &str) -> String {
    format!("/nodes/{node}/endpoint")
}

fn held_prefix(node: &str) -> String {
    format!("/nodes/{node}/status/copies/")
}

pub(super) fn held_key(node: &str, volume: &str) -> String {
    format!("{}{volume}", held_prefix(node))
}

/// This node's part in cross-node copies, once the daemon opened its node port.
pub(super) struct NodePort {
    /// TLS for connecting to other nodes' ports (this node's certificate as the client's).
    client: RwLock<Option<ClientTls>>,
    /// How long a remote copy stays faulted before it is rebuilt on another node.
    pub(super) rebuild_after: parking_lot::Mutex<Duration>,
    /// Since when each faulted remote copy (volume, slot) has been seen faulted.
    pub(super) faulted_since:
        parking_lot::Mutex<std::collections::HashMap<(String, usize), Instant>>,
    /// The newest owner generation seen of each volume this node holds a copy of.
    pub(super) generations: Generations,
}

impl Default for NodePort {
    fn default() -> Self {
        NodePort {
            client: RwLock::new(None),
            rebuild_after: parking_lot::Mutex::new(DEFAULT_REBUILD_AFTER),
            faulted_since: Default::default(),
            generations: Default::default(),
        }
    }
}

impl Controller {
    /// Records that this node exports copies at `address` and connects to other nodes with
    /// `tls` (its node certificate): from now on new replicated volumes may place copies on
    /// other nodes that did the same, and this node's agent makes the copies others place here.
    pub fn open_node_port(&self, address: &str, tls: ClientTls) -> Result<(), ControlError> {
        let rec = NodeEndpoint {
            copies: address.to_string(),
        };
        self.store
            .txn(Txn::new().put(endpoint_key(&self.node), enc(&rec)))?;
        *self.node_port.client.write() = Some(tls);
        Ok(())
    }

    /// Whether this node takes part in cross-node copies.
    pub(super) fn node_port_open(&self) -> bool {
        self.node_port.client.read().is_some()
    }

    /// Whether node `n` is up (its alive key exists; on the embedded store, the local node).
    pub(super) fn node_is_up(&self, n: &str) -> bool {
        n == self.node || matches!(self.store.get(&super::liveness::alive_key(n)), Ok(Some(_)))
    }

    /// The nodes other than this one that can hold a copy in pool `pool` now: up, not
    /// cordoned, with a node port, and an active device of `class` (any class when None) in a
    /// pool of that name. Each with the device a copy of `volume` would go to there: the
    /// highest rendezvous hash of (volume, device), so the choice is the same on every call
    /// and spreads volumes over a node's devices.
    pub(super) fn copy_candidates(
        &self,
        pool: &str,
        class: Option<&str>,
        volume: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        let mut out = vec![];
        for rec in self.node_records()? {
            let n = rec.node.name.clone();
            if n == self.node || rec.hypothetical || rec.node.cordoned || !self.node_is_up(&n) {
                continue;
            }
            if self.get::<NodeEndpoint>(&endpoint_key(&n))?.is_none() {
                continue;
            }
            let Some((p, _)) = self.get::<PoolRecord>(&format!("/nodes/{n}/pools/{pool}"))? else {
                continue;
            };
            let dev = p
                .devices
                .iter()
                .filter(|d| d.state == DeviceState::Active)
                .filter(|d| class.is_none_or(|c| c == d.class))
                .max_by_key(|d| rendezvous(volume, &n, &d.id))
                .map(|d| d.id.clone());
            if let Some(d) = dev {
                out.push((n, d));
            }
        }
        // Nodes in rendezvous order for this volume: copies spread over the nodes.
        out.sort_by_key(|(n, _)| std::cmp::Reverse(rendezvous(volume, n, "")));
        Ok(out)
    }

    /// Copies for a new replicated volume across nodes: the first on one of this node's
    /// devices (`place_copies`' choice), each other on a distinct other node. None when fewer
    /// other nodes can hold one than asked (the volume then keeps its copies on this node's
    /// devices), when this node has no node port, or for an encrypted volume (a remote copy
    /// would need its data key on the other node, which is not built).
    pub(super) fn place_across_nodes(
        &self,
        pool: &str,
        volume: &str,
        copies: u8,
        class: Option<DeviceClass>,
        bytes: u64,
        encrypted: bool,
    ) -> Result<Option<Vec<String>>, ControlError> {
        if copies < 2 || encrypted || !self.node_port_open() {
            return Ok(None);
        }
        let local = self.place_copies(pool, volume, 1, class, bytes)?;
        let rec = self.pool_record(pool)?;
        let class = rec
            .devices
            .iter()
            .find(|d| d.id == local[0])
            .map(|d| d.class.clone());
        let others = self.copy_candidates(pool, class.as_deref(), volume)?;
        if others.len() + 1 < copies as usize {
            return Ok(None);
        }
        let mut out = vec![local[0].clone()];
        out.extend(
            others
                .into_iter()
                .take(copies as usize - 1)
                .map(|(n, d)| format!("{n}:{d}")),
        );
        Ok(Some(out))
    }

    /// Waits until every remote copy of new volume `v` is recorded by its node's agent.
    pub(super) fn wait_remote_copies(&self, v: &Volume) -> Result<(), ControlError> {
        let deadline = Instant::now() + COPY_WAIT;
        for c in v.copy_devices() {
            let Some((n, _)) = split_copy(&c) else {
                continue;
            };
            loop {
                if self.get::<HeldCopy>(&held_key(n, &v.id))?.is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ControlError::internal(format!(
                        "node {n} did not make its copy of volume {} within {}s",
                        v.id,
                        COPY_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The target of `v`'s copy `copy` (`NODE:DEVICE`), connected to that node's port; None
    /// when it cannot be reached now (the set starts the copy faulted).
    pub(super) fn remote_target(&self, v: &Volume, copy: &str) -> Option<Arc<dyn CopyTarget>> {
        let (n, _) = split_copy(copy)?;
        let label = format!("{copy}/{}", v.id);
        let tls = self.node_port.client.read().clone()?;
        let ep = match self.get::<NodeEndpoint>(&endpoint_key(n)) {
            Ok(Some((e, _))) => e,
            _ => {
                tracing::warn!(volume = %v.id, copy = %copy, "the copy's node has no endpoint");
                return None;
            }
        };
        let generation = match self.owner_generation(&v.id) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(volume = %v.id, error = %e, "owner generation not read");
                return None;
            }
        };
        let behind = RemoteCopy::connect(&ep.copies, &v.id, generation, tls, label)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                // One worker per connection, each with a batch of writes in flight on it.
                WriteBehind::new(Arc::new(r), REMOTE_CONNECTIONS).map_err(|e| e.to_string())
            });
        match behind {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::warn!(volume = %v.id, copy = %copy, error = %e, "remote copy not reached");
                None
            }
        }
    }

    /// Gives faulted copy `i` (`copy`, on another node) of `v` back to its set when its node
    /// is up and its export answers: the set resyncs the regions it missed.
    pub(super) fn reattach_remote(
        &self,
        v: &Volume,
        set: &strata_replica::ReplicaSet,
        i: usize,
        copy: &str,
    ) {
        let Some((n, _)) = split_copy(copy) else {
            return;
        };
        if !self.node_is_up(n) {
            return;
        }
        let Some(t) = self.remote_target(v, copy) else {
            return;
        };
        match set.reattach(i, t) {
            Ok(()) => {
                tracing::info!(volume = %v.id, copy = i, node = %n, "remote copy reattached");
                self.sets.signals.raise_work();
            }
            Err(e) => {
                tracing::warn!(volume = %v.id, copy = i, error = %e, "remote copy not reattached")
            }
        }
    }

    /// The agent's pass: makes the copies other nodes' volumes place on this node, and
    /// removes those whose volume no longer names them. Returns (made, removed).
    pub fn copy_agent_pass(&self) -> Result<(usize, usize), ControlError> {
        if !self.node_port_open() {
            return Ok((0, 0));
        }
        // Volumes taken over by another node first: their local copy may be the one the
        // new owner names here, made again below.
        self.release_lost_volumes()?;
        self.refresh_generations()?;
        // This node's rebuilds onto other nodes whose copies were made there: join them now.
        self.wake_for_made_copies()?;
        let prefix = format!("{}:", self.node);
        let held: std::collections::HashMap<String, HeldCopy> = self
            .list::<HeldCopy>(&held_prefix(&self.node), None, 0)?
            .into_iter()
            .filter_map(|(k, h)| Some((k.rsplit('/').next()?.to_string(), h)))
            .collect();
        let mut wanted = std::collections::HashMap::new();
        for (_, v) in self.list::<Volume>("/volumes/", None, 0)? {
            if v.state == VolumeState::Deleting {
                continue;
            }
            if let Some(d) = v
                .copy_devices()
                .iter()
                .find_map(|c| c.strip_prefix(&prefix).map(str::to_string))
            {
                wanted.insert(v.id.clone(), (d, v));
            }
        }
        let (mut made, mut removed) = (0, 0);
        for (id, (dev, v)) in &wanted {
            if held.get(id).is_some_and(|h| &h.device == dev) {
                continue;
            }
            // One copy that cannot be made does not hold back the others: its volume's
            // create gives up after [`COPY_WAIT`] and its record goes.
            match self.make_held_copy(id, dev, v) {
                Ok(()) => made += 1,
                Err(e) => {
                    tracing::warn!(volume = %id, device = %dev, error = %e, "copy for another node not made")
                }
            }
        }
        for (id, h) in held {
            if wanted.get(&id).is_some_and(|(d, _)| *d == h.device) {
                continue;
            }
            if let Some(pool) = self.storage.engine(&h.device) {
                if let Ok(e) = pool.volume_id(&id) {
                    pool.delete_volume(e, true)?;
                }
            }
            let key = held_key(&self.node, &id);
            let pool = self.device_pool(&h.device).unwrap_or_default();
            self.provision(&pool, h.size, 0, false, || {
                self.store.txn(Txn::new().delete(key))?;
                Ok(((), true))
            })?;
            tracing::info!(volume = %id, device = %h.device, "copy for another node removed");
            removed += 1;
        }
        Ok((made, removed))
    }

    /// Makes this node's copy of `v` (another node's volume) on device `dev` and records it,
    /// counted in the device's pool (checked against its overcommit limit).
    fn make_held_copy(&self, id: &str, dev: &str, v: &Volume) -> Result<(), ControlError> {
        let pool = self.storage.engine(dev).ok_or_else(|| {
            ControlError::internal(format!("device {dev} is not usable for a copy of {id}"))
        })?;
        let pool_name = self
            .device_pool(dev)
            .ok_or_else(|| ControlError::internal(format!("device {dev} is in no pool here")))?;
        // An engine volume of this id without a status record is what a crash between the
        // create and the record left: no record names its data as kept.
        if let Ok(old) = pool.volume_id(id) {
            pool.delete_volume(old, true)?;
        }
        let class = self
            .local_pools()?
            .iter()
            .flat_map(|p| p.devices.iter())
            .find(|d| d.id == dev)
            .and_then(|d| d.class.parse().ok());
        self.provision(&pool_name, 0, v.size, true, || {
            pool.create_volume(id, v.size, class)?;
            let rec = HeldCopy {
                device: dev.to_string(),
                size: v.size,
            };
            if let Err(e) = self
                .store
                .txn(Txn::new().put(held_key(&self.node, id), enc(&rec)))
            {
                if let Ok(e) = pool.volume_id(id) {
                    let _ = pool.delete_volume(e, true);
                }
                return Err(e.into());
            }
            Ok(((), true))
        })?;
        tracing::info!(volume = %id, device = %dev, serving = %v.node, "copy made for another node");
        Ok(())
    }

    /// The pool of this node that device `dev` belongs to.
    fn device_pool(&self, dev: &str) -> Option<String> {
        self.local_pools()
            .ok()?
            .into_iter()
            .find(|p| p.devices.iter().any(|d| d.id == dev))
            .map(|p| p.name)
    }

    /// What the copies this node holds for other nodes provision, as (pool, bytes) per copy.
    pub(super) fn held_provisioned(&self) -> Result<Vec<(String, u64)>, ControlError> {
        Ok(self
            .list::<HeldCopy>(&held_prefix(&self.node), None, 0)?
            .into_iter()
            .filter_map(|(_, h)| Some((self.device_pool(&h.device)?, h.size)))
            .collect())
    }

    /// Refuses a change of `v`'s layers (snapshot, clone, rollback, resize) when a copy is on
    /// another node: the remote copies keep the live data only.
    pub(super) fn require_one_node(&self, v: &Volume) -> Result<(), ControlError> {
        let copies = v.copy_devices();
        match copies.iter().find_map(|c| split_copy(c)) {
            None => Ok(()),
            Some((n, _)) => Err(ControlError::SpansNodes(format!(
                "volume {} has a copy on node {n}: snapshots, clones, rollbacks and resizes of \
                 volumes across nodes are not supported yet",
                v.name
            ))),
        }
    }

    /// Who may open a copy export on this node's port: the volume's serving node only.
    pub fn node_port_authorizer(self: &Arc<Self>) -> Authorizer {
        let ctl = Arc::downgrade(self);
        Authorizer::new(move |export: &str, client: Option<&str>| {
            let Some(c) = ctl.upgrade() else {
                return false;
            };
            let Some(peer) = client.and_then(|i| i.strip_prefix(NODE_IDENTITY_PREFIX)) else {
                return false;
            };
            let Some((id, generation)) = parse_copy_export(export) else {
                return false;
            };
            let Some(v) = c.volume_record(id) else {
                return false;
            };
            c.volume_node(&v) == peer
                && c.held_device(&v).is_some_and(|d| c.holds(id, &d))
                && c.owner_generation(id).is_ok_and(|g| g == generation)
        })
    }

    /// Whether this node's agent made and recorded its copy of volume `id` on `dev`.
    pub(super) fn holds(&self, id: &str, dev: &str) -> bool {
        matches!(self.get::<HeldCopy>(&held_key(&self.node, id)), Ok(Some((h, _))) if h.device == dev)
    }

    /// The device of this node that holds a copy of `v`, if its record names one.
    pub(super) fn held_device(&self, v: &Volume) -> Option<String> {
        let prefix = format!("{}:", self.node);
        v.copy_devices()
            .iter()
            .find_map(|c| c.strip_prefix(&prefix).map(str::to_string))
    }
}

/// The exports of this node's port: `copy:{volume}`, the engine volume of the copy this node
/// holds, read-write (flushes are the device's pool commits).
#[derive(Debug)]
pub struct CopySource {
    ctl: Weak<Controller>,
}

impl CopySource {
    /// The copies `ctl`'s node holds.
    pub fn new(ctl: &Arc<Controller>) -> Self {
        CopySource {
            ctl: Arc::downgrade(ctl),
        }
    }
}

impl ExportSource for CopySource {
    fn open(&self, export: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>> {
        let c = self.ctl.upgrade()?;
        if snapshot.is_some() {
            return None;
        }
        let (id, generation) = parse_copy_export(export)?;
        let v = c.volume_record(id)?;
        let dev = c.held_device(&v)?;
        // Only a copy the agent made and recorded (not, after a takeover, the old local copy
        // it is about to replace), at the owner's generation.
        if !c.holds(id, &dev) || c.owner_generation(id).ok()? != generation {
            return None;
        }
        let io = PoolSource::new(c.storage.engine(&dev)?).open(id, None)?;
        Some(c.fenced_copy(id, generation, io))
    }

    fn list(&self) -> Vec<(String, Vec<String>)> {
        // Copies are opened by name by the node that knows it; nothing is listed.
        vec![]
    }
}

/// A copy on another node, reached through its node port.
#[derive(Debug)]
pub struct RemoteCopy {
    pool: ClientPool,
    label: String,
}

impl RemoteCopy {
    /// Connects to `address` (`HOST:PORT`) for volume `id`'s copy at owner generation
    /// `generation`, verifying the server's certificate carries HOST.
    pub fn connect(
        address: &str,
        id: &str,
        generation: u64,
        tls: ClientTls,
        label: String,
    ) -> Result<Self, ClientError> {
        let host = address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = ClientTls::new(tls.config.clone(), host)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let cfg = ClientConfig {
            io_timeout: Duration::from_secs(5),
            tls: Some(tls),
        };
        let pool = ClientPool::connect(
            Target::Tcp(address.to_string()),
            &copy_export(id, generation),
            cfg,
            REMOTE_CONNECTIONS,
        )?;
        Ok(RemoteCopy { pool, label })
    }

    fn err(&self, e: ClientError) -> CopyError {
        match e {
            ClientError::Server(errno) => CopyError::Io {
                copy: self.label.clone(),
                detail: format!("the copy's node answered errno {errno}"),
            },
            other => CopyError::Gone {
                copy: self.label.clone(),
                detail: other.to_string(),
            },
        }
    }
}

impl CopyTarget for RemoteCopy {
    fn size(&self) -> Result<u64, CopyError> {
        Ok(self.pool.info().size)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        self.pool.read_at(offset, buf).map_err(|e| self.err(e))
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), CopyError> {
        self.pool
            .write_at(offset, data, false)
            .map_err(|e| self.err(e))
    }
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), CopyError> {
        self.pool
            .write_zeroes(offset, len, unmap)
            .map_err(|e| self.err(e))
    }
    fn flush(&self) -> Result<(), CopyError> {
        self.pool.flush().map_err(|e| self.err(e))
    }
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn write_many(&self, writes: &[(u64, &[u8])]) -> Vec<Result<(), CopyError>> {
        match self.pool.write_many(writes) {
            Ok(rs) => rs.into_iter().map(|r| r.map_err(|e| self.err(e))).collect(),
            Err(e) => {
                let e = self.err(e);
                writes.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }
}

/// A stable 64-bit hash of (volume, node, device) (FNV-1a: the same on every node and build).
fn rendezvous(volume: &str, node: &str, device: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in volume
        .bytes()
        .chain([0])
        .chain(node.bytes())
        .chain([0])
        .chain(device.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_copy_ids_split_and_rendezvous_is_stable() {
        assert_eq!(split_copy("n2:fast-d1"), Some(("n2", "fast-d1")));
        assert_eq!(split_copy("fast-d1"), None);
        assert_eq!(rendezvous("v", "n1", "d"), rendezvous("v", "n1", "d"));
        assert_ne!(rendezvous("v", "n1", "d"), rendezvous("v", "n2", "d"));
        assert_ne!(rendezvous("v", "n1d", ""), rendezvous("v", "n1", "d"));
    }
}
