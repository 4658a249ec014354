//! The switch methods: authorize (switches are admin-only: the platform's network) and
//! delegate to [`crate::net`], which owns the switches' desired state and dataplanes.
//! Reads of a running switch (counters, flows, trace) go to its dataplane without reading
//! the store, so their cost does not grow with the stored table.

use super::auth::Principal;
use super::store::now;
use super::Controller;
use crate::error::ControlError;
use crate::model::Role;

impl Controller {
    /// Creates and starts a switch.
    pub fn create_switch(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<crate::net::SwitchRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.create(self.store.as_ref(), name, now())
    }

    /// Deletes a switch.
    pub fn delete_switch(&self, p: &Principal, name: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.delete(self.store.as_ref(), name)
    }

    /// Lists switches.
    pub fn list_switches(
        &self,
        p: &Principal,
    ) -> Result<Vec<crate::net::SwitchRecord>, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.list(self.store.as_ref())
    }

    /// One switch.
    pub fn get_switch(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<crate::net::SwitchRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.get(self.store.as_ref(), name)
    }

    /// Adds a port to a switch.
    pub fn add_switch_port(
        &self,
        p: &Principal,
        sw: &str,
        port: crate::net::PortRecord,
    ) -> Result<crate::net::SwitchRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.add_port(self.store.as_ref(), sw, port)
    }

    /// Removes a port.
    pub fn remove_switch_port(
        &self,
        p: &Principal,
        sw: &str,
        port: &str,
    ) -> Result<(), ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.remove_port(self.store.as_ref(), sw, port)
    }

    /// Port counters.
    pub fn switch_ports(&self, p: &Principal, sw: &str) -> Result<serde_json::Value, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.ports(sw)
    }

    /// Adds a flow.
    pub fn add_switch_flow(&self, p: &Principal, sw: &str, flow: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.add_flow(self.store.as_ref(), sw, flow)
    }

    /// Deletes flows.
    pub fn del_switch_flows(
        &self,
        p: &Principal,
        sw: &str,
        filter: &str,
        strict: bool,
    ) -> Result<usize, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches
            .del_flows(self.store.as_ref(), sw, filter, strict)
    }

    /// Flows with counters.
    pub fn dump_switch_flows(&self, p: &Principal, sw: &str) -> Result<String, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.dump_flows(sw)
    }

    /// Traces a packet.
    pub fn trace_switch(
        &self,
        p: &Principal,
        sw: &str,
        packet: &str,
    ) -> Result<String, ControlError> {
        Self::require(p, Role::Admin)?;
        self.switches.trace(sw, packet)
    }

    /// Stops the switches (daemon shutdown).
    pub fn shutdown(&self) {
        self.switches.stop_all();
        self.stop_networks();
    }
}
