//! The REST API (`/v1`): bearer-token authentication, JSON bodies, errors as
//! `{"error": {"code", "message", "field"}}`.
//!
//! # Invariants
//! - This file alone decides HTTP: the status and stable code of every [`ControlError`] are
//!   chosen in [`code_of`], from the registry in `strata-types` (each code's default status).
//! - Every operation is one line of the route table built with [`read`] or [`change`]: the
//!   request's parts are parsed into the operation's [`Input`] (a bad body is `invalid_body`,
//!   before anything else), the token is resolved, the controller method runs on the blocking
//!   pool, and a change writes one audit entry with its outcome (`ok` or the error code).
//! - A request without a bearer token is `unauthenticated` (401) before anything else; the
//!   token is resolved (store) only after the input parsed.
//! - Bodies and queries are the types of `wire/`, checked against their declared bounds
//!   (`Check`) while parsing: out of bounds is `invalid_argument` before the token is resolved.
//! - Every error response is the JSON error body with a registered code, including those the
//!   framework makes itself (`framework_errors`: 405, 413, 415, a path it cannot decode).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_types::ErrorCode;

use crate::controller::{Controller, Principal};
use crate::error::{clip, ControlError, DeviceProblem, InUse, Resource, Service};
use crate::wire::{self, Check};

/// The OpenAPI document, served at `/v1/openapi.json`: the checked-in file, which a test keeps
/// equal to the one the wire types generate (`wire::openapi`).
pub const OPENAPI: &str = include_str!("../openapi.json");

type Ctl = Arc<Controller>;

// ----- errors at the edge -----

/// An error as the API answers it: a registered code (its status is the code's), a message,
/// the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human message.
    pub message: String,
    /// The request field at fault, if any.
    pub field: Option<&'static str>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.http_status()
    }
    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&wire::ErrorBody {
            error: wire::ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message.clone(),
                field: self.field.map(str::to_string),
            },
        })
        .expect("serializable")
    }
}

/// The stable code of a controller error (its HTTP status is the code's default).
pub fn code_of(e: &ControlError) -> ErrorCode {
    use ErrorCode as C;
    match e {
        ControlError::Unauthenticated => C::Unauthenticated,
        ControlError::TokenExpired => C::TokenExpired,
        ControlError::Forbidden(_) => C::Forbidden,
        ControlError::NotFound { resource, .. } => match resource {
            Resource::Tenant => C::TenantNotFound,
            Resource::Volume => C::VolumeNotFound,
            Resource::Snapshot => C::SnapshotNotFound,
            Resource::Pool => C::PoolNotFound,
            Resource::Attachment => C::AttachmentNotFound,
            Resource::Switch => C::SwitchNotFound,
            Resource::Port => C::PortNotFound,
            Resource::Token => C::TokenNotFound,
            Resource::SnapshotGroup => C::SnapshotGroupNotFound,
            Resource::Node => C::NodeNotFound,
            Resource::Job => C::JobNotFound,
            Resource::Network => C::NetworkNotFound,
            Resource::Subnet => C::SubnetNotFound,
            Resource::NetworkPort => C::NetworkPortNotFound,
            Resource::Router => C::RouterNotFound,
            Resource::SecurityGroup => C::SecurityGroupNotFound,
            Resource::SecurityGroupRule => C::SecurityGroupRuleNotFound,
            Resource::FloatingIp => C::FloatingIpNotFound,
            Resource::LoadBalancer => C::LoadBalancerNotFound,
            Resource::Device => C::DeviceNotFound,
            Resource::SnapshotSchedule => C::SnapshotScheduleNotFound,
        },
        ControlError::Exists { resource, .. } => match resource {
            Resource::Tenant => C::TenantExists,
            Resource::Volume => C::VolumeExists,
            Resource::Snapshot => C::SnapshotExists,
            Resource::Switch => C::SwitchExists,
            Resource::Port => C::PortExists,
            Resource::SnapshotGroup => C::SnapshotGroupExists,
            Resource::Node => C::NodeExists,
            Resource::Job => C::JobExists,
            Resource::Network => C::NetworkExists,
            Resource::Subnet => C::SubnetExists,
            Resource::NetworkPort => C::NetworkPortExists,
            Resource::Router => C::RouterExists,
            Resource::SecurityGroup => C::SecurityGroupExists,
            Resource::LoadBalancer => C::LoadBalancerExists,
            Resource::SnapshotSchedule => C::SnapshotScheduleExists,
            Resource::SecurityGroupRule | Resource::FloatingIp => C::AlreadyExists,
            Resource::Pool | Resource::Attachment | Resource::Token | Resource::Device => {
                C::AlreadyExists
            }
        },
        ControlError::Invalid { .. } => C::InvalidArgument,
        ControlError::Unresolved { .. } => C::ReferenceNotFound,
        ControlError::QuotaExceeded { .. } => C::QuotaExceeded,
        ControlError::PoolOvercommitted(_) => C::PoolOvercommitted,
        ControlError::TraceInPortUnknown(_) => C::TraceInPortUnknown,
        ControlError::InUse { what, .. } => match what {
            InUse::VolumeHasSnapshots => C::VolumeHasSnapshots,
            InUse::VolumeAttached => C::VolumeAttached,
            InUse::TenantNotEmpty => C::TenantNotEmpty,
            InUse::RequestIdReused => C::RequestIdReused,
            InUse::SnapshotInGroup => C::SnapshotInGroup,
            InUse::NetworkNotEmpty => C::NetworkNotEmpty,
            InUse::SecurityGroupInUse => C::SecurityGroupInUse,
            InUse::AddressInUse => C::AddressInUse,
            InUse::NetworkSpecConflict => C::NetworkSpecConflict,
            InUse::PortInUse => C::PortInUse,
            InUse::JobSpecConflict => C::JobSpecConflict,
        },
        ControlError::Device { what, .. } => match what {
            DeviceProblem::InUse => C::DeviceInUse,
            DeviceProblem::NotEmpty => C::DeviceNotEmpty,
            DeviceProblem::Unusable => C::DeviceUnusable,
            DeviceProblem::NotEnoughDomains => C::NotEnoughDomains,
            DeviceProblem::Degraded => C::VolumeDegraded,
        },
        ControlError::PlanStale(_) => C::PlanStale,
        ControlError::InventoryInvalid(_) => C::InventoryInvalid,
        ControlError::Busy(_) => C::Busy,
        ControlError::OtherNode { .. } => C::VolumeOnOtherNode,
        ControlError::SpansNodes(_) => C::VolumeSpansNodes,
        ControlError::ServingNodeUp(_) => C::ServingNodeUp,
        ControlError::NoInSyncCopy(_) => C::NoInSyncCopy,
        ControlError::Fenced(_) => C::VolumeFenced,
        ControlError::Unavailable { service, .. } => match service {
            Service::Nbd => C::NbdUnavailable,
            Service::NbdTcp => C::NbdTcpUnavailable,
        },
        ControlError::Engine(e) => engine_code(e),
        ControlError::Key(e) => e.code(),
        ControlError::Store(strata_state::StoreError::Invalid(_)) => C::InvalidArgument,
        ControlError::Store(_) => C::StoreUnavailable,
        ControlError::Switch(e) => switch_code(e),
        ControlError::Internal(_) => C::Internal,
    }
}

