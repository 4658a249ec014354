//! The kinds `strata apply` and `strata get -o yaml` know, in one table ([`KINDS`]): each
//! entry is the kind's fields (what planning needs) and how it is read, made, changed and
//! deleted through the REST API. Adding a kind is one entry here.
//!
//! Invariants: a read object carries every field of its kind, in the canonical form of
//! `model.rs`, with references to other objects as names (ids the reads did not name stay
//! ids, which the daemon also accepts); writes send ids, resolved from the reads and from
//! the objects this apply made, so a name shared by two tenants never picks the wrong one.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};

use super::super::{enc, Client};
use super::model::{FieldSpec as F, FieldType as T, Fields, Key, KindMeta, Object};

/// Reads the objects of the kind (of `tenant`, or of every tenant the caller sees).
pub type ReadFn = fn(&Client, &mut Ids, Option<&str>) -> Result<Vec<Object>>;
/// Makes `want` (creates) or changes `have` into `want` (updates).
pub type WriteFn = fn(&Client, &mut Ids, &Object, Option<&Object>) -> Result<()>;
/// Deletes an object.
pub type DeleteFn = fn(&Client, &Ids, &Key) -> Result<()>;

/// A kind: its description and its calls.
pub struct Kind {
    /// Fields, rank, scope.
    pub meta: KindMeta,
    /// How it is read.
    pub read: ReadFn,
    /// How it is made (`None` as the current object) or changed.
    pub write: WriteFn,
    /// How it is deleted.
    pub delete: DeleteFn,
}

impl AsRef<KindMeta> for Kind {
    fn as_ref(&self) -> &KindMeta {
        &self.meta
    }
}

