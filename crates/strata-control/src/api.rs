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
use serde::{Deserialize, Serialize};
use strata_types::ErrorCode;

use crate::controller::{Controller, CreateVolume, Principal, SetPoolSettings, SizeArg};
use crate::error::{ControlError, InUse, Resource, Service};
use crate::model::{Qos, Quota, Role};

/// The OpenAPI document, checked in and served at `/v1/openapi.json`.
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
        serde_json::json!({"error": {
            "code": self.code.as_str(), "message": self.message, "field": self.field,
        }})
        .to_string()
    }
}

/// The stable code of a controller error (its HTTP status is the code's default).
pub fn code_of(e: &ControlError) -> ErrorCode {
    use ErrorCode as C;
    match e {
        ControlError::Unauthenticated => C::Unauthenticated,
        ControlError::Forbidden(_) => C::Forbidden,
        ControlError::NotFound { resource, .. } => match resource {
            Resource::Tenant => C::TenantNotFound,
            Resource::Volume => C::VolumeNotFound,
            Resource::Snapshot => C::SnapshotNotFound,
            Resource::Pool => C::PoolNotFound,
            Resource::Attachment => C::AttachmentNotFound,
            Resource::Switch => C::SwitchNotFound,
            Resource::Port => C::PortNotFound,
        },
        ControlError::Exists { resource, .. } => match resource {
            Resource::Tenant => C::TenantExists,
            Resource::Volume => C::VolumeExists,
            Resource::Snapshot => C::SnapshotExists,
            Resource::Switch => C::SwitchExists,
            Resource::Port => C::PortExists,
            Resource::Pool | Resource::Attachment => C::AlreadyExists,
        },
        ControlError::Invalid { .. } => C::InvalidArgument,
        ControlError::QuotaExceeded(_) => C::QuotaExceeded,
        ControlError::PoolOvercommitted(_) => C::PoolOvercommitted,
        ControlError::InUse { what, .. } => match what {
            InUse::VolumeHasSnapshots => C::VolumeHasSnapshots,
            InUse::VolumeAttached => C::VolumeAttached,
            InUse::TenantNotEmpty => C::TenantNotEmpty,
        },
        ControlError::Busy(_) => C::Busy,
        ControlError::Unavailable { service, .. } => match service {
            Service::Nbd => C::NbdUnavailable,
            Service::NbdTcp => C::NbdTcpUnavailable,
        },
        ControlError::Engine(e) => engine_code(e),
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
        | E::ClassUnavailable(_)
        | E::NotOfVolume { .. } => C::InvalidArgument,
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
        ControlError::Exists {
            resource: Resource::Volume | Resource::Snapshot,
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

/// A JSON body.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// A query string.
#[derive(Debug)]
pub struct Query<T>(pub T);

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("request body is not valid JSON for this call: {e}"),
        )
    })
}

fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.body_text()))
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
impl<T: DeserializeOwned + Send + 'static> Input for Body<T> {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        parse_body(r.body).map(Body)
    }
}
impl<T: DeserializeOwned + Send + 'static> Input for Query<T> {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        parse_query(r.uri).map(Query)
    }
}
impl<T: DeserializeOwned + Send + 'static> Input for (String, Body<T>) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        Ok((r.param(0), Body::from_request(r)?))
    }
}
impl<T: DeserializeOwned + Send + 'static> Input for (String, Query<T>) {
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
            let input = match I::from_request(&parts) {
                Ok(i) => i,
                Err(e) => return e.into_response(),
            };
            let r = call(&ctl, &headers, move |c, p| {
                let Some((action, what)) = audit else {
                    return f(c, p, input);
                };
                let resource = what(&input);
                let r = f(c, p, input);
                let outcome = match &r {
                    Ok(_) => "ok",
                    Err(e) => code_of(e).as_str(),
                };
                c.audit(p, p.tenant.as_deref(), action, &resource, outcome);
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

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).expect("serializable"),
    )
        .into_response()
}

