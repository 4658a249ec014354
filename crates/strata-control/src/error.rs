//! The one error type of the logic layer: what went wrong, in terms of the control plane's
//! resources, with the engine's, the store's and the switch's own typed errors as sources.
//!
//! # Invariants
//! - Nothing here knows HTTP: the status and the stable code of each variant are decided at the
//!   edge, in `api.rs` (`api::code_of`), against the registry in `strata-types`.
//! - A resource the caller may not see is [`ControlError::NotFound`], exactly like one that does
//!   not exist, so existence never leaks.
//! - [`ControlError::Invalid`] names the request field at fault; bad input changes nothing.

use std::fmt;

/// The kinds of resource the control plane manages (for not-found and exists errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A tenant.
    Tenant,
    /// A volume.
    Volume,
    /// A snapshot.
    Snapshot,
    /// A pool.
    Pool,
    /// A volume's attachment (named by the volume).
    Attachment,
    /// A virtual switch.
    Switch,
    /// A port of a switch.
    Port,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Tenant => "tenant",
            Resource::Volume => "volume",
            Resource::Snapshot => "snapshot",
            Resource::Pool => "pool",
            Resource::Attachment => "attachment of volume",
            Resource::Switch => "switch",
            Resource::Port => "port",
        })
    }
}

/// Why a resource cannot be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InUse {
    /// The volume has snapshots.
    VolumeHasSnapshots,
    /// The volume is attached.
    VolumeAttached,
    /// The tenant still has volumes or snapshots.
    TenantNotEmpty,
}

/// A part of the daemon a call needs and that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The NBD server (Unix socket).
    Nbd,
    /// The NBD TCP listener with TLS.
    NbdTcp,
}

/// What a controller call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A missing or unknown API token.
    #[error("missing or unknown API token")]
    Unauthenticated,
    /// Authenticated, but the role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource, or one the caller may not see.
    #[error("{resource} {name} not found")]
    NotFound {
        /// Which kind.
        resource: Resource,
        /// Its name or id as asked.
        name: String,
    },
    /// The name is taken.
    #[error("{resource} {name} already exists")]
    Exists {
        /// Which kind.
        resource: Resource,
        /// The name.
        name: String,
    },
    /// A request field is not acceptable.
    #[error("{reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The tenant's quota does not allow the change.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The pool's volumes would provision more than its overcommit ratio allows.
    #[error("{0}")]
    PoolOvercommitted(String),
    /// The resource is in use and cannot be removed (unless forced, where that exists).
    #[error("{message}")]
    InUse {
        /// Why.
        what: InUse,
        /// A message naming the resource.
        message: String,
    },
    /// Another change won the race (too often): retry.
    #[error("{0}")]
    Busy(String),
    /// A part of the daemon the call needs is not running.
    #[error("{message}")]
    Unavailable {
        /// Which part.
        service: Service,
        /// What to do about it.
        message: String,
    },
    /// The storage engine refused or failed.
    #[error(transparent)]
    Engine(#[from] strata_block::AdminError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] strata_state::StoreError),
    /// A switch's dataplane refused or failed.
    #[error(transparent)]
    Switch(#[from] strata_dataplane::DataplaneError),
    /// Something that should not happen did (a damaged record, a missing engine object).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// A field that is not acceptable.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ControlError::Invalid {
            field,
            reason: reason.into(),
        }
    }
    /// A resource that is missing or not visible.
    pub fn not_found(resource: Resource, name: impl fmt::Display) -> Self {
        ControlError::NotFound {
            resource,
            name: name.to_string(),
        }
    }
    /// A name already taken.
    pub fn exists(resource: Resource, name: impl fmt::Display) -> Self {
        ControlError::Exists {
            resource,
            name: name.to_string(),
        }
    }
    /// Forbidden for the caller's role.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ControlError::Forbidden(message.into())
    }
    /// Renames the field of an [`ControlError::Invalid`] (a shared parser, a specific field).
    pub fn in_field(self, f: &'static str) -> Self {
        match self {
            ControlError::Invalid { reason, .. } => ControlError::Invalid { field: f, reason },
            other => other,
        }
    }
    /// Whether the call lost a race (the caller may look for the reason, e.g. a taken name).
    pub fn is_busy(&self) -> bool {
        matches!(self, ControlError::Busy(_))
    }
}

impl ControlError {
    /// Something that should not happen did.
    pub fn internal(message: impl Into<String>) -> Self {
        ControlError::Internal(message.into())
    }
}
