//! `strata switch trace`: what a packet would hit, table by table, and what it would become.
//!
//! Pure: no counters move, nothing is learned, no cache is filled. The packet described in
//! flow syntax is built into a real frame and parsed back, so the key is exactly what a frame
//! on the wire would give (defaults such as TTL 64 included); `tun_id`, `metadata` and
//! registers, which are not on the wire, are taken from the description.

use std::fmt;
use std::time::Duration;

use crate::flow::{apply_to_key, Action, FlowRule};
use crate::key::{ethertype, Field, FlowKey, PortNo};
use crate::packet::{build_frame, parse_frame, ParseError};
use crate::respond::{self, ReplyDrop};
use crate::switch::{adapt, answer_key, reply_frame, PortKind, Switch};
use crate::syntax::{format_actions, format_flow, format_match, parse_packet_spec};
use crate::syntax::{FlowParseError, PortNames};
use crate::types::Domain;
use crate::types::RuleId;

/// Why a trace could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The description does not parse.
    #[error(transparent)]
    Parse(#[from] FlowParseError),
    /// The description has no `in_port=`.
    #[error("the packet description needs in_port=")]
    NoInPort,
    /// `in_port` is not a port of the switch.
    #[error("in_port {0} is not a port of this switch")]
    UnknownPort(PortNo),
    /// The fields cannot form a frame (e.g. an unsupported combination).
    #[error("cannot build a frame from the description: {0}")]
    Build(ParseError),
}

impl TraceError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            TraceError::Parse(e) => e.code(),
            TraceError::NoInPort => "missing_in_port",
            TraceError::UnknownPort(_) => "port_not_found",
            TraceError::Build(_) => "bad_packet",
        }
    }
}

/// One table visited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// Table id.
    pub table: u8,
    /// Key as the table saw it.
    pub key_in: FlowKey,
    /// The rule that won, or None (table miss: the walk ends, rest of packet dropped).
    pub rule: Option<(RuleId, FlowRule)>,
}

/// How an output came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `output:` / `in_port`.
    Output,
    /// `flood`, or `normal` with an unknown destination.
    Flood,
    /// `normal` with a learned destination.
    Learned,
}

/// One frame the packet would become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOutput {
    /// Port.
    pub port: PortNo,
    /// How.
    pub via: Via,
    /// The frame's key on that port (after VLAN adaptation).
    pub key: FlowKey,
    /// VXLAN VNI if the port is a tunnel.
    pub vni: Option<u32>,
}

/// The result of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Key at ingress (after the port's domain processing).
    pub in_key: FlowKey,
    /// Ingress isolation domain, or None if the frame was refused at ingress.
    pub domain: Option<Option<Domain>>,
    /// Tables visited.
    pub steps: Vec<TraceStep>,
    /// The flat action list executed.
    pub actions: Vec<Action>,
    /// The key after all actions.
    pub final_key: FlowKey,
    /// Frames that would leave.
    pub outputs: Vec<TraceOutput>,
    /// Outputs refused for crossing isolation domains.
    pub refused: Vec<PortNo>,
    /// Set when `dec_ttl` or a responder would drop the packet (later actions do not run).
    pub reply_drop: Option<ReplyDrop>,
    names: PortNames,
}