/// Runs a controller call off the async threads, authenticated.
async fn call<T: Send + 'static>(
    ctl: &Ctl,
    headers: &HeaderMap,
    f: impl FnOnce(&Controller, &Principal) -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_string();
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
    use StatusCode as S;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/pools", get(read(|c, p, ()| list_pools(c, p))))
        .route(
            "/v1/pools/{id}/settings",
            get(read(|c, p, id: String| c.get_pool_settings(p, &id))).put(change(
                S::OK,
                "pool.set_settings",
                |(id, _): &(String, Body<SetPoolSettings>)| id.clone(),
                |c, p, (id, Body(r))| c.set_pool_settings(p, &id, r.overcommit.ratio()?),
            )),
        )
        .route(
            "/v1/tenants",
            post(change(
                S::CREATED,
                "tenant.create",
                |Body(r): &Body<CreateTenant>| r.name.clone(),
                |c, p, Body(r)| c.create_tenant(p, &r.name, r.quota),
            ))
            .get(read(|c, p, ()| c.list_tenants(p).map(items))),
        )
        .route(
            "/v1/tenants/{name}",
            get(read(|c, p, name: String| c.get_tenant(p, &name))).delete(change(
                S::NO_CONTENT,
                "tenant.delete",
                String::clone,
                |c, p, name| c.delete_tenant(p, &name),
            )),
        )
        .route(
            "/v1/tenants/{name}/quota",
            put(change(
                S::OK,
                "tenant.set_quota",
                |(n, _): &(String, Body<Quota>)| n.clone(),
                |c, p, (name, Body(q))| c.set_quota(p, &name, q),
            )),
        )
        .route(
            "/v1/tokens",
            post(change(
                S::CREATED,
                "token.create",
                |Body(r): &Body<CreateToken>| r.tenant.clone().unwrap_or_default(),
                create_token,
            )),
        )
        .route(
            "/v1/volumes",
            post(change(
                S::CREATED,
                "volume.create",
                |r: &NewVolume| r.0.name.clone(),
                |c, p, NewVolume(r)| c.create_volume(p, r),
            ))
            .get(read(|c, p, Query(q): Query<ListQuery>| {
                c.list_volumes(
                    p,
                    q.tenant.as_deref(),
                    q.name.as_deref(),
                    q.limit.unwrap_or(1000),
                    q.page_token.as_deref(),
                )
                .map(|(items, next)| serde_json::json!({"items": items, "next_page_token": next}))
            })),
        )
        .route(
            "/v1/volumes/{id}",
            get(read(get_volume))
                .patch(change(
                    S::OK,
                    "volume.resize",
                    first::<Body<Resize>>,
                    |c, p, (id, Body(r))| c.resize_volume(p, &id, r.size),
                ))
                .delete(change(
                    S::NO_CONTENT,
                    "volume.delete",
                    first::<Query<Force>>,
                    |c, p, (id, Query(f))| c.delete_volume(p, &id, f.force),
                )),
        )
        .route(
            "/v1/volumes/{id}/snapshots",
            post(change(
                S::CREATED,
                "snapshot.create",
                first::<Body<Named>>,
                |c, p, (id, Body(n))| c.create_snapshot(p, &id, &n.name),
            ))
            .get(read(|c, p, id: String| c.list_snapshots(p, &id).map(items))),
        )
        .route(
            "/v1/volumes/{id}/rollback",
            post(change(
                S::OK,
                "volume.rollback",
                first::<Body<RollbackReq>>,
                |c, p, (id, Body(r))| c.rollback(p, &id, &r.snapshot),
            )),
        )
        .route(
            "/v1/volumes/{id}/qos",
            put(change(
                S::OK,
                "volume.set_qos",
                |(id, _): &(String, QosBody)| id.clone(),
                |c, p, (id, QosBody(q))| c.set_qos(p, &id, q),
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
            .get(read(|c, p, id: String| c.attachment(p, &id)))
            .delete(change(
                S::NO_CONTENT,
                "volume.detach",
                String::clone,
                |c, p, id| c.detach(p, &id),
            )),
        )
        .route(
            "/v1/volumes/{id}/stats",
            get(read(|c, p, id: String| c.volume_stats(p, &id))),
        )
        .route(
            "/v1/snapshots/{id}",
            get(read(|c, p, id: String| c.get_snapshot(p, &id))).delete(change(
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
                first::<Body<Named>>,
                |c, p, (id, Body(n))| c.clone_snapshot(p, &id, &n.name, n.request_id),
            )),
        )
        .route(
            "/v1/audit",
            get(read(|c, p, Query(l): Query<Limit>| {
                c.list_audit(p, l.limit.unwrap_or(1000)).map(items)
            })),
        )
        .route(
            "/v1/switches",
            post(change(
                S::CREATED,
                "switch.create",
                |Body(r): &Body<SwitchName>| r.name.clone(),
                |c, p, Body(r)| c.create_switch(p, &r.name),
            ))
            .get(read(|c, p, ()| c.list_switches(p).map(items))),
        )
        .route(
            "/v1/switches/{name}",
            get(read(|c, p, name: String| c.get_switch(p, &name))).delete(change(
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
                |(n, Body(port)): &(String, Body<crate::net::PortRecord>)| {
                    format!("{n}/{}", port.name)
                },
                |c, p, (name, Body(port))| c.add_switch_port(p, &name, port),
            ))
            .get(read(|c, p, name: String| c.switch_ports(p, &name))),
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
                |(n, Body(r)): &(String, Body<FlowReq>)| format!("{n}: {}", r.flow),
                |c, p, (name, Body(r))| c.add_switch_flow(p, &name, &r.flow),
            ))
            .get(read(|c, p, name: String| {
                let text = c.dump_switch_flows(p, &name)?;
                Ok(serde_json::json!({ "flows": text.lines().collect::<Vec<_>>() }))
            }))
            .delete(change(
                S::OK,
                "switch.del_flows",
                |(n, Query(q)): &(String, Query<DelFlows>)| format!("{n}: {}", q.filter),
                |c, p, (name, Query(q))| {
                    let n = c.del_switch_flows(p, &name, &q.filter, q.strict)?;
                    Ok(serde_json::json!({ "deleted": n }))
                },
            )),
        )
        .route(
            "/v1/switches/{name}/trace",
            post(read(|c, p, (name, Body(r)): (String, Body<TraceReq>)| {
                let text = c.trace_switch(p, &name, &r.packet)?;
                Ok(serde_json::json!({ "trace": text }))
            })),
        )
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint not found") })
        .with_state(ctl)
}

