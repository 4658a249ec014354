//! Virtual switches hosted by the daemon: desired state in the store (the switch, each port
//! and each flow under its own key, see [`record`]), one dataplane per switch (its forwarding
//! threads, one per CPU up to four, share the one switch), rebuilt from the store at every
//! start.
//!
//! # Invariants
//! - Order of a change: the dataplane first (it validates: a port that cannot be opened or a
//!   flow that does not parse changes nothing), then the store. If the store write fails, the
//!   dataplane change is taken back before the error is answered: a caller that gets an error
//!   got no change, and one that gets a success has it both running and stored.
//! - Changes to one switch are serialized by its own mutex, held across the dataplane change
//!   and the store write, so concurrent changes never race each other in the store; changes
//!   to different switches run in parallel. The map of switches is locked only to find one
//!   (and to create or delete one).
//! - A change writes only the keys it changes (a flow add: one key, plus the key of the flow
//!   it replaced), so its cost does not grow with the table.
//! - Flows are stored as the switch's own rendering of their rules (`format_flow`) under ids
//!   assigned in add order, so what is replayed at start is exactly what ran, in the same
//!   order. The control plane knows which engine rule each stored flow is; a flow the engine
//!   replaced, deleted or expired loses its key in the next change's transaction.

mod engine;
mod record;

pub(crate) use record::valid_ifname;
pub use record::{PortRecord, SwitchRecord};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneError, PortSpec};
use strata_net::RuleId;
use strata_state::{Store, Txn};

use crate::error::{clip, ControlError, Resource};
use engine::{clip_dp, clip_flow};
use record::{
    children, flow_key, json, port_key, switch_key, Loaded, StoredFlow, StoredPort, StoredSwitch,
};

/// Whether switches started from now on carry veth ports' established flows in the kernel
/// (`strata serve --no-fastpath` turns it off before any switch starts).
pub fn set_fastpath_default(on: bool) {
    strata_dataplane::set_fastpath_default(on);
}

fn dp_err(e: DataplaneError) -> ControlError {
    ControlError::Switch(clip_dp(e))
}

/// The default flow of a new switch: a learning switch, like Open vSwitch's NORMAL.
pub const DEFAULT_FLOW: &str = "priority=0,actions=normal";

/// A running switch: its dataplane and what the control plane knows of it, behind the
/// switch's own mutex.
struct Hosted {
    /// None once the switch is deleted (a change that waited for the mutex then answers
    /// not-found).
    dp: Option<Dataplane>,
    name: String,
    created: u64,
    /// The switch record's revision: every change compares on it.
    rev: u64,
    /// Ports by name: add order and request.
    ports: BTreeMap<String, StoredPort>,
    next_port: u64,
    /// Stored flows by id (add order): the engine's rule and the stored text.
    flows: BTreeMap<u64, (RuleId, String)>,
    /// The stored id of each engine rule.
    by_rule: HashMap<RuleId, u64>,
    next_flow: u64,
}

impl Hosted {
    fn dp(&self) -> Result<&Dataplane, ControlError> {
        self.dp
            .as_ref()
            .ok_or_else(|| ControlError::not_found(Resource::Switch, &self.name))
    }

    fn view(&self) -> SwitchRecord {
        let mut ports: Vec<&StoredPort> = self.ports.values().collect();
        ports.sort_by_key(|p| p.seq);
        SwitchRecord {
            name: self.name.clone(),
            created: self.created,
            ports: ports.into_iter().map(|p| p.port.clone()).collect(),
            flows: self.flows.values().map(|(_, t)| t.clone()).collect(),
        }
    }

    fn forget_rule(&mut self, rule: RuleId) -> Option<u64> {
        let id = self.by_rule.remove(&rule)?;
        self.flows.remove(&id);
        Some(id)
    }

    fn remember(&mut self, id: u64, rule: RuleId, text: String) {
        self.flows.insert(id, (rule, text));
        self.by_rule.insert(rule, id);
    }