fn engine_code(e: &strata_block::AdminError) -> ErrorCode {
    use strata_block::AdminError as E;
    use ErrorCode as C;
    match e {
        E::VolumeNotFound(_) => C::VolumeNotFound,
        E::SnapshotNotFound(_) => C::SnapshotNotFound,
        E::AlreadyExists { .. } => C::AlreadyExists,
        E::InvalidName { .. }
        | E::InvalidSize { .. }
        | E::NotOfVolume { .. }
        | E::DuplicateMember(_) => C::InvalidArgument,
        E::ClassUnavailable(_) => C::ClassUnavailable,
        E::ShrinkOverData { .. } => C::ShrinkOverData,
        E::HasSnapshots { .. } => C::VolumeHasSnapshots,
        E::MetadataFull => C::OutOfSpace,
        E::Failed(_) => C::PoolFailed,
    }
}

fn switch_code(e: &strata_dataplane::DataplaneError) -> ErrorCode {
    use strata_dataplane::DataplaneError as D;
    use strata_net::switch::PortError as P;
    use strata_net::{FlowParseError as F, RuleError as R};
    use ErrorCode as C;
    match e {
        // An address the host does not have, or a UDP port another socket holds: the host's
        // state, not a server failure.
        D::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::AddrInUse
            ) =>
        {
            C::PortAddressUnavailable
        }
        // A TAP the kernel will not open under that name: the name is a host interface that
        // is not a TAP (`lo`, `eth0`) or one the kernel keeps (`all`, `default`): taken.
        D::Io { what, source }
            if what.starts_with("opening TAP")
                && source.kind() == std::io::ErrorKind::InvalidInput =>
        {
            C::PortExists
        }
        D::Io { .. } => C::PortIoError,
        D::DuplicateRemote(_) => C::VxlanRemoteExists,
        D::Stopped => C::DataplaneStopped,
        D::Port(p) => match p {
            P::NameTaken(_) => C::PortExists,
            P::NumberTaken(_) => C::PortNumberTaken,
            P::NoSuchPort(_) => C::PortNotFound,
            P::BadName(_) => C::BadPortName,
            P::BadDomain(_) => C::BadPortDomain,
            other => registered(other.code()),
        },
        D::Flow(f) => match f {
            F::UnknownField { .. } => C::UnknownField,
            F::MissingValue { .. } => C::MissingValue,
            F::BadValue { .. } => C::BadValue,
            F::DuplicateField { .. } => C::DuplicateField,
            F::UnknownAction { .. } => C::UnknownAction,
            F::BadActionArg { .. } => C::BadActionArgument,
            F::UnknownPort { .. } => C::UnknownPort,
            F::MissingActions => C::MissingActions,
            F::Rule(r) => match r {
                R::MissingPrerequisite { .. } => C::MissingPrerequisite,
                R::GotoNotForward { .. } => C::GotoNotForward,
                R::GotoNotLast => C::GotoNotLast,
                R::TableOutOfRange(_) => C::TableOutOfRange,
                R::BadRegister(_) => C::BadRegister,
                R::BadVlan(_) => C::BadVlan,
                other => registered(other.code()),
            },
            other => registered(other.code()),
        },
        other => registered(other.code()),
    }
}

/// A variant the engine added after this mapping was written: its own code, when registered
/// (a registry look-up, exact), else `internal` (a test keeps the two in step).
fn registered(code: &str) -> ErrorCode {
    code.parse().unwrap_or(ErrorCode::Internal)
}

fn field_of(e: &ControlError) -> Option<&'static str> {
    use strata_block::AdminError as E;
    match e {
        ControlError::Invalid { field, .. } => Some(field),
        ControlError::Unresolved { field, .. } => Some(field),
        ControlError::Exists {
            resource: Resource::Volume | Resource::Snapshot | Resource::SnapshotSchedule,
            ..
        } => Some("name"),
        ControlError::Engine(e) => match e {
            E::InvalidName { .. } => Some("name"),
            E::InvalidSize { .. } | E::ShrinkOverData { .. } => Some("size"),
            E::ClassUnavailable(_) => Some("class"),
            E::NotOfVolume { .. } => Some("snapshot"),
            _ => None,
        },
        _ => None,
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError {
            code: code_of(&e),
            field: field_of(&e),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A server error is the daemon's fault or its parts' (store, engine, switch): the
        // operator needs it in the log, not only the client in its answer.
        if status.is_server_error() {
            tracing::error!(code = %self.code, status = status.as_u16(), "{}", self.message);
        }
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

// ----- the parts of a request an operation takes -----

/// What an operation takes from its request: path parameters (in route order), the query
/// string, the JSON body, headers. Parsed before authentication: a malformed request is
/// refused without touching the store.
pub trait Input: Sized + Send + 'static {
    /// Takes the operation's input from the request.
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError>;
}

/// The raw parts of a request.
#[derive(Debug)]
pub struct RequestParts<'a> {
    path: &'a [String],
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl RequestParts<'_> {
    fn param(&self, i: usize) -> String {
        self.path.get(i).cloned().unwrap_or_default()
    }
}

/// A JSON body, checked against its declared bounds.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// A query string, checked against its declared bounds.
#[derive(Debug)]
pub struct Query<T>(pub T);

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    // Every body is a JSON object: serde would also read a struct from an array of its fields.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "request body is not valid JSON for this call: expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde echoes the offending value: a long message is clipped (a short one keeps its
        // "expected ... at line L column C").
        let e = e.to_string();
        let e = if e.len() > 256 { clip(&e) } else { e };
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("request body is not valid JSON for this call: {e}"),
        )
    })
}

fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, clip(&e.body_text())))
}

impl Input for () {
    fn from_request(_: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok(())
    }
}
impl Input for String {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok(r.param(0))
    }
}
impl Input for (String, String) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok((r.param(0), r.param(1)))
    }
}
impl<T: DeserializeOwned + Check + Send + 'static> Input for Body<T> {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let b: T = parse_body(r.body)?;
        b.check()?;
        Ok(Body(b))
    }
}
impl<T: DeserializeOwned + Check + Send + 'static> Input for Query<T> {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let q: T = parse_query(r.uri)?;
        q.check()?;
        Ok(Query(q))
    }
}
impl<T: DeserializeOwned + Check + Send + 'static> Input for (String, Body<T>) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok((r.param(0), Body::from_request(r)?))
    }
}
impl<T: DeserializeOwned + Check + Send + 'static> Input for (String, Query<T>) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok((r.param(0), Query::from_request(r)?))
    }
}

