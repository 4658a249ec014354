//! The REST API (`/v1`): bearer-token authentication, JSON bodies, errors as
//! `{"error": {"code", "message", "field"}}`. Handlers run the controller's blocking calls on
//! the blocking pool and audit every change.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::{Controller, CreateVolume, Principal, SizeArg};
use crate::error::ApiError;
use crate::model::{Qos, Quota, Role};

/// The OpenAPI document, checked in and served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

type Ctl = Arc<Controller>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
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

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "invalid_body",
            format!("request body is not valid JSON for this call: {e}"),
        )
    })
}

/// Runs a controller call off the async threads, authenticated.
async fn call<T: Send + 'static>(
    ctl: &Ctl,
    headers: &HeaderMap,
    f: impl FnOnce(&Controller, &Principal) -> Result<T, ApiError> + Send + 'static,
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
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Like [`call`], and writes an audit entry for the change.
async fn change<T: Send + 'static>(
    ctl: &Ctl,
    headers: &HeaderMap,
    action: &'static str,
    resource: String,
    f: impl FnOnce(&Controller, &Principal) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    call(ctl, headers, move |c, p| {
        let r = f(c, p);
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => e.code,
        };
        c.audit(p, p.tenant.as_deref(), action, &resource, outcome);
        r
    })
    .await
}

/// The router for the whole API.
pub fn router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/pools", get(list_pools))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{name}", get(get_tenant).delete(delete_tenant))
        .route("/v1/tenants/{name}/quota", put(set_quota))
        .route("/v1/tokens", post(create_token))
        .route("/v1/volumes", post(create_volume).get(list_volumes))
        .route(
            "/v1/volumes/{id}",
            get(get_volume).patch(resize_volume).delete(delete_volume),
        )
        .route(
            "/v1/volumes/{id}/snapshots",
            post(create_snapshot).get(list_snapshots),
        )
        .route("/v1/volumes/{id}/rollback", post(rollback))
        .route("/v1/volumes/{id}/qos", put(set_qos))
        .route(
            "/v1/volumes/{id}/attachments",
            post(attach).get(get_attachment).delete(detach),
        )
        .route("/v1/volumes/{id}/stats", get(volume_stats))
        .route("/metrics", get(metrics))
        .route("/v1/switches", post(create_switch).get(list_switches))
        .route("/v1/switches/{name}", get(get_switch).delete(delete_switch))
        .route(
            "/v1/switches/{name}/ports",
            post(add_port).get(switch_ports),
        )
        .route(
            "/v1/switches/{name}/ports/{port}",
            axum::routing::delete(remove_port),
        )
        .route(
            "/v1/switches/{name}/flows",
            post(add_flow).get(dump_flows).delete(del_flows),
        )
        .route("/v1/switches/{name}/trace", post(trace))
        .route(
            "/v1/snapshots/{id}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/v1/snapshots/{id}/clone", post(clone_snapshot))
        .route("/v1/audit", get(list_audit))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .with_state(ctl)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

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

async fn list_pools(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let items = call(&ctl, &h, |c, p| {
        if p.role != Role::Admin {
            return Err(ApiError::forbidden("pools are visible to admins only"));
        }
        let i = c.pool().info();
        Ok(vec![PoolView {
            name: crate::core::DEFAULT_POOL,
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
        }])
    })
    .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}

#[derive(Deserialize)]
struct CreateTenant {
    name: String,
    #[serde(default)]
    quota: Quota,
}

async fn create_tenant(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateTenant = parse(&body)?;
    let name = req.name.clone();
    let t = change(&ctl, &h, "tenant.create", name, move |c, p| {
        c.create_tenant(p, &req.name, req.quota)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &t))
}

async fn list_tenants(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let items = call(&ctl, &h, |c, p| c.list_tenants(p)).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}

async fn get_tenant(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = call(&ctl, &h, move |c, p| c.get_tenant(p, &name)).await?;
    Ok(json(StatusCode::OK, &t))
}

async fn delete_tenant(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    change(&ctl, &h, "tenant.delete", name.clone(), move |c, p| {
        c.delete_tenant(p, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_quota(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q: Quota = parse(&body)?;
    let t = change(&ctl, &h, "tenant.set_quota", name.clone(), move |c, p| {
        c.set_quota(p, &name, q)
    })
    .await?;
    Ok(json(StatusCode::OK, &t))
}

#[derive(Deserialize)]
struct CreateToken {
    tenant: Option<String>,
    role: String,
}

async fn create_token(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateToken = parse(&body)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "unknown role {:?} (admin, tenant-admin, member, reader)",
                req.role
            ),
        )
    })?;
    let what = req.tenant.clone().unwrap_or_default();
    let (secret, rec) = change(&ctl, &h, "token.create", what, move |c, p| {
        c.create_token(p, req.tenant.as_deref(), role)
    })
    .await?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "id": rec.id, "tenant": rec.tenant, "role": rec.role, "token": secret }),
    ))
}

