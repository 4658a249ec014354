//! Virtual switches hosted by the daemon: desired state in the store (ports and flows), one
//! dataplane per switch (its forwarding threads, one per CPU up to four, share the one
//! switch), rebuilt from the store at every start.
//!
//! Order of a change: the dataplane first (it validates: a port that cannot be opened or a flow
//! that does not parse changes nothing), then the store. Flows are stored as the switch's own
//! rendering of its rules (`format_flow`), so what is replayed at start is exactly what ran.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneError, PortSpec};
use strata_net::Domain;
use strata_state::{Store, Txn};

use crate::error::{ControlError, Resource};

/// A switch's desired state.
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
    /// `tap` (default), `internal` or `vxlan`.
    #[serde(default)]
    pub kind: Option<String>,
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
    fn spec(&self) -> Result<PortSpec, ControlError> {
        if self.name.is_empty()
            || self.name.len() > 15
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
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
        match self.kind.as_deref().unwrap_or("tap") {
            "tap" => Ok(PortSpec::tap(&self.name, domain)),
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
                })
            }
            other => Err(ControlError::invalid(
                "kind",
                format!("unknown port kind {other:?} (tap, internal, vxlan)"),
            )),
        }
    }
}

fn dp_err(e: DataplaneError) -> ControlError {
    ControlError::Switch(e)
}

fn key(name: &str) -> String {
    format!("/switches/{name}")
}

/// The daemon's switches.
#[derive(Default)]
pub struct Switches {
    running: Mutex<HashMap<String, Dataplane>>,
}

