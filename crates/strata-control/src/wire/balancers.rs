//! Load balancers: a VIP on a subnet, listeners with weighted backends, session affinity,
//! active health checks.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::controller::{NewBackend, NewBalancer, NewListener};
use crate::error::ControlError;

/// Most listeners a load balancer has.
pub const LB_LISTENERS_MAX: usize = 16;
/// Most backends a listener has.
pub const LB_BACKENDS_MAX: usize = 64;
/// Largest backend weight.
pub const LB_WEIGHT_MAX: u64 = 256;
/// Shortest and longest probe interval, milliseconds.
pub const LB_INTERVAL_MIN_MS: u64 = 100;
/// Longest probe interval and timeout, milliseconds.
pub const LB_INTERVAL_MAX_MS: u64 = 60_000;
/// Shortest probe timeout, milliseconds.
pub const LB_TIMEOUT_MIN_MS: u64 = 50;
/// Most consecutive results `rise` and `fall` ask for.
pub const LB_RISE_FALL_MAX: u64 = 10;
/// An HTTP health-check path: `/` then printable ASCII without spaces.
pub const LB_PATH_PATTERN: &str = "^/[!-~]{0,255}$";

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn opt_name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, true)
}
fn opt_ip() -> Object {
    text(IPV4_PATTERN, 15, true)
}
fn port_no() -> Object {
    int(1, 65535, false)
}
fn opt_port_no() -> Object {
    int(1, 65535, true)
}
fn weight() -> Object {
    int(0, LB_WEIGHT_MAX, true)
}
fn interval() -> Object {
    int(LB_INTERVAL_MIN_MS, LB_INTERVAL_MAX_MS, true)
}
fn timeout() -> Object {
    int(LB_TIMEOUT_MIN_MS, LB_INTERVAL_MAX_MS, true)
}
fn rise_fall() -> Object {
    int(1, LB_RISE_FALL_MAX, true)
}
fn opt_path() -> Object {
    text(LB_PATH_PATTERN, 256, true)
}

/// A list of JSON objects only (serde would also read a struct from an array of its fields).
fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    let v = Vec::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?;
    v.into_iter()
        .map(|m| {
            serde_json::from_value(serde_json::Value::Object(m)).map_err(serde::de::Error::custom)
        })
        .collect()
}

/// Null, absent, or a JSON object (never an array read as a struct).
fn opt_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        Some(m) => serde_json::from_value(serde_json::Value::Object(m))
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

fn parse_ip(field: &'static str, s: &str) -> Result<std::net::Ipv4Addr, ControlError> {
    check_text(field, s, IPV4_PATTERN)?;
    s.parse()
        .map_err(|_| ControlError::invalid(field, format!("{s:?} is not A.B.C.D")))
}

/// A listener's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LbProtocolName {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl From<LbProtocolName> for strata_vpc::LbProtocol {
    fn from(p: LbProtocolName) -> Self {
        match p {
            LbProtocolName::Tcp => strata_vpc::LbProtocol::Tcp,
            LbProtocolName::Udp => strata_vpc::LbProtocol::Udp,
        }
    }
}

impl From<strata_vpc::LbProtocol> for LbProtocolName {
    fn from(p: strata_vpc::LbProtocol) -> Self {
        match p {
            strata_vpc::LbProtocol::Tcp => LbProtocolName::Tcp,
            strata_vpc::LbProtocol::Udp => LbProtocolName::Udp,
        }
    }
}

/// How backends are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthKindName {
    /// Not probed.
    None,
    /// A TCP connect.
    Tcp,
    /// An HTTP GET of `path`, healthy on 2xx or 3xx.
    Http,
}

/// A backend as asked for: a port of the network, or an address in one of its subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// A port of the load balancer's network (id or name).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub port: Option<String>,
    /// Or an address in a subnet of the network.
    #[serde(default)]
    #[schema(schema_with = opt_ip)]
    pub ip: Option<String>,
    /// The port number connections go to (default: the listener's).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = opt_port_no)]
    pub target_port: Option<u16>,
    /// Relative weight, 0 (no new connections) to 256 (default 1).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = weight)]
    pub weight: Option<u32>,
}

