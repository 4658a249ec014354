//! `strata switch trace`: what a packet would hit, table by table, and what it would become.
//!
//! Pure: no counters move, nothing is learned, no cache is filled. The packet described in
//! flow syntax is built into a real frame and parsed back, so the key is exactly what a frame
//! on the wire would give (defaults such as TTL 64 included); `tun_id`, `metadata` and
//! registers, which are not on the wire, are taken from the description.
//!
//! A `meter:N` action peeks at the meter (`meter N: would admit/drop`, its buckets untouched);
//! a drop ends the pass as it would on the wire. A `ct(...)` action peeks at the tracker (its verdict for this packet, nothing changes; a
//! commit is reported, not made) and a `table=` recirculation is traced as a further pass. As
//! the built TCP frame is a PSH+ACK segment, a trace of a new connection would be `+inv`: a
//! `ct_state=` in the description (e.g. `ct_state=+new`) is used as the state of every ct
//! step instead, as OVS's `ofproto/trace --ct-next` does.

use std::fmt;
use std::time::Duration;

use crate::conntrack::CtState;
use crate::ct_exec::{self, CtDrop, CtStep, Tracker};
use crate::flow::{apply_to_key, Action, CtAction, FlowRule};
use crate::key::{ethertype, Field, FlowKey, PortNo};
use crate::meter::MeterVerdict;
use crate::packet::{build_frame, parse_frame, ParseError};
use crate::respond::{self, ReplyDrop};
use crate::switch::MAX_RECIRC;
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

/// One `ct` action met on the way (conntrack is peeked: nothing changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceCt {
    /// Index in `steps` of the table whose rule ran the action.
    pub after_step: usize,
    /// The action.
    pub action: CtAction,
    /// What conntrack would say and do.
    pub step: CtStep,
    /// The table the packet would recirculate to (None: no `table=`, or the limit was hit).
    pub recirc: Option<u8>,
}

/// One `meter:N` met on the way (peeked: no tokens taken, no counter moved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceMeter {
    /// Index in `steps` of the table whose rule ran the action.
    pub after_step: usize,
    /// The meter.
    pub id: u32,
    /// What it would decide for this packet now (None: no such meter, the packet would drop).
    pub verdict: Option<MeterVerdict>,
}

impl TraceMeter {
    /// True if the meter would let the packet go on.
    pub fn admits(&self) -> bool {
        self.verdict.is_some_and(MeterVerdict::admitted)
    }
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
    /// Conntrack steps, in the order they ran (passes run one after the other).
    pub ct: Vec<TraceCt>,
    /// Meters met, in order.
    pub meters: Vec<TraceMeter>,
    /// Index in `steps` where each recirculated pass starts.
    recirc_starts: Vec<usize>,
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
        self.port_cfg(in_port)
            .ok_or(TraceError::UnknownPort(in_port))?;
        let spec_key = m.value;
        // `ct_state=` in the description stands for the verdict of every ct step (as OVS's
        // `ofproto/trace --ct-next`): the tracker is then not consulted for the state.
        let forced = (m.field_mask(Field::CtState) != 0)
            .then(|| spec_key.ct_state() | crate::key::ct_state::TRK);
        let frame = build_frame(&spec_key, 0);
        let (mut key, layout) = parse_frame(&frame, in_port).map_err(TraceError::Build)?;
        let ctpkt = ct_exec::parse(&frame, &layout, &key);
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
            ct: Vec::new(),
            meters: Vec::new(),
            recirc_starts: Vec::new(),
            reply_drop: None,
            names,
        };
        let Some(domain) = domain else {
            return Ok(t);
        };
        let mut passes = vec![key];
        let mut next = 0;
        while next < passes.len() {
            let key = passes[next];
            next += 1;
            let built = Built {
                frame: &frame,
                layout: &layout,
                parsed: &parsed,
                ctpkt: ctpkt.as_ref(),
            };
            self.trace_pass(&mut t, key, domain, now, built, forced, &mut passes);
            if t.reply_drop.is_some() {
                break;
            }
        }
        Ok(t)
    }

    /// One pass of the pipeline (the first, or a recirculation); new passes go to `passes`.
    #[allow(clippy::too_many_arguments)]
    fn trace_pass(
        &self,
        t: &mut Trace,
        key: FlowKey,
        domain: Option<Domain>,
        now: Duration,
        built: Built<'_>,
        forced: Option<u8>,
        passes: &mut Vec<FlowKey>,
    ) {
        let ctpkt = built.ctpkt;
        let (frame, layout, parsed) = (built.frame, built.layout, built.parsed);
        let (mut cur, mut ans) = (Vec::new(), Vec::new());
        let in_port = key.in_port();
        let in_tunnel = self
            .port_cfg(in_port)
            .is_some_and(|c| matches!(c.kind, PortKind::Vxlan(_)));
        let trans = self.pipeline().translate(&key);
        if key.get(Field::Recirc) != 0 {
            t.recirc_starts.push(t.steps.len());
        }
        for v in &trans.visits {
            t.steps.push(TraceStep {
                table: v.table,
                key_in: v.key_in,
                rule: v
                    .hit
                    .and_then(|h| self.pipeline().rule(h.id).map(|r| (h.id, r.clone()))),
            });
        }
        t.actions.extend_from_slice(&trans.ops);
        let mut k = key;
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
                    match reply_frame(op, frame, layout, parsed, &k, tpid, &mut cur, &mut ans) {
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
                Action::Output(p) if p != in_port => self.trace_emit(t, p, domain, &k, Via::Output),
                Action::Output(_) => {}
                Action::OutputInPort => self.trace_emit(t, in_port, domain, &k, Via::Output),
                Action::Flood => self.trace_flood(t, in_port, in_tunnel, domain, &k),
                Action::LearnMac => {}
                Action::Meter(id) => {
                    let m = TraceMeter {
                        after_step: t.steps.len().saturating_sub(1),
                        id,
                        verdict: self.meters().peek(id, frame.len() as u64, now),
                    };
                    t.meters.push(m);
                    if !m.admits() {
                        break;
                    }
                }
                Action::Normal => {
                    let dst = k.get(Field::EthDst);
                    let known = (dst & 0x0100_0000_0000 == 0)
                        .then(|| self.mac_table().lookup(domain, dst, now))
                        .flatten();
                    match known {
                        Some(p) if p == in_port => {}
                        Some(p) => self.trace_emit(t, p, domain, &k, Via::Learned),
                        None => self.trace_flood(t, in_port, in_tunnel, domain, &k),
                    }
                }
                Action::Ct(ref a) => {
                    let (ct, lbs) = self.ct_parts();
                    let seed = ct.config().hash_seed;
                    let mut s = ct_exec::step(Tracker::Peek(ct), lbs, seed, now, a, ctpkt, &mut k);
                    if let Some(f) = forced {
                        s.state = f;
                        s.drop = None;
                        s.committed = a.commit && f & crate::key::ct_state::NEW != 0;
                    }
                    let recirc = a
                        .table
                        .filter(|_| s.drop.is_none() && passes.len() <= MAX_RECIRC);
                    if let Some(tb) = recirc {
                        passes.push(ct_exec::recirc_key(&k, &s, a.zone, tb));
                    }
                    t.ct.push(TraceCt {
                        after_step: t.steps.len().saturating_sub(1),
                        action: *a,
                        step: s,
                        recirc,
                    });
                    if s.drop.is_some() {
                        break;
                    }
                }
                _ => {
                    apply_to_key(op, &mut k);
                }
            }
        }
        t.final_key = k;
    }
}