/// The audit resource of an operation on `/…/{id}` with a body or query: the id.
fn first<B>(i: &(String, B)) -> String {
    i.0.clone()
}

fn items<T: Serialize>(items: Vec<T>) -> serde_json::Value {
    serde_json::json!({ "items": items })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let text = call(&ctl, &h, |c, p| c.metrics(p)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

// ----- request and response shapes -----

#[derive(Serialize)]
struct PoolView {
    name: &'static str,
    id: String,
    block_size: u64,
    capacity: u64,
    allocated: u64,
    free: u64,
    pending_free: u64,
    provisioned: u64,
    devices: Vec<DeviceView>,
}

#[derive(Serialize)]
struct DeviceView {
    index: usize,
    id: String,
    path: String,
    class: String,
    capacity: u64,
    allocated: u64,
    metadata: bool,
}

fn list_pools(c: &Controller, p: &Principal) -> Result<serde_json::Value, ControlError> {
    let i = c.pool_info(p)?;
    Ok(items(vec![PoolView {
        name: crate::controller::DEFAULT_POOL,
        id: i.id.to_string(),
        block_size: i.block_size,
        capacity: i.capacity,
        allocated: i.allocated,
        free: i.free,
        pending_free: i.pending_free,
        provisioned: i.provisioned,
        devices: i
            .devices
            .into_iter()
            .map(|d| DeviceView {
                index: d.index,
                id: d.id.to_string(),
                path: d.label,
                class: d.class.to_string(),
                capacity: d.capacity,
                allocated: d.allocated,
                metadata: d.metadata,
            })
            .collect(),
    }]))
}

#[derive(Deserialize)]
struct CreateTenant {
    name: String,
    #[serde(default)]
    quota: Quota,
}

#[derive(Deserialize)]
struct CreateToken {
    tenant: Option<String>,
    role: String,
}

fn create_token(
    c: &Controller,
    p: &Principal,
    Body(req): Body<CreateToken>,
) -> Result<serde_json::Value, ControlError> {
    let role = Role::parse(&req.role).ok_or_else(|| {
        ControlError::invalid(
            "role",
            format!(
                "unknown role {:?} (admin, tenant-admin, member, reader)",
                req.role
            ),
        )
    })?;
    let (secret, rec) = c.create_token(p, req.tenant.as_deref(), role)?;
    Ok(serde_json::json!({ "id": rec.id, "tenant": rec.tenant, "role": rec.role, "token": secret }))
}

/// A create-volume body; the `Idempotency-Key` header stands for a missing `request_id`.
struct NewVolume(CreateVolume);

impl Input for NewVolume {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let mut req: CreateVolume = parse_body(r.body)?;
        if req.request_id.is_none() {
            req.request_id = r
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        Ok(NewVolume(req))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    tenant: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct VolumeView {
    #[serde(flatten)]
    volume: crate::model::Volume,
    allocated: u64,
    snapshots: usize,
}

fn get_volume(c: &Controller, p: &Principal, id: String) -> Result<VolumeView, ControlError> {
    let v = c.get_volume(p, &id)?;
    let info = c
        .pool()
        .volume_id(&v.id)
        .and_then(|e| c.pool().volume(e))
        .ok();
    Ok(VolumeView {
        allocated: info.as_ref().map_or(0, |i| i.allocated),
        snapshots: info.as_ref().map_or(0, |i| i.snapshots),
        volume: v,
    })
}

#[derive(Deserialize)]
struct Resize {
    size: SizeArg,
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
struct Named {
    name: String,
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct RollbackReq {
    snapshot: String,
}

#[derive(Deserialize)]
struct QosReq {
    iops_limit: Option<u64>,
    bandwidth_limit: Option<SizeArg>,
    burst_iops: Option<u64>,
    burst_bandwidth: Option<SizeArg>,
}

/// A QoS body with its sizes resolved (a bad size names its field).
struct QosBody(Qos);

impl Input for (String, QosBody) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let q: QosReq = parse_body(r.body)?;
        let bytes = |v: Option<SizeArg>, f: &'static str| {
            v.map(|s| s.bytes().map_err(|e| e.in_field(f)))
                .transpose()
                .map_err(ApiError::from)
        };
        Ok((
            r.param(0),
            QosBody(Qos {
                iops_limit: q.iops_limit,
                bandwidth_limit: bytes(q.bandwidth_limit, "bandwidth_limit")?,
                burst_iops: q.burst_iops,
                burst_bandwidth: bytes(q.burst_bandwidth, "burst_bandwidth")?,
            }),
        ))
    }
}

/// An attach body: `transport` is `unix` (default, also for an empty body) or `tcp` (TLS with
/// a client certificate, returned once).
#[derive(Deserialize, Default)]
struct AttachBody {
    transport: Option<String>,
}

impl Input for (String, AttachBody) {
    fn from_request(r: &RequestParts<'_>) -> Result<Self, ApiError> {
        let b = if r.body.is_empty() || r.body.as_ref() == b"null" {
            AttachBody::default()
        } else {
            parse_body(r.body)?
        };
        Ok((r.param(0), b))
    }
}

fn attach(
    c: &Controller,
    p: &Principal,
    (id, b): (String, AttachBody),
) -> Result<serde_json::Value, ControlError> {
    match b.transport.as_deref() {
        None | Some("unix") => Ok(serde_json::to_value(c.attach(p, &id)?).expect("json")),
        Some("tcp") => {
            let (a, creds) = c.attach_tcp(p, &id)?;
            let mut v = serde_json::to_value(&a).expect("json");
            v["credentials"] = serde_json::to_value(&creds).expect("json");
            Ok(v)
        }
        Some(other) => Err(ControlError::invalid(
            "transport",
            format!("unknown transport {other:?} (unix, tcp)"),
        )),
    }
}

#[derive(Deserialize)]
struct SwitchName {
    name: String,
}

#[derive(Deserialize)]
struct FlowReq {
    flow: String,
}

#[derive(Deserialize)]
struct DelFlows {
    #[serde(default, rename = "match")]
    filter: String,
    #[serde(default)]
    strict: bool,
}

#[derive(Deserialize)]
struct TraceReq {
    packet: String,
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}
