//! A packet's way through a tenant network, told in the tenant's terms.

use super::*;

impl Controller {
    /// What a packet from a port would meet, told in the tenant's terms: each table's rule by
    /// the object (and security-group rule) it was compiled from, conntrack's verdict, and
    /// where the packet ends. `ct_state` (default `+new`) is the state every conntrack step
    /// is taken to give, as a trace cannot open a real connection.
    pub fn trace_network_port(
        &self,
        p: &Principal,
        port: &str,
        req: TraceFrom,
    ) -> Result<NetworkTrace, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        let from = Self::find_port(&st, p, port)?.clone();
        let Some(&of) = st.topo.bound.get(&from.id) else {
            return Err(conflict("the port is not bound on this node"));
        };
        let s =
            st.topo.subnets.get(&from.subnet).ok_or_else(|| {
                ControlError::internal(format!("port {} has no subnet", from.name))
            })?;
        // On-link: the destination port's MAC; otherwise the gateway's.
        let dst_mac = st
            .topo
            .ports
            .values()
            .find(|x| x.subnet == s.id && x.ip == req.to)
            .map_or(s.gateway_mac, |x| x.mac);
        let proto = match req.protocol {
            Protocol::Any | Protocol::Icmp => "icmp,icmp_type=8".to_string(),
            Protocol::Tcp => format!("tcp,tp_dst={}", req.port.unwrap_or(80)),
            Protocol::Udp => format!("udp,tp_dst={}", req.port.unwrap_or(53)),
        };
        let ct_state = req.ct_state.clone().unwrap_or_else(|| "+new".into());
        let spec = format!(
            "in_port={of},dl_src={},dl_dst={},{proto},nw_src={},nw_dst={},ct_state={ct_state}",
            fmt_mac(&from.mac),
            fmt_mac(&dst_mac),
            from.ip,
            req.to
        );
        let Some(dp) = &st.dp else {
            return Err(ControlError::internal("no integration switch"));
        };
        let t = dp
            .with_switch(move |sw, now| sw.trace(&spec, now))
            .map_err(dp_err)?
            .map_err(|e| ControlError::invalid("ct_state", e.to_string()))?;
        let mut steps = Vec::new();
        for (i, step) in t.steps.iter().enumerate() {
            let what = match &step.rule {
                Some((_, r)) => st
                    .compiler
                    .explain(r.cookie)
                    .map_or_else(|| format!("flow cookie {:#x}", r.cookie), str::to_string),
                None => "no flow: dropped".to_string(),
            };
            steps.push(TraceLine {
                table: step.table,
                what,
            });
            for c in t.ct.iter().filter(|c| c.after_step == i) {
                steps.push(TraceLine {
                    table: step.table,
                    what: format!("conntrack: {}", c.describe()),
                });
            }
        }
        let by_of = |n: u32| {
            st.topo
                .bound
                .iter()
                .find(|(_, &o)| o == n)
                .and_then(|(id, _)| st.topo.ports.get(id))
                .map_or_else(|| format!("switch port {n}"), |x| x.name.clone())
        };
        let delivered: Vec<String> = t.outputs.iter().map(|o| by_of(o.port)).collect();
        let verdict = if delivered.is_empty() {
            format!(
                "dropped: {}",
                steps.last().map_or("no flow", |l| l.what.as_str())
            )
        } else if delivered == [from.name.clone()] {
            format!(
                "answered by the switch: {}",
                steps.last().map_or("", |l| l.what.as_str())
            )
        } else {
            format!("delivered to {}", delivered.join(", "))
        };
        Ok(NetworkTrace {
            packet: format!("{proto} {} -> {} from port {}", from.ip, req.to, from.name),
            steps,
            verdict,
            delivered_to: delivered,
        })
    }
}
