//! The OpenAPI document, generated from the wire types: the schemas by `utoipa`'s derive, the
//! operations from the table in [`document`] (one entry per route of `api.rs`, with every
//! status the operation can answer). `crates/strata-control/openapi.json` is this document,
//! checked in; the test `the_checked_in_document_is_the_generated_one` keeps the two equal
//! (`STRATA_BLESS=1` rewrites the file).

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};
use utoipa::{OpenApi as _, ToSchema};

use super::bounds::*;
use super::*;

#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    ErrorDetail,
    VolumeSize,
    Bandwidth,
    Quota,
    QuotaPatch,
    Usage,
    Tenant,
    TenantList,
    CreateTenant,
    Role,
    CreateToken,
    NewToken,
    TokenInfo,
    TokenList,
    SetSocketOwner,
    Certificate,
    CertificateList,
    Revoked,
    CreateVolume,
    VolumeState,
    Qos,
    Volume,
    VolumeDetail,
    VolumePage,
    Resize,
    Rollback,
    SetQos,
    QosPatch,
    IoTotals,
    VolumeStats,
    NewName,
    Snapshot,
    SnapshotList,
    CreateSnapshotGroup,
    Series,
    CloneGroup,
    GroupMember,
    SnapshotGroup,
    SnapshotGroupList,
    ClonedVolumes,
    CreateSnapshotSchedule,
    SnapshotSchedulePatch,
    SnapshotSchedule,
    SnapshotScheduleList,
    Transport,
    Attach,
    Credentials,
    Attachment,
    AttachmentList,
    Device,
    Pool,
    PoolList,
    RebalancePool,
    RebalanceMove,
    RebalanceSkipped,
    Rebalance,
    PoolSettings,
    SetPoolSettings,
    PoolShare,
    SetTenantShare,
    TenantShare,
    AuditEntry,
    AuditList,
    Severity,
    Event,
    EventList,
    CreateSwitch,
    PortKind,
    SwitchPort,
    Switch,
    SwitchList,
    PortCounters,
    PortCounterList,
    AddFlow,
    FlowList,
    DeleteFlows,
    Deleted,
    TraceRequest,
    super::switches::Trace,
    // placement: nodes, jobs, plans
    NodeGpus,
    NodeDevice,
    NodeInfo,
    NodeList,
    DeclareNodes,
    CreateJob,
    JobState,
    JobPart,
    JobBandwidth,
    JobExplanation,
    JobInfo,
    JobList,
    PlanMove,
    PlanResult,
    JobVolume,
    JobSliceState,
    JobSlicePort,
    JobSliceVolume,
    JobSlice,
    // tenant networks
    CreateNetwork,
    Network,
    NetworkList,
    CreateSubnet,
    Subnet,
    SubnetList,
    CreateNetworkPort,
    VethSettings,
    NetworkPort,
    NetworkPortList,
    SetSecurityGroups,
    CreateRouter,
    SetRouterSubnets,
    NetworkRouter,
    NetworkRouterList,
    CreateSecurityGroup,
    RuleDirection,
    RuleProtocol,
    CreateRule,
    SecurityGroupRule,
    SecurityGroup,
    SecurityGroupList,    TraceNetworkPacket,
    NetworkTraceStep,
    NetworkTrace,
    RouterGatewayInfo,
    SetRouterGateway,
    CreateFloatingIp,
    AssociateFloatingIp,
    FloatingIp,
    FloatingIpList,
    LbProtocolName,
    HealthKindName,
    BackendSpec,
    ListenerSpec,
    HealthCheckSpec,
    CreateLoadBalancer,
    SetLoadBalancerListeners,
    SetLoadBalancerSettings,
    LbBackendView,
    LbListenerView,
    HealthCheckView,
    LoadBalancer,
    LoadBalancerList,
    NetworkPortStats,
    NetworkStats,
    RoundTrips,
    ProbeNetwork,
    PortProbeResult,
    NetworkProbe,
    SetNetworkBandwidth,
    SetPortBandwidth,
)))]
struct Schemas;

fn r<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// What an error status means, for the document.
fn meaning(status: u16) -> &'static str {
    match status {
        400 => "invalid input (invalid_argument, invalid_body, ...)",
        401 => "missing or unknown token",
        403 => "role not allowed",
        404 => "not found or not visible",
        405 => "method not allowed",
        409 => "conflict with the state of a resource (exists, in use, quota, ...)",
        413 => "body too large",
        503 => "a service the call needs is unavailable",
        507 => "out of space",
        _ => "error",
    }
}

/// Statuses every operation may answer.
const COMMON: &[u16] = &[400, 401, 403, 404, 503];

