//! THE registry of stable error codes: every code any Strata boundary answers with is listed
//! here once, with its meaning, its default HTTP status and, where an I/O can produce it, the
//! NBD errno a transmission reply carries.
//!
//! # Invariants
//! - A code's string never changes once released: scripts, the CLI and API clients match on it.
//! - Each code appears once in [`ErrorCode::ALL`]; the string forms are unique (tested).
//! - An NBD errno is one of the values the NBD protocol allows ([`nbd_errno`]); a code an I/O
//!   cannot produce has none. NBD has no ENOENT: a volume that vanished under a connection is
//!   EIO (nothing the client can retry), a refused role is EPERM.
//! - The OpenAPI document's error schema lists every code (tested in `strata-control`).

use std::fmt;
use std::str::FromStr;

/// The errno values the NBD protocol allows in a reply (section "Error values").
pub mod nbd_errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Cannot allocate memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left on device.
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server is in the process of being shut down.
    pub const ESHUTDOWN: u32 = 108;
    /// All of them.
    pub const ALL: [u32; 8] = [
        EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN,
    ];
}

macro_rules! registry {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $code:literal, $status:literal, $errno:expr; )+) => {
        /// A stable, machine-readable error code. Every library error maps to one of these at
        /// the boundary (HTTP body, CLI exit message, NBD errno). The strings are a public
        /// contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            /// Every code, in registry order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The stable string form.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status the REST API answers with by default.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// The NBD errno a transmission reply carries, when an I/O can produce the code.
            pub fn nbd_errno(self) -> Option<u32> {
                #[allow(unused_imports)]
                use nbd_errno::*;
                match self { $(ErrorCode::$variant => $errno,)+ }
            }

            /// What the code means (its doc line).
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

registry! {
    // ----- requests -----
    /// The request was malformed or a value was out of range (the field is named).
    InvalidArgument = "invalid_argument", 400, Some(EINVAL);
    /// The request body is not valid JSON for the call.
    InvalidBody = "invalid_body", 400, None;
    /// No such endpoint.
    NotFound = "not_found", 404, None;
    // ----- authentication and authorization -----
    /// A missing or unknown API token.
    Unauthenticated = "unauthenticated", 401, Some(EPERM);
    /// Authenticated, but the role does not allow the call.
    Forbidden = "forbidden", 403, Some(EPERM);
    // ----- resources that are not there (or not visible to the caller) -----
    /// No tenant by that name (or not visible to the caller).
    TenantNotFound = "tenant_not_found", 404, None;
    /// No volume by that name or id (or not visible). On NBD: deleted under the connection.
    VolumeNotFound = "volume_not_found", 404, Some(EIO);
    /// No snapshot by that name or id (or not visible).
    SnapshotNotFound = "snapshot_not_found", 404, Some(EIO);
    /// No pool by that name or id.
    PoolNotFound = "pool_not_found", 404, None;
    /// The volume is not attached.
    AttachmentNotFound = "attachment_not_found", 404, None;
    /// No switch by that name.
    SwitchNotFound = "switch_not_found", 404, None;
    /// No port by that name on the switch.
    PortNotFound = "port_not_found", 404, None;
    // ----- names already taken -----
    /// A name is already taken (engine level).
    AlreadyExists = "already_exists", 409, None;
    /// A tenant by that name exists.
    TenantExists = "tenant_exists", 409, None;
    /// A volume by that name exists in the tenant.
    VolumeExists = "volume_exists", 409, None;
    /// A snapshot by that name exists on the volume.
    SnapshotExists = "snapshot_exists", 409, None;
    /// A switch by that name exists.
    SwitchExists = "switch_exists", 409, None;
    /// A port by that name exists on the switch.
    PortExists = "port_exists", 409, None;
    /// A VXLAN port to that remote exists on the same local address and UDP port.
    VxlanRemoteExists = "vxlan_remote_exists", 409, None;
    // ----- state conflicts -----
    /// The operation conflicts with the resource's state.
    Conflict = "conflict", 409, None;
    /// Another change won a race too often (or changed the record meanwhile): retry.
    Busy = "busy", 409, None;
    /// The volume has snapshots: delete them first or force.
    VolumeHasSnapshots = "volume_has_snapshots", 409, None;
    /// The volume is attached: detach it first or force.
    VolumeAttached = "volume_attached", 409, None;
    /// The tenant still has volumes or snapshots.
    TenantNotEmpty = "tenant_not_empty", 409, None;
    /// Shrinking would cut off written data.
    ShrinkOverData = "shrink_over_data", 409, None;
    /// The operation is not allowed on this resource (e.g. writing a snapshot).
    ReadOnly = "read_only", 409, Some(EPERM);
    // ----- limits -----
    /// The tenant's quota does not allow the change.
    QuotaExceeded = "quota_exceeded", 409, Some(ENOSPC);
    /// The pool cannot hold the data.
    OutOfSpace = "out_of_space", 507, Some(ENOSPC);
    // ----- the daemon's parts -----
    /// The pool failed to make a change durable and accepts no more changes.
    PoolFailed = "pool_failed", 503, Some(EIO);
    /// The state store failed.
    StoreUnavailable = "store_unavailable", 503, Some(EIO);
    /// The NBD server is not running.
    NbdUnavailable = "nbd_unavailable", 503, None;
    /// The daemon has no NBD TCP listener (`strata serve --nbd-listen`): a precondition the
    /// caller can see and fix, so a conflict, not a server failure.
    NbdTcpUnavailable = "nbd_tcp_unavailable", 409, None;
    /// The switch's dataplane thread has stopped.
    DataplaneStopped = "dataplane_stopped", 503, Some(ESHUTDOWN);
    // ----- storage engine -----
    /// Stored data failed its checksum.
    ChecksumMismatch = "checksum_mismatch", 500, Some(EIO);
    /// A device failed an I/O.
    IoError = "io_error", 500, Some(EIO);
    /// A device is missing, foreign, truncated or damaged.
    DeviceError = "device_error", 500, Some(EIO);
    /// The metadata of a pool is damaged.
    CorruptMetadata = "corrupt_metadata", 500, Some(EIO);
    // ----- switch ports -----
    /// A system call on a port failed (opening a TAP, binding a socket).
    PortIoError = "port_io_error", 500, None;
    /// The port number is taken or reserved.
    PortNumberTaken = "port_number_taken", 400, None;
    /// The port name is not valid (empty or numeric).
    BadPortName = "bad_port_name", 400, None;
    /// The isolation domain is not valid for the port.
    BadPortDomain = "bad_port_domain", 400, None;
    // ----- flow syntax and rules (ovs-ofctl syntax) -----
    /// A `key=value` whose key is not a known field.
    UnknownField = "unknown_field", 400, None;
    /// A field given without a value.
    MissingValue = "missing_value", 400, None;
    /// A field value that does not parse.
    BadValue = "bad_value", 400, None;
    /// The same field given twice.
    DuplicateField = "duplicate_field", 400, None;
    /// An action that does not exist.
    UnknownAction = "unknown_action", 400, None;
    /// An action argument that does not parse.
    BadActionArgument = "bad_action_argument", 400, None;
    /// A port name the switch does not have.
    UnknownPort = "unknown_port", 400, None;
    /// A flow without `actions=`.
    MissingActions = "missing_actions", 400, None;
    /// A match on a field without the match that makes it meaningful.
    MissingPrerequisite = "missing_prerequisite", 400, None;
    /// A goto to this or an earlier table.
    GotoNotForward = "goto_not_forward", 400, None;
    /// A goto that is not the last action.
    GotoNotLast = "goto_not_last", 400, None;
    /// A table id above 254.
    TableOutOfRange = "table_out_of_range", 400, None;
    /// A register that does not exist.
    BadRegister = "bad_register", 400, None;
    /// A VLAN id above 4095 or a PCP above 7.
    BadVlan = "bad_vlan", 400, None;
    // ----- packet traces -----
    /// A traced packet without `in_port`.
    MissingInPort = "missing_in_port", 400, None;
    /// A traced packet that cannot be built.
    BadPacket = "bad_packet", 400, None;
    // ----- anything else -----
    /// Something that should not happen did.
    Internal = "internal", 500, Some(EIO);
    // ----- HTTP framing -----
    /// The path exists but not with this method.
    MethodNotAllowed = "method_not_allowed", 405, None;
    /// The request body is larger than the server takes.
    PayloadTooLarge = "payload_too_large", 413, None;
    /// The request body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type", 415, None;
    // ----- credentials -----
    /// The API token is past its expiry (a revoked token is unknown: `unauthenticated`).
    TokenExpired = "token_expired", 401, Some(EPERM);
    /// No such API token, or one the caller may not see.
    TokenNotFound = "token_not_found", 404, None;
    // ----- added in phase 2 (kept at the end to ease merging) -----
    /// The pool's volumes would provision more than its overcommit ratio allows.
    PoolOvercommitted = "pool_overcommitted", 409, Some(ENOSPC);
    // ----- the contract (state, not schema) -----
    /// The pool has no device of the requested class (the pool's state, not the request's
    /// form).
    ClassUnavailable = "class_unavailable", 409, None;
    /// A VXLAN port's local address is not on this host, or its UDP port is taken.
    PortAddressUnavailable = "port_address_unavailable", 409, None;
    /// A packet to trace enters through a port the switch does not have.
    TraceInPortUnknown = "trace_in_port_unknown", 409, None;
    // ----- the CLI's rough edges -----
    /// The request id was used before for a create with other arguments (another name).
    RequestIdReused = "request_id_reused", 409, None;
    // ----- checkpoint groups -----
    /// No such snapshot group (or not visible to the caller).
    SnapshotGroupNotFound = "snapshot_group_not_found", 404, None;
    /// A snapshot group by that name exists in the tenant.
    SnapshotGroupExists = "snapshot_group_exists", 409, None;
    /// The snapshot belongs to a group: delete the group instead.
    SnapshotInGroup = "snapshot_in_group", 409, None;
    // ----- placement: nodes, jobs, plans -----
    /// No such node (or the name is not one the pool has).
    NodeNotFound = "node_not_found", 404, None;
    /// A real node of that name exists: a declaration may not replace it.
    NodeExists = "node_exists", 409, None;
    /// No such job, or one of a tenant the caller may not see.
    JobNotFound = "job_not_found", 404, None;
    /// The tenant already has a job of that name.
    JobExists = "job_exists", 409, None;
    /// The placement state changed since the plan's revision: plan again.
    PlanStale = "plan_stale", 409, None;
    /// The inventory document cannot be taken: not the inventory format, or nodes that clash
    /// with the pool (a 409 like the contract's other state codes: the body's schema, a
    /// string, cannot say what a valid YAML inventory is).
    InventoryInvalid = "inventory_invalid", 409, None;
    /// The job's fields contradict each other or the objects they name: two volume entries
    /// that would make one volume, a name too long for the job's ports or clones (a 409: the
    /// schema cannot say it).
    JobSpecConflict = "job_spec_conflict", 409, None;
    // ----- tenant networks -----
    /// No such network (or not visible to the caller).
    NetworkNotFound = "network_not_found", 404, None;
    /// The tenant already has a network of that name.
    NetworkExists = "network_exists", 409, None;
    /// No such subnet.
    SubnetNotFound = "subnet_not_found", 404, None;
    /// The network already has a subnet of that name.
    SubnetExists = "subnet_exists", 409, None;
    /// No such network port.
    NetworkPortNotFound = "network_port_not_found", 404, None;
    /// The network already has a port of that name.
    NetworkPortExists = "network_port_exists", 409, None;
    /// No such router.
    RouterNotFound = "router_not_found", 404, None;
    /// The network already has a router of that name.
    RouterExists = "router_exists", 409, None;
    /// No such security group.
    SecurityGroupNotFound = "security_group_not_found", 404, None;
    /// The tenant already has a security group of that name.
    SecurityGroupExists = "security_group_exists", 409, None;
    /// No such rule in the security group.
    SecurityGroupRuleNotFound = "security_group_rule_not_found", 404, None;
    /// The network (or subnet) still has subnets, ports or routers: delete those first.
    NetworkNotEmpty = "network_not_empty", 409, None;
    /// The security group is still used by a port or named by another group's rule.
    SecurityGroupInUse = "security_group_in_use", 409, None;
    /// The address (or subnet range, or MAC) is taken, or the subnet has no free address.
    AddressInUse = "address_in_use", 409, None;
    /// The port is one the daemon needs: a network's load-balancer monitor, while a
    /// health-checked load balancer of the network is left.
    PortInUse = "port_in_use", 409, None;
    /// The request's fields contradict each other or the network objects they name (a subnet
    /// outside its network, a gateway or address outside its subnet, a rule with two remotes
    /// or with ports on a protocol without them): a 409, as the schema cannot say it.
    NetworkSpecConflict = "network_spec_conflict", 409, None;
    /// An object the request body names (a port's subnet or groups, a router's subnets, a
    /// floating IP's port, a group's volumes) does not exist or is not visible. The path's
    /// object was found, so this is the request contradicting the state (409), not a missing
    /// resource (404): the `field` names the part of the body at fault.
    ReferenceNotFound = "reference_not_found", 409, None;
    /// No such floating IP (or not visible to the caller).
    FloatingIpNotFound = "floating_ip_not_found", 404, None;
    /// A reply action (`arp_reply`, `icmp_error`, ...) followed by something other than outputs.
    ReplyNotLast = "reply_not_last", 400, None;
    // ----- encryption at rest -----
    /// The volume is encrypted and its data key cannot be unwrapped: the pool was opened
    /// without a master key or with another one. Its data is not served; unencrypted volumes
    /// are unaffected.
    VolumeKeyUnavailable = "volume_key_unavailable", 503, Some(EIO);
    /// An encrypted volume was asked of a daemon given no master key (`strata serve
    /// --master-key-file`): the daemon's setup refuses the request (409), nothing failed.
    MasterKeyMissing = "master_key_missing", 409, None;
    // ----- pools of devices, replicas -----
    /// No such device in the pool.
    DeviceNotFound = "device_not_found", 404, None;
    /// The device is already a device of a pool (or holds another Strata pool), or it still
    /// holds copies that cannot move elsewhere.
    DeviceInUse = "device_in_use", 409, None;
    /// The device holds data that is not Strata's: adding it would erase that data. Ask again
    /// with `force` to format it.
    DeviceNotEmpty = "device_not_empty", 409, None;
    /// The path cannot serve as a device: missing, not a regular file or block device, too
    /// small, or failing I/O.
    DeviceUnusable = "device_unusable", 409, None;
    /// Fewer failure domains (active devices of the class, with room) than copies asked for:
    /// copies are never put two in one domain.
    NotEnoughDomains = "not_enough_domains", 409, None;
    /// A copy of the volume is on a device that is not usable: the volume serves I/O from its
    /// other copies, but its layers (snapshots, clones, rollback, size) cannot change until the
    /// copy is rebuilt.
    VolumeDegraded = "volume_degraded", 409, None;
    /// The volume's copies are on another node of the cluster: only that node's daemon changes
    /// or serves it (until copies can be reached across nodes).
    VolumeOnOtherNode = "volume_on_other_node", 409, None;
    /// A copy of the volume is on another node: its live data is replicated there, but its
    /// layers (snapshots, clones, rollback, size) cannot change while it spans nodes.
    VolumeSpansNodes = "volume_spans_nodes", 409, None;
    /// Another node took the volume over (a higher owner generation): this node's writes to
    /// its copies are refused, so a node cut off by a partition cannot change them.
    VolumeFenced = "volume_fenced", 409, Some(EPERM);
    /// The volume's serving node is up: a takeover is only for a node that is down (its
    /// lease expired).
    ServingNodeUp = "serving_node_up", 409, None;
    /// This node holds no copy of the volume that has every acknowledged write (none, one
    /// being rebuilt, or one that missed writes): taking the volume over here would lose data.
    NoInSyncCopy = "no_in_sync_copy", 409, None;
    // ----- load balancers -----
    /// No such load balancer (or not visible to the caller).
    LoadBalancerNotFound = "load_balancer_not_found", 404, None;
    /// A load balancer of that name is already in the network.
    LoadBalancerExists = "load_balancer_exists", 409, None;
    // ----- snapshot schedules -----
    /// No such snapshot schedule (or not visible to the caller).
    SnapshotScheduleNotFound = "snapshot_schedule_not_found", 404, None;
    /// A snapshot schedule of that name is already in the tenant.
    SnapshotScheduleExists = "snapshot_schedule_exists", 409, None;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a string is not a registered code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code {:?}", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_once_and_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} registered twice");
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), c);
            assert!(!c.meaning().is_empty(), "{c} has no meaning");
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c} is not snake_case"
            );
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn statuses_are_errors_and_errnos_are_nbd_errnos() {
        for &c in ErrorCode::ALL {
            assert!((400..600).contains(&c.http_status()), "{c}");
            if let Some(e) = c.nbd_errno() {
                assert!(nbd_errno::ALL.contains(&e), "{c}: {e} is not an NBD errno");
            }
        }
        assert_eq!(ErrorCode::VolumeNotFound.http_status(), 404);
        assert_eq!(ErrorCode::VolumeNotFound.nbd_errno(), Some(nbd_errno::EIO));
        assert_eq!(ErrorCode::OutOfSpace.nbd_errno(), Some(nbd_errno::ENOSPC));
        assert_eq!(ErrorCode::TenantNotFound.nbd_errno(), None);
        assert_eq!(
            ErrorCode::QuotaExceeded.meaning(),
            "The tenant's quota does not allow the change."
        );
    }
}
