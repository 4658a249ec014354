//! The control plane's logic, without HTTP: authentication, authorization, quotas, and the
//! volume and snapshot lifecycle over the storage engine, with every change kept in the state
//! store and written to the audit log.
//!
//! # Consistency between the store and the engine
//! A volume is first recorded as `creating` (in the same store transaction that checks the
//! quota and reserves the name), then created in the engine, then marked `available`. A delete
//! marks `deleting`, deletes in the engine, then removes the records. [`Controller::open`]
//! finishes or undoes whatever a crash interrupted, so the two never disagree for long and a
//! restart (also after `kill -9`) recovers everything acknowledged.
//!
//! # Visibility
//! A caller sees its own tenant's resources (an admin sees all). Anything else answers 404
//! with the same code as a resource that does not exist, so existence never leaks.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use strata_block::{Pool, VolumeId};
use strata_state::{Store, Txn};
use strata_types::DeviceClass;

use crate::error::ApiError;
use crate::model::*;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id (for the audit log).
    pub token_id: String,
    /// Tenant, None for admins.
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
}

/// Request to create a volume.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CreateVolume {
    /// Name (unique within the tenant).
    pub name: String,
    /// Size in bytes, or a human size such as "10G".
    pub size: SizeArg,
    /// Tenant (admins only; others create in their own).
    pub tenant: Option<String>,
    /// Pool name.
    pub pool: Option<String>,
    /// Device class.
    pub class: Option<String>,
    /// Client-chosen id making the create idempotent.
    pub request_id: Option<String>,
    /// IOPS limit.
    pub iops_limit: Option<u64>,
    /// Bandwidth limit, bytes per second or a human size such as "200M".
    pub bandwidth_limit: Option<SizeArg>,
}

/// A size given as a number of bytes or a string like "10G".
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeArg {
    /// Bytes.
    Bytes(u64),
    /// Human size.
    Text(String),
}

impl Default for SizeArg {
    fn default() -> Self {
        SizeArg::Bytes(0)
    }
}

impl SizeArg {
    /// The value in bytes.
    pub fn bytes(&self) -> Result<u64, ApiError> {
        match self {
            SizeArg::Bytes(b) => Ok(*b),
            SizeArg::Text(t) => {
                strata_types::parse_size(t).map_err(|e| ApiError::invalid("size", e))
            }
        }
    }
}

/// The one pool the daemon has today.
pub const DEFAULT_POOL: &str = "default";

/// The control plane.
pub struct Controller {
    store: Box<dyn Store>,
    pool: Pool,
    switches: crate::net::Switches,
    /// Where the NBD server listens, once the daemon started it.
    nbd_socket: parking_lot::RwLock<Option<std::path::PathBuf>>,
    /// Export names NBD clients may open: the attached volumes. Shared with the NBD server.
    exports: Exports,
    /// The NBD TCP listener's address and the CA that issues its client certificates.
    nbd_tcp: parking_lot::RwLock<Option<(String, std::sync::Arc<crate::pki::Pki>)>>,
}

/// The set of export names the NBD server may serve (attached volumes).
pub type Exports = std::sync::Arc<parking_lot::RwLock<std::collections::HashSet<String>>>;