impl Switch {
    /// Traces a packet described in flow syntax, e.g.
    /// `in_port=tap1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80`.
    pub fn trace(&self, spec: &str, now: Duration) -> Result<Trace, TraceError> {
        let names = self.port_names().clone();
        let m = parse_packet_spec(spec, Some(&names))?;
        if m.field_mask(Field::InPort) == 0 {
            return Err(TraceError::NoInPort);
        }
        let in_port = m.value.in_port();
        let port = self
            .port_cfg(in_port)
            .ok_or(TraceError::UnknownPort(in_port))?
            .clone();
        let spec_key = m.value;
        let frame = build_frame(&spec_key, 0);
        let (mut key, layout) = parse_frame(&frame, in_port).map_err(TraceError::Build)?;
        let parsed = key;
        for f in [Field::TunId, Field::Metadata] {
            key.set(f, spec_key.get(f));
        }
        for r in 0..8 {
            key.set(Field::Reg(r), spec_key.get(Field::Reg(r)));
        }
        let domain = self.ingress_for_trace(in_port, &mut key);
        let mut t = Trace {
            in_key: key,
            domain,
            steps: Vec::new(),
            actions: Vec::new(),
            final_key: key,
            outputs: Vec::new(),
            refused: Vec::new(),
            reply_drop: None,
            names,
        };
        let Some(domain) = domain else {
            return Ok(t);
        };
        let trans = self.pipeline().translate(&key);
        for v in &trans.visits {
            t.steps.push(TraceStep {
                table: v.table,
                key_in: v.key_in,
                rule: v
                    .hit
                    .and_then(|h| self.pipeline().rule(h.id).map(|r| (h.id, r.clone()))),
            });
        }
        t.actions = trans.ops.clone();
        let in_tunnel = matches!(port.kind, PortKind::Vxlan(_));
        let mut k = key;
        let (mut cur, mut ans) = (Vec::new(), Vec::new());
        for op in &trans.ops {
            let refused = match *op {
                Action::DecTtl => respond::dec_ttl(&mut k).err(),
                Action::ArpReply(mac) => respond::arp::reply(&mut k, mac).err(),
                Action::IcmpEchoReply => respond::icmp::echo_reply(&mut k).err(),
                Action::IcmpError { .. } | Action::DhcpReply(_) => {
                    let tpid = if layout.vlan {
                        layout.tpid
                    } else {
                        ethertype::VLAN
                    };
                    match reply_frame(op, &frame, &layout, &parsed, &k, tpid, &mut cur, &mut ans) {
                        Ok((_, ak, _)) => {
                            k = answer_key(&ak, &k);
                            None
                        }
                        Err(d) => Some(d),
                    }
                }
                _ => None,
            };
            if refused.is_some() {
                t.reply_drop = refused;
                break;
            }
            match *op {
                _ if op.is_reply() || *op == Action::DecTtl => {}
                Action::Output(p) if p != in_port => {
                    self.trace_emit(&mut t, p, domain, &k, Via::Output)
                }
                Action::Output(_) => {}
                Action::OutputInPort => self.trace_emit(&mut t, in_port, domain, &k, Via::Output),
                Action::Flood => self.trace_flood(&mut t, in_port, in_tunnel, domain, &k),
                Action::LearnMac => {}
                Action::Normal => {
                    let dst = k.get(Field::EthDst);
                    let known = (dst & 0x0100_0000_0000 == 0)
                        .then(|| self.mac_table().lookup(domain, dst, now))
                        .flatten();
                    match known {
                        Some(p) if p == in_port => {}
                        Some(p) => self.trace_emit(&mut t, p, domain, &k, Via::Learned),
                        None => self.trace_flood(&mut t, in_port, in_tunnel, domain, &k),
                    }
                }
                _ => {
                    apply_to_key(op, &mut k);
                }
            }
        }
        t.final_key = k;
        Ok(t)
    }

    fn trace_emit(&self, t: &mut Trace, p: PortNo, d: Option<Domain>, k: &FlowKey, via: Via) {
        let Some(cfg) = self.port_cfg(p) else { return };
        match adapt(cfg, d, k) {
            Some(a) => t.outputs.push(TraceOutput {
                port: p,
                via,
                key: a.key,
                vni: a.vni,
            }),
            None => t.refused.push(p),
        }
    }

    fn trace_flood(
        &self,
        t: &mut Trace,
        in_port: PortNo,
        in_tunnel: bool,
        d: Option<Domain>,
        k: &FlowKey,
    ) {
        for (p, cfg) in self.flood_ports() {
            if p == in_port || (in_tunnel && matches!(cfg.kind, PortKind::Vxlan(_))) {
                continue;
            }
            if let Some(a) = adapt(cfg, d, k) {
                t.outputs.push(TraceOutput {
                    port: p,
                    via: Via::Flood,
                    key: a.key,
                    vni: a.vni,
                });
            }
        }
    }
}