// ----- the two operation shapes -----

type Fut = Pin<Box<dyn Future<Output = Response> + Send>>;
type Params = Option<Path<Vec<(String, String)>>>;
type Op<I, T> = fn(&Controller, &Principal, I) -> Result<T, ControlError>;
/// The audit action of a change and how its resource is named from its input.
type Audit<I> = Option<(&'static str, fn(&I) -> String)>;

/// A read: 200 with the method's value as JSON, no audit entry.
fn read<I: Input, T: Serialize + Send + 'static>(
    f: Op<I, T>,
) -> impl Fn(State<Ctl>, HeaderMap, Params, Uri, Bytes) -> Fut + Clone + Send + Sync + 'static {
    operation(StatusCode::OK, None, f)
}

/// A change: `status` with the method's value (none for 204), and one audit entry naming the
/// action and the resource (`what` of the input).
fn change<I: Input, T: Serialize + Send + 'static>(
    status: StatusCode,
    action: &'static str,
    what: fn(&I) -> String,
    f: Op<I, T>,
) -> impl Fn(State<Ctl>, HeaderMap, Params, Uri, Bytes) -> Fut + Clone + Send + Sync + 'static {
    operation(status, Some((action, what)), f)
}

fn operation<I: Input, T: Serialize + Send + 'static>(
    status: StatusCode,
    audit: Audit<I>,
    f: Op<I, T>,
) -> impl Fn(State<Ctl>, HeaderMap, Params, Uri, Bytes) -> Fut + Clone + Send + Sync + 'static {
    move |State(ctl): State<Ctl>, headers: HeaderMap, params: Params, uri: Uri, body: Bytes| {
        Box::pin(async move {
            let path: Vec<String> = params
                .map(|Path(p)| p.into_iter().map(|(_, v)| v).collect())
                .unwrap_or_default();
            let parts = RequestParts {
                path: &path,
                uri: &uri,
                headers: &headers,
                body: &body,
            };
            // No credentials at all is answered first (401), whatever the rest of the
            // request: the token itself is resolved after parsing.
            if bearer(&headers).is_empty() {
                return ApiError::from(ControlError::Unauthenticated).into_response();
            }
            let input = match I::from_request(&parts) {
                Ok(i) => i,
                Err(e) => return e.into_response(),
            };
            let r = call(&ctl, &headers, move |c, p| {
                let Some((action, what)) = audit else {
                    return f(c, p, input);
                };
                let resource = what(&input);
                // The tenant acted on: the caller's, else the one the resource names (looked
                // up before a delete removes it), else the one a create answers with.
                let before = p
                    .tenant
                    .clone()
                    .or_else(|| c.audit_tenant(action, &resource));
                let r = f(c, p, input);
                let tenant = before.or_else(|| {
                    let v = serde_json::to_value(r.as_ref().ok()?).ok()?;
                    v.get("tenant")?.as_str().map(str::to_string)
                });
                let outcome = match &r {
                    Ok(_) => "ok",
                    Err(e) => code_of(e).as_str(),
                };
                c.audit(p, tenant.as_deref(), action, &resource, outcome);
                if let Err(e) = &r {
                    c.note_refusal(tenant.as_deref(), action, &resource, e);
                }
                r
            })
            .await;
            match r {
                Ok(_) if status == StatusCode::NO_CONTENT => status.into_response(),
                Ok(v) => json(status, &v),
                Err(e) => e.into_response(),
            }
        }) as Fut
    }
}

/// The controller's form of an events query (seconds of wait as a duration).
fn events_query(q: wire::ListEvents) -> crate::controller::EventQuery {
    crate::controller::EventQuery {
        limit: q.limit.map(|l| l as usize),
        since: q.since,
        kind: q.kind,
        tenant: q.tenant,
        after: q.after,
        wait: std::time::Duration::from_secs(q.wait.unwrap_or(0)),
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).expect("serializable"),
    )
        .into_response()
}

