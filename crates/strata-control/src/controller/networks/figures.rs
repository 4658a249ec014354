//! Figures: per-port counters and rates, `/metrics`, the compiled flows, recounts.

use super::*;

impl Controller {
    /// A network's figures: per port (bytes, packets, rates over 1 s and 10 s, drops by
    /// reason, from the switch's counters of the port's device) and their sums. A port's
    /// counters are what its device sent into the switch (`rx`) and got from it (`tx`).
    pub fn network_stats(
        &self,
        p: &Principal,
        network: &str,
    ) -> Result<NetworkStats, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?.clone();
        let counters = match &st.dp {
            Some(dp) => dp.stats().map_err(dp_err)?.ports,
            None => Vec::new(),
        };
        let mut ports: Vec<PortFigures> = Vec::new();
        for x in st.topo.ports.values().filter(|x| x.network == n.id) {
            let Some(c) = counters.iter().find(|c| c.name == x.device) else {
                continue;
            };
            let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
            for (code, k) in &c.drops {
                *drops.entry((*code).to_string()).or_default() += k;
            }
            ports.push(PortFigures {
                port: x.name.clone(),
                device: x.device.clone(),
                rx_packets: c.stats.rx_packets,
                rx_bytes: c.stats.rx_bytes,
                tx_packets: c.stats.tx_packets,
                tx_bytes: c.stats.tx_bytes,
                rx_bps_1s: c.rates.last_1s.rx_bps,
                rx_bps_10s: c.rates.last_10s.rx_bps,
                tx_bps_1s: c.rates.last_1s.tx_bps,
                tx_bps_10s: c.rates.last_10s.tx_bps,
                drops,
            });
        }
        ports.sort_by(|a, b| a.port.cmp(&b.port));
        let mut total = PortFigures::default();
        for f in &ports {
            total.rx_packets += f.rx_packets;
            total.rx_bytes += f.rx_bytes;
            total.tx_packets += f.tx_packets;
            total.tx_bytes += f.tx_bytes;
            total.rx_bps_1s += f.rx_bps_1s;
            total.rx_bps_10s += f.rx_bps_10s;
            total.tx_bps_1s += f.tx_bps_1s;
            total.tx_bps_10s += f.tx_bps_10s;
            for (k, v) in &f.drops {
                *total.drops.entry(k.clone()).or_default() += v;
            }
        }
        Ok(NetworkStats {
            network: n.name,
            ports,
            total,
        })
    }

    /// The compiled flows on this node's integration switch, and what each cookie stands
    /// for (admin: the whole switch).
    pub fn network_flows(&self, p: &Principal) -> Result<String, ControlError> {
        Self::require(p, Role::Admin)?;
        let st = self.vpc.inner.lock();
        match &st.dp {
            Some(dp) => dp.dump_flows().map_err(dp_err),
            None => Ok(String::new()),
        }
    }

    /// Tenant-network figures in Prometheus text, per port: packets and bytes each way,
    /// bandwidth over 1 s and 10 s, drops by reason (appended to `/metrics`).
    pub(in crate::controller) fn network_metrics(
        &self,
        p: &Principal,
        o: &mut String,
    ) -> Result<(), ControlError> {
        use std::fmt::Write;
        let nets: Vec<Network> = self
            .vpc
            .inner
            .lock()
            .topo
            .networks
            .values()
            .cloned()
            .collect();
        let (mut pk, mut by, mut bw, mut dr) =
            (String::new(), String::new(), String::new(), String::new());
        for n in nets {
            let st = self.network_stats(p, &n.id)?;
            for f in &st.ports {
                let l = format!(
                    "tenant=\"{}\",network=\"{}\",port=\"{}\"",
                    n.tenant, n.name, f.port
                );
                let _ = writeln!(
                    pk,
                    "strata_network_port_packets_total{{{l},dir=\"rx\"}} {}",
                    f.rx_packets
                );
                let _ = writeln!(
                    pk,
                    "strata_network_port_packets_total{{{l},dir=\"tx\"}} {}",
                    f.tx_packets
                );
                let _ = writeln!(
                    by,
                    "strata_network_port_bytes_total{{{l},dir=\"rx\"}} {}",
                    f.rx_bytes
                );
                let _ = writeln!(
                    by,
                    "strata_network_port_bytes_total{{{l},dir=\"tx\"}} {}",
                    f.tx_bytes
                );
                for (dir, w, v) in [
                    ("rx", "1s", f.rx_bps_1s),
                    ("rx", "10s", f.rx_bps_10s),
                    ("tx", "1s", f.tx_bps_1s),
                    ("tx", "10s", f.tx_bps_10s),
                ] {
                    let _ = writeln!(bw, "strata_network_port_bytes_per_second{{{l},dir=\"{dir}\",window=\"{w}\"}} {}", v / 8);
                }
                for (reason, v) in &f.drops {
                    let _ = writeln!(
                        dr,
                        "strata_network_port_drops_total{{{l},reason=\"{reason}\"}} {v}"
                    );
                }
            }
        }
        let _ = write!(o, "# HELP strata_network_port_packets_total Packets a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_packets_total counter\n{pk}");
        let _ = write!(o, "# HELP strata_network_port_bytes_total Bytes a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_bytes_total counter\n{by}");
        let _ = write!(o, "# HELP strata_network_port_bytes_per_second Bandwidth of a tenant port over a window.\n# TYPE strata_network_port_bytes_per_second gauge\n{bw}");
        let _ = write!(o, "# HELP strata_network_port_drops_total Packets of a tenant port dropped, by where they died.\n# TYPE strata_network_port_drops_total counter\n{dr}");
        Ok(())
    }

    /// Whether the tenant still has security groups or floating IPs (not counted by a quota,
    /// but they would outlive a deleted tenant).
    pub(in crate::controller) fn tenant_has_network_objects(&self, tenant: &str) -> bool {
        let st = self.vpc.inner.lock();
        st.topo.groups.values().any(|g| g.tenant == tenant)
            || st.topo.floating_ips.values().any(|f| f.tenant == tenant)
            || st.topo.networks.values().any(|n| n.tenant == tenant)
    }

    /// Counts of networks and ports per tenant, for the usage recount at start.
    pub(in crate::controller) fn network_counts(
        &self,
    ) -> Result<Vec<(String, u64, u64)>, ControlError> {
        let mut m: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for n in self.vpc_all::<Network>("networks")? {
            m.entry(n.tenant).or_default().0 += 1;
        }
        for x in self.vpc_all::<Port>("ports")? {
            m.entry(x.tenant).or_default().1 += 1;
        }
        Ok(m.into_iter().map(|(t, (a, b))| (t, a, b)).collect())
    }

    /// Stops the integration switch (at shutdown).
    pub fn stop_networks(&self) {
        if let Some(dp) = self.vpc.inner.lock().dp.take() {
            dp.stop();
        }
    }
}
