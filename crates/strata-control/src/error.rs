//! The one error type of the logic layer: what went wrong, in terms of the control plane's
//! resources, with the engine's, the store's and the switch's own typed errors as sources.
//!
//! # Invariants
//! - Nothing here knows HTTP: the status and the stable code of each variant are decided at the
//!   edge, in `api.rs` (`api::code_of`), against the registry in `strata-types`.
//! - A resource the caller may not see is [`ControlError::NotFound`], exactly like one that does
//!   not exist, so existence never leaks.
//! - [`ControlError::Invalid`] names the request field at fault; bad input changes nothing.
//! - A message never carries more than a [`clip`] of what the caller sent: the names in
//!   not-found and exists errors are clipped here, and every other place that echoes input
//!   into a message clips it itself.

use std::fmt;

/// How much of a caller's input a message echoes, in characters.
pub const CLIP_CHARS: usize = 64;

/// `s` as an error message may echo it: whole when it has at most [`CLIP_CHARS`] characters,
/// else its first [`CLIP_CHARS`] characters and its length ("…(N bytes)"), so a 100 KB input
/// never comes back in a message (nor fills a log line).
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP_CHARS) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…({} bytes)", &s[..end], s.len()),
    }
}

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
    /// An API token (named by its public id).
    Token,
    /// A checkpoint group of snapshots.
    SnapshotGroup,
    /// A node of the placement pool.
    Node,
    /// A job (named `TENANT/NAME`).
    Job,
    /// A tenant network.
    Network,
    /// A subnet of a network.
    Subnet,
    /// A port of a tenant network.
    NetworkPort,
    /// A router of a network.
    Router,
    /// A security group.
    SecurityGroup,
    /// A rule of a security group.
    SecurityGroupRule,
    /// A floating IP.
    FloatingIp,
    /// A load balancer.
    LoadBalancer,
    /// A device of a pool.
    Device,
    /// A snapshot schedule.
    SnapshotSchedule,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Tenant => "tenant",
            Resource::Volume => "volume",
            Resource::Snapshot => "snapshot",
            Resource::Pool => "pool",
            Resource::Device => "device",
            Resource::Attachment => "attachment of volume",
            Resource::Switch => "switch",
            Resource::Port => "port",
            Resource::Token => "token",
            Resource::SnapshotGroup => "snapshot group",
            Resource::Node => "node",
            Resource::Job => "job",
            Resource::Network => "network",
            Resource::Subnet => "subnet",
            Resource::NetworkPort => "network port",
            Resource::Router => "router",
            Resource::SecurityGroup => "security group",
            Resource::SecurityGroupRule => "security group rule",
            Resource::FloatingIp => "floating IP",
            Resource::LoadBalancer => "load balancer",
            Resource::SnapshotSchedule => "snapshot schedule",
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
    /// The request id names an earlier create of another volume.
    RequestIdReused,
    /// The snapshot is a member of a checkpoint group.
    SnapshotInGroup,
    /// A network or subnet still has what lives in it.
    NetworkNotEmpty,
    /// A security group is used by ports or named by rules.
    SecurityGroupInUse,
    /// An address, range or MAC is taken, or none is free.
    AddressInUse,
    /// Fields contradict each other or the network objects they name.
    NetworkSpecConflict,
    /// A port the daemon needs (a network's load-balancer monitor).
    PortInUse,
    /// A job's fields contradict each other or the objects they name.
    JobSpecConflict,
}

