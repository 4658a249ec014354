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
        let st = self.vpc_lock();
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
                handshake_rtt: c.stats.handshake_rtt,
                probes: c.stats.probes,
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
            total.handshake_rtt.merge(&f.handshake_rtt);
            total.probes.sent += f.probes.sent;
            total.probes.answered += f.probes.answered;
            total.probes.rtt.merge(&f.probes.rtt);
        }
        Ok(NetworkStats {
            network: n.name,
            ports,
            total,
        })
    }

    /// Active probes: `count` rounds, `interval` apart, of one ICMP echo request from each
    /// port's gateway to the port's endpoint (the switch sends them, `strata_net::probe`),
    /// then up to a second for the last answers; each port's probes sent, answered and
    /// their round trips in this run (the differences of its probe counters). A port whose
    /// endpoint does not answer (no IP stack up yet, or one that drops echo requests) shows
    /// them lost. The network's lock is held only to send each round and to read counters,
    /// so changes go on meanwhile.
    pub fn probe_network(
        &self,
        p: &Principal,
        network: &str,
        count: u32,
        interval: std::time::Duration,
    ) -> Result<Vec<PortProbe>, ControlError> {
        Self::require(p, Role::Member)?;
        type Target = (
            String,
            String,
            Ipv4Addr,
            u32,
            strata_net::probe::ProbeTarget,
        );
        let targets: Vec<Target> = {
            let st = self.vpc_lock();
            let n = Self::find_network(&st, p, network)?.clone();
            st.topo
                .ports
                .values()
                .filter(|x| x.network == n.id)
                .filter_map(|x| {
                    let s = st.topo.subnets.get(&x.subnet)?;
                    let no = *st.topo.bound.get(&x.id)?;
                    let t = strata_net::probe::ProbeTarget {
                        src_mac: s.gateway_mac,
                        src_ip: s.gateway,
                        dst_mac: x.mac,
                        dst_ip: x.ip,
                    };
                    Some((x.name.clone(), x.device.clone(), x.ip, no, t))
                })
                .collect()
        };
        let read = |this: &Self| -> Result<Vec<strata_net::probe::ProbeStats>, ControlError> {
            let st = this.vpc.inner.lock();
            let counters = match &st.dp {
                Some(dp) => dp.stats().map_err(dp_err)?.ports,
                None => Vec::new(),
            };
            Ok(targets
                .iter()
                .map(|t| {
                    counters
                        .iter()
                        .find(|c| c.name == t.1)
                        .map(|c| c.stats.probes)
                        .unwrap_or_default()
                })
                .collect())
        };
        let before = read(self)?;
        let list: Vec<(u32, strata_net::probe::ProbeTarget)> =
            targets.iter().map(|t| (t.3, t.4)).collect();
        for round in 0..count {
            if round > 0 {
                std::thread::sleep(interval);
            }
            let st = self.vpc_lock();
            if let Some(dp) = &st.dp {
                dp.probe(list.clone()).map_err(dp_err)?;
            }
        }
        // The last answers: until every probe is answered, at most a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut after = read(self)?;
        while std::time::Instant::now() < deadline
            && after
                .iter()
                .zip(&before)
                .any(|(a, b)| a.answered.saturating_sub(b.answered) < a.sent.saturating_sub(b.sent))
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            after = read(self)?;
        }
        let mut out: Vec<PortProbe> = targets
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(t, (b, a))| {
                let mut rtt = a.rtt;
                for (x, y) in rtt.buckets.iter_mut().zip(b.rtt.buckets.iter()) {
                    *x = x.saturating_sub(*y);
                }
                rtt.count = rtt.count.saturating_sub(b.rtt.count);
                rtt.sum_us = rtt.sum_us.saturating_sub(b.rtt.sum_us);
                // Counters of a port rebound meanwhile start again: never below zero.
                PortProbe {
                    port: t.0.clone(),
                    ip: t.2,
                    sent: a.sent.saturating_sub(b.sent),
                    answered: a.answered.saturating_sub(b.answered),
                    rtt,
                }
            })
            .collect();
        out.sort_by(|a, b| a.port.cmp(&b.port));
        Ok(out)
    }

    /// The compiled flows on this node's integration switch, and what each cookie stands
    /// for (admin: the whole switch).
    pub fn network_flows(&self, p: &Principal) -> Result<String, ControlError> {
        Self::require(p, Role::Admin)?;
        let st = self.vpc_lock();
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
        let (mut hs, mut pr, mut pc) = (String::new(), String::new(), String::new());
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
                histogram(
                    &mut hs,
                    "strata_network_port_handshake_rtt_seconds",
                    &l,
                    &f.handshake_rtt,
                );
                histogram(
                    &mut pr,
                    "strata_network_port_probe_rtt_seconds",
                    &l,
                    &f.probes.rtt,
                );
                let _ = writeln!(
                    pc,
                    "strata_network_port_probes_total{{{l},result=\"sent\"}} {}",
                    f.probes.sent
                );
                let _ = writeln!(
                    pc,
                    "strata_network_port_probes_total{{{l},result=\"answered\"}} {}",
                    f.probes.answered
                );
            }
        }
        let _ = write!(o, "# HELP strata_network_port_packets_total Packets a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_packets_total counter\n{pk}");
        let _ = write!(o, "# HELP strata_network_port_bytes_total Bytes a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_bytes_total counter\n{by}");
        let _ = write!(o, "# HELP strata_network_port_bytes_per_second Bandwidth of a tenant port over a window.\n# TYPE strata_network_port_bytes_per_second gauge\n{bw}");
        let _ = write!(o, "# HELP strata_network_port_drops_total Packets of a tenant port dropped, by where they died.\n# TYPE strata_network_port_drops_total counter\n{dr}");
        let _ = write!(o, "# HELP strata_network_port_handshake_rtt_seconds Round trips from the switch to a tenant port's endpoint in TCP handshakes (conntrack).\n# TYPE strata_network_port_handshake_rtt_seconds histogram\n{hs}");
        let _ = write!(o, "# HELP strata_network_port_probe_rtt_seconds Round trips of the switch's echo probes to a tenant port.\n# TYPE strata_network_port_probe_rtt_seconds histogram\n{pr}");
        let _ = write!(o, "# HELP strata_network_port_probes_total The switch's echo probes to a tenant port, sent and answered.\n# TYPE strata_network_port_probes_total counter\n{pc}");
        self.fastpath_metrics(o)
    }

    /// The integration switch's kernel fast path (veth ports): packets it carried, entries
    /// in its map, entries written, offers it left to the slow path by reason. Node-wide
    /// (every tenant's veth ports share the one switch), so only in the admin's `/metrics`.
    fn fastpath_metrics(&self, o: &mut String) -> Result<(), ControlError> {
        use std::fmt::Write;
        let stats = match &self.vpc_lock().dp {
            Some(dp) => dp.stats().map_err(dp_err)?,
            None => return Ok(()),
        };
        let Some(f) = stats.fastpath else {
            return Ok(());
        };
        let _ = write!(
            o,
            "# HELP strata_network_fastpath_packets_total Packets of tenant veth ports the kernel \
             fast path forwarded, and those its program left to the slow path.\n\
             # TYPE strata_network_fastpath_packets_total counter\n\
             strata_network_fastpath_packets_total{{path=\"kernel\"}} {}\n\
             strata_network_fastpath_packets_total{{path=\"slow\"}} {}\n\
             # HELP strata_network_fastpath_entries Flows the kernel fast path holds now.\n\
             # TYPE strata_network_fastpath_entries gauge\n\
             strata_network_fastpath_entries {}\n\
             # HELP strata_network_fastpath_installs_total Fast-path entries written, and \
             offers refused by reason.\n\
             # TYPE strata_network_fastpath_installs_total counter\n\
             strata_network_fastpath_installs_total{{result=\"installed\"}} {}\n\
             strata_network_fastpath_installs_total{{result=\"failed\"}} {}\n\
             strata_network_fastpath_installs_total{{result=\"refused_protocol\"}} {}\n\
             strata_network_fastpath_installs_total{{result=\"refused_tcp_flags\"}} {}\n\
             strata_network_fastpath_installs_total{{result=\"refused_rewrite\"}} {}\n\
             strata_network_fastpath_installs_total{{result=\"refused_tunnel\"}} {}\n",
            f.forwarded,
            f.left_to_socket,
            f.entries,
            f.installs,
            f.install_failed,
            f.refused_protocol,
            f.refused_tcp_flags,
            f.refused_rewrite,
            f.refused_tunnel,
        );
        Ok(())
    }

    /// Whether the tenant still has security groups or floating IPs (not counted by a quota,
    /// but they would outlive a deleted tenant).
    pub(in crate::controller) fn tenant_has_network_objects(&self, tenant: &str) -> bool {
        let st = self.vpc_lock();
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
        if let Some(dp) = self.vpc_lock().dp.take() {
            dp.stop();
        }
    }
}

/// A round-trip histogram in Prometheus text: cumulative buckets at the power-of-two bounds
/// (seconds), `+Inf`, sum and count.
fn histogram(o: &mut String, name: &str, labels: &str, h: &strata_net::latency::RttHistogram) {
    use std::fmt::Write;
    let mut cum = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cum += n;
        let le = match strata_net::latency::RttHistogram::bound_us(i) {
            Some(us) => format!("{}", us as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count{{{labels}}} {}", h.count);
}