async fn create_volume(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: CreateVolume = parse(&body)?;
    if req.request_id.is_none() {
        req.request_id = h
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }
    let name = req.name.clone();
    let v = change(&ctl, &h, "volume.create", name, move |c, p| {
        c.create_volume(p, req)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &v))
}

#[derive(Deserialize)]
struct ListQuery {
    tenant: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

async fn list_volumes(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let (items, next) = call(&ctl, &h, move |c, p| {
        c.list_volumes(
            p,
            q.tenant.as_deref(),
            q.name.as_deref(),
            q.limit.unwrap_or(1000),
            q.page_token.as_deref(),
        )
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "items": items, "next_page_token": next }),
    ))
}

#[derive(Serialize)]
struct VolumeView {
    #[serde(flatten)]
    volume: crate::model::Volume,
    allocated: u64,
    snapshots: usize,
}

async fn get_volume(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = call(&ctl, &h, move |c, p| {
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
    })
    .await?;
    Ok(json(StatusCode::OK, &v))
}

#[derive(Deserialize)]
struct Resize {
    size: SizeArg,
}

async fn resize_volume(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: Resize = parse(&body)?;
    let v = change(&ctl, &h, "volume.resize", id.clone(), move |c, p| {
        c.resize_volume(p, &id, r.size)
    })
    .await?;
    Ok(json(StatusCode::OK, &v))
}

#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