fn key_text(k: &FlowKey, names: &PortNames) -> String {
    // Print the key as an exact match of its meaningful fields.
    let mut m = crate::key::Match::ANY;
    m.set_exact(Field::InPort, k.in_port() as u64);
    if k.vlan_tci() != 0 {
        m.set_exact(Field::VlanTci, k.vlan_tci() as u64);
    }
    m.set_exact(Field::EthSrc, k.get(Field::EthSrc));
    m.set_exact(Field::EthDst, k.get(Field::EthDst));
    m.set_exact(Field::EthType, k.eth_type() as u64);
    for f in [Field::TunId, Field::Metadata] {
        if k.get(f) != 0 {
            m.set_exact(f, k.get(f));
        }
    }
    for r in 0..8 {
        if k.reg(r) != 0 {
            m.set_exact(Field::Reg(r), k.reg(r) as u64);
        }
    }
    match k.eth_type() {
        ethertype::IPV4 | ethertype::ARP => {
            m.set_exact(Field::NwSrc, k.get(Field::NwSrc));
            m.set_exact(Field::NwDst, k.get(Field::NwDst));
            if k.eth_type() == ethertype::ARP {
                for f in [Field::ArpOp, Field::ArpSha, Field::ArpTha] {
                    m.set_exact(f, k.get(f));
                }
            }
        }
        ethertype::IPV6 => {
            for f in [
                Field::Ipv6SrcHi,
                Field::Ipv6SrcLo,
                Field::Ipv6DstHi,
                Field::Ipv6DstLo,
            ] {
                m.set_exact(f, k.get(f));
            }
        }
        _ => {}
    }
    if matches!(k.eth_type(), ethertype::IPV4 | ethertype::IPV6) {
        m.set_exact(Field::NwProto, k.nw_proto() as u64);
        if matches!(k.nw_proto(), 1 | 6 | 17 | 58) {
            m.set_exact(Field::TpSrc, k.tp_src() as u64);
            m.set_exact(Field::TpDst, k.tp_dst() as u64);
        }
    }
    format_match(&m, Some(names))
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = Some(&self.names);
        writeln!(f, "Flow: {}", key_text(&self.in_key, &self.names))?;
        match self.domain {
            None => {
                writeln!(
                    f,
                    "Ingress: refused (frame crosses the port's isolation domain)"
                )?;
                return Ok(());
            }
            Some(d) => writeln!(f, "Domain: {}", domain_text(d))?,
        }
        for s in &self.steps {
            match &s.rule {
                Some((_, r)) => writeln!(f, "\n{}. {}", s.table, format_flow(r, n))?,
                None => writeln!(f, "\n{}. No match: drop.", s.table)?,
            }
        }
        writeln!(
            f,
            "\nFinal flow: {}",
            key_text(&self.final_key, &self.names)
        )?;
        writeln!(f, "Actions: {}", format_actions(&self.actions, n))?;
        if let Some(d) = self.reply_drop {
            writeln!(f, "Dropped by action: {}", d.code())?;
        }
        if self.outputs.is_empty() {
            writeln!(f, "Datapath: drop")?;
        }
        for o in &self.outputs {
            let name = self.names.name(o.port).map(str::to_string);
            let name = name.unwrap_or_else(|| o.port.to_string());
            let via = match o.via {
                Via::Output => "output",
                Via::Flood => "flood",
                Via::Learned => "learned",
            };
            match o.vni {
                Some(v) => writeln!(f, "Output: {name} ({via}, vxlan vni {v})")?,
                None => match o.key.vlan_vid() {
                    Some(vid) => writeln!(f, "Output: {name} ({via}, vlan {vid})")?,
                    None => writeln!(f, "Output: {name} ({via})")?,
                },
            }
        }
        for p in &self.refused {
            let name = self.names.name(*p).map(str::to_string);
            writeln!(
                f,
                "Refused: {} (isolation domain)",
                name.unwrap_or_else(|| p.to_string())
            )?;
        }
        Ok(())
    }
}

fn domain_text(d: Option<Domain>) -> String {
    match d {
        None => "none (untenanted)".into(),
        Some(Domain::Vlan(v)) => format!("vlan {v}"),
        Some(Domain::Vni(v)) => format!("vni {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::PortConfig;

    #[test]
    fn trace_shows_tables_and_outputs() {
        let mut sw = Switch::default();
        sw.add_port(PortConfig::tap("tap1", None)).unwrap();
        sw.add_port(PortConfig::tap("tap2", None)).unwrap();
        let now = Duration::ZERO;
        sw.add_flow(
            now,
            "in_port=tap1,actions=write_metadata:0x5/0xff,goto_table:1",
        )
        .unwrap();
        sw.add_flow(now, "table=1,tcp,tp_dst=80,metadata=0x5/0xff,actions=set_field:10.0.0.9->nw_dst,output:tap2")
            .unwrap();
        let t = sw
            .trace(
                "in_port=tap1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=80",
                now,
            )
            .unwrap();
        assert_eq!(t.steps.len(), 2);
        assert!(t.steps.iter().all(|s| s.rule.is_some()));
        assert_eq!(t.outputs.len(), 1);
        assert_eq!(t.outputs[0].port, 2);
        assert_eq!(t.final_key.nw_dst().to_string(), "10.0.0.9");
        assert_eq!(t.final_key.metadata(), 5);
        let text = t.to_string();
        assert!(text.contains("Output: tap2"), "{text}");
        let t = sw.trace("in_port=tap1,udp,tp_dst=80", now).unwrap();
        assert!(t.steps[1].rule.is_none());
        assert!(t.outputs.is_empty());
        assert_eq!(sw.trace("tcp", now).unwrap_err(), TraceError::NoInPort);
        // Nothing moved.
        assert!(sw.dump_flows(now).iter().all(|d| d.stats.n_packets == 0));
    }
}