/// A listener as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Transport.
    pub protocol: LbProtocolName,
    /// The VIP's port.
    #[serde(deserialize_with = "super::whole::int")]
    #[schema(schema_with = port_no)]
    pub port: u16,
    /// Backends.
    #[serde(default, deserialize_with = "objects")]
    #[schema(max_items = 64)]
    pub backends: Vec<BackendSpec>,
}

/// A health check as asked for; what is not given takes its default (interval 1000 ms,
/// timeout 500 ms, rise 2, fall 2: a dead backend is out within 2.5 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// What a probe is.
    pub kind: HealthKindName,
    /// The path an HTTP probe asks for (http only).
    #[serde(default)]
    #[schema(schema_with = opt_path)]
    pub path: Option<String>,
    /// Time between two probes of a backend, milliseconds.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = interval)]
    pub interval_ms: Option<u32>,
    /// Time a probe may take, milliseconds (below the interval).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = timeout)]
    pub timeout_ms: Option<u32>,
    /// Consecutive successes that bring a backend back.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = rise_fall)]
    pub rise: Option<u32>,
    /// Consecutive failures that take it out.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = rise_fall)]
    pub fall: Option<u32>,
}

fn check_listeners(ls: &[ListenerSpec]) -> Result<(), ControlError> {
    if ls.len() > LB_LISTENERS_MAX {
        return Err(ControlError::invalid(
            "listeners",
            format!("at most {LB_LISTENERS_MAX}"),
        ));
    }
    for l in ls {
        check_int("port", u64::from(l.port), 1, 65535)?;
        if l.backends.len() > LB_BACKENDS_MAX {
            return Err(ControlError::invalid(
                "backends",
                format!("at most {LB_BACKENDS_MAX}"),
            ));
        }
        for b in &l.backends {
            if let Some(p) = &b.port {
                check_text("backends", p, NAME_PATTERN)?;
            }
            if let Some(ip) = &b.ip {
                parse_ip("backends", ip)?;
            }
            if let Some(t) = b.target_port {
                check_int("target_port", u64::from(t), 1, 65535)?;
            }
            if let Some(w) = b.weight {
                check_int("weight", u64::from(w), 0, LB_WEIGHT_MAX)?;
            }
        }
    }
    Ok(())
}

fn into_listeners(ls: Vec<ListenerSpec>) -> Result<Vec<NewListener>, ControlError> {
    ls.into_iter()
        .map(|l| {
            let backends = l
                .backends
                .into_iter()
                .map(|b| {
                    Ok(NewBackend {
                        port: b.port,
                        ip: b
                            .ip
                            .as_deref()
                            .map(|s| parse_ip("backends", s))
                            .transpose()?,
                        target_port: b.target_port,
                        weight: b.weight.unwrap_or(1),
                    })
                })
                .collect::<Result<Vec<_>, ControlError>>()?;
            Ok(NewListener {
                protocol: l.protocol.into(),
                port: l.port,
                backends,
            })
        })
        .collect()
}

impl Check for HealthCheckSpec {
    fn check(&self) -> Result<(), ControlError> {
        if let Some(p) = &self.path {
            check_text("path", p, LB_PATH_PATTERN)?;
        }
        for (f, v, lo, hi) in [
            (
                "interval_ms",
                self.interval_ms,
                LB_INTERVAL_MIN_MS,
                LB_INTERVAL_MAX_MS,
            ),
            (
                "timeout_ms",
                self.timeout_ms,
                LB_TIMEOUT_MIN_MS,
                LB_INTERVAL_MAX_MS,
            ),
            ("rise", self.rise, 1, LB_RISE_FALL_MAX),
            ("fall", self.fall, 1, LB_RISE_FALL_MAX),
        ] {
            if let Some(v) = v {
                check_int(f, u64::from(v), lo, hi)?;
            }
        }
        Ok(())
    }
}

impl HealthCheckSpec {
    /// The health check, defaults filled in; a path on a non-HTTP check, or an HTTP check
    /// without one, contradicts itself (409).
    pub fn into_check(self) -> Result<strata_vpc::HealthCheck, ControlError> {
        let kind = match (self.kind, self.path) {
            (HealthKindName::Http, Some(path)) => strata_vpc::HealthKind::Http { path },
            (HealthKindName::Http, None) => {
                return Err(ControlError::InUse {
                    what: crate::error::InUse::NetworkSpecConflict,
                    message: "an http health check needs a path".into(),
                })
            }
            (_, Some(_)) => {
                return Err(ControlError::InUse {
                    what: crate::error::InUse::NetworkSpecConflict,
                    message: "a path is for http health checks only".into(),
                })
            }
            (HealthKindName::Tcp, None) => strata_vpc::HealthKind::Tcp,
            (HealthKindName::None, None) => strata_vpc::HealthKind::None,
        };
        Ok(crate::controller::health_check(
            kind,
            self.interval_ms,
            self.timeout_ms,
            self.rise,
            self.fall,
        ))
    }
}

