//! Pools of devices: their records, opening their engine pools at start, adding and removing
//! devices, and where a new volume's copies go (docs/pools.md).
//!
//! # Invariants
//! - Every pool has a record under `/nodes/{node}/pools/{name}` (`node_scope.rs`); the default pool's is written at the first
//!   start, with the engine pool the daemon was given as its first device ([`DEFAULT_DEVICE`]).
//! - A device id is `POOL-dN` with N from the pool's `next_device`: never reused, so a record
//!   naming a removed device never finds a newer one under its id.
//! - A path is a device of at most one pool (compared after resolving it).
//! - A device leaves its pool only when no volume record names it among its copies.
//! - Copies of one volume are on distinct failure domains; too few domains is
//!   `not_enough_domains`, never two copies in one domain.

use std::path::{Path, PathBuf};

use strata_block::Pool;
use strata_state::Txn;
use strata_types::DeviceClass;

use super::auth::Principal;
use super::events::EventKind;
use super::store::*;
use super::{Controller, DEFAULT_POOL};
use crate::error::{ControlError, DeviceProblem, Resource};
use crate::model::*;
use crate::storage::{format_device, open_device, DeviceOpenError};

/// A device as asked for: a path and a class.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The file or block device.
    pub path: String,
    /// Its class (default `ssd`).
    pub class: Option<String>,
}

/// `POST /v1/pools`.
#[derive(Debug, Clone)]
pub struct CreatePool {
    /// Name.
    pub name: String,
    /// Devices (at least one).
    pub devices: Vec<NewDevice>,
    /// Default copies of its volumes (1 when not given).
    pub replicas: Option<u8>,
    /// Format devices that hold data that is not Strata's.
    pub force: bool,
}

/// A pool with its figures and devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Name.
    pub name: String,
    /// Default copies of its volumes.
    pub replicas: u8,
    /// Sum of the devices' data capacities.
    pub capacity: u64,
    /// Bytes allocated on its devices.
    pub allocated: u64,
    /// Bytes free on its devices.
    pub free: u64,
    /// Sum of its volumes' sizes, each counted once per copy.
    pub provisioned: u64,
    /// Devices.
    pub devices: Vec<DeviceView>,
}

/// A device with its figures, health and error counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    /// The record.
    pub record: DeviceRecord,
    /// `healthy`, `faulted` or `missing`.
    pub health: String,
    /// Why it is not healthy.
    pub fault: Option<String>,
    /// Data capacity (0 when missing).
    pub capacity: u64,
    /// Bytes allocated.
    pub allocated: u64,
    /// Volume copies it holds.
    pub copies: u64,
    /// Error and repair counts since start.
    pub counters: crate::storage::CounterValues,
}

fn device_error(e: DeviceOpenError) -> ControlError {
    let what = match e {
        DeviceOpenError::InUse { .. } => DeviceProblem::InUse,
        DeviceOpenError::NotEmpty { .. } => DeviceProblem::NotEmpty,
        DeviceOpenError::Unusable { .. } => DeviceProblem::Unusable,
    };
    ControlError::device(what, e.to_string())
}

/// The path as compared between devices: absolute and resolved when it exists.
fn canonical(path: &str) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn parse_class(c: Option<&str>) -> Result<DeviceClass, ControlError> {
    c.unwrap_or("ssd")
        .parse::<DeviceClass>()
        .map_err(|e| ControlError::invalid("class", e.to_string()))
}

fn check_replicas(field: &'static str, r: u8) -> Result<(), ControlError> {
    if r == 0 || r > MAX_REPLICAS {
        return Err(ControlError::invalid(
            field,
            format!("{r} copies: a volume has 1 to {MAX_REPLICAS}"),
        ));
    }
    Ok(())
}