struct Op {
    method: HttpMethod,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    query: Vec<utoipa::openapi::path::Parameter>,
    body: Option<RefOr<Schema>>,
    /// The body may be left out (the operation has a default for it).
    body_optional: bool,
    ok: (u16, &'static str, Option<RefOr<Schema>>),
    errors: &'static [u16],
}

fn op(method: HttpMethod, path: &'static str, id: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        id,
        summary,
        query: vec![],
        body: None,
        body_optional: false,
        ok: (200, "ok", None),
        errors: &[],
    }
}

impl Op {
    fn body(mut self, s: RefOr<Schema>) -> Self {
        self.body = Some(s);
        self
    }
    fn optional_body(mut self, s: RefOr<Schema>) -> Self {
        self.body = Some(s);
        self.body_optional = true;
        self
    }
    fn ok(mut self, status: u16, what: &'static str, s: RefOr<Schema>) -> Self {
        self.ok = (status, what, Some(s));
        self
    }
    fn none(mut self, status: u16, what: &'static str) -> Self {
        self.ok = (status, what, None);
        self
    }
    fn errors(mut self, e: &'static [u16]) -> Self {
        self.errors = e;
        self
    }
    fn query(mut self, name: &str, s: impl Into<RefOr<Schema>>, what: &str) -> Self {
        self.query.push(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(what))
                .schema(Some(s))
                .build(),
        );
        self
    }
}

fn json(s: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(s)).build()
}

fn path_params(path: &str) -> Vec<utoipa::openapi::path::Parameter> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|n| {
            ParameterBuilder::new()
                .name(n)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(free_text(1, 256, false)))
                .build()
        })
        .collect()
}

/// The placement operations (nodes, jobs, plans): one block, kept apart from the rest.
fn placement_operations() -> Vec<Op> {
    use HttpMethod::*;
    let tenant_query = || text(NAME_PATTERN, NAME_MAX_LEN, false);
    vec![
        op(
            Get,
            "/v1/nodes",
            "listNodes",
            "List the placement pool's nodes",
        )
        .ok(200, "nodes", r::<NodeList>()),
        op(
            Post,
            "/v1/nodes",
            "declareNodes",
            "Declare hypothetical nodes for planning from a YAML inventory (admin)",
        )
        .body(r::<DeclareNodes>())
        .ok(201, "the declared nodes", r::<NodeList>())
        .errors(&[409]),
        op(Get, "/v1/nodes/{name}", "getNode", "Show a node").ok(200, "the node", r::<NodeInfo>()),
        op(
            Post,
            "/v1/nodes/{name}/cordon",
            "cordonNode",
            "Cordon a node: it takes no new jobs (admin)",
        )
        .ok(200, "the node", r::<NodeInfo>())
        .errors(&[409]),
        op(
            Post,
            "/v1/nodes/{name}/uncordon",
            "uncordonNode",
            "Uncordon a node and admit waiting jobs (admin)",
        )
        .ok(200, "the node", r::<NodeInfo>())
        .errors(&[409]),
        op(
            Post,
            "/v1/jobs",
            "createJob",
            "Create a job: it starts if it fits, else waits in the queue (pending)",
        )
        .body(r::<CreateJob>())
        .ok(201, "created", r::<JobInfo>())
        .errors(&[409, 507]),
        op(
            Get,
            "/v1/jobs",
            "listJobs",
            "List the jobs the caller may see",
        )
        .query("tenant", tenant_query(), "only this tenant's (admins)")
        .ok(200, "jobs", r::<JobList>()),
        op(Get, "/v1/jobs/{name}", "getJob", "Show a job")
            .query("tenant", tenant_query(), "the job's tenant (admins)")
            .ok(200, "the job", r::<JobInfo>()),
        op(
            Delete,
            "/v1/jobs/{name}",
            "deleteJob",
            "Delete a job; waiting jobs are admitted",
        )
        .query("tenant", tenant_query(), "the job's tenant (admins)")
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Post,
            "/v1/plans",
            "planJob",
            "Dry run: where a job would run, or why it would wait; changes nothing",
        )
        .body(r::<CreateJob>())
        .ok(200, "the plan", r::<PlanResult>())
        .errors(&[409]),
    ]
}