/// The bearer token of a request (empty when there is none).
fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Runs a controller call off the async threads, authenticated.
async fn call<T: Send + 'static>(
    ctl: &Ctl,
    headers: &HeaderMap,
    f: impl FnOnce(&Controller, &Principal) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let token = bearer(headers);
    let ctl = ctl.clone();
    tokio::task::spawn_blocking(move || {
        let p = ctl.authenticate(&token)?;
        f(&ctl, &p)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
    .map_err(ApiError::from)
}

// ----- the route table -----

/// The router for the whole API.
pub fn router(ctl: Arc<Controller>) -> Router {
    use wire::*;
    use StatusCode as S;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route(
            "/v1/pools",
            get(read(|c, p, ()| list_pools(c, p))).post(change(
                S::CREATED,
                "pool.create",
                |Body(r): &Body<CreatePool>| clip(&r.name),
                |c, p, Body(r)| c.create_pool(p, r.into_request()).map(wire::Pool::from),
            )),
        )
        .route(
            "/v1/pools/{id}",
            get(read(|c, p, id: String| {
                c.get_pool(p, &id).map(wire::Pool::from)
            })),
        )
        .route(
            "/v1/pools/{id}/devices",
            post(change(
                S::OK,
                "pool.add_device",
                |(id, _): &(String, Body<AddDevice>)| clip(id),
                |c, p, (id, Body(r))| {
                    let new = crate::controller::NewDevice {
                        path: r.path,
                        class: r.class,
                    };
                    c.add_device(p, &id, new, r.force).map(wire::Pool::from)
                },
            )),
        )
        .route(
            "/v1/master-key/rotate",
            post(change(
                S::OK,
                "master_key.rotate",
                |_: &Body<RotateMasterKey>| String::new(),
                |c, p, Body(r)| {
                    c.rotate_master_key(p, &r.key_file)
                        .map(wire::MasterKeyRotation::from)
                },
            )),
        )
        .route(
            "/v1/pools/{id}/scrub",
            get(read(|c, p, id: String| {
                c.scrub_state(p, &id).map(|v| wire::Scrub::of(&id, v))
            }))
            .post(change(
                S::ACCEPTED,
                "pool.scrub",
                |(id, _): &(String, Body<StartScrub>)| clip(id),
                |c, p, (id, Body(r))| {
                    c.start_scrub(p, &id, r.rate.unwrap_or(0))
                        .map(|v| wire::Scrub::of(&id, Some(v)))
                },
            )),
        )
        .route(
            "/v1/pools/{id}/rebalance",
            // Not audited here: a dry run must write nothing; a real round audits each move
            // it starts (`volume.move`) and records `pool.rebalanced`.
            post(read(
                |c, p, (id, Body(r)): (String, Body<RebalancePool>)| {
                    c.rebalance_pool(p, &id, r.request())
                        .map(wire::Rebalance::from)
                },
            )),
        )
        .route(
            "/v1/pools/{id}/devices/{device}",
            delete(change(
                S::OK,
                "pool.remove_device",
                |(id, dev): &(String, String)| format!("{}/{}", clip(id), clip(dev)),
                |c, p, (id, dev)| c.remove_device(p, &id, &dev).map(wire::Pool::from),
            )),
        )
        .route(
            "/v1/pools/{id}/devices/{device}/online",
            post(change(
                S::OK,
                "pool.online_device",
                |(id, dev): &(String, String)| format!("{}/{}", clip(id), clip(dev)),
                |c, p, (id, dev)| c.online_device(p, &id, &dev).map(wire::Pool::from),
            )),
        )
        .route(
            "/v1/pools/{id}/settings",
            get(read(|c, p, id: String| {
                c.get_pool_settings(p, &id).map(PoolSettings::from)
            }))
            .put(change(
                S::OK,
                "pool.set_settings",
                |(id, _): &(String, Body<SetPoolSettings>)| clip(id),
                |c, p, (id, Body(r))| {
                    c.set_pool_settings(p, &id, r.ratio())
                        .map(PoolSettings::from)
                },
            )),
        )
        .route(
            "/v1/pools/{id}/share",
            get(read(|c, p, id: String| {
                c.get_pool_share(p, &id).map(wire::PoolShare::from)
            }))
            .put(change(
                S::OK,
                "pool.set_share",
                |(id, _): &(String, Body<wire::PoolShare>)| clip(id),
                |c, p, (id, Body(s))| {
                    c.set_pool_share(p, &id, s.into())
                        .map(wire::PoolShare::from)
                },
            )),
        )
        .route(
            "/v1/tenants",
            post(change(
                S::CREATED,
                "tenant.create",
                |Body(r): &Body<CreateTenant>| r.name.clone(),
                |c, p, Body(r)| {
                    // Checked before anything is written.
                    let owner = wire::parse_socket_owner(r.socket_owner.as_deref())?;
                    let t = c.create_tenant(p, &r.name, r.quota.into())?;
                    match owner {
                        Some(_) => c.set_socket_owner(p, &t.name, owner).map(Tenant::from),
                        None => Ok(Tenant::from(t)),
                    }
                },
            ))
            .get(read(|c, p, ()| {
                c.list_tenants(p).map(|t| TenantList {
                    items: t.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/tenants/{name}",
            get(read(|c, p, name: String| {
                c.get_tenant(p, &name).map(Tenant::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "tenant.delete",
                String::clone,
                |c, p, name| c.delete_tenant(p, &name),
            )),
        )
        .route(
            "/v1/tenants/{name}/share",
            get(read(|c, p, name: String| {
                c.get_tenant_share(p, &name).map(wire::TenantShare::from)
            }))
            .put(change(
                S::OK,
                "tenant.set_share",
                |(n, _): &(String, Body<wire::SetTenantShare>)| clip(n),
                |c, p, (name, Body(s))| {
                    c.set_tenant_share(p, &name, s.into())
                        .map(wire::TenantShare::from)
                },
            )),
        )
        .route(
            "/v1/tenants/{name}/quota",
            put(change(
                S::OK,
                "tenant.set_quota",
                |(n, _): &(String, Body<Quota>)| n.clone(),
                |c, p, (name, Body(q))| c.set_quota(p, &name, q.into()).map(Tenant::from),
            ))
            .patch(change(
                S::OK,
                "tenant.update_quota",
                |(n, _): &(String, Body<QuotaPatch>)| n.clone(),
                |c, p, (name, Body(q))| {
                    c.update_quota(p, &name, |cur| q.apply(cur))
                        .map(Tenant::from)
                },
            )),
        )
        .route(
            "/v1/tenants/{name}/socket-owner",
            put(change(
                S::OK,
                "tenant.set_socket_owner",
                |(n, _): &(String, Body<wire::SetSocketOwner>)| n.clone(),
                |c, p, (name, Body(r))| {
                    let owner = wire::parse_socket_owner(r.socket_owner.as_deref())?;
                    c.set_socket_owner(p, &name, owner).map(Tenant::from)
                },
            )),
        )
        .route(
            "/v1/tenants/{name}/certificates",
            get(read(|c, p, name: String| {
                c.list_certificates(p, &name)
                    .map(|l| wire::CertificateList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/tenants/{name}/certificates/revoke",
            post(change(
                S::OK,
                "tenant.revoke_certificates",
                String::clone,
                |c, p, name| {
                    c.revoke_certificates(p, &name).map(|r| wire::Revoked {
                        revoked: r.revoked as u64,
                        sessions_closed: r.sessions_closed as u64,
                    })
                },
            )),
        )
        .route(
            "/v1/tokens",
            post(change(
                S::CREATED,
                "token.create",
                |Body(r): &Body<CreateToken>| r.tenant.clone().unwrap_or_default(),
                |c, p, Body(r)| {
                    let (secret, rec) = c.create_token_expiring(
                        p,
                        r.tenant.as_deref(),
                        r.role.into(),
                        r.expires.as_deref(),
                    )?;
                    Ok(NewToken {
                        id: rec.id,
                        tenant: rec.tenant,
                        role: rec.role.into(),
                        token: secret,
                        created: rec.created,
                        expires: rec.expires,
                    })
                },
            ))
            .get(read(|c, p, Query(q): Query<wire::TokenQuery>| {
                c.list_tokens(p, q.tenant.as_deref())
                    .map(|t| wire::TokenList {
                        items: t.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/tokens/{id}",
            delete(change(
                S::NO_CONTENT,
                "token.revoke",
                String::clone,
                |c, p, id| c.revoke_token(p, &id),
            )),
        )
        .route(
            "/v1/volumes",
            post(change(
                S::CREATED,
                "volume.create",
                |r: &NewVolume| r.0.name.clone(),
                |c, p, NewVolume(r)| c.create_volume(p, r.into_request()?).map(Volume::from),
            ))
            .get(read(|c, p, Query(q): Query<ListVolumes>| {
                let (items, next) = c.list_volumes(
                    p,
                    q.tenant.as_deref(),
                    q.name.as_deref(),
                    q.limit.unwrap_or(wire::bounds::LIST_LIMIT_MAX) as usize,
                    q.page_token.as_deref(),
                )?;
                Ok(VolumePage {
                    items: items.into_iter().map(Into::into).collect(),
                    next_page_token: next,
                })
            })),
        )
        .route(
            "/v1/volumes/{id}",
            get(read(get_volume))
                .patch(change(
                    S::OK,
                    "volume.resize",
                    first::<Body<Resize>>,
                    |c, p, (id, Body(r))| {
                        let size = crate::SizeArg::Bytes(r.size.bytes("size")?);
                        c.resize_volume(p, &id, size).map(Volume::from)
                    },
                ))
                .delete(change(
                    S::NO_CONTENT,
                    "volume.delete",
                    first::<Query<DeleteVolume>>,
                    |c, p, (id, Query(f))| c.delete_volume(p, &id, f.force),
                )),
        )
        .route(
            "/v1/volumes/{id}/snapshots",
            post(change(
                S::CREATED,
                "snapshot.create",
                first::<Body<NewName>>,
                |c, p, (id, Body(n))| c.create_snapshot(p, &id, &n.name).map(Snapshot::from),
            ))
            .get(read(|c, p, id: String| {
                c.list_snapshots(p, &id).map(|s| SnapshotList {
                    items: s.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/volumes/{id}/rollback",
            post(change(
                S::OK,
                "volume.rollback",
                first::<Body<Rollback>>,
                |c, p, (id, Body(r))| c.rollback(p, &id, &r.snapshot).map(Volume::from),
            )),
        )
        .route(
            "/v1/volumes/{id}/takeover",
            post(change(
                S::OK,
                "volume.take_over",
                String::clone,
                |c, p, id| c.take_over(p, &id).map(Volume::from),
            )),
        )
        .route(
            "/v1/volumes/{id}/qos",
            put(change(
                S::OK,
                "volume.set_qos",
                first::<Body<SetQos>>,
                |c, p, (id, Body(q))| c.set_qos(p, &id, q.limits()?).map(Volume::from),
            ))
            .patch(change(
                S::OK,
                "volume.update_qos",
                first::<Body<QosPatch>>,
                |c, p, (id, Body(q))| {
                    let change = q.change()?;
                    c.update_qos(p, &id, |cur| change.apply(cur))
                        .map(Volume::from)
                },
            )),
        )
        .route(
            "/v1/volumes/{id}/attachments",
            post(change(
                S::CREATED,
                "volume.attach",
                |(id, _): &(String, AttachBody)| id.clone(),
                attach,
            ))
            .get(read(|c, p, id: String| {
                c.attachment(p, &id).map(Attachment::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "volume.detach",
                String::clone,
                |c, p, id| c.detach(p, &id),
            )),
        )
        .route(
            "/v1/attachments",
            get(read(|c, p, Query(q): Query<wire::ListAttachments>| {
                c.list_attachments(p, q.tenant.as_deref())
                    .map(|a| wire::AttachmentList {
                        items: a.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/volumes/{id}/stats",
            get(read(|c, p, id: String| {
                let v = c.volume_stats(p, &id)?;
                serde_json::from_value::<VolumeStats>(v)
                    .map_err(|e| ControlError::internal(format!("volume figures: {e}")))
            })),
        )
        .route(
            "/v1/snapshots/{id}",
            get(read(|c, p, id: String| {
                c.get_snapshot(p, &id).map(Snapshot::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "snapshot.delete",
                String::clone,
                |c, p, id| c.delete_snapshot(p, &id),
            )),
        )
        .route(
            "/v1/snapshots/{id}/clone",
            post(change(
                S::CREATED,
                "snapshot.clone",
                first::<Body<NewName>>,
                |c, p, (id, Body(n))| {
                    c.clone_snapshot(p, &id, &n.name, n.request_id)
                        .map(Volume::from)
                },
            )),
        )
        .route(
            "/v1/snapshot-groups",
            post(change(
                S::CREATED,
                "snapshot_group.create",
                |Body(r): &Body<CreateSnapshotGroup>| r.name.clone(),
                |c, p, Body(r)| {
                    c.create_snapshot_group(
                        p,
                        crate::controller::NewGroup {
                            name: r.name,
                            volumes: r.volumes,
                            keep: r.series.as_ref().and_then(|s| s.keep).map(|k| k as u32),
                            series: r.series.map(|s| s.name),
                        },
                    )
                    .map(SnapshotGroup::from)
                },
            ))
            .get(read(|c, p, Query(q): Query<ListGroups>| {
                c.list_snapshot_groups(p, q.tenant.as_deref())
                    .map(|l| SnapshotGroupList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/snapshot-groups/{id}",
            get(read(|c, p, id: String| {
                c.get_snapshot_group(p, &id).map(SnapshotGroup::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "snapshot_group.delete",
                String::clone,
                |c, p, id| c.delete_snapshot_group(p, &id),
            )),
        )
        .route(
            "/v1/snapshot-groups/{id}/clone",
            post(change(
                S::CREATED,
                "snapshot_group.clone",
                first::<Body<CloneGroup>>,
                |c, p, (id, Body(r))| {
                    c.clone_snapshot_group(p, &id, &r.prefix)
                        .map(|v| ClonedVolumes {
                            items: v.into_iter().map(Into::into).collect(),
                        })
                },
            )),
        )
        .route(
            "/v1/snapshot-schedules",
            post(change(
                S::CREATED,
                "snapshot_schedule.create",
                |Body(r): &Body<CreateSnapshotSchedule>| clip(&r.name),
                |c, p, Body(r)| {
                    c.create_snapshot_schedule(p, r.into_new()?)
                        .map(SnapshotSchedule::from)
                },
            ))
            .get(read(|c, p, Query(q): Query<ListSchedules>| {
                c.list_snapshot_schedules(p, q.tenant.as_deref())
                    .map(|l| SnapshotScheduleList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/snapshot-schedules/{id}",
            get(read(|c, p, id: String| {
                c.get_snapshot_schedule(p, &id).map(SnapshotSchedule::from)
            }))
            .patch(change(
                S::OK,
                "snapshot_schedule.update",
                first::<Body<SnapshotSchedulePatch>>,
                |c, p, (id, Body(r))| {
                    c.update_snapshot_schedule(p, &id, r.change()?)
                        .map(SnapshotSchedule::from)
                },
            ))
            .delete(change(
                S::NO_CONTENT,
                "snapshot_schedule.delete",
                String::clone,
                |c, p, id| c.delete_snapshot_schedule(p, &id),
            )),
        )
        .route(
            "/v1/networks",
            post(change(
                S::CREATED,
                "network.create",
                |Body(r): &Body<CreateNetwork>| r.name.clone(),
                |c, p, Body(r)| {
                    let cidr = r.range()?;
                    c.create_network(p, r.tenant.as_deref(), &r.name, cidr, r.external)
                        .map(Network::from)
                },
            ))
            .get(read(|c, p, Query(q): Query<TenantQuery>| {
                c.list_networks(p, q.tenant.as_deref())
                    .map(|l| NetworkList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/networks/{id}",
            get(read(|c, p, id: String| {
                c.get_network(p, &id).map(Network::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "network.delete",
                String::clone,
                |c, p, id| c.delete_network(p, &id),
            )),
        )
        .route(
            "/v1/networks/{id}/bandwidth",
            put(change(
                S::OK,
                "network.set_bandwidth",
                first::<Body<SetNetworkBandwidth>>,
                |c, p, (id, Body(r))| {
                    c.set_network_bandwidth(p, &id, r.cap_bps)
                        .map(Network::from)
                },
            )),
        )
        .route(
            "/v1/network-ports/{id}/bandwidth",
            put(change(
                S::OK,
                "network_port.set_bandwidth",
                first::<Body<SetPortBandwidth>>,
                |c, p, (id, Body(r))| {
                    c.set_port_bandwidth(p, &id, r.cap_bps, r.min_bps)
                        .map(NetworkPort::from)
                },
            )),
        )
        .route(
            "/v1/networks/{id}/stats",
            get(read(|c, p, id: String| {
                c.network_stats(p, &id).map(NetworkStats::from)
            })),
        )
        .route(
            "/v1/networks/{id}/probe",
            post(read(|c, p, (id, Body(r)): (String, Body<ProbeNetwork>)| {
                let interval = std::time::Duration::from_millis(r.interval_ms.unwrap_or(100));
                let count = r.count.unwrap_or(5) as u32;
                c.probe_network(p, &id, count, interval)
                    .map(|ports| NetworkProbe {
                        network: id.clone(),
                        ports: ports.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/networks/{id}/subnets",
            post(change(
                S::CREATED,
                "subnet.create",
                first::<Body<CreateSubnet>>,
                |c, p, (id, Body(r))| c.create_subnet(p, &id, r.into_new()?).map(Subnet::from),
            ))
            .get(read(|c, p, id: String| {
                c.list_subnets(p, &id).map(|l| SubnetList {
                    items: l.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/networks/{id}/ports",
            post(change(
                S::CREATED,
                "network_port.create",
                first::<Body<CreateNetworkPort>>,
                |c, p, (id, Body(r))| c.create_port(p, &id, r.into_new()?).map(NetworkPort::from),
            ))
            .get(read(|c, p, id: String| {
                c.list_ports(p, &id).map(|l| NetworkPortList {
                    items: l.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/networks/{id}/routers",
            post(change(
                S::CREATED,
                "router.create",
                first::<Body<CreateRouter>>,
                |c, p, (id, Body(r))| {
                    c.create_router(p, &id, &r.name, &r.subnets)
                        .map(NetworkRouter::from)
                },
            ))
            .get(read(|c, p, id: String| {
                c.list_routers(p, &id).map(|l| NetworkRouterList {
                    items: l.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/routers/{id}/gateway",
            put(change(
                S::OK,
                "router.set_gateway",
                first::<Body<SetRouterGateway>>,
                |c, p, (id, Body(r))| {
                    c.set_router_gateway(p, &id, r.network.as_deref())
                        .map(NetworkRouter::from)
                },
            )),
        )
        .route(
            "/v1/floating-ips",
            post(change(
                S::CREATED,
                "floating_ip.create",
                |Body(r): &Body<CreateFloatingIp>| r.network.clone(),
                |c, p, Body(r)| {
                    c.create_floating_ip(p, r.tenant.as_deref(), &r.network, r.port.as_deref())
                        .map(FloatingIp::from)
                },
            ))
            .get(read(|c, p, Query(q): Query<TenantQuery>| {
                c.list_floating_ips(p, q.tenant.as_deref())
                    .map(|l| FloatingIpList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/floating-ips/{id}",
            get(read(|c, p, id: String| {
                c.get_floating_ip(p, &id).map(FloatingIp::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "floating_ip.delete",
                String::clone,
                |c, p, id| c.delete_floating_ip(p, &id),
            )),
        )
        .route(
            "/v1/floating-ips/{id}/port",
            put(change(
                S::OK,
                "floating_ip.associate",
                first::<Body<AssociateFloatingIp>>,
                |c, p, (id, Body(r))| {
                    c.associate_floating_ip_to(
                        p,
                        &id,
                        r.port.as_deref(),
                        r.load_balancer.as_deref(),
                    )
                    .map(FloatingIp::from)
                },
            )),
        )
        .route(
            "/v1/networks/{id}/load-balancers",
            post(change(
                S::CREATED,
                "load_balancer.create",
                first::<Body<CreateLoadBalancer>>,
                |c, p, (id, Body(r))| {
                    let lb = c.create_load_balancer(p, &id, r.into_new()?)?;
                    Ok(LoadBalancer::from((
                        lb.clone(),
                        c.load_balancer_health(&lb),
                    )))
                },
            ))
            .get(read(|c, p, id: String| {
                c.list_load_balancers(p, &id).map(|l| LoadBalancerList {
                    items: l
                        .into_iter()
                        .map(|x| LoadBalancer::from((x.clone(), c.load_balancer_health(&x))))
                        .collect(),
                })
            })),
        )
        .route(
            "/v1/load-balancers/{id}",
            get(read(|c, p, id: String| {
                c.get_load_balancer(p, &id)
                    .map(|x| LoadBalancer::from((x.clone(), c.load_balancer_health(&x))))
            }))
            .delete(change(
                S::NO_CONTENT,
                "load_balancer.delete",
                String::clone,
                |c, p, id| c.delete_load_balancer(p, &id),
            )),
        )
        .route(
            "/v1/load-balancers/{id}/listeners",
            put(change(
                S::OK,
                "load_balancer.set_listeners",
                first::<Body<SetLoadBalancerListeners>>,
                |c, p, (id, Body(r))| {
                    let lb = c.set_load_balancer_listeners(p, &id, r.into_new()?)?;
                    Ok(LoadBalancer::from((
                        lb.clone(),
                        c.load_balancer_health(&lb),
                    )))
                },
            )),
        )
        .route(
            "/v1/load-balancers/{id}/settings",
            put(change(
                S::OK,
                "load_balancer.set_settings",
                first::<Body<SetLoadBalancerSettings>>,
                |c, p, (id, Body(r))| {
                    let h = r.health_check.map(|h| h.into_check()).transpose()?;
                    let lb = c.set_load_balancer_settings(p, &id, r.session_affinity, h)?;
                    Ok(LoadBalancer::from((
                        lb.clone(),
                        c.load_balancer_health(&lb),
                    )))
                },
            )),
        )
        .route(
            "/v1/subnets/{id}",
            get(read(|c, p, id: String| {
                c.get_subnet(p, &id).map(Subnet::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "subnet.delete",
                String::clone,
                |c, p, id| c.delete_subnet(p, &id),
            )),
        )
        .route(
            "/v1/network-ports/{id}",
            get(read(|c, p, id: String| {
                c.get_port(p, &id).map(NetworkPort::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "network_port.delete",
                String::clone,
                |c, p, id| c.delete_port(p, &id),
            )),
        )
        .route(
            "/v1/network-ports/{id}/security-groups",
            put(change(
                S::OK,
                "network_port.set_security_groups",
                first::<Body<SetSecurityGroups>>,
                |c, p, (id, Body(r))| {
                    c.set_port_groups(p, &id, &r.security_groups)
                        .map(NetworkPort::from)
                },
            )),
        )
        .route(
            "/v1/network-ports/{id}/trace",
            post(read(
                |c, p, (id, Body(r)): (String, Body<TraceNetworkPacket>)| {
                    c.trace_network_port(p, &id, r.into_trace()?)
                        .map(NetworkTrace::from)
                },
            )),
        )
        .route(
            "/v1/routers/{id}",
            get(read(|c, p, id: String| {
                c.get_router(p, &id).map(NetworkRouter::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "router.delete",
                String::clone,
                |c, p, id| c.delete_router(p, &id),
            )),
        )
        .route(
            "/v1/routers/{id}/subnets",
            put(change(
                S::OK,
                "router.set_subnets",
                first::<Body<SetRouterSubnets>>,
                |c, p, (id, Body(r))| {
                    c.set_router_subnets(p, &id, &r.subnets)
                        .map(NetworkRouter::from)
                },
            )),
        )
        .route(
            "/v1/network-flows",
            get(read(|c, p, ()| {
                c.network_flows(p).map(|t| FlowList {
                    flows: t.lines().map(str::to_string).collect(),
                })
            })),
        )
        .route(
            "/v1/security-groups",
            post(change(
                S::CREATED,
                "security_group.create",
                |Body(r): &Body<CreateSecurityGroup>| r.name.clone(),
                |c, p, Body(r)| {
                    c.create_security_group(p, r.tenant.as_deref(), &r.name, r.reevaluate_existing)
                        .map(SecurityGroup::from)
                },
            ))
            .get(read(|c, p, Query(q): Query<TenantQuery>| {
                c.list_security_groups(p, q.tenant.as_deref())
                    .map(|l| SecurityGroupList {
                        items: l.into_iter().map(Into::into).collect(),
                    })
            })),
        )
        .route(
            "/v1/security-groups/{id}",
            get(read(|c, p, id: String| {
                c.get_security_group(p, &id).map(SecurityGroup::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "security_group.delete",
                String::clone,
                |c, p, id| c.delete_security_group(p, &id),
            )),
        )
        .route(
            "/v1/security-groups/{id}/rules",
            post(change(
                S::CREATED,
                "security_group.add_rule",
                first::<Body<CreateRule>>,
                |c, p, (id, Body(r))| {
                    c.add_security_group_rule(p, &id, r.into_new()?)
                        .map(SecurityGroup::from)
                },
            )),
        )
        .route(
            "/v1/security-groups/{id}/rules/{rule}",
            delete(change(
                S::OK,
                "security_group.delete_rule",
                |(g, r): &(String, String)| format!("{g}/{r}"),
                |c, p, (g, r)| {
                    c.delete_security_group_rule(p, &g, &r)
                        .map(SecurityGroup::from)
                },
            )),
        )
        .route(
            "/v1/audit",
            get(read(|c, p, Query(l): Query<ListAudit>| {
                let limit = l.limit.unwrap_or(wire::bounds::LIST_LIMIT_MAX) as usize;
                c.list_audit_since(p, limit, l.since).map(|e| AuditList {
                    items: e.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/events",
            get(read(|c, p, Query(q): Query<ListEvents>| {
                c.list_events(p, &events_query(q))
                    .map(|(items, cursor)| EventList {
                        items: items.into_iter().map(Into::into).collect(),
                        cursor,
                    })
            })),
        )
        .route(
            "/v1/switches",
            post(change(
                S::CREATED,
                "switch.create",
                |Body(r): &Body<CreateSwitch>| r.name.clone(),
                |c, p, Body(r)| c.create_switch(p, &r.name).map(Switch::from),
            ))
            .get(read(|c, p, ()| {
                c.list_switches(p).map(|s| SwitchList {
                    items: s.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/switches/{name}",
            get(read(|c, p, name: String| {
                c.get_switch(p, &name).map(Switch::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "switch.delete",
                String::clone,
                |c, p, name| c.delete_switch(p, &name),
            )),
        )
        .route(
            "/v1/switches/{name}/ports",
            post(change(
                S::CREATED,
                "switch.add_port",
                |(n, Body(port)): &(String, Body<SwitchPort>)| {
                    format!("{}/{}", clip(n), clip(&port.name))
                },
                |c, p, (name, Body(port))| {
                    c.add_switch_port(p, &name, port.into()).map(Switch::from)
                },
            ))
            .get(read(|c, p, name: String| {
                let v = c.switch_ports(p, &name)?;
                serde_json::from_value::<PortCounterList>(v)
                    .map_err(|e| ControlError::internal(format!("port counters: {e}")))
            })),
        )
        .route(
            "/v1/switches/{name}/ports/{port}",
            delete(change(
                S::NO_CONTENT,
                "switch.remove_port",
                |(n, port): &(String, String)| format!("{n}/{port}"),
                |c, p, (name, port)| c.remove_switch_port(p, &name, &port),
            )),
        )
        .route(
            "/v1/switches/{name}/flows",
            post(change(
                S::CREATED,
                "switch.add_flow",
                |(n, Body(r)): &(String, Body<AddFlow>)| format!("{}: {}", clip(n), clip(&r.flow)),
                |c, p, (name, Body(r))| c.add_switch_flow(p, &name, &r.flow),
            ))
            .get(read(|c, p, name: String| {
                let text = c.dump_switch_flows(p, &name)?;
                Ok(FlowList {
                    flows: text.lines().map(str::to_string).collect(),
                })
            })),
        )
        .route(
            "/v1/switches/{name}/flows/delete",
            post(change(
                S::OK,
                "switch.del_flows",
                |(n, Body(q)): &(String, Body<DeleteFlows>)| {
                    format!("{}: {}", clip(n), clip(&q.filter))
                },
                |c, p, (name, Body(q))| {
                    let n = c.del_switch_flows(p, &name, &q.filter, q.strict)?;
                    Ok(Deleted { deleted: n as u64 })
                },
            )),
        )
        .route(
            "/v1/switches/{name}/trace",
            post(read(
                |c, p, (name, Body(r)): (String, Body<TraceRequest>)| {
                    let text = c.trace_switch(p, &name, &r.packet)?;
                    Ok(Trace { trace: text })
                },
            )),
        )
        .merge(placement_routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint not found") })
        .layer(axum::middleware::map_response(framework_errors))
        .with_state(ctl)
}

/// Every error is the JSON error body with a registered code: a response the framework made
/// (an unknown method, a body over the limit, a path it could not decode) is rewritten, its
/// status and headers (e.g. `Allow`) kept.
async fn framework_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (code, message) = match status.as_u16() {
        405 => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this path",
        ),
        413 => (ErrorCode::PayloadTooLarge, "request body too large"),
        415 => (
            ErrorCode::UnsupportedMediaType,
            "the body must be application/json",
        ),
        404 => (ErrorCode::NotFound, "not found"),
        s if s >= 500 => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::InvalidArgument, "malformed request"),
    };
    let e = ApiError::new(code, message);
    let (mut parts, _) = r.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    // The status stays the framework's; the code is the one registered for it.
    Response::from_parts(parts, axum::body::Body::from(e.body()))
}

/// The audit resource of an operation on `/…/{id}` with a body or query: the id.
fn first<B>(i: &(String, B)) -> String {
    i.0.clone()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let text = call(&ctl, &h, |c, p| c.metrics(p)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

// ----- operations with more than a line -----

fn list_pools(c: &Controller, p: &Principal) -> Result<wire::PoolList, ControlError> {
    Ok(wire::PoolList {
        items: c.list_pools(p)?.into_iter().map(Into::into).collect(),
    })
}

/// A create-volume body; the `Idempotency-Key` header stands for a missing `request_id`.
struct NewVolume(wire::CreateVolume);

impl Input for NewVolume {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let mut req: wire::CreateVolume = parse_body(r.body)?;
        // The header is checked whenever it is sent, even when `request_id` wins over it.
        let key = match r.headers.get("idempotency-key") {
            Some(v) => {
                let k = v.to_str().unwrap_or("");
                if k.is_empty() || k.len() > wire::bounds::REQUEST_ID_MAX_LEN {
                    return Err(ControlError::invalid(
                        "Idempotency-Key",
                        "1 to 128 visible ASCII characters",
                    )
                    .into());
                }
                Some(k.to_string())
            }
            None => None,
        };
        if req.request_id.is_none() {
            req.request_id = key;
        }
        req.check()?;
        Ok(NewVolume(req))
    }
}

fn get_volume(
    c: &Controller,
    p: &Principal,
    id: String,
) -> Result<wire::VolumeDetail, ControlError> {
    let v = c.get_volume(p, &id)?;
    let info = c
        .reachable_copies(&v)
        .first()
        .and_then(|e| e.pool.volume(e.volume).ok());
    let h = c.volume_health(&v);
    Ok(wire::VolumeDetail {
        allocated: info.as_ref().map_or(0, |i| i.allocated),
        snapshots: info.as_ref().map_or(0, |i| i.snapshots as u64),
        health: if h.degraded() { "degraded" } else { "healthy" }.to_string(),
        healthy_copies: u64::from(h.healthy),
        resync: c.resync_state(&v).into_iter().map(Into::into).collect(),
        volume: v.into(),
    })
}

/// An attach body; an empty body is `unix`.
struct AttachBody(wire::Attach);

impl Input for (String, AttachBody) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let b = if r.body.is_empty() || r.body.as_ref() == b"null" {
            wire::Attach::default()
        } else {
            parse_body(r.body)?
        };
        Ok((r.param(0), AttachBody(b)))
    }
}

fn attach(
    c: &Controller,
    p: &Principal,
    (id, AttachBody(b)): (String, AttachBody),
) -> Result<wire::Attachment, ControlError> {
    match b.transport.unwrap_or_default() {
        wire::Transport::Unix => c.attach(p, &id).map(Into::into),
        wire::Transport::Tcp => {
            let (a, creds) = c.attach_tcp(p, &id)?;
            let mut a = wire::Attachment::from(a);
            a.credentials = Some(creds.into());
            Ok(a)
        }
    }
}

// ----- placement: nodes, jobs, plans (one block) -----

/// The routes of the placement pool: nodes, jobs and dry-run plans.
fn placement_routes() -> Router<Ctl> {
    use wire::*;
    use StatusCode as S;
    fn node_list(v: Vec<crate::controller::NodeView>) -> NodeList {
        NodeList {
            items: v.into_iter().map(Into::into).collect(),
        }
    }
    Router::new()
        .route(
            "/v1/nodes",
            get(read(|c, p, ()| c.list_nodes(p).map(node_list))).post(change(
                S::CREATED,
                "node.declare",
                |_: &Body<DeclareNodes>| "inventory".to_string(),
                |c, p, Body(d)| c.declare_nodes(p, &d.inventory).map(node_list),
            )),
        )
        .route(
            "/v1/nodes/{name}",
            get(read(|c, p, name: String| {
                c.get_node(p, &name).map(NodeInfo::from)
            })),
        )
        .route(
            "/v1/nodes/{name}/cordon",
            post(change(S::OK, "node.cordon", String::clone, |c, p, name| {
                c.set_cordon(p, &name, true).map(NodeInfo::from)
            })),
        )
        .route(
            "/v1/nodes/{name}/uncordon",
            post(change(
                S::OK,
                "node.uncordon",
                String::clone,
                |c, p, name| c.set_cordon(p, &name, false).map(NodeInfo::from),
            )),
        )
        .route(
            "/v1/jobs",
            post(change(
                S::CREATED,
                "job.create",
                |Body(j): &Body<CreateJob>| clip(&j.name),
                |c, p, Body(j)| c.create_job(p, j.into_request()).map(JobInfo::from),
            ))
            .get(read(|c, p, Query(q): Query<JobQuery>| {
                c.list_jobs(p, q.tenant.as_deref()).map(|v| JobList {
                    items: v.into_iter().map(Into::into).collect(),
                })
            })),
        )
        .route(
            "/v1/jobs/{name}",
            get(read(|c, p, (name, Query(q)): (String, Query<JobQuery>)| {
                c.get_job(p, q.tenant.as_deref(), &name).map(JobInfo::from)
            }))
            .delete(change(
                S::NO_CONTENT,
                "job.delete",
                first::<Query<JobQuery>>,
                |c, p, (name, Query(q))| c.delete_job(p, q.tenant.as_deref(), &name),
            )),
        )
        .route(
            "/v1/plans",
            post(read(|c, p, Body(j): Body<CreateJob>| {
                c.plan_job(p, j.into_request()).map(PlanResult::from)
            })),
        )
}
