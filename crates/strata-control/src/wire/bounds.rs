//! The bounds of every request field: one named constant each, declared in the OpenAPI
//! document (`minimum`, `maximum`, `pattern`, `maxLength`) by the schema helpers below and
//! enforced by the server with the same constants ([`check_int`], [`check_text`]).
//!
//! # Invariants
//! - A value the document accepts, the server accepts (as far as the field itself goes), and a
//!   value outside the document is refused with `invalid_argument` naming the field.
//! - A size pattern only matches values within its numeric bounds, so the text form and the
//!   integer form of a size agree.

use std::sync::LazyLock;

use regex::Regex;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::error::ControlError;

/// Names of tenants, volumes, snapshots and switches: the engine's name rule.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";
/// Longest name, in bytes.
pub const NAME_MAX_LEN: usize = 128;
/// Longest device path, in bytes (the kernel's `PATH_MAX`).
pub const PATH_MAX_LEN: usize = 4096;
/// A switch port (and interface) name: starts with a letter (never read as a port number in
/// flow syntax, never `.` or `..`), at most 15 bytes (the kernel's interface name limit).
pub const PORT_NAME_PATTERN: &str = "^[A-Za-z][A-Za-z0-9._-]{0,14}$";
/// An IPv4 address in dotted-quad form (no leading zeros).
pub const IPV4_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$";
/// A tenant's name: [`NAME_PATTERN`] cut to 32 bytes, so its NBD socket (bound as
/// `sockets/.NAME.sock.PID.SEQ.tmp/s`, then renamed) fits `sun_path` (107 bytes) under a data
/// dir of up to 40 bytes.
pub const TENANT_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$";
/// Longest tenant name, in bytes.
pub const TENANT_NAME_MAX_LEN: usize = 32;
/// The owner of a tenant's NBD socket: `UID` or `UID:GID` (up to 9 digits each, so always a
/// 32-bit id).
pub const SOCKET_OWNER_PATTERN: &str = "^[0-9]{1,9}(:[0-9]{1,9})?$";
/// A token lifetime: a count of seconds, minutes, hours, days or weeks, or `never` (admins
/// only). It only spells lifetimes within the longest one (3650 days): up to 99,999,999 s,
/// 999,999 min, 9,999 h, 3650 d, 99 w.
pub const EXPIRES_PATTERN: &str = "^([1-9][0-9]{0,7}s|[1-9][0-9]{0,5}m|[1-9][0-9]{0,3}h\
|([1-9][0-9]{0,2}|[1-2][0-9]{3}|3[0-5][0-9]{2}|36[0-4][0-9]|3650)d|[1-9][0-9]?w|never)$";
/// Longest lifetime text (`99999999s`).
pub const EXPIRES_MAX_LEN: usize = 9;
/// Longest request id (idempotency key).
pub const REQUEST_ID_MAX_LEN: usize = 128;

/// Smallest volume size: one block.
pub const VOLUME_SIZE_MIN: u64 = strata_block::BLOCK_SIZE;
/// Largest volume size (the engine's).
pub const VOLUME_SIZE_MAX: u64 = strata_block::MAX_VOLUME_SIZE;
/// A volume size is a whole number of blocks.
pub const VOLUME_SIZE_MULTIPLE: u64 = strata_block::BLOCK_SIZE;
/// A volume size as text: 1 to 999 MiB, GiB or TiB (always whole blocks, under the maximum).
pub const VOLUME_SIZE_PATTERN: &str = "^[1-9][0-9]{0,2}[MGT]$";

/// Smallest bandwidth limit or burst, bytes (per second).
pub const BANDWIDTH_MIN: u64 = 1;
/// Largest bandwidth limit or burst: 1 TiB (per second).
pub const BANDWIDTH_MAX: u64 = 1 << 40;
/// A bandwidth as text: 1 to 999 KiB, MiB or GiB (under the maximum).
pub const BANDWIDTH_PATTERN: &str = "^[1-9][0-9]{0,2}[KMG]$";

/// Smallest IOPS limit or burst.
pub const IOPS_MIN: u64 = 1;
/// Largest IOPS limit or burst of one volume.
pub const IOPS_MAX: u64 = 100_000_000;

/// Largest capacity quota: 1 EiB.
pub const QUOTA_CAPACITY_MAX: u64 = 1 << 60;
/// Largest volume or snapshot count quota.
pub const QUOTA_COUNT_MAX: u64 = 1_000_000_000;
/// Largest tenant IOPS quota (a sum of volume limits).
pub const QUOTA_IOPS_MAX: u64 = 1 << 50;

/// Largest page of a list.
pub const LIST_LIMIT_MAX: u64 = 1000;
/// Latest time a query names, seconds since the epoch (9999-12-31T23:59:59Z).
pub const TIME_MAX: u64 = 253_402_300_799;
/// Longest page token.
pub const PAGE_TOKEN_MAX_LEN: usize = 256;
/// A page token: `TENANT/ID` of the last item of the previous page.
pub const PAGE_TOKEN_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[A-Za-z0-9-]{1,64}$";

/// Largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u64 = (1 << 24) - 1;
/// Smallest and largest VLAN id of an access port.
pub const VLAN_MIN: u64 = 1;
/// See [`VLAN_MIN`].
pub const VLAN_MAX: u64 = 4094;
/// Smallest UDP port.
pub const UDP_PORT_MIN: u64 = 1;
/// Largest UDP port.
pub const UDP_PORT_MAX: u64 = 65535;
/// Longest flow rule or match text.
pub const FLOW_MAX_LEN: usize = 4096;
/// A flow in the canonical form the document spells: optional `table`, `priority`, `in_port`
/// (a number), `dl_src`, `dl_dst` in that order, then `actions=` with `drop` or up to four of
/// `output:N`, `normal`, `flood`. Every text it matches is a flow the switch accepts; the
/// server also reads the rest of the `ovs-ofctl` syntax (see `docs/control-plane.md`).
pub const FLOW_PATTERN: &str = "^(table=(0|[1-9][0-9]?),)?(priority=(0|[1-9][0-9]{0,3}),)?\
(in_port=[1-9][0-9]{0,3},)?(dl_src=[0-9a-f]{2}(:[0-9a-f]{2}){5},)?\
(dl_dst=[0-9a-f]{2}(:[0-9a-f]{2}){5},)?\
actions=(drop|(output:[1-9][0-9]{0,3}|normal|flood)(,(output:[1-9][0-9]{0,3}|normal|flood)){0,3})$";
/// A flow match in canonical form (empty: every flow): `table`, `priority`, `in_port` in that
/// order, each optional.
pub const FLOW_MATCH_PATTERN: &str = "^(table=(0|[1-9][0-9]?)(,priority=(0|[1-9][0-9]{0,3}))?\
(,in_port=[1-9][0-9]{0,3})?|priority=(0|[1-9][0-9]{0,3})(,in_port=[1-9][0-9]{0,3})?\
|in_port=[1-9][0-9]{0,3})?$";
/// A traced packet in canonical form: `in_port` (a number), optionally `dl_src`, `dl_dst`.
pub const PACKET_PATTERN: &str = "^in_port=[1-9][0-9]{0,3}(,dl_src=[0-9a-f]{2}(:[0-9a-f]{2}){5})?\
(,dl_dst=[0-9a-f]{2}(:[0-9a-f]{2}){5})?$";
/// Longest packet description given to trace.
pub const PACKET_MAX_LEN: usize = 4096;

/// The server's side of [`NAME_PATTERN`] and the other patterns.
fn regex(pattern: &'static str) -> &'static Regex {
    static CACHE: LazyLock<parking_lot::Mutex<Vec<(&'static str, &'static Regex)>>> =
        LazyLock::new(Default::default);
    let mut c = CACHE.lock();
    if let Some((_, r)) = c.iter().find(|(p, _)| *p == pattern) {
        return r;
    }
    let r: &'static Regex = Box::leak(Box::new(Regex::new(pattern).expect("a valid pattern")));
    c.push((pattern, r));
    r
}

/// Refuses an integer outside `min..=max`.
pub fn check_int(field: &'static str, v: u64, min: u64, max: u64) -> Result<(), ControlError> {
    if v < min || v > max {
        return Err(ControlError::invalid(
            field,
            format!("{v} is out of range ({min} to {max})"),
        ));
    }
    Ok(())
}

/// Refuses a text that does not match `pattern`.
pub fn check_text(field: &'static str, v: &str, pattern: &'static str) -> Result<(), ControlError> {
    if !regex(pattern).is_match(v) {
        return Err(ControlError::invalid(
            field,
            format!("{v:?} does not match {pattern}"),
        ));
    }
    Ok(())
}

/// Refuses a text longer than `max` bytes.
pub fn check_len(field: &'static str, v: &str, max: usize) -> Result<(), ControlError> {
    if v.len() > max {
        return Err(ControlError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(())
}

// ----- schema helpers (the document's side of the same constants) -----

/// An integer in `min..=max`, optionally nullable.
pub fn int(min: u64, max: u64, nullable: bool) -> Object {
    let b = ObjectBuilder::new()
        .schema_type(if nullable {
            utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null])
        } else {
            Type::Integer.into()
        })
        .minimum(Some(min as usize))
        .maximum(Some(max as usize));
    b.build()
}

/// A string matching `pattern`.
pub fn text(pattern: &str, max_len: usize, nullable: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .pattern(Some(pattern))
        .max_length(Some(max_len))
        .build()
}

/// A string of at most `max_len` bytes.
pub fn free_text(min_len: usize, max_len: usize, nullable: bool) -> Object {
    ObjectBuilder::new()
        .schema_type(string_type(nullable))
        .min_length(Some(min_len))
        .max_length(Some(max_len))
        .build()
}

fn string_type(nullable: bool) -> utoipa::openapi::schema::SchemaType {
    if nullable {
        utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
    } else {
        Type::String.into()
    }
}

/// A size: bytes (an integer in bounds, a multiple of `multiple`) or text matching `pattern`.
pub fn size(
    min: u64,
    max: u64,
    multiple: Option<u64>,
    pattern: &str,
    example: &str,
) -> RefOr<Schema> {
    let bytes = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as usize))
        .maximum(Some(max as usize))
        .multiple_of(multiple.map(|m| m as usize))
        .build();
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .examples([example])
        .build();
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new().item(bytes).item(text).build(),
    ))
}