async fn delete_volume(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(f): Query<Force>,
) -> Result<Response, ApiError> {
    change(&ctl, &h, "volume.delete", id.clone(), move |c, p| {
        c.delete_volume(p, &id, f.force)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct Named {
    name: String,
    request_id: Option<String>,
}

async fn create_snapshot(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let n: Named = parse(&body)?;
    let s = change(&ctl, &h, "snapshot.create", id.clone(), move |c, p| {
        c.create_snapshot(p, &id, &n.name)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &s))
}

async fn list_snapshots(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let items = call(&ctl, &h, move |c, p| c.list_snapshots(p, &id)).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}

async fn get_snapshot(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = call(&ctl, &h, move |c, p| c.get_snapshot(p, &id)).await?;
    Ok(json(StatusCode::OK, &s))
}

async fn delete_snapshot(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change(&ctl, &h, "snapshot.delete", id.clone(), move |c, p| {
        c.delete_snapshot(p, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clone_snapshot(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let n: Named = parse(&body)?;
    let v = change(&ctl, &h, "snapshot.clone", id.clone(), move |c, p| {
        c.clone_snapshot(p, &id, &n.name, n.request_id)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &v))
}

#[derive(Deserialize)]
struct RollbackReq {
    snapshot: String,
}

async fn rollback(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: RollbackReq = parse(&body)?;
    let v = change(&ctl, &h, "volume.rollback", id.clone(), move |c, p| {
        c.rollback(p, &id, &r.snapshot)
    })
    .await?;
    Ok(json(StatusCode::OK, &v))
}

#[derive(Deserialize)]
struct QosReq {
    iops_limit: Option<u64>,
    bandwidth_limit: Option<SizeArg>,
    burst_iops: Option<u64>,
    burst_bandwidth: Option<SizeArg>,
}

async fn set_qos(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: QosReq = parse(&body)?;
    let bytes = |v: Option<SizeArg>, f: &'static str| {
        v.map(|s| s.bytes().map_err(|e| e.field(f))).transpose()
    };
    let q = Qos {
        iops_limit: r.iops_limit,
        bandwidth_limit: bytes(r.bandwidth_limit, "bandwidth_limit")?,
        burst_iops: r.burst_iops,
        burst_bandwidth: bytes(r.burst_bandwidth, "burst_bandwidth")?,
    };
    let v = change(&ctl, &h, "volume.set_qos", id.clone(), move |c, p| {
        c.set_qos(p, &id, q)
    })
    .await?;
    Ok(json(StatusCode::OK, &v))
}

async fn volume_stats(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = call(&ctl, &h, move |c, p| c.volume_stats(p, &id)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn metrics(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let text = call(&ctl, &h, |c, p| c.metrics(p)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[derive(Deserialize, Default)]
struct AttachReq {
    /// `unix` (default) or `tcp` (TLS with a client certificate, returned once).
    transport: Option<String>,
}

async fn attach(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AttachReq = if body.is_empty() || body.as_ref() == b"null" {
        AttachReq::default()
    } else {
        parse(&body)?
    };
    match req.transport.as_deref() {
        None | Some("unix") => {
            let a = change(&ctl, &h, "volume.attach", id.clone(), move |c, p| {
                c.attach(p, &id)
            })
            .await?;
            Ok(json(StatusCode::CREATED, &a))
        }
        Some("tcp") => {
            let (a, creds) = change(&ctl, &h, "volume.attach", id.clone(), move |c, p| {
                c.attach_tcp(p, &id)
            })
            .await?;
            let mut v = serde_json::to_value(&a).expect("json");
            v["credentials"] = serde_json::to_value(&creds).expect("json");
            Ok(json(StatusCode::CREATED, &v))
        }
        Some(other) => Err(ApiError::invalid(
            "transport",
            format!("unknown transport {other:?} (unix, tcp)"),
        )),
    }
}

async fn get_attachment(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = call(&ctl, &h, move |c, p| c.attachment(p, &id)).await?;
    Ok(json(StatusCode::OK, &a))
}

async fn detach(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    change(&ctl, &h, "volume.detach", id.clone(), move |c, p| {
        c.detach(p, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct SwitchName {
    name: String,
}

async fn create_switch(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: SwitchName = parse(&body)?;
    let name = r.name.clone();
    let sw = change(&ctl, &h, "switch.create", name, move |c, p| {
        c.create_switch(p, &r.name)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &sw))
}

async fn list_switches(State(ctl): State<Ctl>, h: HeaderMap) -> Result<Response, ApiError> {
    let items = call(&ctl, &h, |c, p| c.list_switches(p)).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}

async fn get_switch(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let sw = call(&ctl, &h, move |c, p| c.get_switch(p, &name)).await?;
    Ok(json(StatusCode::OK, &sw))
}

async fn delete_switch(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    change(&ctl, &h, "switch.delete", name.clone(), move |c, p| {
        c.delete_switch(p, &name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_port(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let port: crate::net::PortRecord = parse(&body)?;
    let what = format!("{name}/{}", port.name);
    let sw = change(&ctl, &h, "switch.add_port", what, move |c, p| {
        c.add_switch_port(p, &name, port)
    })
    .await?;
    Ok(json(StatusCode::CREATED, &sw))
}

async fn switch_ports(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let v = call(&ctl, &h, move |c, p| c.switch_ports(p, &name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn remove_port(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path((name, port)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let what = format!("{name}/{port}");
    change(&ctl, &h, "switch.remove_port", what, move |c, p| {
        c.remove_switch_port(p, &name, &port)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct FlowReq {
    flow: String,
}

async fn add_flow(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: FlowReq = parse(&body)?;
    let what = format!("{name}: {}", r.flow);
    change(&ctl, &h, "switch.add_flow", what, move |c, p| {
        c.add_switch_flow(p, &name, &r.flow)
    })
    .await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn dump_flows(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let text = call(&ctl, &h, move |c, p| c.dump_switch_flows(p, &name)).await?;
    let lines: Vec<&str> = text.lines().collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "flows": lines })))
}

#[derive(Deserialize)]
struct DelFlows {
    #[serde(default, rename = "match")]
    filter: String,
    #[serde(default)]
    strict: bool,
}

async fn del_flows(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<DelFlows>,
) -> Result<Response, ApiError> {
    let what = format!("{name}: {}", q.filter);
    let n = change(&ctl, &h, "switch.del_flows", what, move |c, p| {
        c.del_switch_flows(p, &name, &q.filter, q.strict)
    })
    .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": n })))
}

#[derive(Deserialize)]
struct TraceReq {
    packet: String,
}

async fn trace(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: TraceReq = parse(&body)?;
    let text = call(&ctl, &h, move |c, p| c.trace_switch(p, &name, &r.packet)).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "trace": text })))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn list_audit(
    State(ctl): State<Ctl>,
    h: HeaderMap,
    Query(l): Query<Limit>,
) -> Result<Response, ApiError> {
    let items = call(&ctl, &h, move |c, p| {
        c.list_audit(p, l.limit.unwrap_or(1000))
    })
    .await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "items": items })))
}