impl std::fmt::Debug for Switches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switches")
            .field("running", &self.running.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The default flow of a new switch: a learning switch, like Open vSwitch's NORMAL.
pub const DEFAULT_FLOW: &str = "priority=0,actions=normal";

impl Switches {
    fn record(store: &dyn Store, name: &str) -> Result<(SwitchRecord, u64), ControlError> {
        let kv = store
            .get(&key(name))?
            .ok_or_else(|| ControlError::not_found(Resource::Switch, name))?;
        let r = serde_json::from_slice(&kv.value)
            .map_err(|e| ControlError::internal(format!("switch record damaged: {e}")))?;
        Ok((r, kv.mod_revision))
    }

    fn save(store: &dyn Store, r: &SwitchRecord, rev: u64) -> Result<(), ControlError> {
        let ok = store
            .txn(
                Txn::new()
                    .when(key(&r.name), rev)
                    .put(key(&r.name), serde_json::to_vec(r).expect("json")),
            )?
            .succeeded;
        if ok {
            Ok(())
        } else {
            Err(ControlError::Busy(
                "the switch changed meanwhile, retry".into(),
            ))
        }
    }

    fn with_dp<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Dataplane) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let running = self.running.lock();
        let dp = running
            .get(name)
            .ok_or_else(|| ControlError::not_found(Resource::Switch, name))?;
        f(dp)
    }

    /// Current flows of a running switch, rendered for storage.
    fn flows_of(dp: &Dataplane) -> Result<Vec<String>, ControlError> {
        dp.with_switch(|sw, now| {
            sw.dump_flows(now)
                .iter()
                .map(|d| strata_net::format_flow(&d.rule, Some(sw.port_names())))
                .collect()
        })
        .map_err(dp_err)
    }

    /// Creates and starts a switch with the default learning flow.
    pub fn create(
        &self,
        store: &dyn Store,
        name: &str,
        now: u64,
    ) -> Result<SwitchRecord, ControlError> {
        strata_block::pool::validate_name(name)
            .map_err(|e| ControlError::invalid("name", e.to_string()))?;
        let mut running = self.running.lock();
        if store.get(&key(name))?.is_some() {
            return Err(ControlError::exists(Resource::Switch, name));
        }
        let dp = Dataplane::spawn(DataplaneConfig::default()).map_err(dp_err)?;
        dp.add_flow(DEFAULT_FLOW).map_err(dp_err)?;
        let r = SwitchRecord {
            name: name.to_string(),
            created: now,
            ports: vec![],
            flows: Self::flows_of(&dp)?,
        };
        Self::save(store, &r, 0)?;
        running.insert(name.to_string(), dp);
        Ok(r)
    }

    /// Stops and forgets a switch (its TAP devices are closed).
    pub fn delete(&self, store: &dyn Store, name: &str) -> Result<(), ControlError> {
        let mut running = self.running.lock();
        Self::record(store, name)?;
        store.txn(Txn::new().delete(key(name)))?;
        if let Some(dp) = running.remove(name) {
            dp.stop();
        }
        Ok(())
    }

    /// All switches.
    pub fn list(&self, store: &dyn Store) -> Result<Vec<SwitchRecord>, ControlError> {
        let (kvs, _) = store.range("/switches/", None, 0)?;
        kvs.iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|e| ControlError::internal(format!("switch record damaged: {e}")))
            })
            .collect()
    }

    /// One switch.
    pub fn get(&self, store: &dyn Store, name: &str) -> Result<SwitchRecord, ControlError> {
        Ok(Self::record(store, name)?.0)
    }

    /// Adds a port.
    pub fn add_port(
        &self,
        store: &dyn Store,
        sw: &str,
        port: PortRecord,
    ) -> Result<SwitchRecord, ControlError> {
        let spec = port.spec()?;
        let (mut r, rev) = Self::record(store, sw)?;
        self.with_dp(sw, |dp| dp.add_port(spec).map_err(dp_err))?;
        r.ports.push(port);
        Self::save(store, &r, rev)?;
        Ok(r)
    }

    /// Removes a port.
    pub fn remove_port(&self, store: &dyn Store, sw: &str, port: &str) -> Result<(), ControlError> {
        let (mut r, rev) = Self::record(store, sw)?;
        if !r.ports.iter().any(|p| p.name == port) {
            return Err(ControlError::not_found(Resource::Port, port));
        }
        self.with_dp(sw, |dp| dp.remove_port(port).map_err(dp_err))?;
        r.ports.retain(|p| p.name != port);
        Self::save(store, &r, rev)
    }

    /// Per-port counters.
    pub fn ports(&self, sw: &str) -> Result<serde_json::Value, ControlError> {
        self.with_dp(sw, |dp| {
            let st = dp.stats().map_err(dp_err)?;
            Ok(serde_json::json!({
                "items": st.ports.iter().map(|p| serde_json::json!({
                    "name": p.name, "number": p.number,
                    "rx_packets": p.stats.rx_packets, "rx_bytes": p.stats.rx_bytes,
                    "rx_dropped": p.stats.rx_dropped, "rx_errors": p.stats.rx_errors,
                    "tx_packets": p.stats.tx_packets, "tx_bytes": p.stats.tx_bytes,
                    "tx_dropped": p.stats.tx_dropped,
                    "rx_gso": p.io.rx_gso, "tx_gso": p.io.tx_gso, "tx_segments": p.io.tx_segments,
                })).collect::<Vec<_>>(),
                "isolation_drops": st.switch.isolation_drops,
            }))
        })
    }

    /// Adds a flow (ovs-ofctl syntax).
    pub fn add_flow(&self, store: &dyn Store, sw: &str, flow: &str) -> Result<(), ControlError> {
        let (mut r, rev) = Self::record(store, sw)?;
        r.flows = self.with_dp(sw, |dp| {
            dp.add_flow(flow).map_err(dp_err)?;
            Self::flows_of(dp)
        })?;
        Self::save(store, &r, rev)
    }

    /// Deletes the flows matching `filter` ("" = all); returns how many.
    pub fn del_flows(
        &self,
        store: &dyn Store,
        sw: &str,
        filter: &str,
        strict: bool,
    ) -> Result<usize, ControlError> {
        let (mut r, rev) = Self::record(store, sw)?;
        let (n, flows) = self.with_dp(sw, |dp| {
            let n = dp.del_flows(filter, strict).map_err(dp_err)?;
            Ok((n, Self::flows_of(dp)?))
        })?;
        r.flows = flows;
        Self::save(store, &r, rev)?;
        Ok(n)
    }

    /// `dump-flows` text with counters.
    pub fn dump_flows(&self, sw: &str) -> Result<String, ControlError> {
        self.with_dp(sw, |dp| dp.dump_flows().map_err(dp_err))
    }

    /// Traces a packet description through the pipeline (changes nothing).
    pub fn trace(&self, sw: &str, packet: &str) -> Result<String, ControlError> {
        let packet = packet.to_string();
        self.with_dp(sw, |dp| {
            dp.with_switch(move |s, now| s.trace(&packet, now).map(|t| t.to_string()))
                .map_err(dp_err)?
                .map_err(|e| ControlError::invalid("packet", e.to_string()))
        })
    }

    /// Starts every stored switch (daemon start). A port or flow that cannot be restored is
    /// logged and skipped; the rest of the switch runs.
    pub fn restore(&self, store: &dyn Store) -> Result<(), ControlError> {
        for r in self.list(store)? {
            let dp = match Dataplane::spawn(DataplaneConfig::default()) {
                Ok(dp) => dp,
                Err(e) => {
                    tracing::error!(switch = %r.name, %e, "cannot start switch");
                    continue;
                }
            };
            for p in &r.ports {
                if let Err(e) = p.spec().and_then(|s| dp.add_port(s).map_err(dp_err)) {
                    tracing::error!(switch = %r.name, port = %p.name, %e, "cannot restore port");
                }
            }
            for f in &r.flows {
                if let Err(e) = dp.add_flow(f) {
                    tracing::error!(switch = %r.name, flow = %f, %e, "cannot restore flow");
                }
            }
            self.running.lock().insert(r.name.clone(), dp);
        }
        Ok(())
    }

    /// Stops every switch (daemon shutdown).
    pub fn stop_all(&self) {
        for (_, dp) in self.running.lock().drain() {
            dp.stop();
        }
    }
}