fn attachment_key(vol: &str) -> String {
    format!("/attachments/{vol}")
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("pool", &self.pool.id())
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash_token(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn tenant_key(t: &str) -> String {
    format!("/tenants/{t}")
}
fn volume_key(t: &str, id: &str) -> String {
    format!("/volumes/{t}/{id}")
}
fn volume_index(id: &str) -> String {
    format!("/volume-ids/{id}")
}
fn volume_name_key(t: &str, name: &str) -> String {
    format!("/volume-names/{t}/{name}")
}
fn snapshot_key(t: &str, id: &str) -> String {
    format!("/snapshots/{t}/{id}")
}
fn snapshot_index(id: &str) -> String {
    format!("/snapshot-ids/{id}")
}
fn snapshot_name_key(vol: &str, name: &str) -> String {
    format!("/snapshot-names/{vol}/{name}")
}
fn request_key(t: &str, rid: &str) -> String {
    format!("/requests/{t}/{rid}")
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

fn validate_name(field: &'static str, name: &str) -> Result<(), ApiError> {
    strata_block::pool::validate_name(name).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// How many times a transaction that lost a race is retried.
const RETRIES: usize = 16;

impl Controller {
    /// Wraps a store and the pool, finishing what a crash interrupted.
    pub fn open(store: Box<dyn Store>, pool: Pool) -> Result<Controller, ApiError> {
        let c = Controller {
            store,
            pool,
            switches: Default::default(),
            nbd_socket: Default::default(),
            exports: Default::default(),
            nbd_tcp: Default::default(),
        };
        c.recover()?;
        c.switches.restore(c.store.as_ref())?;
        Ok(c)
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
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

    /// Whether an NBD client may open `export`: the volume is attached and, for a TLS client,
    /// its certificate names the volume's tenant (`identity`); a client without TLS reaches
    /// only the Unix socket, guarded by file permissions.
    pub fn may_open(&self, export: &str, identity: Option<&str>) -> bool {
        let vol = export.split('@').next().unwrap_or_default();
        if !self.exports.read().contains(vol) {
            return false;
        }
        match identity {
            None => true,
            Some(id) => matches!(
                self.get::<String>(&volume_index(vol)),
                Ok(Some((tenant, _))) if tenant == id
            ),
        }
    }

    /// Credentials for the TCP listener: a client certificate naming the volume's tenant.
    pub fn attach_tcp(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<(Attachment, crate::pki::Credentials), ApiError> {
        let a = self.attach(p, id)?;
        let Some((_, pki)) = self.nbd_tcp.read().clone() else {
            return Err(ApiError::new(
                503,
                "nbd_tcp_unavailable",
                "the daemon has no NBD TCP listener (strata serve --nbd-listen)",
            ));
        };
        let creds = pki
            .client(&a.tenant)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok((a, creds))
    }

    /// Exports a volume to NBD clients; returns the attachment (idempotent).
    pub fn attach(&self, p: &Principal, id: &str) -> Result<Attachment, ApiError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        if let Some((a, _)) = self.get::<Attachment>(&attachment_key(&v.id))? {
            return Ok(a);
        }
        let socket = self.nbd_socket.read().clone().ok_or_else(|| {
            ApiError::new(503, "nbd_unavailable", "the NBD server is not running")
        })?;
        let a = Attachment {
            volume: v.id.clone(),
            tenant: v.tenant.clone(),
            export: v.id.clone(),
            uri: format!("nbd+unix:///{}?socket={}", v.id, socket.display()),
            tcp_uri: self
                .nbd_tcp
                .read()
                .as_ref()
                .map(|(addr, _)| format!("nbds://{addr}/{}", v.id)),
            created: now(),
        };
        let r = self.store.txn(
            Txn::new()
                .when(attachment_key(&v.id), 0)
                .put(attachment_key(&v.id), enc(&a)),
        )?;
        if !r.succeeded {
            return self.attachment(p, id);
        }
        self.exports.write().insert(a.export.clone());
        Ok(a)
    }

    /// A volume's attachment.
    pub fn attachment(&self, p: &Principal, id: &str) -> Result<Attachment, ApiError> {
        let v = self.get_volume(p, id)?;
        self.get::<Attachment>(&attachment_key(&v.id))?
            .map(|(a, _)| a)
            .ok_or_else(|| {
                ApiError::not_found(
                    "attachment_not_found",
                    format!("attachment of volume {}", v.name),
                )
            })
    }

    /// Stops exporting a volume to new NBD connections.
    pub fn detach(&self, p: &Principal, id: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Member)?;
        let a = self.attachment(p, id)?;
        self.store
            .txn(Txn::new().delete(attachment_key(&a.volume)))?;
        self.exports.write().remove(&a.export);
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, ApiError> {
        match self.store.get(key)? {
            Some(kv) => {
                let v = serde_json::from_slice(&kv.value)
                    .map_err(|e| ApiError::internal(format!("record {key} is damaged: {e}")))?;
                Ok(Some((v, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, ApiError> {
        let (kvs, _) = self.store.range(prefix, after, limit)?;
        kvs.into_iter()
            .map(|kv| {
                let v = serde_json::from_slice(&kv.value).map_err(|e| {
                    ApiError::internal(format!("record {} is damaged: {e}", kv.key))
                })?;
                Ok((kv.key, v))
            })
            .collect()
    }

    // ----- bootstrap, tokens and authentication -----

    /// Creates an admin token if none exists; returns its secret (for `admin.token`).
    pub fn bootstrap_admin(&self) -> Result<Option<String>, ApiError> {
        if self.store.get("/bootstrap")?.is_some() {
            return Ok(None);
        }
        let (secret, rec) = Self::mint(None, Role::Admin);
        let r = self.store.txn(
            Txn::new()
                .when("/bootstrap", 0)
                .put("/bootstrap", enc(&rec.id))
                .put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)),
        )?;
        Ok(r.succeeded.then_some(secret))
    }

    fn mint(tenant: Option<String>, role: Role) -> (String, TokenRecord) {
        use rand::RngCore;
        let mut b = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut b);
        let secret = format!(
            "st_{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        let rec = TokenRecord {
            id: new_id()[..12].to_string(),
            tenant,
            role,
            created: now(),
        };
        (secret, rec)
    }

    /// Resolves a bearer token to its principal.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, ApiError> {
        let unauth = || ApiError::new(401, "unauthenticated", "missing or unknown API token");
        if secret.is_empty() || secret.len() > 256 {
            return Err(unauth());
        }
        let (rec, _) = self
            .get::<TokenRecord>(&format!("/tokens/{}", hash_token(secret)))?
            .ok_or_else(unauth)?;
        Ok(Principal {
            token_id: rec.id,
            tenant: rec.tenant,
            role: rec.role,
        })
    }

    /// Creates a token. Admins may create any; tenant admins tokens of their tenant with a
    /// role no higher than their own.
    pub fn create_token(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        role: Role,
    ) -> Result<(String, TokenRecord), ApiError> {
        let tenant = match (role, tenant) {
            (Role::Admin, None) => None,
            (Role::Admin, Some(_)) => {
                return Err(ApiError::invalid(
                    "tenant",
                    "admin tokens belong to no tenant",
                ))
            }
            (_, None) => return Err(ApiError::invalid("tenant", "a tenant is required")),
            (_, Some(t)) => Some(t.to_string()),
        };
        if let Some(t) = &tenant {
            self.visible_tenant(p, t)?;
        }
        match p.role {
            Role::Admin => {}
            Role::TenantAdmin if role >= Role::TenantAdmin => {}
            _ => return Err(ApiError::forbidden("your role may not create this token")),
        }
        let (secret, rec) = Self::mint(tenant, role);
        self.store
            .txn(Txn::new().put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)))?;
        Ok((secret, rec))
    }

    // ----- authorization helpers -----

    fn require(p: &Principal, at_least: Role) -> Result<(), ApiError> {
        if p.role <= at_least {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this (needs {})",
                p.role.as_str(),
                at_least.as_str()
            )))
        }
    }

    /// A tenant the caller may see, or 404.
    fn visible_tenant(&self, p: &Principal, t: &str) -> Result<(Tenant, u64), ApiError> {
        let nf = || ApiError::not_found("tenant_not_found", format!("tenant {t}"));
        if p.role != Role::Admin && p.tenant.as_deref() != Some(t) {
            return Err(nf());
        }
        self.get::<Tenant>(&tenant_key(t))?.ok_or_else(nf)
    }

    /// The tenant a create acts in.
    fn acting_tenant(&self, p: &Principal, requested: Option<&str>) -> Result<String, ApiError> {
        match (p.role, requested, &p.tenant) {
            (Role::Admin, Some(t), _) => Ok(t.to_string()),
            (Role::Admin, None, _) => Err(ApiError::invalid(
                "tenant",
                "admins must name the tenant to act in",
            )),
            (_, Some(t), Some(own)) if t != own => Err(ApiError::not_found(
                "tenant_not_found",
                format!("tenant {t}"),
            )),
            (_, _, Some(own)) => Ok(own.clone()),
            (_, _, None) => Err(ApiError::internal("token without tenant")),
        }
    }

    // ----- tenants -----

    /// Creates a tenant (admin).
    pub fn create_tenant(
        &self,
        p: &Principal,
        name: &str,
        quota: Quota,
    ) -> Result<Tenant, ApiError> {
        Self::require(p, Role::Admin)?;
        validate_name("name", name)?;
        let t = Tenant {
            name: name.to_string(),
            created: now(),
            quota,
            usage: Usage::default(),
        };
        let r = self.store.txn(
            Txn::new()
                .when(tenant_key(name), 0)
                .put(tenant_key(name), enc(&t)),
        )?;
        if !r.succeeded {
            return Err(ApiError::conflict(
                "tenant_exists",
                format!("tenant {name} already exists"),
            ));
        }
        Ok(t)
    }

    /// Lists the tenants the caller may see.
    pub fn list_tenants(&self, p: &Principal) -> Result<Vec<Tenant>, ApiError> {
        match (&p.role, &p.tenant) {
            (Role::Admin, _) => Ok(self
                .list::<Tenant>("/tenants/", None, 0)?
                .into_iter()
                .map(|(_, t)| t)
                .collect()),
            (_, Some(t)) => Ok(vec![self.visible_tenant(p, t)?.0]),
            _ => Ok(vec![]),
        }
    }

    /// One tenant.
    pub fn get_tenant(&self, p: &Principal, name: &str) -> Result<Tenant, ApiError> {
        Ok(self.visible_tenant(p, name)?.0)
    }

    /// Sets a tenant's quota (admin).
    pub fn set_quota(&self, p: &Principal, name: &str, quota: Quota) -> Result<Tenant, ApiError> {
        Self::require(p, Role::Admin)?;
        for _ in 0..RETRIES {
            let (mut t, rev) = self.visible_tenant(p, name)?;
            t.quota = quota.clone();
            let r = self.store.txn(
                Txn::new()
                    .when(tenant_key(name), rev)
                    .put(tenant_key(name), enc(&t)),
            )?;
            if r.succeeded {
                return Ok(t);
            }
        }
        Err(ApiError::conflict("busy", "too much contention, retry"))
    }

    /// Deletes an empty tenant (admin).
    pub fn delete_tenant(&self, p: &Principal, name: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Admin)?;
        let (t, rev) = self.visible_tenant(p, name)?;
        if t.usage.volumes > 0 || t.usage.snapshots > 0 {
            return Err(ApiError::conflict(
                "tenant_not_empty",
                format!("tenant {name} still has volumes or snapshots"),
            ));
        }
        let r = self.store.txn(
            Txn::new()
                .when(tenant_key(name), rev)
                .delete(tenant_key(name)),
        )?;
        if !r.succeeded {
            return Err(ApiError::conflict(
                "busy",
                "tenant changed meanwhile, retry",
            ));
        }
        // Tokens of the tenant stop working.
        for (key, tok) in self.list::<TokenRecord>("/tokens/", None, 0)? {
            if tok.tenant.as_deref() == Some(name) {
                self.store.txn(Txn::new().delete(key))?;
            }
        }
        Ok(())
    }

    /// Applies a change to a tenant's record and other keys in one transaction, retrying when
    /// another change to the tenant won the race. `f` checks quotas on the fresh record.
    fn with_tenant<T>(
        &self,
        tenant: &str,
        mut f: impl FnMut(&mut Tenant) -> Result<(Txn, T), ApiError>,
    ) -> Result<T, ApiError> {
        for _ in 0..RETRIES {
            let (mut t, rev) = self.get::<Tenant>(&tenant_key(tenant))?.ok_or_else(|| {
                ApiError::not_found("tenant_not_found", format!("tenant {tenant}"))
            })?;
            let (mut txn, out) = f(&mut t)?;
            txn.compare
                .push(strata_state::Compare::ModRevision(tenant_key(tenant), rev));
            txn.success
                .push(strata_state::Op::Put(tenant_key(tenant), enc(&t)));
            if self.store.txn(txn)?.succeeded {
                return Ok(out);
            }
        }
        Err(ApiError::conflict("busy", "too much contention, retry"))
    }

    // ----- volumes -----

    fn engine_volume(&self, v: &Volume) -> Result<VolumeId, ApiError> {
        self.pool
            .volume_id(&v.id)
            .map_err(|_| ApiError::internal(format!("volume {} missing from the pool", v.id)))
    }

    /// Creates a volume. Idempotent under `request_id`.
    pub fn create_volume(&self, p: &Principal, req: CreateVolume) -> Result<Volume, ApiError> {
        Self::require(p, Role::Member)?;
        let tenant = self.acting_tenant(p, req.tenant.as_deref())?;
        self.visible_tenant(p, &tenant)?;
        if let Some(rid) = &req.request_id {
            if rid.is_empty() || rid.len() > 128 {
                return Err(ApiError::invalid("request_id", "1 to 128 characters"));
            }
            if let Some((id, _)) = self.get::<String>(&request_key(&tenant, rid))? {
                return self.get_volume(p, &id);
            }
        }
        validate_name("name", &req.name)?;
        let size = req.size.bytes()?;
        if size == 0 || size % strata_block::BLOCK_SIZE != 0 || size > strata_block::MAX_VOLUME_SIZE
        {
            return Err(ApiError::invalid(
                "size",
                format!("size {size} must be a positive multiple of 4096 bytes, at most 1 PiB"),
            ));
        }
        if let Some(pool) = &req.pool {
            if pool != DEFAULT_POOL {
                return Err(ApiError::not_found(
                    "pool_not_found",
                    format!("pool {pool}"),
                ));
            }
        }
        let class = match &req.class {
            Some(c) => Some(
                c.parse::<DeviceClass>()
                    .map_err(|e| ApiError::invalid("class", e.to_string()))?,
            ),
            None => None,
        };
        if let Some(c) = class {
            if !self.pool.info().devices.iter().any(|d| d.class == c) {
                return Err(ApiError::invalid(
                    "class",
                    format!("the pool has no {c} device"),
                ));
            }
        }
        let v = Volume {
            id: new_id(),
            tenant: tenant.clone(),
            name: req.name.clone(),
            size,
            pool: DEFAULT_POOL.into(),
            class: class.map(|c| c.to_string()),
            origin: None,
            state: VolumeState::Creating,
            created: now(),
            qos: Qos {
                iops_limit: req.iops_limit,
                bandwidth_limit: req
                    .bandwidth_limit
                    .as_ref()
                    .map(SizeArg::bytes)
                    .transpose()
                    .map_err(|e| e.field("bandwidth_limit"))?,
                ..Qos::default()
            },
        };
        validate_qos(&v.qos)?;
        // Fast answer for the common conflict; the transaction's comparison catches races.
        if self.name_taken(&tenant, &v.name) {
            return Err(ApiError::conflict(
                "volume_exists",
                format!("volume {} already exists", v.name),
            )
            .field("name"));
        }
        self.with_tenant(&tenant, |t| {
            check_quota(t, size, 1, 0)?;
            check_iops(t, 0, &v.qos)?;
            t.usage.capacity_bytes += size;
            t.usage.volumes += 1;
            t.usage.iops += v.qos.iops_limit.unwrap_or(0);
            let mut txn = Txn::new()
                .when(volume_name_key(&tenant, &v.name), 0)
                .put(volume_name_key(&tenant, &v.name), enc(&v.id))
                .put(volume_index(&v.id), enc(&tenant))
                .put(volume_key(&tenant, &v.id), enc(&v));
            if let Some(rid) = &req.request_id {
                txn = txn
                    .when(request_key(&tenant, rid), 0)
                    .put(request_key(&tenant, rid), enc(&v.id));
            }
            Ok((txn, ()))
        })
        .map_err(|e| {
            if e.code == "busy" && self.name_taken(&tenant, &v.name) {
                ApiError::conflict("volume_exists", format!("volume {} already exists", v.name))
                    .field("name")
            } else {
                e
            }
        })?;
        match self.pool.create_volume(&v.id, size, class) {
            Ok(eid) => self.pool.set_qos(eid, v.qos.limits())?,
            Err(e) => {
                self.forget_volume(&v)?;
                return Err(e.into());
            }
        }
        self.set_state(&v, VolumeState::Available)
    }

    fn name_taken(&self, tenant: &str, name: &str) -> bool {
        matches!(self.store.get(&volume_name_key(tenant, name)), Ok(Some(_)))
    }

    fn set_state(&self, v: &Volume, state: VolumeState) -> Result<Volume, ApiError> {
        let mut v = v.clone();
        v.state = state;
        self.store
            .txn(Txn::new().put(volume_key(&v.tenant, &v.id), enc(&v)))?;
        Ok(v)
    }

    /// Removes a volume's records and gives back its usage.
    fn forget_volume(&self, v: &Volume) -> Result<(), ApiError> {
        self.with_tenant(&v.tenant, |t| {
            t.usage.capacity_bytes = t.usage.capacity_bytes.saturating_sub(v.size);
            t.usage.volumes = t.usage.volumes.saturating_sub(1);
            t.usage.iops = t.usage.iops.saturating_sub(v.qos.iops_limit.unwrap_or(0));
            Ok((
                Txn::new()
                    .delete(volume_key(&v.tenant, &v.id))
                    .delete(volume_index(&v.id))
                    .delete(volume_name_key(&v.tenant, &v.name)),
                (),
            ))
        })
    }

    /// A volume the caller may see.
    pub fn get_volume(&self, p: &Principal, id: &str) -> Result<Volume, ApiError> {
        let nf = || ApiError::not_found("volume_not_found", format!("volume {id}"));
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&volume_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<Volume>(&volume_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    /// Lists volumes: the caller's tenant (an admin: all, or `tenant`), optionally one name,
    /// in pages of `limit` after `page_token` (the last id of the previous page).
    pub fn list_volumes(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: Option<&str>,
        limit: usize,
        page_token: Option<&str>,
    ) -> Result<(Vec<Volume>, Option<String>), ApiError> {
        Self::require(p, Role::Reader)?;
        let prefix = match (p.role, tenant, &p.tenant) {
            (Role::Admin, Some(t), _) => format!("/volumes/{t}/"),
            (Role::Admin, None, _) => "/volumes/".to_string(),
            (_, Some(t), Some(own)) if t != own => return Ok((vec![], None)),
            (_, _, Some(own)) => format!("/volumes/{own}/"),
            _ => return Ok((vec![], None)),
        };
        if let Some(n) = name {
            // Names are indexed per tenant: a direct look-up, not a scan.
            let tenants: Vec<String> = match (p.role, tenant, &p.tenant) {
                (Role::Admin, None, _) => self
                    .list::<Tenant>("/tenants/", None, 0)?
                    .into_iter()
                    .map(|(_, t)| t.name)
                    .collect(),
                (Role::Admin, Some(t), _) => vec![t.to_string()],
                (_, _, Some(own)) => vec![own.clone()],
                _ => vec![],
            };
            let mut out = Vec::new();
            for t in tenants {
                if let Some((id, _)) = self.get::<String>(&volume_name_key(&t, n))? {
                    if let Some((v, _)) = self.get::<Volume>(&volume_key(&t, &id))? {
                        out.push(v);
                    }
                }
            }
            return Ok((out, None));
        }
        let limit = limit.clamp(1, 10_000);
        let after = match page_token {
            Some(tok) => {
                let (tenant, _) = self
                    .get::<String>(&volume_index(tok))?
                    .ok_or_else(|| ApiError::invalid("page_token", "unknown page token"))?;
                Some(volume_key(&tenant, tok))
            }
            None => None,
        };
        let items = self.list::<Volume>(&prefix, after.as_deref(), limit + 1)?;
        let mut vols: Vec<Volume> = items.into_iter().map(|(_, v)| v).collect();
        let next = if vols.len() > limit {
            vols.truncate(limit);
            vols.last().map(|v| v.id.clone())
        } else {
            None
        };
        Ok((vols, next))
    }

    /// Grows or shrinks a volume (shrinking over data is refused).
    pub fn resize_volume(
        &self,
        p: &Principal,
        id: &str,
        size: SizeArg,
    ) -> Result<Volume, ApiError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        let size = size.bytes()?;
        let eid = self.engine_volume(&v)?;
        let nv = self.set_size(&v, size, true)?;
        if let Err(e) = self.pool.resize_volume(eid, size) {
            self.set_size(&nv, v.size, false)?;
            return Err(e.into());
        }
        Ok(nv)
    }

    /// Records a new size for a volume and its tenant's usage in one transaction (checking the
    /// quota when `check`). Done before the engine changes; a crash in between is reconciled
    /// at start (`recover`).
    fn set_size(&self, v: &Volume, size: u64, check: bool) -> Result<Volume, ApiError> {
        let mut nv = v.clone();
        nv.size = size;
        self.with_tenant(&v.tenant, |t| {
            if check {
                check_quota(t, size.saturating_sub(v.size), 0, 0)?;
            }
            t.usage.capacity_bytes = (t.usage.capacity_bytes + size).saturating_sub(v.size);
            Ok((Txn::new().put(volume_key(&v.tenant, &v.id), enc(&nv)), ()))
        })?;
        Ok(nv)
    }

    /// Deletes a volume; with snapshots only when `force` (which deletes them too).
    pub fn delete_volume(&self, p: &Principal, id: &str, force: bool) -> Result<(), ApiError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        let attached = self.store.get(&attachment_key(&v.id))?.is_some();
        if attached && !force {
            return Err(ApiError::conflict(
                "volume_attached",
                format!("volume {} is attached; detach it first or force", v.name),
            ));
        }
        let snaps = self.volume_snapshots(&v)?;
        if !snaps.is_empty() && !force {
            return Err(ApiError::conflict(
                "volume_has_snapshots",
                format!(
                    "volume {} has {} snapshot(s); delete them first or force",
                    v.name,
                    snaps.len()
                ),
            ));
        }
        let v = self.set_state(&v, VolumeState::Deleting)?;
        self.finish_delete(&v)
    }

    fn finish_delete(&self, v: &Volume) -> Result<(), ApiError> {
        self.exports.write().remove(&v.id);
        self.store.txn(Txn::new().delete(attachment_key(&v.id)))?;
        if let Ok(eid) = self.pool.volume_id(&v.id) {
            self.pool.delete_volume(eid, true)?;
        }
        for s in self.volume_snapshots(v)? {
            self.forget_snapshot(&s)?;
        }
        self.forget_volume(v)
    }

    // ----- snapshots -----

    fn volume_snapshots(&self, v: &Volume) -> Result<Vec<Snapshot>, ApiError> {
        Ok(self
            .list::<Snapshot>(&format!("/snapshots/{}/", v.tenant), None, 0)?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.volume == v.id)
            .collect())
    }

    /// Takes a snapshot of a volume.
    pub fn create_snapshot(
        &self,
        p: &Principal,
        vol: &str,
        name: &str,
    ) -> Result<Snapshot, ApiError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, vol)?;
        validate_name("name", name)?;
        if self.store.get(&snapshot_name_key(&v.id, name))?.is_some() {
            return Err(ApiError::conflict(
                "snapshot_exists",
                format!("snapshot {name} already exists"),
            )
            .field("name"));
        }
        let s = Snapshot {
            id: new_id(),
            tenant: v.tenant.clone(),
            volume: v.id.clone(),
            name: name.to_string(),
            size: v.size,
            created: now(),
        };
        self.with_tenant(&v.tenant, |t| {
            check_quota(t, 0, 0, 1)?;
            t.usage.snapshots += 1;
            Ok((
                Txn::new()
                    .when(snapshot_name_key(&v.id, name), 0)
                    .put(snapshot_name_key(&v.id, name), enc(&s.id))
                    .put(snapshot_index(&s.id), enc(&s.tenant))
                    .put(snapshot_key(&s.tenant, &s.id), enc(&s)),
                (),
            ))
        })
        .map_err(|e| {
            if e.code == "busy"
                && matches!(self.store.get(&snapshot_name_key(&v.id, name)), Ok(Some(_)))
            {
                ApiError::conflict("snapshot_exists", format!("snapshot {name} already exists"))
                    .field("name")
            } else {
                e
            }
        })?;
        let eid = self.engine_volume(&v)?;
        if let Err(e) = self.pool.create_snapshot(eid, &s.id) {
            self.forget_snapshot(&s)?;
            return Err(e.into());
        }
        Ok(s)
    }

    fn forget_snapshot(&self, s: &Snapshot) -> Result<(), ApiError> {
        self.with_tenant(&s.tenant, |t| {
            t.usage.snapshots = t.usage.snapshots.saturating_sub(1);
            Ok((
                Txn::new()
                    .delete(snapshot_key(&s.tenant, &s.id))
                    .delete(snapshot_index(&s.id))
                    .delete(snapshot_name_key(&s.volume, &s.name)),
                (),
            ))
        })
    }

    /// Snapshots of a volume.
    pub fn list_snapshots(&self, p: &Principal, vol: &str) -> Result<Vec<Snapshot>, ApiError> {
        let v = self.get_volume(p, vol)?;
        self.volume_snapshots(&v)
    }

    /// A snapshot the caller may see.
    pub fn get_snapshot(&self, p: &Principal, id: &str) -> Result<Snapshot, ApiError> {
        let nf = || ApiError::not_found("snapshot_not_found", format!("snapshot {id}"));
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&snapshot_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<Snapshot>(&snapshot_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    fn engine_snapshot(&self, s: &Snapshot) -> Result<strata_block::SnapshotId, ApiError> {
        let vid = self
            .pool
            .volume_id(&s.volume)
            .map_err(|_| ApiError::internal("snapshot's volume missing from the pool"))?;
        self.pool
            .snapshot_id(vid, &s.id)
            .map_err(|_| ApiError::internal("snapshot missing from the pool"))
    }

    /// Deletes a snapshot.
    pub fn delete_snapshot(&self, p: &Principal, id: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Member)?;
        let s = self.get_snapshot(p, id)?;
        if let Ok(sid) = self.engine_snapshot(&s) {
            self.pool.delete_snapshot(sid)?;
        }
        self.forget_snapshot(&s)
    }

    /// A new volume from a snapshot, in the snapshot's tenant.
    pub fn clone_snapshot(
        &self,
        p: &Principal,
        id: &str,
        name: &str,
        request_id: Option<String>,
    ) -> Result<Volume, ApiError> {
        Self::require(p, Role::Member)?;
        let s = self.get_snapshot(p, id)?;
        if let Some(rid) = &request_id {
            if let Some((vid, _)) = self.get::<String>(&request_key(&s.tenant, rid))? {
                return self.get_volume(p, &vid);
            }
        }
        validate_name("name", name)?;
        let v = Volume {
            id: new_id(),
            tenant: s.tenant.clone(),
            name: name.to_string(),
            size: s.size,
            pool: DEFAULT_POOL.into(),
            class: None,
            origin: Some(s.id.clone()),
            state: VolumeState::Creating,
            created: now(),
            qos: Qos::default(),
        };
        if self.name_taken(&v.tenant, name) {
            return Err(ApiError::conflict(
                "volume_exists",
                format!("volume {name} already exists"),
            )
            .field("name"));
        }
        self.with_tenant(&s.tenant, |t| {
            check_quota(t, v.size, 1, 0)?;
            check_iops(t, 0, &v.qos)?;
            t.usage.capacity_bytes += v.size;
            t.usage.volumes += 1;
            let mut txn = Txn::new()
                .when(volume_name_key(&v.tenant, name), 0)
                .put(volume_name_key(&v.tenant, name), enc(&v.id))
                .put(volume_index(&v.id), enc(&v.tenant))
                .put(volume_key(&v.tenant, &v.id), enc(&v));
            if let Some(rid) = &request_id {
                txn = txn
                    .when(request_key(&v.tenant, rid), 0)
                    .put(request_key(&v.tenant, rid), enc(&v.id));
            }
            Ok((txn, ()))
        })
        .map_err(|e| {
            if e.code == "busy" && self.name_taken(&v.tenant, name) {
                ApiError::conflict("volume_exists", format!("volume {name} already exists"))
                    .field("name")
            } else {
                e
            }
        })?;
        let sid = self.engine_snapshot(&s)?;
        if let Err(e) = self.pool.clone_snapshot(sid, &v.id, None) {
            self.forget_volume(&v)?;
            return Err(e.into());
        }
        self.set_state(&v, VolumeState::Available)
    }

    /// Rolls a volume back to one of its snapshots.
    pub fn rollback(&self, p: &Principal, vol: &str, snapshot: &str) -> Result<Volume, ApiError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, vol)?;
        let s = self.get_snapshot(p, snapshot)?;
        if s.volume != v.id {
            return Err(ApiError::invalid(
                "snapshot",
                format!("snapshot {} is not a snapshot of volume {}", s.name, v.name),
            ));
        }
        let (eid, sid) = (self.engine_volume(&v)?, self.engine_snapshot(&s)?);
        let nv = self.set_size(&v, s.size, true)?;
        if let Err(e) = self.pool.rollback(eid, sid) {
            self.set_size(&nv, v.size, false)?;
            return Err(e.into());
        }
        Ok(nv)
    }

    // ----- performance -----

    /// Changes a volume's limits; open connections see the change within 20 ms.
    pub fn set_qos(&self, p: &Principal, id: &str, qos: Qos) -> Result<Volume, ApiError> {
        Self::require(p, Role::Member)?;
        validate_qos(&qos)?;
        let v = self.get_volume(p, id)?;
        let mut nv = v.clone();
        nv.qos = qos;
        self.with_tenant(&v.tenant, |t| {
            let old = v.qos.iops_limit.unwrap_or(0);
            check_iops(t, old, &qos)?;
            t.usage.iops = t.usage.iops - old.min(t.usage.iops) + qos.iops_limit.unwrap_or(0);
            Ok((Txn::new().put(volume_key(&v.tenant, &v.id), enc(&nv)), ()))
        })?;
        self.pool.set_qos(self.engine_volume(&v)?, qos.limits())?;
        Ok(nv)
    }

    /// Live figures of a volume.
    pub fn volume_stats(&self, p: &Principal, id: &str) -> Result<serde_json::Value, ApiError> {
        Self::require(p, Role::Reader)?;
        let v = self.get_volume(p, id)?;
        let io = self
            .pool
            .io(self.engine_volume(&v)?)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let l = io.live();
        let t = io.totals();
        Ok(serde_json::json!({
            "volume": v.id,
            "name": v.name,
            "window_seconds": l.window_secs,
            "iops": l.iops,
            "throughput_bytes": l.throughput,
            "latency_p50_us": l.p50_us,
            "latency_p99_us": l.p99_us,
            "qos": v.qos,
            "totals": {
                "reads": t.reads, "writes": t.writes,
                "read_bytes": t.read_bytes, "write_bytes": t.write_bytes,
                "throttled_us": t.throttled_us,
            },
        }))
    }

    /// Prometheus text exposition of pool and volume figures (admin).
    pub fn metrics(&self, p: &Principal) -> Result<String, ApiError> {
        use std::fmt::Write;
        Self::require(p, Role::Admin)?;
        let mut o = String::new();
        let i = self.pool.info();
        let pool = DEFAULT_POOL;
        for (name, help, v) in [
            (
                "strata_pool_capacity_bytes",
                "Data capacity of the pool.",
                i.capacity,
            ),
            (
                "strata_pool_allocated_bytes",
                "Bytes referenced by volumes and snapshots.",
                i.allocated,
            ),
            (
                "strata_pool_free_bytes",
                "Bytes available for new data.",
                i.free,
            ),
            (
                "strata_pool_provisioned_bytes",
                "Sum of volume sizes (thin).",
                i.provisioned,
            ),
        ] {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{pool=\"{pool}\"}} {v}"
            );
        }
        let vols: Vec<Volume> = self
            .list::<Volume>("/volumes/", None, 0)?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.state == VolumeState::Available)
            .collect();
        let mut ops = String::new();
        let mut bytes = String::new();
        let mut lat = String::new();
        let mut thr = String::new();
        for v in &vols {
            let Ok(eid) = self.pool.volume_id(&v.id) else {
                continue;
            };
            let Ok(io) = self.pool.io(eid) else { continue };
            let t = io.totals();
            let l = format!(
                "volume=\"{}\",name=\"{}\",tenant=\"{}\"",
                v.id, v.name, v.tenant
            );
            let _ = writeln!(
                ops,
                "strata_volume_ops_total{{{l},op=\"read\"}} {}",
                t.reads
            );
            let _ = writeln!(
                ops,
                "strata_volume_ops_total{{{l},op=\"write\"}} {}",
                t.writes
            );
            let _ = writeln!(
                bytes,
                "strata_volume_bytes_total{{{l},op=\"read\"}} {}",
                t.read_bytes
            );
            let _ = writeln!(
                bytes,
                "strata_volume_bytes_total{{{l},op=\"write\"}} {}",
                t.write_bytes
            );
            let mut acc = 0;
            for (b, n) in t
                .latency
                .iter()
                .enumerate()
                .take(strata_block::qos::LAT_BUCKETS - 1)
            {
                acc += n;
                let le = (1u64 << b) as f64 / 1e6;
                let _ = writeln!(
                    lat,
                    "strata_volume_latency_seconds_bucket{{{l},le=\"{le}\"}} {acc}"
                );
            }
            let count: u64 = t.latency.iter().sum();
            let _ = writeln!(
                lat,
                "strata_volume_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                lat,
                "strata_volume_latency_seconds_sum{{{l}}} {}",
                t.latency_sum_us as f64 / 1e6
            );
            let _ = writeln!(lat, "strata_volume_latency_seconds_count{{{l}}} {count}");
            let _ = writeln!(
                thr,
                "strata_volume_throttled_seconds_total{{{l}}} {}",
                t.throttled_us as f64 / 1e6
            );
        }
        let _ = write!(o, "# HELP strata_volume_ops_total I/O requests served.\n# TYPE strata_volume_ops_total counter\n{ops}");
        let _ = write!(o, "# HELP strata_volume_bytes_total Bytes read or written.\n# TYPE strata_volume_bytes_total counter\n{bytes}");
        let _ = write!(o, "# HELP strata_volume_latency_seconds Request latency, admission wait included.\n# TYPE strata_volume_latency_seconds histogram\n{lat}");
        let _ = write!(o, "# HELP strata_volume_throttled_seconds_total Time requests waited for QoS admission.\n# TYPE strata_volume_throttled_seconds_total counter\n{thr}");
        Ok(o)
    }

    // ----- virtual switches (admin: the platform's network) -----

    /// Creates and starts a switch.
    pub fn create_switch(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<crate::net::SwitchRecord, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.create(self.store.as_ref(), name, now())
    }

    /// Deletes a switch.
    pub fn delete_switch(&self, p: &Principal, name: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.delete(self.store.as_ref(), name)
    }

    /// Lists switches.
    pub fn list_switches(&self, p: &Principal) -> Result<Vec<crate::net::SwitchRecord>, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.list(self.store.as_ref())
    }

    /// One switch.
    pub fn get_switch(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<crate::net::SwitchRecord, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.get(self.store.as_ref(), name)
    }

    /// Adds a port to a switch.
    pub fn add_switch_port(
        &self,
        p: &Principal,
        sw: &str,
        port: crate::net::PortRecord,
    ) -> Result<crate::net::SwitchRecord, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.add_port(self.store.as_ref(), sw, port)
    }

    /// Removes a port.
    pub fn remove_switch_port(&self, p: &Principal, sw: &str, port: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.remove_port(self.store.as_ref(), sw, port)
    }

    /// Port counters.
    pub fn switch_ports(&self, p: &Principal, sw: &str) -> Result<serde_json::Value, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.get(self.store.as_ref(), sw)?;
        self.switches.ports(sw)
    }

    /// Adds a flow.
    pub fn add_switch_flow(&self, p: &Principal, sw: &str, flow: &str) -> Result<(), ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.add_flow(self.store.as_ref(), sw, flow)
    }

    /// Deletes flows.
    pub fn del_switch_flows(
        &self,
        p: &Principal,
        sw: &str,
        filter: &str,
        strict: bool,
    ) -> Result<usize, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches
            .del_flows(self.store.as_ref(), sw, filter, strict)
    }

    /// Flows with counters.
    pub fn dump_switch_flows(&self, p: &Principal, sw: &str) -> Result<String, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.get(self.store.as_ref(), sw)?;
        self.switches.dump_flows(sw)
    }

    /// Traces a packet.
    pub fn trace_switch(&self, p: &Principal, sw: &str, packet: &str) -> Result<String, ApiError> {
        Self::require(p, Role::Admin)?;
        self.switches.get(self.store.as_ref(), sw)?;
        self.switches.trace(sw, packet)
    }

    /// Stops the switches (daemon shutdown).
    pub fn shutdown(&self) {
        self.switches.stop_all();
    }

    // ----- audit -----

    /// Appends an audit entry.
    pub fn audit(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        outcome: &str,
    ) {
        use rand::Rng;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("/audit/{nanos:024}{:04x}", rand::thread_rng().gen::<u16>());
        let e = AuditEntry {
            time: now(),
            actor: p.token_id.clone(),
            tenant: tenant.map(str::to_string),
            action: action.to_string(),
            resource: resource.to_string(),
            outcome: outcome.to_string(),
        };
        if let Err(err) = self.store.txn(Txn::new().put(key, enc(&e))) {
            tracing::error!(%err, "audit entry not written");
        }
    }

    /// Audit entries, oldest first (admin).
    pub fn list_audit(&self, p: &Principal, limit: usize) -> Result<Vec<AuditEntry>, ApiError> {
        Self::require(p, Role::Admin)?;
        Ok(self
            .list::<AuditEntry>("/audit/", None, limit)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    // ----- recovery -----

    /// Finishes or undoes volume changes a crash interrupted, and reloads the attachments.
    fn recover(&self) -> Result<(), ApiError> {
        for (_, a) in self.list::<Attachment>("/attachments/", None, 0)? {
            self.exports.write().insert(a.export);
        }
        let r = self.recover_volumes();
        // Usage is derived state: recount it from the records, whatever a crash left behind.
        self.recount_usage()?;
        r
    }

    /// Sets every tenant's usage to what its volume and snapshot records add up to.
    fn recount_usage(&self) -> Result<(), ApiError> {
        let mut counted: std::collections::HashMap<String, Usage> = Default::default();
        for (_, v) in self.list::<Volume>("/volumes/", None, 0)? {
            let u = counted.entry(v.tenant.clone()).or_default();
            u.capacity_bytes += v.size;
            u.volumes += 1;
            u.iops += v.qos.iops_limit.unwrap_or(0);
        }
        for (_, s) in self.list::<Snapshot>("/snapshots/", None, 0)? {
            counted.entry(s.tenant.clone()).or_default().snapshots += 1;
        }
        for (_, t) in self.list::<Tenant>("/tenants/", None, 0)? {
            let want = counted.remove(&t.name).unwrap_or_default();
            if t.usage != want {
                tracing::warn!(tenant = %t.name, "recounting usage");
                self.with_tenant(&t.name, |t| {
                    t.usage = want.clone();
                    Ok((Txn::new(), ()))
                })?;
            }
        }
        Ok(())
    }

    fn recover_volumes(&self) -> Result<(), ApiError> {
        for (_, v) in self.list::<Volume>("/volumes/", None, 0)? {
            match v.state {
                VolumeState::Available => {
                    // Limits are desired state: the engine learns them again at every start.
                    if let Ok(eid) = self.pool.volume_id(&v.id) {
                        self.pool.set_qos(eid, v.qos.limits())?;
                        // A resize or rollback recorded but not carried out before a crash:
                        // carry it out, or keep the engine's size if it cannot be.
                        let have = self.pool.volume(eid)?.size;
                        if have != v.size && self.pool.resize_volume(eid, v.size).is_err() {
                            tracing::warn!(volume = %v.id, "keeping the engine's size");
                            self.set_size(&v, have, false)?;
                        }
                    }
                }
                VolumeState::Creating => {
                    if self.pool.volume_id(&v.id).is_ok() {
                        self.set_state(&v, VolumeState::Available)?;
                    } else {
                        tracing::warn!(volume = %v.id, "undoing an interrupted create");
                        self.forget_volume(&v)?;
                    }
                }
                VolumeState::Deleting => {
                    tracing::warn!(volume = %v.id, "finishing an interrupted delete");
                    self.finish_delete(&v)?;
                }
            }
        }
        Ok(())
    }
}

fn validate_qos(q: &Qos) -> Result<(), ApiError> {
    for (f, v) in [
        ("iops_limit", q.iops_limit),
        ("bandwidth_limit", q.bandwidth_limit),
        ("burst_iops", q.burst_iops),
        ("burst_bandwidth", q.burst_bandwidth),
    ] {
        if v == Some(0) {
            return Err(ApiError::invalid(
                f,
                "a limit must be positive (omit it for none)",
            ));
        }
    }
    Ok(())
}

/// The tenant's IOPS quota bounds the sum of its volumes' IOPS limits; under such a quota
/// every volume needs a limit.
fn check_iops(t: &Tenant, old: u64, q: &Qos) -> Result<(), ApiError> {
    let Some(max) = t.quota.iops else {
        return Ok(());
    };
    let Some(new) = q.iops_limit else {
        return Err(ApiError::invalid(
            "iops_limit",
            format!(
                "tenant {} has an IOPS quota: every volume needs an iops_limit",
                t.name
            ),
        ));
    };
    let used = t.usage.iops.saturating_sub(old);
    if used + new > max {
        return Err(ApiError::new(
            422,
            "quota_exceeded",
            format!(
                "tenant {} IOPS quota is {max}; {used} used, {new} more requested",
                t.name
            ),
        ));
    }
    Ok(())
}

fn check_quota(t: &Tenant, bytes: u64, volumes: u64, snapshots: u64) -> Result<(), ApiError> {
    let q = &t.quota;
    let over = |what: &str, used: u64, add: u64, max: Option<u64>| match max {
        Some(m) if used.saturating_add(add) > m => Err(ApiError::new(
            422,
            "quota_exceeded",
            format!(
                "tenant {} {what} quota is {m}; {used} used, {add} more requested",
                t.name
            ),
        )),
        _ => Ok(()),
    };
    over("capacity", t.usage.capacity_bytes, bytes, q.capacity_bytes)?;
    over("volume", t.usage.volumes, volumes, q.volumes)?;
    over("snapshot", t.usage.snapshots, snapshots, q.snapshots)?;
    Ok(())
}