fn operations() -> Vec<Op> {
    use HttpMethod::*;
    let bool_schema = || {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Boolean)
            .build()
    };
    vec![
        op(Get, "/v1/pools", "listPools", "List pools (admin)").ok(200, "pools", r::<PoolList>()),
        op(
            Post,
            "/v1/pools",
            "createPool",
            "Create a pool of devices, each formatted as its own failure domain (admin)",
        )
        .body(r::<CreatePool>())
        .ok(201, "the pool", r::<Pool>())
        .errors(&[409]),
        op(Get, "/v1/pools/{id}", "getPool", "Show a pool and its devices (admin)")
            .ok(200, "the pool", r::<Pool>()),
        op(
            Post,
            "/v1/master-key/rotate",
            "rotateMasterKey",
            "Re-wrap every device's data keys under a new master key file, no data rewritten (admin)",
        )
        .body(r::<RotateMasterKey>())
        .ok(200, "how it went", r::<MasterKeyRotation>())
        .errors(&[409]),
        op(
            Post,
            "/v1/pools/{id}/scrub",
            "startPoolScrub",
            "Start a scrub of every allocated block of every copy of the pool's volumes, or answer the one running (admin)",
        )
        .body(r::<StartScrub>())
        .ok(202, "the scrub", r::<Scrub>()),
        op(
            Get,
            "/v1/pools/{id}/scrub",
            "getPoolScrub",
            "Show where the pool's last scrub stands (admin)",
        )
        .ok(200, "the scrub", r::<Scrub>()),
        op(
            Post,
            "/v1/pools/{id}/rebalance",
            "rebalancePool",
            "Run one rebalance round: at most max_moves copy moves within a class toward even fill, or with dry_run only the plan (admin)",
        )
        .body(r::<RebalancePool>())
        .ok(200, "the round", r::<Rebalance>()),
        op(
            Post,
            "/v1/pools/{id}/devices",
            "addPoolDevice",
            "Add a device to a pool (admin)",
        )
        .body(r::<AddDevice>())
        .ok(200, "the pool", r::<Pool>())
        .errors(&[409]),
        op(
            Delete,
            "/v1/pools/{id}/devices/{device}",
            "removePoolDevice",
            "Remove a device that holds no copies from a pool (admin)",
        )
        .ok(200, "the pool", r::<Pool>())
        .errors(&[409]),
        op(
            Post,
            "/v1/pools/{id}/devices/{device}/online",
            "onlinePoolDevice",
            "Open a faulted or missing device again; its copies resync what they missed (admin)",
        )
        .ok(200, "the pool", r::<Pool>())
        .errors(&[409]),
        op(
            Get,
            "/v1/pools/{id}/settings",
            "getPoolSettings",
            "Show a pool's settings and the figures they bound (admin)",
        )
        .ok(200, "the settings", r::<PoolSettings>()),
        op(
            Put,
            "/v1/pools/{id}/settings",
            "setPoolSettings",
            "Change a pool's overcommit ratio (admin)",
        )
        .body(r::<SetPoolSettings>())
        .ok(200, "the settings", r::<PoolSettings>()),
        op(
            Get,
            "/v1/pools/{id}/share",
            "getPoolShare",
            "Show the capacity the pool shares between tenants (admin)",
        )
        .ok(200, "the capacity", r::<PoolShare>()),
        op(
            Put,
            "/v1/pools/{id}/share",
            "setPoolShare",
            "Set the capacity the pool shares between tenants by weight; none turns sharing off (admin)",
        )
        .body(r::<PoolShare>())
        .ok(200, "the capacity", r::<PoolShare>()),
        op(
            Get,
            "/v1/tenants/{name}/share",
            "getTenantShare",
            "Show a tenant's share of the pool and what it got",
        )
        .ok(200, "the share", r::<TenantShare>()),
        op(
            Put,
            "/v1/tenants/{name}/share",
            "setTenantShare",
            "Set a tenant's weight and reservation (admin)",
        )
        .body(r::<SetTenantShare>())
        .ok(200, "the share", r::<TenantShare>()),
        op(
            Post,
            "/v1/tenants",
            "createTenant",
            "Create a tenant (admin)",
        )
        .body(r::<CreateTenant>())
        .ok(201, "created", r::<Tenant>())
        .errors(&[409]),
        op(
            Get,
            "/v1/tenants",
            "listTenants",
            "List the tenants the caller may see",
        )
        .ok(200, "tenants", r::<TenantList>()),
        op(Get, "/v1/tenants/{name}", "getTenant", "Show a tenant").ok(
            200,
            "the tenant",
            r::<Tenant>(),
        ),
        op(
            Delete,
            "/v1/tenants/{name}",
            "deleteTenant",
            "Delete an empty tenant (admin)",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Put,
            "/v1/tenants/{name}/quota",
            "setQuota",
            "Set a tenant's quota (admin)",
        )
        .body(r::<Quota>())
        .ok(200, "the tenant", r::<Tenant>())
        .errors(&[409]),
        op(
            Patch,
            "/v1/tenants/{name}/quota",
            "updateQuota",
            "Change only the named limits of a tenant's quota; null removes one (admin)",
        )
        .body(r::<QuotaPatch>())
        .ok(200, "the tenant", r::<Tenant>())
        .errors(&[409]),
        op(
            Put,
            "/v1/tenants/{name}/socket-owner",
            "setSocketOwner",
            "Set the owner of a tenant's NBD socket (admin)",
        )
        .body(r::<SetSocketOwner>())
        .ok(200, "the tenant", r::<Tenant>()),
        op(
            Get,
            "/v1/tenants/{name}/certificates",
            "listCertificates",
            "List the TLS client certificates issued for a tenant (tenant admin)",
        )
        .ok(200, "certificates", r::<CertificateList>()),
        op(
            Post,
            "/v1/tenants/{name}/certificates/revoke",
            "revokeCertificates",
            "Revoke every certificate of a tenant and close its TLS sessions (tenant admin)",
        )
        .ok(200, "what was revoked", r::<Revoked>()),
        op(Post, "/v1/tokens", "createToken", "Create an API token")
            .body(r::<CreateToken>())
            .ok(201, "created; the secret is shown once", r::<NewToken>()),
        op(
            Get,
            "/v1/tokens",
            "listTokens",
            "List the tokens the caller may see (never their secrets)",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "tokens", r::<TokenList>()),
        op(Delete, "/v1/tokens/{id}", "revokeToken", "Revoke a token").none(204, "revoked"),
        op(
            Post,
            "/v1/volumes",
            "createVolume",
            "Create a volume (idempotent under request_id or the Idempotency-Key header)",
        )
        .body(r::<CreateVolume>())
        .ok(201, "created", r::<Volume>())
        .errors(&[409, 507]),
        op(
            Get,
            "/v1/volumes",
            "listVolumes",
            "List volumes, a page at a time",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .query(
            "name",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this name",
        )
        .query("limit", int(1, LIST_LIMIT_MAX, false), "page size")
        .query(
            "page_token",
            text(PAGE_TOKEN_PATTERN, PAGE_TOKEN_MAX_LEN, false),
            "where the page starts (next_page_token)",
        )
        .ok(200, "a page of volumes", r::<VolumePage>()),
        op(Get, "/v1/volumes/{id}", "getVolume", "Show a volume").ok(
            200,
            "the volume",
            r::<VolumeDetail>(),
        ),
        op(Patch, "/v1/volumes/{id}", "resizeVolume", "Resize a volume")
            .body(r::<Resize>())
            .ok(200, "resized", r::<Volume>())
            .errors(&[409, 507]),
        op(
            Delete,
            "/v1/volumes/{id}",
            "deleteVolume",
            "Delete a volume",
        )
        .query("force", bool_schema(), "also its snapshots and attachment")
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Post,
            "/v1/volumes/{id}/snapshots",
            "createSnapshot",
            "Snapshot a volume (O(1))",
        )
        .body(r::<NewName>())
        .ok(201, "created", r::<Snapshot>())
        .errors(&[409, 507]),
        op(
            Get,
            "/v1/volumes/{id}/snapshots",
            "listSnapshots",
            "List a volume's snapshots",
        )
        .ok(200, "snapshots", r::<SnapshotList>()),
        op(
            Post,
            "/v1/volumes/{id}/rollback",
            "rollbackVolume",
            "Roll a volume back to one of its snapshots",
        )
        .body(r::<Rollback>())
        .ok(200, "rolled back", r::<Volume>())
        .errors(&[409, 507]),
        op(
            Post,
            "/v1/volumes/{id}/takeover",
            "takeOverVolume",
            "Serve a volume from this node: its serving node is down and this node holds a copy with every acknowledged write",
        )
        .ok(200, "the volume, served by this node", r::<Volume>())
        .errors(&[409]),
        op(
            Put,
            "/v1/volumes/{id}/qos",
            "setQos",
            "Set a volume's QoS limits",
        )
        .body(r::<SetQos>())
        .ok(200, "the volume", r::<Volume>())
        .errors(&[409]),
        op(
            Patch,
            "/v1/volumes/{id}/qos",
            "updateQos",
            "Change only the named QoS limits of a volume; null removes one",
        )
        .body(r::<QosPatch>())
        .ok(200, "the volume", r::<Volume>())
        .errors(&[409]),
        op(
            Get,
            "/v1/attachments",
            "listAttachments",
            "List the attachments the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "attachments", r::<AttachmentList>()),
        op(
            Get,
            "/v1/volumes/{id}/stats",
            "volumeStats",
            "Live figures of a volume",
        )
        .ok(200, "figures", r::<VolumeStats>()),
        op(
            Post,
            "/v1/volumes/{id}/attachments",
            "attachVolume",
            "Export a volume over NBD",
        )
        .optional_body(RefOr::T(Schema::OneOf(
            utoipa::openapi::schema::OneOfBuilder::new()
                .description(Some("the transport; null (or no body) is `unix`"))
                .item(r::<Attach>())
                .item(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Null)
                        .build(),
                )
                .build(),
        )))
        .ok(201, "attached", r::<Attachment>())
        .errors(&[409]),
        op(
            Get,
            "/v1/volumes/{id}/attachments",
            "getAttachment",
            "Show a volume's attachment",
        )
        .ok(200, "the attachment", r::<Attachment>()),
        op(
            Delete,
            "/v1/volumes/{id}/attachments",
            "detachVolume",
            "Stop exporting a volume",
        )
        .none(204, "detached"),
        op(Get, "/v1/snapshots/{id}", "getSnapshot", "Show a snapshot").ok(
            200,
            "the snapshot",
            r::<Snapshot>(),
        ),
        op(
            Delete,
            "/v1/snapshots/{id}",
            "deleteSnapshot",
            "Delete a snapshot",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Post,
            "/v1/snapshots/{id}/clone",
            "cloneSnapshot",
            "Clone a snapshot into a new volume (O(1))",
        )
        .body(r::<NewName>())
        .ok(201, "created", r::<Volume>())
        .errors(&[409, 507]),
        op(
            Post,
            "/v1/snapshot-groups",
            "createSnapshotGroup",
            "Snapshot several volumes at one instant (a checkpoint group)",
        )
        .body(r::<CreateSnapshotGroup>())
        .ok(201, "taken", r::<SnapshotGroup>())
        .errors(&[409]),
        op(
            Get,
            "/v1/snapshot-groups",
            "listSnapshotGroups",
            "List the checkpoint groups the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "groups", r::<SnapshotGroupList>()),
        op(
            Get,
            "/v1/snapshot-groups/{id}",
            "getSnapshotGroup",
            "Show a checkpoint group",
        )
        .ok(200, "the group", r::<SnapshotGroup>()),
        op(
            Delete,
            "/v1/snapshot-groups/{id}",
            "deleteSnapshotGroup",
            "Delete a checkpoint group and its snapshots",
        )
        .none(204, "deleted"),
        op(
            Post,
            "/v1/snapshot-groups/{id}/clone",
            "cloneSnapshotGroup",
            "Clone every member of a group into a new volume PREFIX-VOLUME (all or none)",
        )
        .body(r::<CloneGroup>())
        .ok(201, "created", r::<ClonedVolumes>())
        .errors(&[409, 507]),
        op(
            Post,
            "/v1/snapshot-schedules",
            "createSnapshotSchedule",
            "Make a snapshot schedule: a snapshot of one volume (or a checkpoint group of \
             several) every interval, keeping the newest N it took",
        )
        .body(r::<CreateSnapshotSchedule>())
        .ok(201, "made", r::<SnapshotSchedule>())
        .errors(&[409]),
        op(
            Get,
            "/v1/snapshot-schedules",
            "listSnapshotSchedules",
            "List the snapshot schedules the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "schedules", r::<SnapshotScheduleList>()),
        op(
            Get,
            "/v1/snapshot-schedules/{id}",
            "getSnapshotSchedule",
            "Show a snapshot schedule: its last run, next run and last error",
        )
        .ok(200, "the schedule", r::<SnapshotSchedule>()),
        op(
            Patch,
            "/v1/snapshot-schedules/{id}",
            "updateSnapshotSchedule",
            "Change only the named fields of a snapshot schedule (interval, keep, paused)",
        )
        .body(r::<SnapshotSchedulePatch>())
        .ok(200, "the schedule", r::<SnapshotSchedule>())
        .errors(&[409]),
        op(
            Delete,
            "/v1/snapshot-schedules/{id}",
            "deleteSnapshotSchedule",
            "Delete a snapshot schedule (the snapshots it took stay)",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Post,
            "/v1/networks",
            "createNetwork",
            "Create a tenant network (a VPC)",
        )
        .body(r::<CreateNetwork>())
        .ok(201, "created", r::<Network>())
        .errors(&[409]),
        op(
            Get,
            "/v1/networks",
            "listNetworks",
            "List the networks the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "networks", r::<NetworkList>()),
        op(
            Get,
            "/v1/networks/{id}",
            "getNetwork",
            "Show a network (by id or name)",
        )
        .ok(200, "the network", r::<Network>()),
        op(
            Delete,
            "/v1/networks/{id}",
            "deleteNetwork",
            "Delete an empty network",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(Get, "/v1/network-flows", "listNetworkFlows", "The flows tenant networks compiled to on this node, with counters (admin)")
            .ok(200, "flows", r::<FlowList>()),
        op(Get, "/v1/networks/{id}/stats", "networkStats", "A network's figures: per port bytes, packets, rates over 1 s and 10 s, drops by reason")
            .ok(200, "figures", r::<NetworkStats>()),
        op(Post, "/v1/networks/{id}/probe", "probeNetwork", "Active probes: echo requests from each port's gateway to the port, with their loss and round trips")
            .body(r::<ProbeNetwork>())
            .ok(200, "per port", r::<NetworkProbe>()),
        op(Put, "/v1/networks/{id}/bandwidth", "setNetworkBandwidth", "Cap what a network's ports send together (the capacity their guarantees share)")
            .body(r::<SetNetworkBandwidth>())
            .ok(200, "the network", r::<Network>())
            .errors(&[409]),
        op(Put, "/v1/network-ports/{id}/bandwidth", "setPortBandwidth", "Cap what a port sends, and guarantee it a share of its network's cap (work-conserving)")
            .body(r::<SetPortBandwidth>())
            .ok(200, "the port", r::<NetworkPort>())
            .errors(&[409]),
        op(
            Post,
            "/v1/networks/{id}/subnets",
            "createSubnet",
            "Create a subnet of a network",
        )
        .body(r::<CreateSubnet>())
        .ok(201, "created", r::<Subnet>())
        .errors(&[409]),
        op(
            Get,
            "/v1/networks/{id}/subnets",
            "listSubnets",
            "List a network's subnets",
        )
        .ok(200, "subnets", r::<SubnetList>()),
        op(
            Post,
            "/v1/networks/{id}/ports",
            "createNetworkPort",
            "Create a port: an address, a MAC and a TAP device on this node",
        )
        .body(r::<CreateNetworkPort>())
        .ok(201, "created", r::<NetworkPort>())
        .errors(&[409]),
        op(
            Get,
            "/v1/networks/{id}/ports",
            "listNetworkPorts",
            "List a network's ports",
        )
        .ok(200, "ports", r::<NetworkPortList>()),
        op(
            Post,
            "/v1/networks/{id}/routers",
            "createRouter",
            "Create a router between subnets of a network",
        )
        .body(r::<CreateRouter>())
        .ok(201, "created", r::<NetworkRouter>())
        .errors(&[409]),
        op(
            Get,
            "/v1/networks/{id}/routers",
            "listRouters",
            "List a network's routers",
        )
        .ok(200, "routers", r::<NetworkRouterList>()),
        op(Get, "/v1/subnets/{id}", "getSubnet", "Show a subnet").ok(
            200,
            "the subnet",
            r::<Subnet>(),
        ),
        op(
            Delete,
            "/v1/subnets/{id}",
            "deleteSubnet",
            "Delete a subnet no port or router uses",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Get,
            "/v1/network-ports/{id}",
            "getNetworkPort",
            "Show a port",
        )
        .ok(200, "the port", r::<NetworkPort>()),
        op(
            Delete,
            "/v1/network-ports/{id}",
            "deleteNetworkPort",
            "Delete a port and its device",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Put,
            "/v1/network-ports/{id}/security-groups",
            "setPortSecurityGroups",
            "Set a port's security groups",
        )
        .body(r::<SetSecurityGroups>())
        .ok(200, "the port", r::<NetworkPort>())
        .errors(&[409]),
        op(
            Post,
            "/v1/network-ports/{id}/trace",
            "traceNetworkPacket",
            "Trace a packet from a port, told by the objects and rules it meets",
        )
        .body(r::<TraceNetworkPacket>())
        .ok(200, "the trace", r::<NetworkTrace>()),
        op(
            Put,
            "/v1/routers/{id}/gateway",
            "setRouterGateway",
            "Give a router a leg on an external network (SNAT of its subnets), or take it away",
        )
        .body(r::<SetRouterGateway>())
        .ok(200, "the router", r::<NetworkRouter>())
        .errors(&[409]),
        op(
            Post,
            "/v1/floating-ips",
            "createFloatingIp",
            "Allocate a floating IP on an external network, mapped 1:1 to a port",
        )
        .body(r::<CreateFloatingIp>())
        .ok(201, "allocated", r::<FloatingIp>())
        .errors(&[409]),
        op(
            Get,
            "/v1/floating-ips",
            "listFloatingIps",
            "List the floating IPs the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "floating IPs", r::<FloatingIpList>()),
        op(
            Get,
            "/v1/floating-ips/{id}",
            "getFloatingIp",
            "Show a floating IP (by id or address)",
        )
        .ok(200, "the floating IP", r::<FloatingIp>()),
        op(
            Delete,
            "/v1/floating-ips/{id}",
            "deleteFloatingIp",
            "Release a floating IP",
        )
        .none(204, "released"),
        op(
            Put,
            "/v1/floating-ips/{id}/port",
            "associateFloatingIp",
            "Map a floating IP to a port, or free it of one",
        )
        .body(r::<AssociateFloatingIp>())
        .ok(200, "the floating IP", r::<FloatingIp>())
        .errors(&[409]),
        op(
            Post,
            "/v1/networks/{id}/load-balancers",
            "createLoadBalancer",
            "Create a load balancer: a VIP on a subnet, listeners, backends, health check",
        )
        .body(r::<CreateLoadBalancer>())
        .ok(201, "created", r::<LoadBalancer>())
        .errors(&[409]),
        op(
            Get,
            "/v1/networks/{id}/load-balancers",
            "listLoadBalancers",
            "List a network's load balancers",
        )
        .ok(200, "load balancers", r::<LoadBalancerList>()),
        op(
            Get,
            "/v1/load-balancers/{id}",
            "getLoadBalancer",
            "Show a load balancer and its backends' health",
        )
        .ok(200, "the load balancer", r::<LoadBalancer>()),
        op(
            Delete,
            "/v1/load-balancers/{id}",
            "deleteLoadBalancer",
            "Delete a load balancer (a floating IP on its VIP stays allocated)",
        )
        .none(204, "deleted"),
        op(
            Put,
            "/v1/load-balancers/{id}/listeners",
            "setLoadBalancerListeners",
            "Replace a load balancer's listeners, backends and weights",
        )
        .body(r::<SetLoadBalancerListeners>())
        .ok(200, "the load balancer", r::<LoadBalancer>())
        .errors(&[409]),
        op(
            Put,
            "/v1/load-balancers/{id}/settings",
            "setLoadBalancerSettings",
            "Change a load balancer's session affinity or health check",
        )
        .body(r::<SetLoadBalancerSettings>())
        .ok(200, "the load balancer", r::<LoadBalancer>())
        .errors(&[409]),
        op(Get, "/v1/routers/{id}", "getRouter", "Show a router").ok(
            200,
            "the router",
            r::<NetworkRouter>(),
        ),
        op(
            Delete,
            "/v1/routers/{id}",
            "deleteRouter",
            "Delete a router",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Put,
            "/v1/routers/{id}/subnets",
            "setRouterSubnets",
            "Set the subnets a router connects",
        )
        .body(r::<SetRouterSubnets>())
        .ok(200, "the router", r::<NetworkRouter>())
        .errors(&[409]),
        op(
            Post,
            "/v1/security-groups",
            "createSecurityGroup",
            "Create a security group (all egress allowed, no ingress)",
        )
        .body(r::<CreateSecurityGroup>())
        .ok(201, "created", r::<SecurityGroup>())
        .errors(&[409]),
        op(
            Get,
            "/v1/security-groups",
            "listSecurityGroups",
            "List the security groups the caller may see",
        )
        .query(
            "tenant",
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            "only this tenant's",
        )
        .ok(200, "groups", r::<SecurityGroupList>()),
        op(
            Get,
            "/v1/security-groups/{id}",
            "getSecurityGroup",
            "Show a security group",
        )
        .ok(200, "the group", r::<SecurityGroup>()),
        op(
            Delete,
            "/v1/security-groups/{id}",
            "deleteSecurityGroup",
            "Delete a security group no port uses",
        )
        .none(204, "deleted")
        .errors(&[409]),
        op(
            Post,
            "/v1/security-groups/{id}/rules",
            "addSecurityGroupRule",
            "Add an allow rule",
        )
        .body(r::<CreateRule>())
        .ok(201, "the group", r::<SecurityGroup>())
        .errors(&[409]),
        op(
            Delete,
            "/v1/security-groups/{id}/rules/{rule}",
            "deleteSecurityGroupRule",
            "Remove a rule",
        )
        .ok(200, "the group", r::<SecurityGroup>())
        .errors(&[409]),
        op(
            Get,
            "/v1/audit",
            "listAudit",
            "The audit log, newest first (admin)",
        )
        .query(
            "limit",
            int(1, LIST_LIMIT_MAX, false),
            "at most this many, the newest",
        )
        .query(
            "since",
            int(0, TIME_MAX, false),
            "only entries at or after this time, seconds since the epoch",
        )
        .ok(200, "entries", r::<AuditList>()),
        op(
            Get,
            "/v1/events",
            "listEvents",
            "Events of the objects the caller sees, newest first; with after, those after it, oldest first (long poll with wait)",
        )
        .query(
            "limit",
            int(1, LIST_LIMIT_MAX, false),
            "at most this many (default 100)",
        )
        .query(
            "since",
            int(0, TIME_MAX, false),
            "only events at or after this time, seconds since the epoch",
        )
        .query(
            "type",
            text(EVENT_TYPE_PATTERN, EVENT_TYPE_MAX_LEN, false),
            "only this type (device.faulted) or kind (device)",
        )
        .query(
            "tenant",
            text(TENANT_NAME_PATTERN, TENANT_NAME_MAX_LEN, false),
            "only this tenant's (admins)",
        )
        .query(
            "after",
            int(0, u64::MAX >> 1, false),
            "follow: only events after this position (a cursor), oldest first",
        )
        .query(
            "wait",
            int(0, EVENT_WAIT_MAX, false),
            "with after: wait up to this many seconds for an event",
        )
        .ok(200, "events and the cursor", r::<EventList>()),
        op(
            Post,
            "/v1/switches",
            "createSwitch",
            "Create a switch (admin)",
        )
        .body(r::<CreateSwitch>())
        .ok(201, "created", r::<Switch>())
        .errors(&[409]),
        op(Get, "/v1/switches", "listSwitches", "List switches (admin)").ok(
            200,
            "switches",
            r::<SwitchList>(),
        ),
        op(Get, "/v1/switches/{name}", "getSwitch", "Show a switch").ok(
            200,
            "the switch",
            r::<Switch>(),
        ),
        op(
            Delete,
            "/v1/switches/{name}",
            "deleteSwitch",
            "Delete a switch",
        )
        .none(204, "deleted"),
        op(
            Post,
            "/v1/switches/{name}/ports",
            "addPort",
            "Add a port to a switch",
        )
        .body(r::<SwitchPort>())
        .ok(201, "added", r::<Switch>())
        .errors(&[409]),
        op(
            Get,
            "/v1/switches/{name}/ports",
            "portCounters",
            "A switch's port counters",
        )
        .ok(200, "counters", r::<PortCounterList>()),
        op(
            Delete,
            "/v1/switches/{name}/ports/{port}",
            "removePort",
            "Remove a port",
        )
        .none(204, "removed"),
        op(Post, "/v1/switches/{name}/flows", "addFlow", "Add a flow")
            .body(r::<AddFlow>())
            .none(201, "added"),
        op(
            Get,
            "/v1/switches/{name}/flows",
            "dumpFlows",
            "A switch's flows",
        )
        .ok(200, "flows", r::<FlowList>()),
        op(
            Post,
            "/v1/switches/{name}/flows/delete",
            "deleteFlows",
            "Delete the flows a match selects",
        )
        .body(r::<DeleteFlows>())
        .ok(200, "how many", r::<Deleted>()),
        op(
            Post,
            "/v1/switches/{name}/trace",
            "traceSwitch",
            "Trace a packet through a switch's pipeline",
        )
        .body(r::<TraceRequest>())
        .ok(200, "the trace", r::<super::switches::Trace>())
        .errors(&[409]),
    ]
}

/// The whole document.
pub fn document() -> OpenApi {
    let error = || json(r::<ErrorBody>());
    let mut paths = PathsBuilder::new();
    for o in operations().into_iter().chain(placement_operations()) {
        let mut b = OperationBuilder::new()
            .operation_id(Some(o.id))
            .summary(Some(o.summary));
        let mut params = path_params(o.path);
        params.extend(o.query);
        if o.path == "/v1/volumes" && matches!(o.method, HttpMethod::Post) {
            params.push(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .schema(Some(free_text(1, REQUEST_ID_MAX_LEN, false)))
                    .build(),
            );
        }
        if !params.is_empty() {
            b = b.parameters(Some(params));
        }
        let has_body = o.body.is_some();
        if let Some(s) = o.body {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(if o.body_optional {
                        Required::False
                    } else {
                        Required::True
                    }))
                    .content("application/json", json(s))
                    .build(),
            ));
        }
        let (status, what, schema) = o.ok;
        let mut ok = ResponseBuilder::new().description(what);
        if let Some(s) = schema {
            ok = ok.content("application/json", json(s));
        }
        b = b.response(status.to_string(), ok.build());
        let mut errs: Vec<u16> = COMMON.to_vec();
        if has_body || o.method == HttpMethod::Post {
            errs.push(413);
        }
        errs.extend(o.errors);
        errs.sort_unstable();
        errs.dedup();
        for e in errs {
            b = b.response(
                e.to_string(),
                ResponseBuilder::new()
                    .description(meaning(e))
                    .content("application/json", error())
                    .build(),
            );
        }
        paths = paths.path(o.path, PathItem::new(o.method, b.build()));
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Strata API")
                .version("1")
                .description(Some(
                    "Storage and network virtualization. Bearer-token authentication; errors \
                     are {\"error\": {code, message, field}}. A resource the caller may not \
                     see answers 404.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Schemas::openapi().components)
        .security(Some([SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]))
        .build();
    if let Some(c) = doc.components.as_mut() {
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    doc
}

/// The document as the checked-in file holds it (pretty JSON, a final newline).
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("the document is JSON");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// Every `/v1` route `api.rs` serves is an operation of the document (a route added
    /// without its entry would be invisible to clients and to the fuzzer).
    #[test]
    fn every_route_is_documented() {
        let api = include_str!("../api.rs");
        let doc = super::document();
        let mut missing = Vec::new();
        for part in api.split(".route(").skip(1) {
            let Some(path) = part
                .trim_start()
                .strip_prefix('"')
                .and_then(|p| p.split('"').next())
            else {
                continue;
            };
            if path.starts_with("/v1/")
                && path != "/v1/openapi.json"
                && !doc.paths.paths.contains_key(path)
            {
                missing.push(path.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "routes without an operation: {missing:?}"
        );
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::render();
        if std::env::var_os("STRATA_BLESS").is_some() {
            std::fs::write(path, &generated).expect("writing openapi.json");
            return;
        }
        let checked_in = std::fs::read_to_string(path).expect("reading openapi.json");
        assert!(
            checked_in == generated,
            "crates/strata-control/openapi.json differs from the document the wire types \
             generate; regenerate it with `STRATA_BLESS=1 cargo test -p strata-control --lib \
             openapi` and review the diff"
        );
    }
}