/// The frame a trace built, as parsed, shared by every pass.
#[derive(Clone, Copy)]
struct Built<'a> {
    frame: &'a [u8],
    layout: &'a crate::packet::Layout,
    parsed: &'a FlowKey,
    ctpkt: Option<&'a crate::l4::CtPacket>,
}

impl Switch {
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
    if k.ct_state() != 0 {
        m.set_masked(Field::CtState, k.ct_state() as u64, k.ct_state() as u64);
        m.set_exact(Field::CtZone, k.ct_zone() as u64);
        if k.ct_mark() != 0 {
            m.set_exact(Field::CtMark, k.ct_mark() as u64);
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
        for (i, s) in self.steps.iter().enumerate() {
            if self.recirc_starts.contains(&i) {
                writeln!(f, "\nRecirculated: {}", key_text(&s.key_in, &self.names))?;
            }
            match &s.rule {
                Some((_, r)) => writeln!(f, "\n{}. {}", s.table, format_flow(r, n))?,
                None => writeln!(f, "\n{}. No match: drop.", s.table)?,
            }
            for c in self.ct.iter().filter(|c| c.after_step == i) {
                writeln!(f, "    {}", ct_text(c))?;
            }
            for m in self.meters.iter().filter(|m| m.after_step == i) {
                match m.verdict {
                    Some(v) => writeln!(f, "    meter {}: {}", m.id, v.text())?,
                    None => writeln!(f, "    meter {}: no such meter, would drop", m.id)?,
                }
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

impl TraceCt {
    /// One line: the zone, the verdict, the state a recirculation sees, commit and NAT.
    pub fn describe(&self) -> String {
        ct_text(self)
    }
}

fn ct_text(c: &TraceCt) -> String {
    let v = &c.step.verdict;
    let mut s = format!("ct(zone={}): ", c.action.zone);
    s.push_str(match v.state {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::Invalid => "invalid",
    });
    if let Some(r) = v.reason {
        s.push_str(&format!(" ({})", r.code()));
    }
    if c.step.state & crate::key::ct_state::RPL != 0 {
        s.push_str(", reply");
    }
    s.push_str(&format!(
        ", ct_state={}",
        crate::ct_syntax::format_ct_state(c.step.state, 0xff)
    ));
    if c.step.committed {
        s.push_str(", commit");
    }
    if let Some(b) = v.nat.filter(|_| c.step.nat) {
        let (src, dst) = b.rewrite(v.dir);
        if let Some(e) = src {
            s.push_str(&format!(", nat src->{}:{}", e.addr, e.port));
        }
        if let Some(e) = dst {
            s.push_str(&format!(", nat dst->{}:{}", e.addr, e.port));
        }
    }
    match c.step.drop {
        Some(CtDrop::Commit(e)) => s.push_str(&format!(", drop: {e}")),
        Some(CtDrop::NoBackend(id)) => {
            s.push_str(&format!(", drop: lb group {id} has no backend up"))
        }
        None => {}
    }
    match c.recirc {
        Some(t) => s.push_str(&format!(", recirculate to table {t}")),
        None if c.action.table.is_some() && c.step.drop.is_none() => {
            s.push_str(", recirculation limit reached")
        }
        None => {}
    }
    s
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
