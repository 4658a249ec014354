//! A controller over a temporary redb store and a memory pool, and principals of each role.

use std::sync::Arc;

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_control::{api, ControlError, Controller, CreateVolume, Principal, Role, SizeArg};
use strata_state::RedbStore;
use strata_types::DeviceClass;

/// A controller with its temporary directory (dropped with it).
pub struct Fixture {
    pub c: Controller,
    pub admin: Principal,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A fresh controller over a 256 MiB memory pool.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let dev = MemDevice::new(256 << 20, "m");
        drop(
            Pool::create(vec![DeviceSpec {
                device: dev.clone(),
                class: DeviceClass::Ssd,
            }])
            .unwrap(),
        );
        let pool = Pool::open(vec![dev as Arc<dyn BlockDevice>]).unwrap();
        let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
        let c = Controller::open(Box::new(store), pool).unwrap();
        let secret = c.bootstrap_admin().unwrap().unwrap();
        let admin = c.authenticate(&secret).unwrap();
        // These tests make volumes of gigabytes on a small pool: no overcommit limit
        // (`overcommit.rs` tests the limit).
        c.set_pool_settings(&admin, "default", None).unwrap();
        Fixture {
            c,
            admin,
            _dir: dir,
        }
    }

    /// A principal of `role` in `tenant`, through a real token.
    pub fn token(&self, tenant: &str, role: Role) -> Principal {
        let (secret, _) = self
            .c
            .create_token(&self.admin, Some(tenant), role)
            .unwrap();
        self.c.authenticate(&secret).unwrap()
    }

    /// A volume of `size` named `name` in `tenant`, created by the admin.
    pub fn volume(&self, tenant: &str, name: &str, size: &str) -> Result<String, ControlError> {
        self.c
            .create_volume(&self.admin, new_volume(tenant, name, size))
            .map(|v| v.id)
    }
}

/// A create-volume request.
pub fn new_volume(tenant: &str, name: &str, size: &str) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size: SizeArg::Text(size.into()),
        tenant: Some(tenant.into()),
        ..Default::default()
    }
}

/// The HTTP status the API answers a result with (`ok` for a success).
pub fn status<T>(r: &Result<T, ControlError>, ok: u16) -> u16 {
    match r {
        Ok(_) => ok,
        Err(e) => api::code_of(e).http_status(),
    }
}

/// The stable code of an error result.
pub fn code<T: std::fmt::Debug>(r: Result<T, ControlError>) -> &'static str {
    api::code_of(&r.expect_err("an error")).as_str()
}

/// The body field an unresolved-reference error names (panics on any other outcome).
pub fn named<T: std::fmt::Debug>(r: Result<T, ControlError>) -> &'static str {
    match r {
        Err(ControlError::Unresolved { field, .. }) => field,
        other => panic!("not an unresolved reference: {other:?}"),
    }
}
