//! The switches' desired state in the store: one key per switch, one per port, one per flow,
//! so a change writes only what it changes.
//!
//! # Keys (JSON values)
//! - `/switches/{sw}`: [`StoredSwitch`] `{name, created}`, the switch's own fields only.
//! - `/switches/{sw}/ports/{port}`: [`StoredPort`] `{seq, name, kind, vni, ...}`; `seq` orders
//!   the ports as they were added (restore adds them in that order, so they get the same
//!   numbers).
//! - `/switches/{sw}/flows/{id}`: [`StoredFlow`] `{flow}`, the switch's own rendering of the
//!   rule; `id` is 20 decimal digits assigned by the control plane in add order, so key order
//!   is add order and restore replays the same table.
//!
//! # Invariants
//! - A switch's children share the prefix `/switches/{sw}/`, which no other switch's keys
//!   have (a name cannot contain `/`).
//! - The old format (ports and flows inside the switch record) is still read, and rewritten
//!   into the layout above in one transaction by [`migrate`] at start.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use strata_dataplane::PortSpec;
use strata_net::Domain;
use strata_state::{Store, Txn};

use crate::error::{clip, ControlError, Resource};

/// A switch as the API shows it: its fields, its ports in the order they were added and its
/// flows in `ovs-ofctl` syntax in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: u64,
    /// Ports in the order they were added.
    pub ports: Vec<PortRecord>,
    /// Flows in `ovs-ofctl` syntax.
    pub flows: Vec<String>,
}

/// A port as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortRecord {
    /// Port (and, for TAP and internal ports, interface) name.
    pub name: String,
    /// `tap` (default: a record without a kind is a TAP), `internal`, `veth` or `vxlan`.
    #[serde(default)]
    pub kind: Option<String>,
    /// veth: the peer's interface name (default: the port name + "p").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// VXLAN network: the port's isolation domain (or a VXLAN port's fixed VNI).
    pub vni: Option<u32>,
    /// VLAN: the port's isolation domain (access port).
    pub vlan: Option<u16>,
    /// VXLAN remote VTEP.
    pub remote: Option<Ipv4Addr>,
    /// VXLAN local VTEP (default: any).
    pub local: Option<Ipv4Addr>,
    /// VXLAN UDP port (default 4789).
    pub dstport: Option<u16>,
}

impl PortRecord {
    /// The dataplane's port for this request, validated.
    pub(super) fn spec(&self) -> Result<PortSpec, ControlError> {
        if !valid_ifname(&self.name) {
            return Err(ControlError::invalid(
                "name",
                "a port name is 1 to 15 letters, digits, '-', '_' or '.'",
            ));
        }
        let domain = match (self.vni, self.vlan) {
            (Some(_), Some(_)) => {
                return Err(ControlError::invalid(
                    "vlan",
                    "give a VNI or a VLAN, not both",
                ))
            }
            (Some(v), None) if v < 1 << 24 => Some(Domain::Vni(v)),
            (Some(_), None) => return Err(ControlError::invalid("vni", "a VNI has 24 bits")),
            (None, Some(v)) if (1..4095).contains(&v) => Some(Domain::Vlan(v)),
            (None, Some(_)) => return Err(ControlError::invalid("vlan", "a VLAN id is 1 to 4094")),
            (None, None) => None,
        };
        let kind = self.kind.as_deref().unwrap_or("tap");
        if self.peer.is_some() && kind != "veth" {
            return Err(ControlError::invalid("peer", "only a veth port has a peer"));
        }
        match kind {
            "tap" => Ok(PortSpec::tap(&self.name, domain)),
            "veth" => {
                let peer = strata_dataplane::veth_peer_name(&self.name, self.peer.as_deref());
                if !valid_ifname(&peer) {
                    return Err(ControlError::invalid(
                        "peer",
                        "a veth peer name is 1 to 15 letters, digits, '-', '_' or '.'",
                    ));
                }
                Ok(PortSpec::Veth {
                    name: self.name.clone(),
                    peer: Some(peer),
                    domain,
                    vnet_hdr: true,
                })
            }
            "internal" => Ok(PortSpec::Internal {
                name: self.name.clone(),
                domain,
            }),
            "vxlan" => {
                if self.vlan.is_some() {
                    return Err(ControlError::invalid(
                        "vlan",
                        "a VXLAN port takes a VNI, not a VLAN",
                    ));
                }
                let remote = self.remote.ok_or_else(|| {
                    ControlError::invalid("remote", "a VXLAN port needs --remote")
                })?;
                Ok(PortSpec::Vxlan {
                    name: self.name.clone(),
                    local: self.local.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    remote,
                    vni: self.vni,
                    dst_port: self.dstport.unwrap_or(4789),
                    flow_keyed: false,
                })
            }
            other => Err(ControlError::invalid(
                "kind",
                format!(
                    "unknown port kind {:?} (tap, internal, veth, vxlan)",
                    clip(other)
                ),
            )),
        }
    }
}