/// `POST /v1/networks/{id}/load-balancers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLoadBalancer {
    /// Name, unique within the network.
    #[schema(schema_with = name)]
    pub name: String,
    /// The VIP's subnet (id or name).
    #[schema(schema_with = name)]
    pub subnet: String,
    /// The VIP (default: the lowest free address of the subnet).
    #[serde(default)]
    #[schema(schema_with = opt_ip)]
    pub vip: Option<String>,
    /// Listeners (protocol and port unique).
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 16)]
    pub listeners: Vec<ListenerSpec>,
    /// Session affinity: a client (source address) always lands on one backend.
    #[serde(default)]
    pub session_affinity: bool,
    /// Health check (default: none).
    #[serde(default, deserialize_with = "opt_object")]
    pub health_check: Option<HealthCheckSpec>,
}

impl Check for CreateLoadBalancer {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        check_text("subnet", &self.subnet, NAME_PATTERN)?;
        if let Some(v) = &self.vip {
            parse_ip("vip", v)?;
        }
        if self.listeners.is_empty() {
            return Err(ControlError::invalid("listeners", "at least one"));
        }
        check_listeners(&self.listeners)?;
        match &self.health_check {
            Some(h) => h.check(),
            None => Ok(()),
        }
    }
}

impl CreateLoadBalancer {
    /// What the controller is asked.
    pub fn into_new(self) -> Result<NewBalancer, ControlError> {
        Ok(NewBalancer {
            name: self.name,
            subnet: self.subnet,
            vip: self
                .vip
                .as_deref()
                .map(|v| parse_ip("vip", v))
                .transpose()?,
            listeners: into_listeners(self.listeners)?,
            session_affinity: self.session_affinity,
            health: match self.health_check {
                Some(h) => h.into_check()?,
                None => strata_vpc::HealthCheck::none(),
            },
        })
    }
}

/// `PUT /v1/load-balancers/{id}/listeners`: the listeners and backends, whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLoadBalancerListeners {
    /// Listeners (one kept on the same protocol and port keeps its open connections).
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 16)]
    pub listeners: Vec<ListenerSpec>,
}

impl Check for SetLoadBalancerListeners {
    fn check(&self) -> Result<(), ControlError> {
        if self.listeners.is_empty() {
            return Err(ControlError::invalid("listeners", "at least one"));
        }
        check_listeners(&self.listeners)
    }
}

impl SetLoadBalancerListeners {
    /// What the controller is asked.
    pub fn into_new(self) -> Result<Vec<NewListener>, ControlError> {
        into_listeners(self.listeners)
    }
}

/// `PUT /v1/load-balancers/{id}/settings`: what is given changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLoadBalancerSettings {
    /// Session affinity.
    #[serde(default)]
    pub session_affinity: Option<bool>,
    /// Health check.
    #[serde(default, deserialize_with = "opt_object")]
    pub health_check: Option<HealthCheckSpec>,
}

impl Check for SetLoadBalancerSettings {
    fn check(&self) -> Result<(), ControlError> {
        match &self.health_check {
            Some(h) => h.check(),
            None => Ok(()),
        }
    }
}