/// Why a device cannot be added, used or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceProblem {
    /// A device of a pool already, or holds another Strata pool, or holds copies that
    /// cannot move.
    InUse,
    /// Holds data that is not Strata's (`force` formats it).
    NotEmpty,
    /// Cannot be opened, is not a file or block device, or is too small.
    Unusable,
    /// Fewer failure domains than copies.
    NotEnoughDomains,
    /// A copy of the volume is on a device that is not usable.
    Degraded,
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
    /// A known API token past its expiry.
    #[error("the API token expired; ask for a new one")]
    TokenExpired,
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
    /// An object the request body names is missing or not visible (the body contradicts the
    /// state: a 409, while a missing object of the path is a [`ControlError::NotFound`]).
    #[error("{resource} {name} (named by {field}) not found")]
    Unresolved {
        /// Which kind.
        resource: Resource,
        /// Its name or id as given.
        name: String,
        /// The body field that names it.
        field: &'static str,
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
    #[error("{message}")]
    QuotaExceeded {
        /// The tenant whose quota refused it (for the refusal's event: an admin acting for a
        /// tenant is refused by that tenant's quota, and its members must see it).
        tenant: String,
        /// What was refused, and why.
        message: String,
    },
    /// The pool's volumes would provision more than its overcommit ratio allows.
    #[error("{0}")]
    PoolOvercommitted(String),
    /// A packet to trace names an input port the switch does not have (the switch's state, not
    /// the description's form: the switch itself exists).
    #[error("the switch has no port {0}")]
    TraceInPortUnknown(String),
    /// The resource is in use and cannot be removed (unless forced, where that exists).
    #[error("{message}")]
    InUse {
        /// Why.
        what: InUse,
        /// A message naming the resource.
        message: String,
    },
    /// A device cannot be added, used or removed.
    #[error("{message}")]
    Device {
        /// Why.
        what: DeviceProblem,
        /// A message naming the device.
        message: String,
    },
    /// A node inventory document that cannot be taken (format, or clash with the pool).
    #[error("{0}")]
    InventoryInvalid(String),
    /// A plan was made from a placement revision that is no longer current.
    #[error("{0}")]
    PlanStale(String),
    /// Another change won the race (too often): retry.
    #[error("{0}")]
    Busy(String),
    /// The volume's copies are on another node's devices: this node may not change them.
    #[error("{message}")]
    OtherNode {
        /// The node that holds the copies.
        node: String,
        /// A message naming the volume and both nodes.
        message: String,
    },
    /// A copy of the volume is on another node: its layers cannot change (yet).
    #[error("{0}")]
    SpansNodes(String),
    /// A takeover was asked while the volume's serving node is up.
    #[error("{0}")]
    ServingNodeUp(String),
    /// This node has no copy of the volume with every acknowledged write.
    #[error("{0}")]
    NoInSyncCopy(String),
    /// Another node took the volume over: this node may not write it.
    #[error("{0}")]
    Fenced(String),
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
    /// An encryption key the call needs is missing or locked (no master key, or another).
    #[error(transparent)]
    Key(strata_block::KeyAdminError),
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
    /// A device problem.
    pub fn device(what: DeviceProblem, message: impl Into<String>) -> Self {
        ControlError::Device {
            what,
            message: message.into(),
        }
    }
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
            name: clip(&name.to_string()),
        }
    }
    /// A name already taken.
    pub fn exists(resource: Resource, name: impl fmt::Display) -> Self {
        ControlError::Exists {
            resource,
            name: clip(&name.to_string()),
        }
    }
    /// Forbidden for the caller's role.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ControlError::Forbidden(message.into())
    }
    /// A [`ControlError::NotFound`] of an object named by the body field `field` becomes
    /// [`ControlError::Unresolved`]; other errors pass unchanged. Use as `map_err(named_by(..))`.
    pub fn named_by(field: &'static str) -> impl Fn(ControlError) -> ControlError {
        move |e| match e {
            ControlError::NotFound { resource, name } => ControlError::Unresolved {
                resource,
                name,
                field,
            },
            other => other,
        }
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

impl From<strata_block::KeyAdminError> for ControlError {
    fn from(e: strata_block::KeyAdminError) -> Self {
        match e {
            strata_block::KeyAdminError::Admin(a) => ControlError::Engine(a),
            other => ControlError::Key(other),
        }
    }
}

impl ControlError {
    /// Something that should not happen did.
    pub fn internal(message: impl Into<String>) -> Self {
        ControlError::Internal(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_input_and_bounds_long_input() {
        assert_eq!(clip("br0"), "br0");
        let exact = "a".repeat(CLIP_CHARS);
        assert_eq!(clip(&exact), exact);
        let long = "x".repeat(100_000);
        let c = clip(&long);
        assert_eq!(c, format!("{}…(100000 bytes)", "x".repeat(CLIP_CHARS)));
        // Cut on a character boundary, counted in characters.
        let wide = "é".repeat(100);
        assert_eq!(
            clip(&wide),
            format!("{}…(200 bytes)", "é".repeat(CLIP_CHARS))
        );
    }

    #[test]
    fn not_found_and_exists_clip_the_name() {
        let name = "n".repeat(10_000);
        assert!(
            ControlError::not_found(Resource::Switch, &name)
                .to_string()
                .len()
                < 200
        );
        assert!(
            ControlError::exists(Resource::Volume, &name)
                .to_string()
                .len()
                < 200
        );
    }
}