/// 1 to 15 letters, digits, '-', '_' or '.': a name the kernel takes for an interface.
pub(crate) fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The value under `/switches/{sw}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredSwitch {
    pub name: String,
    pub created: u64,
    /// Old format only: the ports, now under their own keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortRecord>>,
    /// Old format only: the flows, now under their own keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<String>>,
}

/// The value under `/switches/{sw}/ports/{port}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredPort {
    /// Add order.
    pub seq: u64,
    #[serde(flatten)]
    pub port: PortRecord,
}

/// The value under `/switches/{sw}/flows/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredFlow {
    pub flow: String,
}

const PREFIX: &str = "/switches/";

pub(super) fn switch_key(sw: &str) -> String {
    format!("{PREFIX}{sw}")
}

/// The prefix of every key below a switch.
pub(super) fn children(sw: &str) -> String {
    format!("{PREFIX}{sw}/")
}

pub(super) fn port_key(sw: &str, port: &str) -> String {
    format!("{PREFIX}{sw}/ports/{port}")
}

pub(super) fn flow_key(sw: &str, id: u64) -> String {
    format!("{PREFIX}{sw}/flows/{id:020}")
}

pub(super) fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

fn damaged(key: &str, e: impl std::fmt::Display) -> ControlError {
    ControlError::internal(format!("switch record {key} is damaged: {e}"))
}

/// One switch as read from the store.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub record: StoredSwitch,
    /// The switch record's `mod_revision` (changes compare on it).
    pub rev: u64,
    /// Ports in add order.
    pub ports: Vec<StoredPort>,
    /// Flows in add order, with their ids.
    pub flows: Vec<(u64, String)>,
}

impl Loaded {
    /// The API's view.
    pub fn view(&self) -> SwitchRecord {
        SwitchRecord {
            name: self.record.name.clone(),
            created: self.record.created,
            ports: self.ports.iter().map(|p| p.port.clone()).collect(),
            flows: self.flows.iter().map(|(_, f)| f.clone()).collect(),
        }
    }
}

/// The switches in `kvs` (switch records and their children, in key order), by name.
/// Children do not always follow their switch directly (`/switches/a-b` sorts between
/// `/switches/a` and `/switches/a/...`), so they find their switch by name; a child without
/// its switch is logged and skipped.
fn parse(kvs: &[strata_state::KeyValue]) -> Result<Vec<Loaded>, ControlError> {
    let mut out: Vec<Loaded> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for kv in kvs {
        let Some(rest) = kv.key.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        let (sw, kind, id) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        match (kind, id) {
            (None, _) => {
                let record: StoredSwitch =
                    serde_json::from_slice(&kv.value).map_err(|e| damaged(&kv.key, e))?;
                let mut l = Loaded {
                    record,
                    rev: kv.mod_revision,
                    ports: vec![],
                    flows: vec![],
                };
                // The old format: its ports and flows are in the record.
                if let Some(ports) = l.record.ports.clone() {
                    l.ports = (0..)
                        .zip(ports)
                        .map(|(seq, port)| StoredPort { seq, port })
                        .collect();
                }
                if let Some(flows) = l.record.flows.clone() {
                    l.flows = (1..).zip(flows).collect();
                }
                at.insert(sw.to_string(), out.len());
                out.push(l);
            }
            (Some(kind), Some(id)) => {
                let Some(l) = at.get(sw).map(|&i| &mut out[i]) else {
                    tracing::warn!(key = %kv.key, "switch key without its switch, skipped");
                    continue;
                };
                match kind {
                    "ports" => l
                        .ports
                        .push(serde_json::from_slice(&kv.value).map_err(|e| damaged(&kv.key, e))?),
                    "flows" => {
                        let n: u64 = id.parse().map_err(|e| damaged(&kv.key, e))?;
                        let f: StoredFlow =
                            serde_json::from_slice(&kv.value).map_err(|e| damaged(&kv.key, e))?;
                        l.flows.push((n, f.flow));
                    }
                    _ => tracing::warn!(key = %kv.key, "unknown switch key, skipped"),
                }
            }
            (Some(_), None) => tracing::warn!(key = %kv.key, "unknown switch key, skipped"),
        }
    }
    for l in &mut out {
        l.ports.sort_by_key(|p| p.seq);
        l.flows.sort_by_key(|f| f.0);
    }
    Ok(out)
}

