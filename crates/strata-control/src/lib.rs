//! Strata's control plane: tenants, API tokens and roles, quotas, volumes and snapshots over
//! the storage engine, an audit log, and the REST API (`/v1`).

pub mod api;
pub mod controller;
pub mod error;
pub mod model;
pub mod net;
pub mod pki;
pub mod storage;
pub mod wire;

pub use controller::{
    class_of, parse_duration, Controller, CreateVolume, NetworkTrace, NewGroup, NewPort, NewRule,
    NewSubnet, OvercommitArg, PoolSettingsView, PoolShareRecord, Principal, SetPoolSettings,
    SizeArg, TenantShareRecord, TenantShareView, TraceFrom,
};
pub use error::{ControlError, InUse, Resource, Service};
pub use model::*;
