//! Bandwidth slices: network caps, port caps and guarantees (compiled to meters).

use super::*;

impl Controller {
    /// Sets (or clears, `None`) a network's cap: what all its ports send together, and the
    /// capacity its ports' guarantees share.
    pub fn set_network_bandwidth(
        &self,
        p: &Principal,
        id: &str,
        cap_bps: Option<u64>,
    ) -> Result<Network, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut n = Self::find_network(&st, p, id)?.clone();
        if cap_bps == Some(0) {
            return Err(conflict(
                "a cap of 0 would stop the network: clear it instead",
            ));
        }
        let guaranteed: u64 = st
            .topo
            .ports
            .values()
            .filter(|x| x.network == n.id)
            .filter_map(|x| x.min_bps)
            .sum();
        match cap_bps {
            Some(c) if guaranteed > c => {
                return Err(conflict(format!(
                    "its ports are guaranteed {guaranteed} bit/s in all, more than {c}"
                )))
            }
            None if guaranteed > 0 => {
                return Err(conflict("its ports' guarantees need the network's cap"))
            }
            _ => {}
        }
        n.cap_bps = cap_bps;
        self.update_record(&mut st, n)
    }

    /// Sets a port's cap and guarantee (bits per second; `None` clears). A guarantee is a
    /// share of the network's cap: the guarantees of a network fit within it.
    pub fn set_port_bandwidth(
        &self,
        p: &Principal,
        id: &str,
        cap_bps: Option<u64>,
        min_bps: Option<u64>,
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut port = Self::find_port(&st, p, id)?.clone();
        if cap_bps == Some(0) {
            return Err(conflict("a cap of 0 would stop the port: clear it instead"));
        }
        if let (Some(c), Some(m)) = (cap_bps, min_bps) {
            if m > c {
                return Err(conflict("the guarantee is above the cap"));
            }
        }
        if let Some(m) = min_bps {
            let n = &st.topo.networks[&port.network];
            let Some(cap) = n.cap_bps else {
                return Err(conflict(format!(
                    "a guarantee is a share of the network's cap: network {} has none",
                    n.name
                )));
            };
            let others: u64 = st
                .topo
                .ports
                .values()
                .filter(|x| x.network == port.network && x.id != port.id)
                .filter_map(|x| x.min_bps)
                .sum();
            if others + m > cap {
                return Err(conflict(format!(
                    "the network's ports would be guaranteed {} bit/s, more than its cap {cap}",
                    others + m
                )));
            }
        }
        port.cap_bps = cap_bps;
        port.min_bps = min_bps;
        self.update_record(&mut st, port)
    }
}