/// Every stored switch, in name order, in one read.
pub(super) fn load_all(store: &dyn Store) -> Result<Vec<Loaded>, ControlError> {
    parse(&store.range(PREFIX, None, 0)?.0)
}

/// One stored switch: its record, then its children.
pub(super) fn load(store: &dyn Store, sw: &str) -> Result<Loaded, ControlError> {
    let rec = store
        .get(&switch_key(sw))?
        .ok_or_else(|| ControlError::not_found(Resource::Switch, sw))?;
    let mut kvs = vec![rec];
    kvs.extend(store.range(&children(sw), None, 0)?.0);
    parse(&kvs)?
        .pop()
        .ok_or_else(|| ControlError::not_found(Resource::Switch, sw))
}

/// Rewrites a switch stored in the old format (ports and flows inside its record) into one
/// key per port and per flow, in one transaction that compares on the old record. Returns
/// the switch as now stored (a switch already in the new format is returned unchanged).
pub(super) fn migrate(store: &dyn Store, mut l: Loaded) -> Result<Loaded, ControlError> {
    if l.record.ports.is_none() && l.record.flows.is_none() {
        return Ok(l);
    }
    let sw = l.record.name.clone();
    l.record.ports = None;
    l.record.flows = None;
    let mut t = Txn::new()
        .when(switch_key(&sw), l.rev)
        .put(switch_key(&sw), json(&l.record));
    for p in &l.ports {
        t = t.put(port_key(&sw, &p.port.name), json(p));
    }
    for (id, f) in &l.flows {
        t = t.put(flow_key(&sw, *id), json(&StoredFlow { flow: f.clone() }));
    }
    let r = store.txn(t)?;
    if !r.succeeded {
        return Err(ControlError::Busy(format!(
            "switch {sw} changed while it was migrated"
        )));
    }
    l.rev = r.revision;
    tracing::info!(switch = %sw, ports = l.ports.len(), flows = l.flows.len(),
        "switch record migrated to one key per port and flow");
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port stored before veth ports existed (no `kind`, no `peer`) is still a TAP.
    #[test]
    fn a_record_without_kind_is_a_tap() {
        let old: StoredPort = serde_json::from_str(r#"{"seq":3,"name":"t1","vni":100}"#).unwrap();
        assert_eq!(old.port.kind, None);
        assert_eq!(
            old.port.spec().unwrap(),
            PortSpec::tap("t1", Some(Domain::Vni(100)))
        );
        let out = String::from_utf8(json(&old)).unwrap();
        assert!(
            !out.contains("peer"),
            "no new field written for a TAP: {out}"
        );
    }

    #[test]
    fn veth_records_round_trip_and_validate() {
        let p = PortRecord {
            name: "ve1".into(),
            kind: Some("veth".into()),
            vlan: Some(7),
            ..Default::default()
        };
        assert_eq!(
            p.spec().unwrap(),
            PortSpec::Veth {
                name: "ve1".into(),
                peer: Some("ve1p".into()),
                domain: Some(Domain::Vlan(7)),
                vnet_hdr: true,
            }
        );
        let named = PortRecord {
            peer: Some("ctr0".into()),
            ..p.clone()
        };
        let back: PortRecord = serde_json::from_slice(&json(&named)).unwrap();
        assert_eq!(back, named);
        assert!(matches!(
            back.spec().unwrap(),
            PortSpec::Veth { peer: Some(ref q), .. } if q == "ctr0"
        ));
        let bad = |r: PortRecord| r.spec().unwrap_err().to_string();
        // A 15-byte name's default peer still fits an interface name.
        let long = PortRecord {
            name: "a".repeat(15),
            ..p.clone()
        };
        assert!(matches!(
            long.spec().unwrap(),
            PortSpec::Veth { peer: Some(ref q), .. } if *q == format!("{}p", "a".repeat(14))
        ));
        assert!(bad(PortRecord {
            peer: Some("x/y".into()),
            ..p.clone()
        })
        .contains("peer"));
        assert!(bad(PortRecord {
            kind: None,
            peer: Some("x".into()),
            ..p
        })
        .contains("only a veth"));
    }
}