    /// Writes `t` (with the comparison on the switch record added); `Busy` if it lost.
    fn commit(&self, store: &dyn Store, t: Txn) -> Result<(), ControlError> {
        let t = Txn {
            compare: vec![strata_state::Compare::ModRevision(
                switch_key(&self.name),
                self.rev,
            )],
            success: t.success,
        };
        if store.txn(t)?.succeeded {
            Ok(())
        } else {
            Err(ControlError::Busy(format!(
                "switch {} was changed by another writer; retry",
                self.name
            )))
        }
    }

    /// Engine rules the control plane knows of that are gone (expired): their store keys.
    fn gone_keys(&self) -> Result<Vec<(RuleId, u64)>, ControlError> {
        let known: Vec<RuleId> = self.flows.values().map(|(r, _)| *r).collect();
        let gone = self
            .dp()?
            .with_switch(move |sw, _| engine::gone(sw, &known))
            .map_err(dp_err)?;
        Ok(gone
            .into_iter()
            .filter_map(|r| self.by_rule.get(&r).map(|&id| (r, id)))
            .collect())
    }
}

/// The daemon's switches.
#[derive(Default)]
pub struct Switches {
    running: Mutex<HashMap<String, Arc<Mutex<Hosted>>>>,
}

impl std::fmt::Debug for Switches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switches")
            .field("running", &self.running.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Switches {
    /// The running switch `name`.
    fn hosted(&self, name: &str) -> Result<Arc<Mutex<Hosted>>, ControlError> {
        self.running
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::not_found(Resource::Switch, name))
    }

    /// Creates and starts a switch with the default learning flow.
    pub fn create(
        &self,
        store: &dyn Store,
        name: &str,
        now: u64,
    ) -> Result<SwitchRecord, ControlError> {
        strata_block::pool::validate_name(name).map_err(|e| match e {
            strata_block::AdminError::InvalidName { why, .. } => {
                ControlError::invalid("name", format!("invalid name {:?}: {why}", clip(name)))
            }
            other => ControlError::invalid("name", other.to_string()),
        })?;
        let mut running = self.running.lock();
        if running.contains_key(name) || store.get(&switch_key(name))?.is_some() {
            return Err(ControlError::exists(Resource::Switch, name));
        }
        let dp = Dataplane::spawn(DataplaneConfig::default()).map_err(dp_err)?;
        let first = dp
            .with_switch(|sw, now| engine::install(sw, now, DEFAULT_FLOW))
            .map_err(dp_err)?
            .map_err(|e| dp_err(e.into()))?;
        let rec = StoredSwitch {
            name: name.to_string(),
            created: now,
            ports: None,
            flows: None,
        };
        let r = store.txn(
            Txn::new()
                .when(switch_key(name), 0)
                .put(switch_key(name), json(&rec))
                .put(
                    flow_key(name, 1),
                    json(&StoredFlow {
                        flow: first.text.clone(),
                    }),
                ),
        )?;
        if !r.succeeded {
            return Err(ControlError::exists(Resource::Switch, name));
        }
        let mut h = Hosted {
            dp: Some(dp),
            name: name.to_string(),
            created: now,
            rev: r.revision,
            ports: BTreeMap::new(),
            next_port: 0,
            flows: BTreeMap::new(),
            by_rule: HashMap::new(),
            next_flow: 2,
        };
        h.remember(1, first.id, first.text);
        let view = h.view();
        running.insert(name.to_string(), Arc::new(Mutex::new(h)));
        Ok(view)
    }

    /// Stops and forgets a switch (its TAP devices are closed, its veth pairs deleted), with
    /// every key below it.
    pub fn delete(&self, store: &dyn Store, name: &str) -> Result<(), ControlError> {
        let mut running = self.running.lock();
        let hosted = running.get(name).cloned();
        let mut guard = hosted.as_ref().map(|h| h.lock());
        let Some(rec) = store.get(&switch_key(name))? else {
            return Err(ControlError::not_found(Resource::Switch, name));
        };
        let (kids, _) = store.range(&children(name), None, 0)?;
        let mut t = Txn::new()
            .when(switch_key(name), rec.mod_revision)
            .delete(switch_key(name));
        for kv in kids {
            t = t.delete(kv.key);
        }
        if !store.txn(t)?.succeeded {
            return Err(ControlError::Busy(format!(
                "switch {name} changed while it was deleted; retry"
            )));
        }
        if let Some(dp) = guard.as_mut().and_then(|g| g.dp.take()) {
            dp.stop();
        }
        drop(guard);
        running.remove(name);
        Ok(())
    }

    /// All switches, as stored.
    pub fn list(&self, store: &dyn Store) -> Result<Vec<SwitchRecord>, ControlError> {
        Ok(record::load_all(store)?.iter().map(Loaded::view).collect())
    }

    /// One switch, as stored.
    pub fn get(&self, store: &dyn Store, name: &str) -> Result<SwitchRecord, ControlError> {
        Ok(record::load(store, name)?.view())
    }

    /// Adds a port.
    pub fn add_port(
        &self,
        store: &dyn Store,
        sw: &str,
        mut port: PortRecord,
    ) -> Result<SwitchRecord, ControlError> {
        let spec = port.spec()?;
        // A veth port stores the peer name it was made with, so the record says it.
        if let PortSpec::Veth { peer, .. } = &spec {
            port.peer.clone_from(peer);
        }
        let hosted = self.hosted(sw)?;
        let mut h = hosted.lock();
        h.dp()?.add_port(spec).map_err(dp_err)?;
        let stored = StoredPort {
            seq: h.next_port,
            port,
        };
        let name = stored.port.name.clone();
        if let Err(e) = h.commit(store, Txn::new().put(port_key(sw, &name), json(&stored))) {
            if let Err(u) = h.dp()?.remove_port(&name) {
                tracing::error!(switch = %sw, port = %name, %u, "cannot take back a port");
            }
            return Err(e);
        }
        h.next_port += 1;
        h.ports.insert(name, stored);
        Ok(h.view())
    }

    /// Removes a port.
    pub fn remove_port(&self, store: &dyn Store, sw: &str, port: &str) -> Result<(), ControlError> {
        let hosted = self.hosted(sw)?;
        let mut h = hosted.lock();
        let Some(stored) = h.ports.get(port).cloned() else {
            return Err(ControlError::not_found(Resource::Port, port));
        };
        match h.dp()?.remove_port(port) {
            // A port that could not be restored at start is only in the store.
            Ok(()) | Err(DataplaneError::Port(strata_net::switch::PortError::NoSuchPort(_))) => {}
            Err(e) => return Err(dp_err(e)),
        }
        if let Err(e) = h.commit(store, Txn::new().delete(port_key(sw, port))) {
            let back = stored
                .port
                .spec()
                .and_then(|s| h.dp()?.add_port(s).map_err(dp_err));
            if let Err(u) = back {
                tracing::error!(switch = %sw, port = %port, %u, "cannot put back a port");
            }
            return Err(e);
        }
        h.ports.remove(port);
        Ok(())
    }

    /// Per-port counters.
    pub fn ports(&self, sw: &str) -> Result<serde_json::Value, ControlError> {
        let hosted = self.hosted(sw)?;
        let h = hosted.lock();
        let st = h.dp()?.stats().map_err(dp_err)?;
        Ok(serde_json::json!({
            "items": st.ports.iter().map(|p| {
                let rec = h.ports.get(&p.name).map(|s| &s.port);
                let mut v = serde_json::json!({
                "name": p.name, "number": p.number,
                "kind": rec.and_then(|r| r.kind.clone()).unwrap_or_else(|| "tap".into()),
                "rx_packets": p.stats.rx_packets, "rx_bytes": p.stats.rx_bytes,
                "rx_dropped": p.stats.rx_dropped, "rx_errors": p.stats.rx_errors,
                "tx_packets": p.stats.tx_packets, "tx_bytes": p.stats.tx_bytes,
                "tx_dropped": p.stats.tx_dropped,
                "rx_gso": p.io.rx_gso, "tx_gso": p.io.tx_gso, "tx_segments": p.io.tx_segments,
                });
                if let Some(peer) = rec.and_then(|r| r.peer.clone()) {
                    v["peer"] = peer.into();
                }
                v
            }).collect::<Vec<_>>(),
            "isolation_drops": st.switch.isolation_drops,
        }))
    }

    /// Adds a flow (ovs-ofctl syntax): one new key, and the key of the flow it replaced
    /// (and of flows that expired) deleted, in one transaction.
    pub fn add_flow(&self, store: &dyn Store, sw: &str, flow: &str) -> Result<(), ControlError> {
        let hosted = self.hosted(sw)?;
        let mut h = hosted.lock();
        let text = flow.to_string();
        let done = h
            .dp()?
            .with_switch(move |s, now| engine::install(s, now, &text))
            .map_err(dp_err)?
            .map_err(|e| ControlError::Switch(DataplaneError::Flow(clip_flow(e))))?;
        let replaced = done
            .replaced
            .as_ref()
            .and_then(|(r, _)| h.by_rule.get(r).copied());
        // Every rule known but the replaced one, plus the new one: fewer means some expired.
        let expected = h.flows.len() - usize::from(replaced.is_some()) + 1;
        let expired = if done.n_rules < expected {
            h.gone_keys()?
                .into_iter()
                .filter(|&(_, id)| Some(id) != replaced)
                .collect()
        } else {
            vec![]
        };
        let id = h.next_flow;
        let mut t = Txn::new().put(
            flow_key(sw, id),
            json(&StoredFlow {
                flow: done.text.clone(),
            }),
        );
        for old in replaced.iter().chain(expired.iter().map(|(_, id)| id)) {
            t = t.delete(flow_key(sw, *old));
        }
        if let Err(e) = h.commit(store, t) {
            let (new, old) = (done.id, done.replaced.map(|(_, r)| r));
            let back = h
                .dp()?
                .with_switch(move |s, now| engine::uninstall(s, now, new, old))
                .map_err(dp_err);
            match (back, replaced) {
                (Ok(Some(rule)), Some(old_id)) => {
                    // The replaced rule is back under a new handle.
                    if let Some((old_rule, text)) = h.flows.remove(&old_id) {
                        h.by_rule.remove(&old_rule);
                        h.remember(old_id, rule, text);
                    }
                }
                (Ok(_), _) => {}
                (Err(u), _) => {
                    tracing::error!(switch = %sw, %u, "cannot take back a flow");
                }
            }
            return Err(e);
        }
        h.next_flow += 1;
        if let Some((r, _)) = done.replaced {
            h.forget_rule(r);
        }
        for (r, _) in expired {
            h.forget_rule(r);
        }
        h.remember(id, done.id, done.text);
        Ok(())
    }

    /// Deletes the flows matching `filter` ("" = all); returns how many. Their keys are
    /// deleted in one transaction (with those of flows that expired).
    pub fn del_flows(
        &self,
        store: &dyn Store,
        sw: &str,
        filter: &str,
        strict: bool,
    ) -> Result<usize, ControlError> {
        let hosted = self.hosted(sw)?;
        let mut h = hosted.lock();
        let filter = filter.to_string();
        let known: Vec<RuleId> = h.flows.values().map(|(r, _)| *r).collect();
        let (n, gone) = h
            .dp()?
            .with_switch(move |s, _| {
                s.del_flows(&filter, strict)
                    .map(|n| (n, engine::gone(s, &known)))
            })
            .map_err(dp_err)?
            .map_err(|e| ControlError::Switch(DataplaneError::Flow(clip_flow(e))))?;
        let gone: Vec<(RuleId, u64)> = gone
            .into_iter()
            .filter_map(|r| h.by_rule.get(&r).map(|&id| (r, id)))
            .collect();
        let mut t = Txn::new();
        for (_, id) in &gone {
            t = t.delete(flow_key(sw, *id));
        }
        if let Err(e) = h.commit(store, t) {
            let texts: Vec<String> = gone.iter().map(|(_, id)| h.flows[id].1.clone()).collect();
            match h
                .dp()?
                .with_switch(move |s, now| engine::reinstall(s, now, &texts))
            {
                Ok(rules) => {
                    for ((old, id), rule) in gone.into_iter().zip(rules) {
                        h.by_rule.remove(&old);
                        match rule {
                            Some(rule) => {
                                let text = h.flows[&id].1.clone();
                                h.remember(id, rule, text);
                            }
                            None => {
                                h.flows.remove(&id);
                            }
                        }
                    }
                }
                Err(u) => tracing::error!(switch = %sw, %u, "cannot put back deleted flows"),
            }
            return Err(e);
        }
        for (r, _) in gone {
            h.forget_rule(r);
        }
        Ok(n)
    }

    /// `dump-flows` text with counters.
    pub fn dump_flows(&self, sw: &str) -> Result<String, ControlError> {
        let hosted = self.hosted(sw)?;
        let h = hosted.lock();
        h.dp()?.dump_flows().map_err(dp_err)
    }

    /// Traces a packet description through the pipeline (changes nothing); the last line
    /// says whether the veth fast path carries the flow.
    pub fn trace(&self, sw: &str, packet: &str) -> Result<String, ControlError> {
        let hosted = self.hosted(sw)?;
        let h = hosted.lock();
        h.dp()?.trace(packet).map_err(dp_err)?.map_err(|e| {
            let e = match e {
                strata_net::trace::TraceError::Parse(p) => clip_flow(p).to_string(),
                // The switch has no such port: its state, not the description's form.
                strata_net::trace::TraceError::UnknownPort(n) => {
                    return ControlError::TraceInPortUnknown(crate::error::clip(&n.to_string()))
                }
                other => other.to_string(),
            };
            ControlError::invalid("packet", e)
        })
    }

    /// Starts every stored switch (daemon start), migrating one stored in the old format
    /// first. A port or flow that cannot be restored is logged and skipped (its key stays:
    /// it is desired state); the rest of the switch runs.
    pub fn restore(&self, store: &dyn Store) -> Result<(), ControlError> {
        for l in record::load_all(store)? {
            let l = record::migrate(store, l)?;
            let name = l.record.name.clone();
            let dp = match Dataplane::spawn(DataplaneConfig::default()) {
                Ok(dp) => dp,
                Err(e) => {
                    tracing::error!(switch = %name, %e, "cannot start switch");
                    continue;
                }
            };
            for p in &l.ports {
                let added = p
                    .port
                    .spec()
                    .and_then(|s: PortSpec| dp.add_port(s).map_err(dp_err));
                if let Err(e) = added {
                    tracing::error!(switch = %name, port = %p.port.name, %e, "cannot restore port");
                }
            }
            let texts: Vec<String> = l.flows.iter().map(|(_, f)| f.clone()).collect();
            let installed = dp
                .with_switch(move |s, now| {
                    texts
                        .iter()
                        .map(|t| {
                            engine::install(s, now, t).map(|i| (i.id, i.replaced.map(|r| r.0)))
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(dp_err)?;
            let mut h = Hosted {
                dp: Some(dp),
                name: name.clone(),
                created: l.record.created,
                rev: l.rev,
                next_port: l.ports.last().map_or(0, |p| p.seq + 1),
                ports: l
                    .ports
                    .iter()
                    .map(|p| (p.port.name.clone(), p.clone()))
                    .collect(),
                flows: BTreeMap::new(),
                by_rule: HashMap::new(),
                next_flow: l.flows.last().map_or(1, |f| f.0 + 1),
            };
            // A stored flow a later one replaces (same match and priority) is not kept.
            let mut superseded = Vec::new();
            for ((id, text), r) in l.flows.into_iter().zip(installed) {
                match r {
                    Ok((rule, replaced)) => {
                        if let Some(old) = replaced.and_then(|o| h.forget_rule(o)) {
                            superseded.push(old);
                        }
                        h.remember(id, rule, text);
                    }
                    Err(e) => {
                        let e = clip_flow(e);
                        tracing::error!(switch = %name, flow = %clip(&text), %e, "cannot restore flow");
                    }
                }
            }
            if !superseded.is_empty() {
                let mut t = Txn::new();
                for id in &superseded {
                    t = t.delete(flow_key(&name, *id));
                }
                h.commit(store, t)?;
            }
            self.running.lock().insert(name, Arc::new(Mutex::new(h)));
        }
        Ok(())
    }

    /// Stops every switch (daemon shutdown).
    pub fn stop_all(&self) {
        for (_, h) in self.running.lock().drain() {
            if let Some(dp) = h.lock().dp.take() {
                dp.stop();
            }
        }
    }
}