impl Controller {
    /// Opens every device the pool records name; at the first start, records the default
    /// pool with `default` (the engine pool the daemon was given) as its first device.
    pub(super) fn open_storage(&self, default: &Pool) -> Result<(), ControlError> {
        if self
            .get::<PoolRecord>(&self.pool_key(DEFAULT_POOL))?
            .is_none()
        {
            let path = default
                .info()
                .devices
                .first()
                .map(|d| d.label.clone())
                .unwrap_or_default();
            let class = default
                .info()
                .devices
                .first()
                .map_or_else(|| "ssd".to_string(), |d| d.class.to_string());
            let rec = PoolRecord {
                name: DEFAULT_POOL.into(),
                replicas: 1,
                devices: vec![DeviceRecord {
                    id: DEFAULT_DEVICE.into(),
                    path,
                    class,
                    domain: DEFAULT_DEVICE.into(),
                    state: DeviceState::Active,
                    added: now(),
                }],
                next_device: 1,
                created: now(),
            };
            self.store.txn(
                Txn::new()
                    .when(self.pool_key(DEFAULT_POOL), 0)
                    .put(self.pool_key(DEFAULT_POOL), enc(&rec)),
            )?;
        }
        self.storage.insert(DEFAULT_DEVICE, Ok(default.clone()));
        for p in self.local_pools()? {
            for d in &p.devices {
                if d.id == DEFAULT_DEVICE {
                    continue;
                }
                let opened = open_device(Path::new(&d.path)).map_err(|e| e.to_string());
                if let Err(why) = &opened {
                    tracing::error!(pool = %p.name, device = %d.id, path = %d.path, error = %why,
                        "device did not open: its copies are unavailable");
                    self.event(
                        EventKind::DeviceOffline,
                        &d.id,
                        None,
                        format!(
                            "device {} of pool {} did not open at start ({why}): its copies are unavailable",
                            d.id, p.name
                        ),
                    );
                }
                if opened.is_ok() {
                    self.storage.claim(&d.id, Path::new(&d.path));
                }
                self.storage.insert(&d.id, opened);
            }
        }
        Ok(())
    }

    /// A pool's record.
    pub(super) fn pool_record(&self, name: &str) -> Result<PoolRecord, ControlError> {
        self.get::<PoolRecord>(&self.pool_key(name))?
            .map(|(r, _)| r)
            .ok_or_else(|| ControlError::not_found(Resource::Pool, name))
    }

    fn path_taken(&self, path: &str) -> Result<Option<String>, ControlError> {
        let want = canonical(path);
        for p in self.local_pools()? {
            for d in &p.devices {
                if canonical(&d.path) == want {
                    return Ok(Some(format!("{} of pool {}", d.id, p.name)));
                }
            }
        }
        Ok(None)
    }

    /// Formats `new` as device `id` and opens it; nothing is recorded here.
    fn make_device(
        &self,
        id: String,
        new: &NewDevice,
        force: bool,
    ) -> Result<(DeviceRecord, Pool), ControlError> {
        let class = parse_class(new.class.as_deref())?;
        if !Path::new(&new.path).is_absolute() {
            return Err(ControlError::invalid(
                "path",
                "a device path must be absolute",
            ));
        }
        if let Some(owner) = self.path_taken(&new.path)? {
            return Err(ControlError::device(
                DeviceProblem::InUse,
                format!("{} is already device {owner}", new.path),
            ));
        }
        let engine = format_device(
            Path::new(&new.path),
            class,
            force,
            &self.storage.device_dirs(),
        )
        .map_err(device_error)?;
        Ok((
            DeviceRecord {
                domain: id.clone(),
                id,
                path: new.path.clone(),
                class: class.to_string(),
                state: DeviceState::Active,
                added: now(),
            },
            engine,
        ))
    }