/// A backend and its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LbBackendView {
    /// The port it is (id), if named by port.
    pub port: Option<String>,
    /// Its address.
    pub ip: String,
    /// Port number connections go to.
    pub target_port: u16,
    /// Weight.
    pub weight: u32,
    /// `up`, `down` (health checks took it out) or `unchecked`.
    pub health: String,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LbListenerView {
    /// Transport.
    pub protocol: LbProtocolName,
    /// The VIP's port.
    pub port: u16,
    /// The switch's group.
    pub group: u32,
    /// Backends.
    pub backends: Vec<LbBackendView>,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckView {
    /// What a probe is.
    pub kind: HealthKindName,
    /// HTTP path.
    pub path: Option<String>,
    /// Interval, milliseconds.
    pub interval_ms: u32,
    /// Timeout, milliseconds.
    pub timeout_ms: u32,
    /// Rise.
    pub rise: u32,
    /// Fall.
    pub fall: u32,
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoadBalancer {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Network id.
    pub network: String,
    /// The VIP's subnet id.
    pub subnet: String,
    /// Name.
    pub name: String,
    /// The VIP.
    pub vip: String,
    /// Listeners.
    pub listeners: Vec<LbListenerView>,
    /// Session affinity.
    pub session_affinity: bool,
    /// Health check.
    pub health_check: HealthCheckView,
    /// The network's monitor port (id) the probes come from.
    pub monitor: Option<String>,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

impl From<(strata_vpc::LoadBalancer, Vec<Vec<Option<bool>>>)> for LoadBalancer {
    fn from((l, health): (strata_vpc::LoadBalancer, Vec<Vec<Option<bool>>>)) -> Self {
        let h = &l.health;
        let (kind, path) = match &h.kind {
            strata_vpc::HealthKind::None => (HealthKindName::None, None),
            strata_vpc::HealthKind::Tcp => (HealthKindName::Tcp, None),
            strata_vpc::HealthKind::Http { path } => (HealthKindName::Http, Some(path.clone())),
        };
        LoadBalancer {
            health_check: HealthCheckView {
                kind,
                path,
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                rise: h.rise,
                fall: h.fall,
            },
            listeners: l
                .listeners
                .into_iter()
                .enumerate()
                .map(|(i, x)| LbListenerView {
                    protocol: x.protocol.into(),
                    port: x.port,
                    group: x.group,
                    backends: x
                        .backends
                        .into_iter()
                        .enumerate()
                        .map(|(j, b)| LbBackendView {
                            port: b.port,
                            ip: b.ip.to_string(),
                            target_port: b.target_port,
                            weight: b.weight,
                            health: match health.get(i).and_then(|v| v.get(j)).copied().flatten() {
                                Some(true) => "up",
                                Some(false) => "down",
                                None => "unchecked",
                            }
                            .to_string(),
                        })
                        .collect(),
                })
                .collect(),
            id: l.id,
            tenant: l.tenant,
            network: l.network,
            subnet: l.subnet,
            name: l.name,
            vip: l.vip.to_string(),
            session_affinity: l.session_affinity,
            monitor: l.monitor,
            created: l.created,
            generation: l.generation,
        }
    }
}

/// Load balancers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoadBalancerList {
    /// Items.
    pub items: Vec<LoadBalancer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_bounds_hold() {
        let ok: CreateLoadBalancer = serde_json::from_str(
            r#"{"name":"web","subnet":"a","listeners":[{"protocol":"tcp","port":80,
            "backends":[{"port":"b1","weight":2},{"ip":"10.0.0.9","target_port":8080.0}]}],
            "health_check":{"kind":"http","path":"/healthz"}}"#,
        )
        .unwrap();
        ok.check().unwrap();
        let n = ok.into_new().unwrap();
        assert_eq!(n.listeners[0].backends[0].weight, 2);
        assert_eq!(n.listeners[0].backends[1].target_port, Some(8080));
        assert_eq!(n.health.interval_ms, 1000);
        let heavy: CreateLoadBalancer = serde_json::from_str(
            r#"{"name":"web","subnet":"a","listeners":[{"protocol":"tcp","port":80,
            "backends":[{"port":"b1","weight":257}]}]}"#,
        )
        .unwrap();
        let e = heavy.check().unwrap_err();
        assert!(
            matches!(
                e,
                ControlError::Invalid {
                    field: "weight",
                    ..
                }
            ),
            "{e}"
        );
        // A listener given as an array is not an object.
        assert!(serde_json::from_str::<CreateLoadBalancer>(
            r#"{"name":"web","subnet":"a","listeners":[["tcp",80,[]]]}"#
        )
        .is_err());
        let no_path: HealthCheckSpec = serde_json::from_str(r#"{"kind":"http"}"#).unwrap();
        assert!(no_path.into_check().is_err());
        let fast: HealthCheckSpec =
            serde_json::from_str(r#"{"kind":"tcp","interval_ms":50}"#).unwrap();
        assert!(fast.check().is_err());
    }
}