/// Ids of the objects read or made, and the names of ids met in references.
#[derive(Debug, Default)]
pub struct Ids {
    ids: BTreeMap<Key, String>,
    names: BTreeMap<(&'static str, String), String>,
    /// A security group's rules: (group, rule without its id) → rule id.
    rules: BTreeMap<(Key, String), String>,
}

impl Ids {
    fn put(&mut self, key: &Key, id: &str) {
        self.ids.insert(key.clone(), id.to_string());
        self.names
            .insert((key.kind, id.to_string()), key.name.clone());
    }
    /// The id of `name` of `kind` in `tenant`, else the name itself (the daemon resolves
    /// names within the caller's tenant).
    fn id(&self, kind: &'static str, tenant: &Option<String>, name: &str) -> String {
        let key = Key {
            kind,
            tenant: tenant.clone(),
            name: name.to_string(),
        };
        self.ids
            .get(&key)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
    fn of(&self, key: &Key) -> Result<String> {
        self.ids
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow!("internal: no id known for {key}"))
    }
    /// The name of the object of `kind` with id `id`, else the id.
    fn name(&self, kind: &'static str, id: &str) -> String {
        self.names
            .get(&(kind, id.to_string()))
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

const fn opt(name: &'static str, ty: T) -> F {
    F::new(name, ty).nullable()
}

const QUOTA: &[F] = &[
    opt("capacity", T::Size),
    opt("volumes", T::Int),
    opt("snapshots", T::Int),
    opt("iops", T::Int),
    opt("gpus", T::Int),
    opt("networks", T::Int),
    opt("ports", T::Int),
    opt("snapshot_schedules", T::Int),
];
const SHARE: &[F] = &[F::new("weight", T::Int), opt("reservation_iops", T::Int)];
const QOS: &[F] = &[
    opt("iops_limit", T::Int),
    opt("bandwidth_limit", T::Size),
    opt("burst_iops", T::Int),
    opt("burst_bandwidth", T::Size),
];
const SWITCH_PORT: &[F] = &[
    F::new("name", T::Str).required(),
    opt("kind", T::Str),
    opt("peer", T::Str),
    opt("vni", T::Int),
    opt("vlan", T::Int),
    opt("remote", T::Str),
    opt("local", T::Str),
    opt("dstport", T::Int),
];
const RULE: &[F] = &[
    F::new("direction", T::Str).required(),
    opt("protocol", T::Str),
    opt("port_min", T::Int),
    opt("port_max", T::Int),
    opt("remote_cidr", T::Str),
    opt("remote_group", T::Str).refers("security_group"),
];
const BACKEND: &[F] = &[
    opt("port", T::Str).refers("port"),
    opt("ip", T::Str),
    F::new("target_port", T::Int),
    F::new("weight", T::Int),
];
const LISTENER: &[F] = &[
    F::new("protocol", T::Str).required(),
    F::new("port", T::Int).required(),
    F::new("backends", T::List(BACKEND, None)),
];
const HEALTH: &[F] = &[
    F::new("kind", T::Str),
    opt("path", T::Str),
    F::new("interval_ms", T::Int),
    F::new("timeout_ms", T::Int),
    F::new("rise", T::Int),
    F::new("fall", T::Int),
];

fn no_canon(_: &mut Fields) {}

/// A rule's protocol the daemon fills in when none is given.
fn rule_canon(f: &mut Fields) {
    if let Some(Value::Array(rules)) = f.get_mut("rules") {
        for r in rules.iter_mut().filter_map(Value::as_object_mut) {
            if r.get("protocol").and_then(Value::as_str) == Some("any") {
                r.remove("protocol");
            }
        }
        let _ = super::file::canonical_list(rules, None);
    }
}

const fn meta(
    name: &'static str,
    rank: u8,
    scoped: bool,
    prunable: bool,
    fields: &'static [F],
) -> KindMeta {
    KindMeta {
        name,
        rank,
        scoped,
        prunable,
        keep: &[],
        name_refers: None,
        fields,
        canon: no_canon,
    }
}

/// Every kind, in apply order.
pub static KINDS: &[Kind] = &[
    Kind {
        meta: meta(
            "tenant",
            0,
            false,
            false,
            &[
                F::new("quota", T::Map(QUOTA)),
                F::new("share", T::Map(SHARE)),
            ],
        ),
        read: read_tenants,
        write: write_tenant,
        delete: |c, _, k| del(c, &format!("/v1/tenants/{}", enc(&k.name))),
    },
    Kind {
        meta: meta(
            "volume",
            1,
            true,
            true,
            &[
                F::new("size", T::Size).required().grow_only(),
                F::new("pool", T::Str).replace(),
                opt("class", T::Str).replace(),
                F::new("copies", T::Int).replace(),
                F::new("encrypted", T::Bool).replace(),
                F::new("qos", T::Map(QOS)),
            ],
        ),
        read: read_volumes,
        write: write_volume,
        delete: |c, ids, k| del(c, &format!("/v1/volumes/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: KindMeta {
            canon: schedule_canon,
            ..meta(
                "snapshot_schedule",
                2,
                true,
                true,
                &[
                    F::new("volumes", T::Strs)
                        .required()
                        .replace()
                        .refers("volume"),
                    F::new("interval", T::Str).required(),
                    F::new("keep", T::Int).required(),
                    F::new("paused", T::Bool),
                ],
            )
        },
        read: read_schedules,
        write: write_schedule,
        delete: |c, ids, k| del(c, &format!("/v1/snapshot-schedules/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: meta(
            "switch",
            3,
            false,
            true,
            &[
                F::new("ports", T::List(SWITCH_PORT, Some("name"))),
                F::new("flows", T::Strs),
            ],
        ),
        read: read_switches,
        write: write_switch,
        delete: |c, _, k| del(c, &format!("/v1/switches/{}", enc(&k.name))),
    },
    Kind {
        meta: meta(
            "network",
            4,
            true,
            true,
            &[
                F::new("cidr", T::Str).required().replace(),
                F::new("external", T::Bool).replace(),
                opt("cap_bps", T::Int),
            ],
        ),
        read: read_networks,
        write: write_network,
        delete: |c, ids, k| del(c, &format!("/v1/networks/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: meta(
            "subnet",
            5,
            true,
            true,
            &[
                F::new("network", T::Str)
                    .required()
                    .replace()
                    .refers("network"),
                F::new("cidr", T::Str).required().replace(),
                F::new("gateway", T::Str).replace(),
                F::new("dhcp", T::Bool).replace(),
                F::new("dns", T::Strs).replace(),
            ],
        ),
        read: read_subnets,
        write: write_subnet,
        delete: |c, ids, k| del(c, &format!("/v1/subnets/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: meta(
            "router",
            6,
            true,
            true,
            &[
                F::new("network", T::Str)
                    .required()
                    .replace()
                    .refers("network"),
                F::new("subnets", T::Strs).refers("subnet"),
                opt("gateway", T::Str),
            ],
        ),
        read: read_routers,
        write: write_router,
        delete: |c, ids, k| del(c, &format!("/v1/routers/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: KindMeta {
            keep: &["default"],
            canon: rule_canon,
            ..meta(
                "security_group",
                7,
                true,
                true,
                &[
                    F::new("reevaluate_existing", T::Bool).replace(),
                    F::new("rules", T::List(RULE, None)),
                ],
            )
        },
        read: read_groups,
        write: write_group,
        delete: |c, ids, k| del(c, &format!("/v1/security-groups/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: KindMeta {
            keep: &[strata_control::controller::MONITOR_PORT],
            ..meta(
                "port",
                8,
                true,
                true,
                &[
                    F::new("network", T::Str)
                        .required()
                        .replace()
                        .refers("network"),
                    F::new("subnet", T::Str)
                        .required()
                        .replace()
                        .refers("subnet"),
                    F::new("ip", T::Str).replace(),
                    F::new("mac", T::Str).replace(),
                    F::new("veth_peer", T::Str).replace(),
                    F::new("security_groups", T::Strs).refers("security_group"),
                    opt("cap_bps", T::Int),
                    opt("min_bps", T::Int),
                ],
            )
        },
        read: read_ports,
        write: write_port,
        delete: |c, ids, k| del(c, &format!("/v1/network-ports/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: KindMeta {
            name_refers: Some("port"),
            ..meta(
                "floating_ip",
                9,
                true,
                true,
                &[F::new("network", T::Str).required().replace()],
            )
        },
        read: read_fips,
        write: write_fip,
        delete: |c, ids, k| del(c, &format!("/v1/floating-ips/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: KindMeta {
            canon: balancer_canon,
            ..meta(
                "load_balancer",
                10,
                true,
                true,
                &[
                    F::new("network", T::Str)
                        .required()
                        .replace()
                        .refers("network"),
                    F::new("subnet", T::Str)
                        .required()
                        .replace()
                        .refers("subnet"),
                    F::new("vip", T::Str).replace(),
                    F::new("listeners", T::List(LISTENER, None)).required(),
                    F::new("session_affinity", T::Bool),
                    F::new("health_check", T::Map(HEALTH)),
                ],
            )
        },
        read: read_balancers,
        write: write_balancer,
        delete: |c, ids, k| del(c, &format!("/v1/load-balancers/{}", enc(&ids.of(k)?))),
    },
    Kind {
        meta: meta(
            "job",
            11,
            true,
            true,
            &[
                F::new("gpus", T::Int).replace(),
                opt("gpu_model", T::Str).replace(),
                F::new("cpu_cores", T::Int).replace(),
                F::new("memory", T::Size).replace(),
                F::new("bandwidth_bps", T::Int).replace(),
                F::new("storage_bps", T::Int).replace(),
                F::new("same_island", T::Bool).replace(),
                opt("same_label", T::Str).replace(),
                F::new("priority", T::Int).replace(),
            ],
        ),
        read: read_jobs,
        write: write_job,
        delete: |c, _, k| {
            del(
                c,
                &format!(
                    "/v1/jobs/{}?tenant={}",
                    enc(&k.name),
                    enc(k.tenant.as_deref().unwrap_or_default())
                ),
            )
        },
    },
];

/// The kind named `name`.
pub fn kind(name: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.meta.name == name)
        .expect("kind from the table")
}

fn del(c: &Client, path: &str) -> Result<()> {
    c.req("DELETE", path, None).map(drop)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn tenant_q(tenant: Option<&str>) -> String {
    tenant.map_or(String::new(), |t| format!("?tenant={}", enc(t)))
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn object(kind: &'static str, tenant: Option<String>, name: String, fields: Value) -> Object {
    Object {
        key: Key { kind, tenant, name },
        fields: fields.as_object().cloned().unwrap_or_default(),
        line: 0,
        note: None,
    }
}

/// The sub-fields of `want`'s `field` mapping merged over `have`'s: what a whole-object
/// PUT must send so that fields the file leaves out keep their value.
fn merged(want: &Object, have: Option<&Object>, field: &str) -> Map<String, Value> {
    let mut m = have
        .and_then(|h| h.fields.get(field))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(w) = want.fields.get(field).and_then(Value::as_object) {
        m.extend(w.clone());
    }
    m
}

/// Whether `field` of `want` differs from `have`'s (absent in `want`: no).
fn changed(want: &Object, have: Option<&Object>, field: &str) -> bool {
    match want.fields.get(field) {
        None => false,
        Some(w) => have.and_then(|h| h.fields.get(field)) != Some(w),
    }
}

/// The sub-fields of the `field` mapping that `want` names and that differ from `have`'s.
fn changed_sub(want: &Object, have: Option<&Object>, field: &str) -> Map<String, Value> {
    let cur = have
        .and_then(|h| h.fields.get(field))
        .and_then(Value::as_object);
    want.fields
        .get(field)
        .and_then(Value::as_object)
        .map(|w| {
            w.iter()
                .filter(|(k, v)| cur.and_then(|c| c.get(*k)) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn strs(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

// ---- tenants

fn quota_wire(q: &Map<String, Value>) -> Map<String, Value> {
    q.iter()
        .map(|(k, v)| match k.as_str() {
            "capacity" => ("capacity_bytes".to_string(), v.clone()),
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

fn read_tenants(c: &Client, _: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for t in items(&c.req("GET", "/v1/tenants", None)?) {
        let name = s(&t["name"]);
        if tenant.is_some_and(|w| w != name) {
            continue;
        }
        let q = &t["quota"];
        let mut fields = json!({
            "quota": {
                "capacity": q["capacity_bytes"], "volumes": q["volumes"],
                "snapshots": q["snapshots"], "iops": q["iops"], "gpus": q["gpus"],
                "networks": q["networks"], "ports": q["ports"],
                "snapshot_schedules": q["snapshot_schedules"],
            },
        });
        // A tenant's share is the admin's to read; a tenant token sees its quota only.
        if let Ok(sh) = c.req("GET", &format!("/v1/tenants/{}/share", enc(&name)), None) {
            fields["share"] =
                json!({"weight": sh["weight"], "reservation_iops": sh["reservation_iops"]});
        }
        out.push(object("tenant", None, name, fields));
    }
    Ok(out)
}

fn write_tenant(c: &Client, _: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let name = enc(&want.key.name);
    match have {
        None => {
            let q = want.fields.get("quota").and_then(Value::as_object);
            let quota: Map<String, Value> = q
                .map(quota_wire)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .collect();
            c.req(
                "POST",
                "/v1/tenants",
                Some(json!({"name": want.key.name, "quota": quota})),
            )?;
        }
        Some(_) => {
            let q = changed_sub(want, have, "quota");
            if !q.is_empty() {
                c.req(
                    "PATCH",
                    &format!("/v1/tenants/{name}/quota"),
                    Some(Value::Object(quota_wire(&q))),
                )?;
            }
        }
    }
    if want.fields.contains_key("share") && !changed_sub(want, have, "share").is_empty() {
        let sh = merged(want, have, "share");
        c.req(
            "PUT",
            &format!("/v1/tenants/{name}/share"),
            Some(Value::Object(sh)),
        )?;
    }
    Ok(())
}

// ---- volumes

fn read_volumes(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut q = format!(
            "/v1/volumes?limit=1000{}",
            tenant.map_or(String::new(), |t| format!("&tenant={}", enc(t)))
        );
        if let Some(p) = &page {
            q.push_str(&format!("&page_token={}", enc(p)));
        }
        let v = c.req("GET", &q, None)?;
        for x in items(&v) {
            let id = s(&x["id"]);
            let qos = &x["qos"];
            let mut o = object(
                "volume",
                Some(s(&x["tenant"])),
                s(&x["name"]),
                json!({
                    "size": x["size"], "pool": x["pool"], "class": x["class"],
                    "copies": x["replicas"], "encrypted": x["encrypted"],
                    "qos": {
                        "iops_limit": qos["iops_limit"], "bandwidth_limit": qos["bandwidth_limit"],
                        "burst_iops": qos["burst_iops"], "burst_bandwidth": qos["burst_bandwidth"],
                    },
                }),
            );
            if let Ok(d) = c.req("GET", &format!("/v1/volumes/{}", enc(&id)), None) {
                let allocated = d["allocated"].as_u64().unwrap_or(0);
                let snaps = d["snapshots"].as_u64().unwrap_or(0);
                if allocated > 0 || snaps > 0 {
                    o.note = Some(format!(
                        "volume holds {} of data and {snaps} snapshot(s)",
                        super::model::size_text(allocated)
                    ));
                }
            }
            ids.put(&o.key, &id);
            out.push(o);
        }
        match v["next_page_token"].as_str() {
            Some(p) if !p.is_empty() => page = Some(p.to_string()),
            _ => return Ok(out),
        }
    }
}

fn write_volume(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let f = &want.fields;
    let qos = f
        .get("qos")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(_) = have else {
        let mut b = json!({"name": want.key.name, "tenant": want.key.tenant, "size": f["size"]});
        for (from, to) in [
            ("pool", "pool"),
            ("class", "class"),
            ("copies", "replicas"),
            ("encrypted", "encrypted"),
        ] {
            if let Some(v) = f.get(from).filter(|v| !v.is_null()) {
                b[to] = v.clone();
            }
        }
        for k in ["iops_limit", "bandwidth_limit"] {
            if let Some(v) = qos.get(k).filter(|v| !v.is_null()) {
                b[k] = v.clone();
            }
        }
        let v = c.req("POST", "/v1/volumes", Some(b))?;
        let id = s(&v["id"]);
        ids.put(&want.key, &id);
        let burst: Map<String, Value> = qos
            .into_iter()
            .filter(|(k, v)| k.starts_with("burst") && !v.is_null())
            .collect();
        if !burst.is_empty() {
            c.req(
                "PATCH",
                &format!("/v1/volumes/{}/qos", enc(&id)),
                Some(Value::Object(burst)),
            )?;
        }
        return Ok(());
    };
    let id = ids.of(&want.key)?;
    if changed(want, have, "size") {
        c.req(
            "PATCH",
            &format!("/v1/volumes/{}", enc(&id)),
            Some(json!({"size": f["size"]})),
        )?;
    }
    let q = changed_sub(want, have, "qos");
    if !q.is_empty() {
        c.req(
            "PATCH",
            &format!("/v1/volumes/{}/qos", enc(&id)),
            Some(Value::Object(q)),
        )?;
    }
    Ok(())
}

// ---- snapshot schedules: named volumes, the interval as the daemon writes it

/// An interval as the daemon writes it back (`60m` is `1h`), on both sides.
fn schedule_canon(f: &mut Fields) {
    if let Some(Value::String(i)) = f.get("interval") {
        if let Ok(secs) = strata_control::wire::parse_interval("interval", i) {
            f.insert(
                "interval".into(),
                Value::from(strata_control::controller::interval_text(secs)),
            );
        }
    }
}

fn read_schedules(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    // Volume names first: a schedule names its volumes.
    read_volumes(c, ids, tenant)?;
    let mut out = Vec::new();
    for x in items(&c.req(
        "GET",
        &format!("/v1/snapshot-schedules{}", tenant_q(tenant)),
        None,
    )?) {
        let volumes: BTreeSet<String> = strs(Some(&x["volumes"]))
            .iter()
            .map(|id| ids.name("volume", id))
            .collect();
        let mut o = object(
            "snapshot_schedule",
            Some(s(&x["tenant"])),
            s(&x["name"]),
            json!({
                "volumes": volumes, "interval": x["interval"], "keep": x["keep"],
                "paused": x["paused"],
            }),
        );
        let taken = x["taken"].as_u64().unwrap_or(0);
        if taken > 0 {
            o.note = Some(format!(
                "schedule took {taken} snapshot(s); those it keeps stay, as if made by hand"
            ));
        }
        ids.put(&o.key, &s(&x["id"]));
        out.push(o);
    }
    Ok(out)
}

fn write_schedule(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let t = &want.key.tenant;
    let Some(have) = have else {
        let f = &want.fields;
        let volumes: Vec<String> = strs(f.get("volumes"))
            .iter()
            .map(|n| ids.id("volume", t, n))
            .collect();
        let mut b = json!({
            "name": want.key.name, "volumes": volumes, "interval": f["interval"],
            "keep": f["keep"],
        });
        if let Some(p) = f.get("paused") {
            b["paused"] = p.clone();
        }
        let v = c.req("POST", "/v1/snapshot-schedules", Some(b))?;
        ids.put(&want.key, &s(&v["id"]));
        return Ok(());
    };
    // Compared as the plan compares them (`60m` is `1h`): only what differs is sent.
    let (mut w, mut h) = (want.clone(), have.clone());
    schedule_canon(&mut w.fields);
    schedule_canon(&mut h.fields);
    let patch: Map<String, Value> = ["interval", "keep", "paused"]
        .into_iter()
        .filter(|k| changed(&w, Some(&h), k))
        .map(|k| (k.to_string(), w.fields[k].clone()))
        .collect();
    if !patch.is_empty() {
        c.req(
            "PATCH",
            &format!("/v1/snapshot-schedules/{}", enc(&ids.of(&want.key)?)),
            Some(Value::Object(patch)),
        )?;
    }
    Ok(())
}

// ---- switches

fn read_switches(c: &Client, _: &mut Ids, _: Option<&str>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for x in items(&c.req("GET", "/v1/switches", None)?) {
        let mut ports: Vec<Value> = x["ports"].as_array().cloned().unwrap_or_default();
        super::file::canonical_list(&mut ports, Some("name")).map_err(|e| anyhow!(e))?;
        let flows: BTreeSet<String> = strs(Some(&x["flows"]));
        out.push(object(
            "switch",
            None,
            s(&x["name"]),
            json!({"ports": ports, "flows": flows}),
        ));
    }
    Ok(out)
}

/// A flow's match, for a strict delete: its text up to `actions=`.
fn flow_match(flow: &str) -> String {
    match flow.find("actions=") {
        Some(i) => flow[..i].trim_end_matches([',', ' ']).to_string(),
        None => flow.to_string(),
    }
}

fn write_switch(c: &Client, _: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let sw = format!("/v1/switches/{}", enc(&want.key.name));
    // A new switch comes with the daemon's own flows: the file's lists are made exact
    // against what it holds once made.
    let made;
    let have = match have {
        Some(h) => Some(h),
        None => {
            c.req("POST", "/v1/switches", Some(json!({"name": want.key.name})))?;
            made = read_switches(c, &mut Ids::default(), None)?
                .into_iter()
                .find(|o| o.key == want.key);
            made.as_ref()
        }
    };
    if let Some(Value::Array(wp)) = want.fields.get("ports") {
        let hp: Vec<Value> = have
            .and_then(|h| h.fields.get("ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in hp.iter().filter(|p| !wp.contains(p)) {
            c.req(
                "DELETE",
                &format!("{sw}/ports/{}", enc(&s(&p["name"]))),
                None,
            )?;
        }
        for p in wp.iter().filter(|p| !hp.contains(p)) {
            c.req("POST", &format!("{sw}/ports"), Some(p.clone()))?;
        }
    }
    if want.fields.contains_key("flows") {
        let (wf, hf) = (
            strs(want.fields.get("flows")),
            strs(have.and_then(|h| h.fields.get("flows"))),
        );
        for f in hf.difference(&wf) {
            c.req(
                "POST",
                &format!("{sw}/flows/delete"),
                super::super::body(&strata_control::wire::DeleteFlows {
                    filter: flow_match(f),
                    strict: true,
                }),
            )?;
        }
        for f in wf.difference(&hf) {
            c.req("POST", &format!("{sw}/flows"), Some(json!({ "flow": f })))?;
        }
    }
    Ok(())
}

// ---- networks, subnets, routers, ports

fn networks_of(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Value>> {
    let nets = items(&c.req("GET", &format!("/v1/networks{}", tenant_q(tenant)), None)?);
    for n in &nets {
        let key = Key {
            kind: "network",
            tenant: Some(s(&n["tenant"])),
            name: s(&n["name"]),
        };
        ids.put(&key, &s(&n["id"]));
    }
    Ok(nets)
}

fn read_networks(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    Ok(networks_of(c, ids, tenant)?
        .into_iter()
        .map(|n| {
            object(
                "network",
                Some(s(&n["tenant"])),
                s(&n["name"]),
                json!({"cidr": n["cidr"], "external": n["external"], "cap_bps": n["cap_bps"]}),
            )
        })
        .collect())
}

fn write_network(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let f = &want.fields;
    let id = match have {
        None => {
            let mut b =
                json!({"name": want.key.name, "tenant": want.key.tenant, "cidr": f["cidr"]});
            if let Some(e) = f.get("external") {
                b["external"] = e.clone();
            }
            let v = c.req("POST", "/v1/networks", Some(b))?;
            ids.put(&want.key, &s(&v["id"]));
            s(&v["id"])
        }
        Some(_) => ids.of(&want.key)?,
    };
    let set = f
        .get("cap_bps")
        .is_some_and(|v| have.is_some() || !v.is_null());
    if set && changed(want, have, "cap_bps") {
        c.req(
            "PUT",
            &format!("/v1/networks/{}/bandwidth", enc(&id)),
            Some(json!({"cap_bps": f["cap_bps"]})),
        )?;
    }
    Ok(())
}

/// Objects of a network's collection (`subnets`, `ports`, `routers`), over the networks
/// of `tenant`.
fn in_networks(
    c: &Client,
    ids: &mut Ids,
    tenant: Option<&str>,
    what: &str,
) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for n in networks_of(c, ids, tenant)? {
        let id = s(&n["id"]);
        for x in items(&c.req("GET", &format!("/v1/networks/{}/{what}", enc(&id)), None)?) {
            out.push((s(&n["tenant"]), x));
        }
    }
    Ok(out)
}

fn read_subnets(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (t, x) in in_networks(c, ids, tenant, "subnets")? {
        let o = object(
            "subnet",
            Some(t),
            s(&x["name"]),
            json!({
                "network": ids.name("network", &s(&x["network"])), "cidr": x["cidr"],
                "gateway": x["gateway"], "dhcp": x["dhcp"], "dns": strs(Some(&x["dns"])),
            }),
        );
        ids.put(&o.key, &s(&x["id"]));
        out.push(o);
    }
    Ok(out)
}

fn write_subnet(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    if have.is_some() {
        // Every field of a subnet is fixed: a change is a replacement, planned as such.
        return Ok(());
    }
    let f = &want.fields;
    let t = &want.key.tenant;
    let net = ids.id("network", t, &s(&f["network"]));
    let mut b = json!({"name": want.key.name, "cidr": f["cidr"]});
    for k in ["gateway", "dhcp", "dns"] {
        if let Some(v) = f.get(k) {
            b[k] = v.clone();
        }
    }
    let v = c.req(
        "POST",
        &format!("/v1/networks/{}/subnets", enc(&net)),
        Some(b),
    )?;
    ids.put(&want.key, &s(&v["id"]));
    Ok(())
}

fn read_routers(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    // Subnet names first: a router names its subnets.
    read_subnets(c, ids, tenant)?;
    let mut out = Vec::new();
    for (t, x) in in_networks(c, ids, tenant, "routers")? {
        let subnets: BTreeSet<String> = strs(Some(&x["subnets"]))
            .iter()
            .map(|id| ids.name("subnet", id))
            .collect();
        let gateway = match x["gateway"]["network"].as_str() {
            Some(n) => Value::from(ids.name("network", n)),
            None => Value::Null,
        };
        let o = object(
            "router",
            Some(t),
            s(&x["name"]),
            json!({
                "network": ids.name("network", &s(&x["network"])),
                "subnets": subnets, "gateway": gateway,
            }),
        );
        ids.put(&o.key, &s(&x["id"]));
        out.push(o);
    }
    Ok(out)
}

fn write_router(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let f = &want.fields;
    let t = &want.key.tenant;
    let subnets: Vec<String> = strs(f.get("subnets"))
        .iter()
        .map(|n| ids.id("subnet", t, n))
        .collect();
    let id = match have {
        None => {
            let net = ids.id("network", t, &s(&f["network"]));
            let v = c.req(
                "POST",
                &format!("/v1/networks/{}/routers", enc(&net)),
                Some(json!({"name": want.key.name, "subnets": subnets})),
            )?;
            ids.put(&want.key, &s(&v["id"]));
            s(&v["id"])
        }
        Some(_) => {
            let id = ids.of(&want.key)?;
            if changed(want, have, "subnets") {
                c.req(
                    "PUT",
                    &format!("/v1/routers/{}/subnets", enc(&id)),
                    Some(json!({ "subnets": subnets })),
                )?;
            }
            id
        }
    };
    let gw = f.get("gateway").filter(|g| have.is_some() || !g.is_null());
    if let Some(g) = gw.filter(|_| changed(want, have, "gateway")) {
        let net = g.as_str().map(|n| ids.id("network", t, n));
        c.req(
            "PUT",
            &format!("/v1/routers/{}/gateway", enc(&id)),
            Some(json!({ "network": net })),
        )?;
    }
    Ok(())
}

fn read_groups(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    let groups = items(&c.req(
        "GET",
        &format!("/v1/security-groups{}", tenant_q(tenant)),
        None,
    )?);
    for g in &groups {
        let key = Key {
            kind: "security_group",
            tenant: Some(s(&g["tenant"])),
            name: s(&g["name"]),
        };
        ids.put(&key, &s(&g["id"]));
    }
    let mut out = Vec::new();
    for g in groups {
        let key = Key {
            kind: "security_group",
            tenant: Some(s(&g["tenant"])),
            name: s(&g["name"]),
        };
        let mut rules = Vec::new();
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            let mut m = r.as_object().cloned().unwrap_or_default();
            let rid = m.remove("id").map(|v| s(&v)).unwrap_or_default();
            if let Some(Value::String(gid)) = m.get("remote_group").cloned() {
                m.insert(
                    "remote_group".into(),
                    Value::from(ids.name("security_group", &gid)),
                );
            }
            m.retain(|_, v| !v.is_null());
            let mut one = Fields::new();
            one.insert("rules".into(), json!([Value::Object(m.clone())]));
            rule_canon(&mut one);
            let canon = one["rules"][0].clone();
            ids.rules.insert((key.clone(), canon.to_string()), rid);
            rules.push(canon);
        }
        let _ = super::file::canonical_list(&mut rules, None);
        out.push(Object {
            key,
            fields: json!({"reevaluate_existing": g["reevaluate_existing"], "rules": rules})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            line: 0,
            note: None,
        });
    }
    Ok(out)
}

fn write_group(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let t = &want.key.tenant;
    // A new group comes with the daemon's default rules (all egress): the file's rules are
    // made exact against what it holds once made.
    let made;
    let (id, have) = match have {
        None => {
            let mut b = json!({"name": want.key.name, "tenant": t});
            if let Some(r) = want.fields.get("reevaluate_existing") {
                b["reevaluate_existing"] = r.clone();
            }
            let v = c.req("POST", "/v1/security-groups", Some(b))?;
            ids.put(&want.key, &s(&v["id"]));
            made = read_groups(c, ids, t.as_deref())?
                .into_iter()
                .find(|o| o.key == want.key);
            (s(&v["id"]), made.as_ref())
        }
        Some(h) => (ids.of(&want.key)?, Some(h)),
    };
    let Some(Value::Array(_)) = want.fields.get("rules") else {
        return Ok(());
    };
    let mut w = want.fields.clone();
    rule_canon(&mut w);
    let wr: Vec<Value> = w["rules"].as_array().cloned().unwrap_or_default();
    let hr: Vec<Value> = have
        .and_then(|h| h.fields.get("rules"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in hr.iter().filter(|r| !wr.contains(r)) {
        let rid = ids
            .rules
            .get(&(want.key.clone(), r.to_string()))
            .cloned()
            .ok_or_else(|| anyhow!("internal: no id known for a rule of {}", want.key))?;
        c.req(
            "DELETE",
            &format!("/v1/security-groups/{}/rules/{}", enc(&id), enc(&rid)),
            None,
        )?;
    }
    for r in wr.iter().filter(|r| !hr.contains(r)) {
        let mut b = r.clone();
        if let Some(g) = r["remote_group"].as_str() {
            b["remote_group"] = Value::from(ids.id("security_group", t, g));
        }
        c.req(
            "POST",
            &format!("/v1/security-groups/{}/rules", enc(&id)),
            Some(b),
        )?;
    }
    Ok(())
}

fn read_ports(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    read_subnets(c, ids, tenant)?;
    read_groups(c, ids, tenant)?;
    let mut out = Vec::new();
    for (t, x) in in_networks(c, ids, tenant, "ports")? {
        // The load balancers' monitor port is the daemon's (made and deleted with them, its
        // name reserved): not an object a file manages.
        if x["name"] == "lb-monitor" {
            continue;
        }
        let groups: BTreeSet<String> = strs(Some(&x["security_groups"]))
            .iter()
            .map(|g| ids.name("security_group", g))
            .collect();
        let o = object(
            "port",
            Some(t),
            s(&x["name"]),
            json!({
                "network": ids.name("network", &s(&x["network"])),
                "subnet": ids.name("subnet", &s(&x["subnet"])),
                "ip": x["ip"], "mac": x["mac"], "security_groups": groups,
                "cap_bps": x["cap_bps"], "min_bps": x["min_bps"],
            }),
        );
        let mut o = o;
        // A TAP port's file has no `veth_peer` (the field is not nullable).
        if let Some(peer) = x["veth_peer"].as_str() {
            o.fields.insert("veth_peer".into(), json!(peer));
        }
        ids.put(&o.key, &s(&x["id"]));
        out.push(o);
    }
    Ok(out)
}

fn write_port(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let f = &want.fields;
    let t = &want.key.tenant;
    let groups: Option<Vec<String>> = f.get("security_groups").map(|g| {
        strs(Some(g))
            .iter()
            .map(|n| ids.id("security_group", t, n))
            .collect()
    });
    let id = match have {
        None => {
            let net = ids.id("network", t, &s(&f["network"]));
            let mut b = json!({
                "name": want.key.name,
                "subnet": ids.id("subnet", t, &s(&f["subnet"])),
            });
            for k in ["ip", "mac"] {
                if let Some(v) = f.get(k) {
                    b[k] = v.clone();
                }
            }
            if let Some(peer) = f.get("veth_peer").filter(|v| !v.is_null()) {
                b["veth"] = json!({ "peer": peer });
            }
            if let Some(g) = &groups {
                b["security_groups"] = json!(g);
            }
            let v = c.req(
                "POST",
                &format!("/v1/networks/{}/ports", enc(&net)),
                Some(b),
            )?;
            ids.put(&want.key, &s(&v["id"]));
            s(&v["id"])
        }
        Some(_) => {
            let id = ids.of(&want.key)?;
            if changed(want, have, "security_groups") {
                c.req(
                    "PUT",
                    &format!("/v1/network-ports/{}/security-groups", enc(&id)),
                    Some(json!({ "security_groups": groups })),
                )?;
            }
            id
        }
    };
    let bw = ["cap_bps", "min_bps"];
    let wants_bw = bw
        .iter()
        .any(|k| f.get(*k).is_some_and(|v| have.is_some() || !v.is_null()));
    if wants_bw && bw.iter().any(|k| changed(want, have, k)) {
        let pick = |k: &str| {
            f.get(k)
                .or_else(|| have.and_then(|h| h.fields.get(k)))
                .cloned()
                .unwrap_or(Value::Null)
        };
        c.req(
            "PUT",
            &format!("/v1/network-ports/{}/bandwidth", enc(&id)),
            Some(json!({"cap_bps": pick("cap_bps"), "min_bps": pick("min_bps")})),
        )?;
    }
    Ok(())
}

// ---- floating IPs: named by the port they are bound to

fn read_fips(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    read_ports(c, ids, tenant)?;
    let mut out = Vec::new();
    for x in items(&c.req(
        "GET",
        &format!("/v1/floating-ips{}", tenant_q(tenant)),
        None,
    )?) {
        // One bound to no port is not managed by apply (it has no name to be known by).
        let Some(port) = x["port"].as_str() else {
            continue;
        };
        let o = object(
            "floating_ip",
            Some(s(&x["tenant"])),
            ids.name("port", port),
            json!({"network": ids.name("network", &s(&x["network"]))}),
        );
        ids.put(&o.key, &s(&x["id"]));
        out.push(o);
    }
    Ok(out)
}

fn write_fip(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    if have.is_some() {
        return Ok(());
    }
    let t = &want.key.tenant;
    let v = c.req(
        "POST",
        "/v1/floating-ips",
        Some(json!({
            "network": ids.id("network", t, &s(&want.fields["network"])),
            "port": ids.id("port", t, &want.key.name),
            "tenant": t,
        })),
    )?;
    ids.put(&want.key, &s(&v["id"]));
    Ok(())
}

// ---- load balancers: backends by port name (or address), defaults as the daemon fills them

/// A load balancer's listeners as the daemon holds them: a backend named by its port has no
/// address of its own, its weight is 1 and its target port the listener's unless given;
/// backends and listeners are sets.
fn balancer_canon(f: &mut Fields) {
    let Some(Value::Array(ls)) = f.get_mut("listeners") else {
        return;
    };
    for l in ls.iter_mut().filter_map(Value::as_object_mut) {
        let port = l.get("port").cloned().unwrap_or(Value::Null);
        if let Some(Value::Array(bs)) = l.get_mut("backends") {
            for b in bs.iter_mut().filter_map(Value::as_object_mut) {
                if b.get("port").is_some_and(Value::is_string) {
                    b.remove("ip");
                }
                b.entry("weight").or_insert(Value::from(1));
                b.entry("target_port").or_insert(port.clone());
            }
            let _ = super::file::canonical_list(bs, None);
        }
    }
    let _ = super::file::canonical_list(ls, None);
}

fn read_balancers(c: &Client, ids: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    // Port, subnet and network names first: a balancer names them.
    read_ports(c, ids, tenant)?;
    let mut out = Vec::new();
    for n in networks_of(c, ids, tenant)? {
        let path = format!("/v1/networks/{}/load-balancers", enc(&s(&n["id"])));
        for x in items(&c.req("GET", &path, None)?) {
            let mut listeners: Vec<Value> = Vec::new();
            for l in x["listeners"].as_array().into_iter().flatten() {
                let mut backends: Vec<Value> = Vec::new();
                for b in l["backends"].as_array().into_iter().flatten() {
                    let mut m = json!({"target_port": b["target_port"], "weight": b["weight"]});
                    match b["port"].as_str() {
                        Some(p) => m["port"] = Value::from(ids.name("port", p)),
                        None => m["ip"] = b["ip"].clone(),
                    }
                    backends.push(m);
                }
                super::file::canonical_list(&mut backends, None).map_err(|e| anyhow!(e))?;
                listeners.push(
                    json!({"protocol": l["protocol"], "port": l["port"], "backends": backends}),
                );
            }
            super::file::canonical_list(&mut listeners, None).map_err(|e| anyhow!(e))?;
            let h = &x["health_check"];
            let o = object(
                "load_balancer",
                Some(s(&x["tenant"])),
                s(&x["name"]),
                json!({
                    "network": ids.name("network", &s(&x["network"])),
                    "subnet": ids.name("subnet", &s(&x["subnet"])),
                    "vip": x["vip"], "listeners": listeners,
                    "session_affinity": x["session_affinity"],
                    "health_check": {
                        "kind": h["kind"], "path": h["path"], "interval_ms": h["interval_ms"],
                        "timeout_ms": h["timeout_ms"], "rise": h["rise"], "fall": h["fall"],
                    },
                }),
            );
            ids.put(&o.key, &s(&x["id"]));
            out.push(o);
        }
    }
    Ok(out)
}

/// Listeners as a request body's: backends' port names as ids.
fn listeners_wire(ids: &Ids, t: &Option<String>, listeners: Option<&Value>) -> Value {
    let mut ls = listeners.cloned().unwrap_or_else(|| json!([]));
    for l in ls.as_array_mut().into_iter().flatten() {
        for b in l["backends"].as_array_mut().into_iter().flatten() {
            if let Some(p) = b["port"].as_str().map(str::to_string) {
                b["port"] = Value::from(ids.id("port", t, &p));
            }
        }
    }
    ls
}

/// A health check as a request body's: the kind `none` unless given, a path for `http` only.
fn health_wire(mut h: Map<String, Value>) -> Value {
    h.retain(|_, v| !v.is_null());
    if !h.contains_key("kind") {
        h.insert("kind".into(), Value::from("none"));
    }
    if h.get("kind").and_then(Value::as_str) != Some("http") {
        h.remove("path");
    }
    Value::Object(h)
}

fn write_balancer(c: &Client, ids: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    let f = &want.fields;
    let t = &want.key.tenant;
    let Some(have) = have else {
        let net = ids.id("network", t, &s(&f["network"]));
        let mut b = json!({
            "name": want.key.name,
            "subnet": ids.id("subnet", t, &s(&f["subnet"])),
            "listeners": listeners_wire(ids, t, f.get("listeners")),
        });
        if let Some(v) = f.get("vip").filter(|v| !v.is_null()) {
            b["vip"] = v.clone();
        }
        if let Some(a) = f.get("session_affinity") {
            b["session_affinity"] = a.clone();
        }
        if let Some(Value::Object(h)) = f.get("health_check") {
            b["health_check"] = health_wire(h.clone());
        }
        let v = c.req(
            "POST",
            &format!("/v1/networks/{}/load-balancers", enc(&net)),
            Some(b),
        )?;
        ids.put(&want.key, &s(&v["id"]));
        return Ok(());
    };
    let id = ids.of(&want.key)?;
    // Compared as the plan compares them (defaults filled in, lists as sets).
    let (mut w, mut h) = (want.clone(), have.clone());
    balancer_canon(&mut w.fields);
    balancer_canon(&mut h.fields);
    if changed(&w, Some(&h), "listeners") {
        c.req(
            "PUT",
            &format!("/v1/load-balancers/{}/listeners", enc(&id)),
            Some(json!({"listeners": listeners_wire(ids, t, f.get("listeners"))})),
        )?;
    }
    let mut settings = Map::new();
    if changed(&w, Some(&h), "session_affinity") {
        settings.insert("session_affinity".into(), f["session_affinity"].clone());
    }
    if f.contains_key("health_check") && !changed_sub(&w, Some(&h), "health_check").is_empty() {
        settings.insert(
            "health_check".into(),
            health_wire(merged(want, Some(have), "health_check")),
        );
    }
    if !settings.is_empty() {
        c.req(
            "PUT",
            &format!("/v1/load-balancers/{}/settings", enc(&id)),
            Some(Value::Object(settings)),
        )?;
    }
    Ok(())
}

// ---- jobs

fn read_jobs(c: &Client, _: &mut Ids, tenant: Option<&str>) -> Result<Vec<Object>> {
    Ok(
        items(&c.req("GET", &format!("/v1/jobs{}", tenant_q(tenant)), None)?)
            .into_iter()
            .map(|j| {
                object(
                    "job",
                    Some(s(&j["tenant"])),
                    s(&j["name"]),
                    json!({
                        "gpus": j["gpus"], "gpu_model": j["gpu_model"], "cpu_cores": j["cpu_cores"],
                        "memory": j["memory_bytes"], "bandwidth_bps": j["bandwidth_bps"],
                        "storage_bps": j["storage_bps"], "same_island": j["same_island"],
                        "same_label": j["same_label"], "priority": j["priority"],
                    }),
                )
            })
            .collect(),
    )
}

fn write_job(c: &Client, _: &mut Ids, want: &Object, have: Option<&Object>) -> Result<()> {
    if have.is_some() {
        return Ok(());
    }
    let mut b = json!({"name": want.key.name, "tenant": want.key.tenant});
    for (k, v) in &want.fields {
        if !v.is_null() {
            b[if k == "memory" {
                "memory_bytes"
            } else {
                k.as_str()
            }] = v.clone();
        }
    }
    c.req("POST", "/v1/jobs", Some(b)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_ordered_and_unique() {
        let names: BTreeSet<&str> = KINDS.iter().map(|k| k.meta.name).collect();
        assert_eq!(names.len(), KINDS.len());
        assert!(KINDS.windows(2).all(|w| w[0].meta.rank < w[1].meta.rank));
        for k in KINDS.iter() {
            for f in k.meta.fields {
                if let Some(r) = f.refers {
                    assert!(names.contains(r), "{}.{} names {r}", k.meta.name, f.name);
                }
            }
        }
    }

    #[test]
    fn a_flow_is_deleted_by_its_match() {
        assert_eq!(
            flow_match("priority=10,in_port=a,actions=output:b"),
            "priority=10,in_port=a"
        );
        assert_eq!(flow_match("actions=drop"), "");
    }

    #[test]
    fn quota_capacity_is_named_as_the_wire_names_it() {
        let q = json!({"capacity": 5, "iops": null});
        let w = quota_wire(q.as_object().unwrap());
        assert_eq!(Value::Object(w), json!({"capacity_bytes": 5, "iops": null}));
    }
}