    /// Creates a pool of devices (admin). Each device is formatted as an engine pool of its
    /// own; a failure leaves no record (the devices formatted so far keep an empty pool,
    /// which a later add refuses as `device_in_use` until wiped).
    pub fn create_pool(&self, p: &Principal, req: CreatePool) -> Result<PoolView, ControlError> {
        Self::require(p, Role::Admin)?;
        // One pool change at a time in this process: two creates never format one path.
        let _g = self.pool_lock.lock();
        validate_name("name", &req.name)?;
        let replicas = req.replicas.unwrap_or(1);
        check_replicas("replicas", replicas)?;
        if req.devices.is_empty() {
            return Err(ControlError::invalid(
                "devices",
                "a pool needs at least one device",
            ));
        }
        if self.get::<PoolRecord>(&self.pool_key(&req.name))?.is_some() {
            return Err(ControlError::exists(Resource::Pool, &req.name));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &req.devices {
            if !seen.insert(canonical(&d.path)) {
                return Err(ControlError::invalid(
                    "devices",
                    format!("{} is named twice", d.path),
                ));
            }
        }
        let mut rec = PoolRecord {
            name: req.name.clone(),
            replicas,
            devices: vec![],
            next_device: 0,
            created: now(),
        };
        let mut engines = vec![];
        for d in &req.devices {
            let id = format!("{}-d{}", rec.name, rec.next_device);
            let (dr, engine) = self.make_device(id, d, req.force)?;
            rec.next_device += 1;
            rec.devices.push(dr);
            engines.push(engine);
        }
        if !self
            .store
            .txn(
                Txn::new()
                    .when(self.pool_key(&rec.name), 0)
                    .put(self.pool_key(&rec.name), enc(&rec)),
            )?
            .succeeded
        {
            // Another daemon of the cluster made a pool of that name meanwhile.
            return Err(ControlError::exists(Resource::Pool, &rec.name));
        }
        for (d, e) in rec.devices.iter().zip(engines) {
            self.storage.claim(&d.id, Path::new(&d.path));
            self.storage.insert(&d.id, Ok(e));
        }
        // The pool's allocation figure shows in /metrics from its first moment.
        self.allocation.lock().entry(rec.name.clone()).or_default();
        self.reapply_tenant_shares()?;
        tracing::info!(pool = %rec.name, devices = rec.devices.len(), "pool created");
        self.pool_view(&rec)
    }

    /// Adds a device to a pool (admin).
    pub fn add_device(
        &self,
        p: &Principal,
        pool: &str,
        new: NewDevice,
        force: bool,
    ) -> Result<PoolView, ControlError> {
        Self::require(p, Role::Admin)?;
        let _g = self.pool_lock.lock();
        self.pool_record(pool)?;
        // The id is the record's to give, in the same update that adds the device.
        let (new_rec, engine) = self.make_device(String::new(), &new, force)?;
        let (rec, dr) = self.update_pool(pool, |rec| {
            let id = format!("{}-d{}", rec.name, rec.next_device);
            rec.next_device += 1;
            let dr = DeviceRecord {
                domain: id.clone(),
                id,
                ..new_rec.clone()
            };
            rec.devices.push(dr.clone());
            Ok(dr)
        })?;
        self.storage.claim(&dr.id, Path::new(&dr.path));
        self.storage.insert(&dr.id, Ok(engine));
        self.wake_rebuilds();
        self.reapply_tenant_shares()?;
        tracing::info!(pool, device = %dr.id, path = %dr.path, "device added");
        self.pool_view(&rec)
    }

    /// Removes a device from its pool (admin). A device that holds copies is drained first:
    /// it turns `draining` and the daemon moves its copies to the pool's other devices, then
    /// removes it (`drain.rs`). Refused with `device_in_use` when a copy would have nowhere to
    /// go (no other device of its class outside its volume's other copies' domains, or too
    /// little free space), for a pool's last device, and for the default pool's first device
    /// (the data dir's own).
    pub fn remove_device(
        &self,
        p: &Principal,
        pool: &str,
        device: &str,
    ) -> Result<PoolView, ControlError> {
        Self::require(p, Role::Admin)?;
        let _g = self.pool_lock.lock();
        let rec = self.pool_record(pool)?;
        if !rec.devices.iter().any(|d| d.id == device) {
            return Err(ControlError::not_found(Resource::Device, device));
        }
        if device == DEFAULT_DEVICE {
            return Err(ControlError::device(
                DeviceProblem::InUse,
                "the default pool's first device is the data dir's own and stays",
            ));
        }
        if rec.devices.len() == 1 {
            return Err(ControlError::device(
                DeviceProblem::InUse,
                format!("device {device} is pool {pool}'s last device"),
            ));
        }
        if self.copies_on(device)? > 0 {
            // Its copies move first: refused when they have nowhere to go.
            self.check_drain(&rec, device)?;
            let rec = self.mark_draining(pool, device)?;
            self.wake_rebuilds();
            tracing::info!(
                pool,
                device,
                "device draining: its copies move, then it leaves"
            );
            self.event(
                EventKind::DeviceDraining,
                device,
                None,
                format!("device {device} of pool {pool} draining: its copies move, then it leaves"),
            );
            return self.pool_view(&rec);
        }
        let (rec, ()) = self.update_pool(pool, |rec| {
            rec.devices.retain(|d| d.id != device);
            Ok(())
        })?;
        if let Some(d) = self.storage.remove(device) {
            if let Some(e) = d.engine {
                let _ = e.flush();
            }
        }
        tracing::info!(pool, device, "device removed");
        self.pool_view(&rec)
    }

    /// Changes pool `name`'s record with `f`, again on the fresh record whenever another
    /// change won the race (a record is never overwritten by one made from an older one).
    pub(super) fn update_pool<T>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut PoolRecord) -> Result<T, ControlError>,
    ) -> Result<(PoolRecord, T), ControlError> {
        loop {
            let (mut rec, rev) = self
                .get::<PoolRecord>(&self.pool_key(name))?
                .ok_or_else(|| ControlError::not_found(Resource::Pool, name))?;
            let out = f(&mut rec)?;
            if self
                .store
                .txn(
                    Txn::new()
                        .when(self.pool_key(name), rev)
                        .put(self.pool_key(name), enc(&rec)),
                )?
                .succeeded
            {
                return Ok((rec, out));
            }
        }
    }

    /// Whether every copy on `device` has somewhere to go: for each, another active usable
    /// device of its class that holds no copy of the same volume; and room for what it holds.
    fn check_drain(&self, rec: &PoolRecord, device: &str) -> Result<(), ControlError> {
        let class = rec
            .devices
            .iter()
            .find(|d| d.id == device)
            .map(|d| d.class.clone())
            .unwrap_or_default();
        let others: Vec<&DeviceRecord> = rec
            .devices
            .iter()
            .filter(|d| d.id != device && d.state == DeviceState::Active && d.class == class)
            .filter(|d| self.storage.engine(&d.id).is_some())
            .collect();
        for (_, v) in self.local_volumes()? {
            let copies = v.copy_devices();
            if !copies.iter().any(|c| c == device) {
                continue;
            }
            if !others.iter().any(|d| !copies.contains(&d.id)) {
                return Err(ControlError::device(
                    DeviceProblem::InUse,
                    format!(
                        "device {device} cannot leave: volume {} ({} copies) would have no \
                         failure domain left for the copy it holds there",
                        v.id,
                        copies.len()
                    ),
                ));
            }
        }
        let held = self
            .storage
            .engine(device)
            .map_or(0, |p| p.info().allocated);
        let room: u64 = others
            .iter()
            .filter_map(|d| self.storage.engine(&d.id))
            .map(|p| {
                let i = p.info();
                i.free.saturating_sub(i.reserve)
            })
            .sum();
        if held > room {
            return Err(ControlError::device(
                DeviceProblem::InUse,
                format!(
                    "device {device} holds {held} bytes; the pool's other devices have room for \
                     {room}: add a device first"
                ),
            ));
        }
        Ok(())
    }

    /// How many volume copies device `id` holds.
    fn copies_on(&self, id: &str) -> Result<u64, ControlError> {
        Ok(self
            .list::<Volume>("/volumes/", None, 0)?
            .iter()
            .filter(|(_, v)| v.copy_devices().iter().any(|d| d == id))
            .count() as u64)
    }

    /// The pools (admin: they show the machine's devices).
    pub fn list_pools(&self, p: &Principal) -> Result<Vec<PoolView>, ControlError> {
        Self::require(p, Role::Admin)?;
        self.local_pools()?
            .into_iter()
            .map(|r| self.pool_view(&r))
            .collect()
    }

    /// One pool (admin).
    pub fn get_pool(&self, p: &Principal, name: &str) -> Result<PoolView, ControlError> {
        Self::require(p, Role::Admin)?;
        self.pool_view(&self.pool_record(name)?)
    }

    pub(super) fn pool_view(&self, rec: &PoolRecord) -> Result<PoolView, ControlError> {
        let volumes = self.local_volumes()?;
        let mut view = PoolView {
            name: rec.name.clone(),
            replicas: rec.replicas,
            capacity: 0,
            allocated: 0,
            free: 0,
            provisioned: 0,
            devices: vec![],
        };
        for (_, v) in &volumes {
            if v.pool == rec.name {
                view.provisioned = view
                    .provisioned
                    .saturating_add(super::volumes::provisioned(v));
            }
        }
        for (pool, bytes) in self.held_provisioned()? {
            if pool == rec.name {
                view.provisioned = view.provisioned.saturating_add(bytes);
            }
        }
        for d in &rec.devices {
            let dev = self.storage.get(&d.id);
            let info = dev.as_ref().and_then(|x| x.engine.as_ref()).map(Pool::info);
            let (capacity, allocated, free) = info
                .as_ref()
                .map_or((0, 0, 0), |i| (i.capacity, i.allocated, i.free));
            view.capacity += capacity;
            view.allocated += allocated;
            view.free += free;
            view.devices.push(DeviceView {
                record: d.clone(),
                health: dev.as_ref().map_or("missing", |x| x.health()).to_string(),
                fault: dev.as_ref().and_then(|x| x.fault.clone()),
                capacity,
                allocated,
                copies: volumes
                    .iter()
                    .filter(|(_, v)| v.copy_devices().iter().any(|c| c == &d.id))
                    .count() as u64,
                counters: dev.map(|x| x.counters.values()).unwrap_or_default(),
            });
        }
        Ok(view)
    }

    /// Chooses the devices of a new volume's `copies` copies in `pool`: distinct failure
    /// domains, active devices of `class` (any class when none) with room for `bytes`, by
    /// the straw rule of `strata_place::copies` (stable as devices are added).
    pub(super) fn place_copies(
        &self,
        pool: &str,
        volume: &str,
        copies: u8,
        class: Option<DeviceClass>,
        bytes: u64,
    ) -> Result<Vec<String>, ControlError> {
        let rec = self.pool_record(pool)?;
        let mut by_class: std::collections::BTreeMap<String, Vec<strata_place::StorageDevice>> =
            Default::default();
        for d in &rec.devices {
            if d.state != DeviceState::Active {
                continue;
            }
            if class.is_some_and(|c| c.to_string() != d.class) {
                continue;
            }
            let Some(engine) = self.storage.engine(&d.id) else {
                continue;
            };
            let i = engine.info();
            by_class
                .entry(d.class.clone())
                .or_default()
                .push(strata_place::StorageDevice {
                    name: d.id.clone(),
                    class: d.class.clone(),
                    capacity_bytes: i.capacity,
                    free_bytes: i.free.saturating_sub(i.reserve),
                    throughput_bps: 0,
                });
        }
        // With no class asked, the class with the most devices (ties: the first by name).
        let Some((cls, devices)) = by_class
            .into_iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))
        else {
            return Err(not_enough(pool, copies, 0, class));
        };
        // Thin volumes: a copy needs room for its first blocks, not its size.
        let _ = bytes;
        let node = strata_place::Node {
            name: "local".into(),
            cpu_cores: 0,
            memory_bytes: 0,
            gpus: vec![],
            islands: vec![],
            nic_bps: 0,
            storage: devices,
            labels: Default::default(),
            cordoned: false,
        };
        let req = strata_place::copies::CopyRequest {
            volume: volume.to_string(),
            copies: copies as usize,
            class: cls,
            bytes: 0,
        };
        match strata_place::copies::place_copies(
            &[node],
            &req,
            &strata_place::copies::Level::Device,
        ) {
            Ok(refs) => Ok(refs.into_iter().map(|r| r.device).collect()),
            Err(strata_place::CopyError::NotEnoughDomains { found, .. }) => {
                Err(not_enough(pool, copies, found, class))
            }
            Err(e) => Err(ControlError::internal(e.to_string())),
        }
    }
}

fn not_enough(pool: &str, copies: u8, found: usize, class: Option<DeviceClass>) -> ControlError {
    let of = class.map_or(String::new(), |c| format!(" of class {c}"));
    ControlError::device(
        DeviceProblem::NotEnoughDomains,
        format!(
            "pool {pool} has {found} usable devices{of}: {copies} copies need as many \
             failure domains (add devices with `strata pool add-device`)"
        ),
    )
}
