//! The virtual switch: ports, isolation domains, MAC learning, and executing the pipeline's
//! decisions on real frames.
//!
//! ## Isolation invariant
//!
//! Every packet gets an *isolation domain* at ingress, from the input port's configuration and
//! nothing else a rule can change:
//! - a port configured with `Domain::Vlan(v)` (VLAN access port) gives `Vlan(v)`; a frame
//!   arriving there tagged with another VLAN id is dropped;
//! - a port configured with `Domain::Vni(v)` gives `Vni(v)` (and loads `tun_id = v`); a VXLAN
//!   port with a fixed VNI drops packets carrying another VNI;
//! - a port without a domain (a trunk) gives `Vlan(vid)` for a tagged frame, `Vni(vni)` for a
//!   VXLAN port (the received VNI), and "no domain" (`None`) otherwise.
//!
//! At every delivery the engine computes the domain the frame would have *on that port*: the
//! port's own domain, or for a trunk the frame's tag / VNI (`tun_id`). Delivery happens only if
//! it equals the packet's ingress domain; otherwise the copy is dropped and counted
//! (`isolation_drops`, the port's `tx_dropped`). Flooding and `normal` only consider ports of
//! the same domain, and the MAC table is keyed by domain. So no rule, learned entry or cached
//! flow can deliver a packet into another tenant's network. `None` is a domain of its own:
//! untenanted traffic never reaches a port that has a domain. Between ports without a domain
//! (trunks, flow-based tunnels) untenanted traffic is the operator's, and flows may tag it or
//! pick its VNI freely (`push_vlan`, `set_tunnel`): that is how a flow-programmed switch with
//! no domains configured behaves like OVS.
//!
//! Frames are adapted to the output port: a VLAN access port gets them untagged; a trunk gets
//! a packet of `Vlan(v)` tagged with `v`; a VXLAN port gets them encapsulated with the VNI of
//! their domain. Flooding from a VXLAN port never goes back to a VXLAN port (split horizon, so
//! a full mesh of tunnels does not loop).
//!
//! `dec_ttl` and the reply actions (`arp_reply`, `icmp_echo_reply`, `icmp_error`,
//! `dhcp_reply`, in `respond/`) run at execution time: a refusal drops the packet with a
//! [`DropReason::Reply`] counted in `SwitchStats::replies`, and an answer built as a new frame
//! leaves by the outputs that follow it, in the ingress domain like any other output.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::conntrack::{Conntrack, CtConfig};
use crate::csum;
use crate::ct_exec::{self, CtDrop, Tracker};
use crate::drops::{DropCode, DropCounts};
use crate::flow::{apply_to_key, Action, FlowRule, RuleError};
use crate::key::{ethertype, ipproto, Field, FlowKey, PortNo, VLAN_PRESENT};
use crate::l4::CtPacket;
use crate::latency::RttHistogram;
use crate::lb::{Backend, LbGroups};
use crate::mac::{MacTable, DEFAULT_MAC_AGEING, DEFAULT_MAC_CAPACITY};
use crate::meter::{MeterConfig, MeterError, MeterStats, Meters};
use crate::offload::{CtUse, Offload, OffloadCredit};
use crate::packet::{parse_frame, Layout, ParseError};
use crate::pipeline::{CacheConfig, FlowDump, Pipeline, PipelineStats};
use crate::probe::{self, ProbeStats, ProbeTarget};
use crate::rates::{PortRates, RateWindow, Totals, SAMPLE_EVERY};
use crate::respond::{self, ReplyDrop, ReplyKind, ReplyStats};
use crate::syntax::{parse_filter, parse_flow, FlowParseError, PortNames};
pub use crate::types::{Domain, Encap, Ingress};
use crate::types::{RuleId, Translation};
use crate::vxlan::{self, VxlanError, VxlanTunnel, VXLAN_OVERHEAD_V4};

/// What kind of port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A TAP device (a VM or namespace interface).
    Tap,
    /// The host-side internal port.
    Internal,
    /// A VXLAN tunnel: frames are encapsulated on output, decapsulated on input.
    Vxlan(VxlanTunnel),
}

/// Port configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique name (`tap1`, `vx1`).
    pub name: String,
    /// Requested port number (None = lowest free from 1).
    pub number: Option<PortNo>,
    /// Kind.
    pub kind: PortKind,
    /// Isolation domain (None = trunk; see module docs).
    pub domain: Option<Domain>,
}

impl PortConfig {
    /// A TAP port.
    pub fn tap(name: &str, domain: Option<Domain>) -> Self {
        PortConfig {
            name: name.to_string(),
            number: None,
            kind: PortKind::Tap,
            domain,
        }
    }
    /// A VXLAN port (`vni` fixes the VNI it carries; None = flow-based, any VNI).
    pub fn vxlan(name: &str, tunnel: VxlanTunnel, vni: Option<u32>) -> Self {
        PortConfig {
            name: name.to_string(),
            number: None,
            kind: PortKind::Vxlan(tunnel),
            domain: vni.map(Domain::Vni),
        }
    }
    /// With a fixed number.
    pub fn with_number(mut self, n: PortNo) -> Self {
        self.number = Some(n);
        self
    }
}

/// Per-port counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received (as given to the switch).
    pub rx_bytes: u64,
    /// Received frames that produced no output (miss, drop, isolation, empty flood).
    pub rx_dropped: u64,
    /// Received frames that did not parse (or did not decapsulate).
    pub rx_errors: u64,
    /// Frames emitted.
    pub tx_packets: u64,
    /// Bytes emitted.
    pub tx_bytes: u64,
    /// Outputs to this port refused (isolation, too big for the tunnel).
    pub tx_dropped: u64,
    /// Drops by reason: those of frames received here (summing to `rx_dropped + rx_errors`)
    /// and of outputs refused here (summing to `tx_dropped`); see `drops.rs`.
    pub drops: DropCounts,
    /// Round trips from the switch to this port's endpoint and back, from the TCP handshakes
    /// conntrack saw (the half of a handshake this port answered: its SYN-ACK after a SYN,
    /// or its ACK after a SYN-ACK); see `latency.rs`.
    pub handshake_rtt: RttHistogram,
    /// The switch's own probes to this port's endpoint and their answers (`probe.rs`). Not
    /// counted in the packet and byte counters above, which count tenant traffic only.
    pub probes: ProbeStats,
}

impl PortStats {
    /// The reasons that dropped something here, with their counts (`strata network stats`).
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        self.drops
            .nonzero()
            .into_iter()
            .map(|(c, n)| (c.code(), n))
            .collect()
    }

    fn totals(&self) -> Totals {
        Totals {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            drops: self.drops.rx_total() + self.drops.tx_total(),
        }
    }
}

/// Why a port operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Name in use.
    #[error("port name `{0}` already exists")]
    NameTaken(String),
    /// Number in use or reserved.
    #[error("port number {0} is taken or reserved")]
    NumberTaken(PortNo),
    /// No such port.
    #[error("no port `{0}`")]
    NoSuchPort(String),
    /// A name that would be read as a number in flow syntax.
    #[error("port name `{0}` is not valid (must not be empty or numeric)")]
    BadName(String),
    /// A VXLAN port in a VLAN domain, a VLAN id above 4095, a VNI above 24 bits.
    #[error("domain {0:?} is not valid for this port")]
    BadDomain(Domain),
}

impl PortError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            PortError::NameTaken(_) => "port_exists",
            PortError::NumberTaken(_) => "port_number_taken",
            PortError::NoSuchPort(_) => "port_not_found",
            PortError::BadName(_) => "bad_port_name",
            PortError::BadDomain(_) => "bad_port_domain",
        }
    }
}

/// Switch configuration.
#[derive(Debug, Clone, Copy)]
pub struct SwitchConfig {
    /// Caches.
    pub cache: CacheConfig,
    /// MAC ageing time.
    pub mac_ageing: Duration,
    /// MAC table bound.
    pub mac_capacity: usize,
    /// Connection tracking (its `hash_seed` also keys the load balancer's hash).
    pub ct: CtConfig,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            cache: CacheConfig::default(),
            mac_ageing: DEFAULT_MAC_AGEING,
            mac_capacity: DEFAULT_MAC_CAPACITY,
            ct: CtConfig::default(),
        }
    }
}

/// Switch-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Deliveries refused because they would cross isolation domains (including frames
    /// refused at ingress for carrying a foreign VLAN/VNI).
    pub isolation_drops: u64,
    /// Frames received on a port number that does not exist.
    pub unknown_port: u64,
    /// Outputs to a port number that does not exist.
    pub output_to_unknown_port: u64,
    /// Packets dropped by `ct(commit...)`: conntrack table or zone full.
    pub ct_commit_refused: u64,
    /// Packets dropped by `ct(commit,nat(...))`: no free NAT address and port.
    pub nat_exhausted: u64,
    /// Packets dropped by `ct(commit,lb(id=N))`: no such group, or no backend up.
    pub lb_no_backend: u64,
    /// Recirculations not done because the packet had reached [`MAX_RECIRC`].
    pub recirc_limit: u64,
    /// Packets dropped by `meter:N`: over the rate, or no such meter (per meter in
    /// [`Switch::meter_stats`]).
    pub meter_drops: u64,
    /// `dec_ttl` and the responders: drops by reason, answers made (docs/net-engine.md).
    pub replies: ReplyStats,
}

/// Recirculations (`ct(...,table=T)` passes) one packet may take; more are dropped and
/// counted (`recirc_limit`), so a rule set that recirculates in a loop cannot spin.
pub const MAX_RECIRC: usize = 8;

/// Most `ct` steps an offloaded result may depend on.
const MAX_CT_USES: usize = 8;

/// The output of processing: frames to send, all in one reusable buffer (no allocation per
/// packet once the buffer has grown to its working size).
///
/// A frame for a VXLAN port is the *inner* frame plus an [`Encap`] (VNI, flow hash, tunnel):
/// the engine never writes outer headers, the port layer does ([`Effects::outputs`]).
///
/// In split mode (used by the port layer, [`Effects::set_split`]) a large frame is not copied
/// whole: the buffer holds its first bytes (where every rewrite happens) and the emission
/// names the rest as a range of the received frame, which the port layer writes as a second
/// part.
#[derive(Debug, Default)]
pub struct Effects {
    emits: Vec<Emit>,
    buf: Vec<u8>,
    split: bool,
    /// Fill `offload` when the result can be repeated without the engine.
    hints: bool,
    /// Valid when `has_offload` (kept to reuse its rule list).
    offload: Offload,
    has_offload: bool,
}

/// One frame to send: `buf[start..start + len]` followed by `input[tail.0..tail.1]`,
/// encapsulated as `encap` says if it is for a tunnel.
#[derive(Debug, Clone, Copy)]
struct Emit {
    port: PortNo,
    start: usize,
    len: usize,
    tail: (usize, usize),
    encap: Option<Encap>,
}

/// One output as the port layer reads it: the frame is `head` followed by `input[tail]`,
/// `input` being the frame that was passed to [`Switch::receive`] (`tail` is empty unless
/// split mode is on).
#[derive(Debug, Clone)]
pub struct Output<'a> {
    /// Output port.
    pub port: PortNo,
    /// The first bytes of the frame (all of it when not split), as rewritten.
    pub head: &'a [u8],
    /// The rest of the frame, as a range of the received frame.
    pub tail: std::ops::Range<usize>,
    /// For a VXLAN port: the encapsulation to apply (the frame itself is the inner frame).
    pub encap: Option<Encap>,
}

/// In split mode, frames longer than this keep everything past [`SPLIT_HEAD`] in place.
const SPLIT_MIN: usize = 1024;
/// Bytes of a split frame that are copied (and may be rewritten): Ethernet, VLAN tag, IPv4 with
/// options or IPv6, and the TCP/UDP ports and checksum all lie within them.
const SPLIT_HEAD: usize = 256;

impl Effects {
    /// Empty effects.
    pub fn new() -> Self {
        Self::default()
    }
    /// Forgets previous outputs, keeping capacity.
    pub fn clear(&mut self) {
        self.emits.clear();
        self.buf.clear();
        self.has_offload = false;
    }
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.emits.len()
    }
    /// True if nothing to send.
    pub fn is_empty(&self) -> bool {
        self.emits.is_empty()
    }
    /// (port, frame) pairs in emission order. For a VXLAN port the frame is the inner frame;
    /// [`Effects::encaps`] or [`Effects::outputs`] give the encapsulation.
    pub fn iter(&self) -> impl Iterator<Item = (PortNo, &[u8])> + '_ {
        debug_assert!(!self.split, "split effects are read with outputs");
        self.emits
            .iter()
            .map(|e| (e.port, &self.buf[e.start..e.start + e.len]))
    }
    /// Ports emitted to, in order.
    pub fn ports(&self) -> Vec<PortNo> {
        self.emits.iter().map(|e| e.port).collect()
    }
    /// The encapsulation of each frame, in emission order (None for a non-tunnel port).
    pub fn encaps(&self) -> impl Iterator<Item = Option<Encap>> + '_ {
        self.emits.iter().map(|e| e.encap)
    }
    /// Turns split mode on or off (see the type's documentation). Only a caller that keeps the
    /// received frame until it has written the outputs may turn it on.
    pub fn set_split(&mut self, on: bool) {
        self.split = on;
    }
    /// Asks for offload hints: after [`Switch::receive`], [`Effects::offload`] then says when
    /// the result would be the same for every packet with the packet's key (see
    /// `offload.rs`).
    pub fn set_offload_hints(&mut self, on: bool) {
        self.hints = on;
    }
    /// The offload hint of the last packet received into these effects, if its result can be
    /// repeated without the engine (only with [`Effects::set_offload_hints`]).
    pub fn offload(&self) -> Option<&Offload> {
        self.has_offload.then_some(&self.offload)
    }
    /// Adds a whole frame for `port` (not split, no encapsulation).
    fn push(&mut self, port: PortNo, frame: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(frame);
        self.emits.push(Emit {
            port,
            start,
            len: frame.len(),
            tail: (0, 0),
            encap: None,
        });
    }
    /// Every output in emission order, split or not.
    pub fn outputs(&self) -> impl Iterator<Item = Output<'_>> + '_ {
        self.emits.iter().map(|e| Output {
            port: e.port,
            head: &self.buf[e.start..e.start + e.len],
            tail: e.tail.0..e.tail.1,
            encap: e.encap,
        })
    }
}

/// Why a received frame produced no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The input port does not exist.
    UnknownPort,
    /// The frame did not parse.
    Parse(ParseError),
    /// VXLAN decapsulation failed.
    Tunnel(VxlanError),
    /// Refused for crossing isolation domains (at ingress or at every output).
    Isolation,
    /// Table miss, `drop`, or a flood with nobody else in the domain.
    NoOutput,
    /// `dec_ttl` or a responder refused the packet (counted in `SwitchStats::replies`).
    Reply(ReplyDrop),
    /// Over the rate of this meter, or no such meter (`meter:N`).
    Meter(u32),
}

/// What happened to a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Sent to this many ports.
    Forwarded(usize),
    /// Dropped.
    Dropped(DropReason),
    /// The answer to one of the switch's probes, taken by the switch (`Switch::probe`).
    Probe,
}

#[derive(Debug)]
struct Port {
    cfg: PortConfig,
    stats: PortStats,
    rates: RateWindow,
}

/// A frame as it is about to leave by some port: the key after adaptation, and the VNI if the
/// port is a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapted {
    /// Key of the frame on the wire of that port.
    pub key: FlowKey,
    /// VNI to encapsulate with (VXLAN ports).
    pub vni: Option<u32>,
}

/// Adapts a packet of ingress domain `dom` and current key `k` to port `cfg`, or refuses it
/// because it would cross domains. Pure: used by execution and by `trace`.
pub fn adapt(cfg: &PortConfig, dom: Option<Domain>, k: &FlowKey) -> Option<Adapted> {
    let mut key = *k;
    let tag = k.vlan_vid().filter(|&v| v != 0);
    match (&cfg.kind, cfg.domain) {
        (PortKind::Vxlan(_), Some(d)) => {
            let Domain::Vni(v) = d else { return None };
            (dom == Some(d)).then_some(Adapted { key, vni: Some(v) })
        }
        (PortKind::Vxlan(_), None) => match dom {
            Some(Domain::Vni(v)) if k.tun_id() == v as u64 => Some(Adapted { key, vni: Some(v) }),
            None if k.tun_id() <= vxlan::MAX_VNI as u64 => Some(Adapted {
                key,
                vni: Some(k.tun_id() as u32),
            }),
            _ => None,
        },
        (_, Some(Domain::Vlan(v))) => {
            if dom != Some(Domain::Vlan(v)) || tag.is_some_and(|t| t != v) {
                return None;
            }
            key.set(Field::VlanTci, 0);
            Some(Adapted { key, vni: None })
        }
        (_, Some(d @ Domain::Vni(_))) => {
            (dom == Some(d) && tag.is_none()).then_some(Adapted { key, vni: None })
        }
        (_, None) => match (dom, tag) {
            (Some(Domain::Vlan(v)), None) => {
                let pcp = k.vlan_pcp().unwrap_or(0) as u16;
                key.set(Field::VlanTci, (VLAN_PRESENT | (pcp << 13) | v) as u64);
                Some(Adapted { key, vni: None })
            }
            (Some(Domain::Vlan(v)), Some(t)) => (t == v).then_some(Adapted { key, vni: None }),
            // Untenanted traffic on an untenanted port: the operator's flows decide the tag.
            (None, _) => Some(Adapted { key, vni: None }),
            _ => None,
        },
    }
}

/// The switch.
#[derive(Debug)]
pub struct Switch {
    ports: BTreeMap<PortNo, Port>,
    names: PortNames,
    pipeline: Pipeline,
    macs: MacTable,
    stats: SwitchStats,
    ct: Conntrack,
    lbs: LbGroups,
    meters: Meters,
    /// Reused buffers of the frame-building responders (the packet as rewritten, the answer).
    reply_bufs: (Vec<u8>, Vec<u8>),
    /// When the ports' counters are sampled next for their rates (`rates.rs`).
    next_sample: Duration,
    /// The latest `now` seen (a port added later starts its rate window there).
    last_now: Duration,
    /// Port additions and removals, and first probes of a port (see [`Switch::generation`]).
    port_changes: u64,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new(SwitchConfig::default())
    }
}

/// Highest port number a user may take (OpenFlow reserves the ones above).
pub const MAX_PORT: PortNo = 0xffff_ff00;

impl Switch {
    /// A switch with no ports and no rules (so everything is dropped until rules are added;
    /// add `actions=normal` for a learning switch).
    pub fn new(cfg: SwitchConfig) -> Self {
        Switch {
            ports: BTreeMap::new(),
            names: PortNames::new(),
            pipeline: Pipeline::new(cfg.cache),
            macs: MacTable::new(cfg.mac_ageing, cfg.mac_capacity),
            stats: SwitchStats::default(),
            ct: Conntrack::new(cfg.ct),
            lbs: LbGroups::default(),
            meters: Meters::default(),
            reply_bufs: Default::default(),
            next_sample: Duration::ZERO,
            last_now: Duration::ZERO,
            port_changes: 0,
        }
    }

    /// The switch's generation: it moves whenever something that decides where an
    /// [`Offload`]ed packet goes may have changed (a rule added, removed or expired, a port
    /// added or removed or first probed, a learned address moved or forgotten, a connection
    /// an offload hint named removed or changed: [`Conntrack::offload_changes`]). A port layer
    /// that forwards packets by an offload hint stops as soon as this differs from the hint's.
    pub fn generation(&self) -> u64 {
        self.pipeline.changes()
            + self.macs.changes()
            + self.port_changes
            + self.ct.offload_changes()
    }

    /// Counts packets a port layer forwarded by an [`Offload`] as if the switch had forwarded
    /// them: the rules' and both ports' packet and byte counters, the rules' last use, and
    /// the source address kept learned (see [`MacTable::refresh`]).
    pub fn credit_offloaded(&mut self, c: &OffloadCredit<'_>) {
        if c.packets == 0 {
            return;
        }
        self.pipeline
            .credit(c.rules, c.packets, c.rx_bytes, c.last_used);
        if let Some(p) = self.ports.get_mut(&c.in_port) {
            p.stats.rx_packets += c.packets;
            p.stats.rx_bytes += c.rx_bytes;
        }
        if let Some(p) = self.ports.get_mut(&c.out_port) {
            p.stats.tx_packets += c.packets;
            p.stats.tx_bytes += c.tx_bytes;
        }
        if let Some((d, mac)) = c.learn {
            self.macs.refresh(d, mac, c.in_port, c.last_used);
        }
        for u in c.ct {
            self.ct
                .touch(c.last_used, u.id, u.dir, c.packets, c.ip_bytes);
        }
    }

    /// Adds a port, returning its number.
    pub fn add_port(&mut self, cfg: PortConfig) -> Result<PortNo, PortError> {
        if cfg.name.is_empty()
            || cfg.name.bytes().all(|c| c.is_ascii_digit())
            || cfg.name.contains([',', '=', ':', ' '])
        {
            return Err(PortError::BadName(cfg.name));
        }
        if self.names.port_no(&cfg.name).is_some() {
            return Err(PortError::NameTaken(cfg.name));
        }
        match (cfg.kind, cfg.domain) {
            (PortKind::Vxlan(_), Some(d @ Domain::Vlan(_))) => return Err(PortError::BadDomain(d)),
            (_, Some(d @ Domain::Vlan(v))) if v == 0 || v > 4095 => {
                return Err(PortError::BadDomain(d))
            }
            (_, Some(d @ Domain::Vni(v))) if v > vxlan::MAX_VNI => {
                return Err(PortError::BadDomain(d))
            }
            _ => {}
        }
        let no = match cfg.number {
            Some(n) if n == 0 || n > MAX_PORT || self.ports.contains_key(&n) => {
                return Err(PortError::NumberTaken(n))
            }
            Some(n) => n,
            None => (1..=MAX_PORT)
                .find(|n| !self.ports.contains_key(n))
                .ok_or(PortError::NumberTaken(MAX_PORT))?,
        };
        self.names.insert(&cfg.name, no);
        self.port_changes += 1;
        self.ports.insert(
            no,
            Port {
                cfg,
                stats: PortStats::default(),
                rates: RateWindow::new(self.last_now, Totals::default()),
            },
        );
        Ok(no)
    }

    /// Removes a port by name (its learned MACs go with it; rules naming it stay, as in OVS).
    pub fn remove_port(&mut self, name: &str) -> Result<(), PortError> {
        let no = self
            .names
            .port_no(name)
            .ok_or_else(|| PortError::NoSuchPort(name.to_string()))?;
        self.ports.remove(&no);
        self.port_changes += 1;
        let mut names = PortNames::new();
        for (n, p) in &self.ports {
            names.insert(&p.cfg.name, *n);
        }
        self.names = names;
        self.macs.flush_port(no);
        Ok(())
    }

    /// The port-name table (for parsing and formatting flows).
    pub fn port_names(&self) -> &PortNames {
        &self.names
    }

    /// Ports as (number, config, counters).
    pub fn ports(&self) -> impl Iterator<Item = (PortNo, &PortConfig, PortStats)> + '_ {
        self.ports.iter().map(|(n, p)| (*n, &p.cfg, p.stats))
    }

    /// Counters of one port.
    pub fn port_stats(&self, port: PortNo) -> Option<PortStats> {
        self.ports.get(&port).map(|p| p.stats)
    }

    /// Switch-wide counters.
    pub fn stats(&self) -> SwitchStats {
        self.stats
    }

    /// Pipeline and cache counters.
    pub fn pipeline_stats(&self) -> PipelineStats {
        self.pipeline.stats()
    }

    /// The pipeline (for inspection and benchmarks).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The MAC table.
    pub fn mac_table(&self) -> &MacTable {
        &self.macs
    }

    /// Adds a rule given in flow syntax (port names resolve through this switch's ports).
    pub fn add_flow(&mut self, now: Duration, text: &str) -> Result<RuleId, FlowParseError> {
        let r = parse_flow(text, Some(&self.names))?;
        Ok(self.pipeline.add_rule(r, now)?)
    }

    /// Adds a rule built in code.
    pub fn add_rule(&mut self, now: Duration, rule: FlowRule) -> Result<RuleId, RuleError> {
        self.pipeline.add_rule(rule, now)
    }

    /// Removes one rule.
    pub fn remove_rule(&mut self, id: RuleId) -> Option<FlowRule> {
        self.pipeline.remove_rule(id)
    }

    /// `del-flows` with a filter in flow syntax (`""` deletes all).
    pub fn del_flows(&mut self, filter: &str, strict: bool) -> Result<usize, FlowParseError> {
        let f = parse_filter(filter, Some(&self.names), strict)?;
        Ok(self.pipeline.remove_matching(&f, strict))
    }

    /// All rules with counters.
    pub fn dump_flows(&self, now: Duration) -> Vec<FlowDump> {
        self.pipeline.dump(now)
    }

    /// `dump-flows` text, one rule per line.
    pub fn dump_flows_text(&self, now: Duration) -> String {
        let mut s = String::new();
        for d in self.dump_flows(now) {
            s.push_str(&crate::syntax::format_flow_stats(
                &d.rule,
                &d.stats,
                Some(&self.names),
            ));
            s.push('\n');
        }
        s
    }

    /// Runs timeouts: expired rules (returned) and aged MAC entries, megaflows and
    /// connections.
    pub fn expire(&mut self, now: Duration) -> Vec<FlowRule> {
        self.sample_rates(now);
        self.macs.expire(now);
        self.ct.expire(now);
        self.pipeline.expire(now)
    }

    /// The connection tracker (one per switch; zones separate tenants).
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// The connection tracker, to set zone limits or flush zones.
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.ct
    }

    /// Sets (or replaces) load-balancer group `id` for `ct(commit,...,lb(id=N))`: backends as
    /// (address, port, weight), all up. Connections already pinned keep their backend.
    pub fn set_lb_group(&mut self, id: u32, backends: Vec<(std::net::Ipv4Addr, u16, u32)>) {
        let b = backends
            .into_iter()
            .map(|(ip, port, weight)| Backend {
                ip,
                port,
                weight,
                up: true,
            })
            .collect();
        self.lbs.set(id, b);
    }

    /// Marks a backend of group `id` up or down (health checks), without touching flows: a
    /// down backend gets no new connections. False if there is no such group or backend.
    pub fn set_lb_backend_up(
        &mut self,
        id: u32,
        ip: std::net::Ipv4Addr,
        port: u16,
        up: bool,
    ) -> bool {
        self.lbs.get_mut(id).is_some_and(|g| g.set_up(ip, port, up))
    }

    /// Session affinity for group `id` (backend chosen by source address only).
    pub fn set_lb_affinity(&mut self, id: u32, on: bool) -> bool {
        self.lbs.get_mut(id).map(|g| g.set_affinity(on)).is_some()
    }

    /// Removes group `id`; false if it did not exist.
    pub fn remove_lb_group(&mut self, id: u32) -> bool {
        self.lbs.remove(id)
    }

    /// The load-balancer groups.
    pub fn lb_groups(&self) -> &LbGroups {
        &self.lbs
    }

    /// Creates or replaces meter `id` for `meter:N` (see `meter.rs` for the admission rule). A
    /// replaced meter keeps its counters; its buckets start full.
    pub fn set_meter(&mut self, id: u32, cfg: MeterConfig) -> Result<(), MeterError> {
        self.meters.set_meter(id, cfg)
    }

    /// Removes meter `id`; false if there was none. Flows naming it then drop their packets
    /// (`meter_missing`).
    pub fn remove_meter(&mut self, id: u32) -> bool {
        self.meters.remove_meter(id)
    }

    /// Counters of meter `id`.
    pub fn meter_stats(&self, id: u32) -> Option<MeterStats> {
        self.meters.meter(id).map(|(_, s)| s)
    }

    /// Creates or resizes link `id`, the capacity that meters with guarantees on it share.
    pub fn set_link(&mut self, id: u32, capacity_bps: u64) -> Result<(), MeterError> {
        self.meters.set_link(id, capacity_bps)
    }

    /// Removes link `id` (false if there was none); refused while a meter names it.
    pub fn remove_link(&mut self, id: u32) -> Result<bool, MeterError> {
        self.meters.remove_link(id)
    }

    /// The meters and links.
    pub fn meters(&self) -> &Meters {
        &self.meters
    }

    /// Rates of port `port` over the last 1 s and 10 s, at `now`.
    pub fn port_rates(&self, port: PortNo, now: Duration) -> Option<PortRates> {
        let p = self.ports.get(&port)?;
        Some(p.rates.port_rates(now, p.stats.totals()))
    }

    /// Sends one probe (an ICMP echo request, `probe.rs`) to `port`'s endpoint as `t` says,
    /// into `fx`; its answer is taken by [`Switch::receive`] and counted in the port's
    /// `probes`. False if the port does not exist or is a tunnel.
    pub fn probe(
        &mut self,
        now: Duration,
        port: PortNo,
        t: &ProbeTarget,
        fx: &mut Effects,
    ) -> bool {
        let Some(p) = self.ports.get_mut(&port) else {
            return false;
        };
        if matches!(p.cfg.kind, PortKind::Vxlan(_)) {
            return false;
        }
        if p.stats.probes.sent == 0 {
            // From now on the port's echo replies may be probe answers, which the engine must
            // see: results offloaded before are void.
            self.port_changes += 1;
        }
        p.stats.probes.sent += 1;
        let seq = p.stats.probes.sent as u16;
        let mut frame = std::mem::take(&mut self.reply_bufs.0);
        probe::request(t, seq, now, &mut frame);
        fx.push(port, &frame);
        self.reply_bufs.0 = frame;
        true
    }

    /// Samples every port's counters for their rates if the interval has passed.
    fn sample_rates(&mut self, now: Duration) {
        self.last_now = self.last_now.max(now);
        if now < self.next_sample {
            return;
        }
        for p in self.ports.values_mut() {
            p.rates.sample(now, p.stats.totals());
        }
        self.next_sample = now + SAMPLE_EVERY;
    }

    /// Processes a frame that entered at `rx` at `now`, appending outputs to `fx` (call
    /// `fx.clear()` between batches). The one ingress of the switch: `rx` names the port and,
    /// for an inner frame the port layer decapsulated, the VNI it read (see [`Ingress`]). A
    /// VXLAN port given a frame with no VNI takes it as a whole outer frame and decapsulates
    /// it; a VNI on any other kind of port is refused (`rx_errors`).
    pub fn receive(
        &mut self,
        now: Duration,
        rx: impl Into<Ingress>,
        frame: &[u8],
        fx: &mut Effects,
    ) -> Disposition {
        let Ingress { port: in_port, vni } = rx.into();
        if now >= self.next_sample {
            self.sample_rates(now);
        }
        let Some(port) = self.ports.get_mut(&in_port) else {
            self.stats.unknown_port += 1;
            return Disposition::Dropped(DropReason::UnknownPort);
        };
        // A probe's answer comes back on the port it was sent to; nothing else is looked at
        // on ports that were never probed.
        if port.stats.probes.sent > 0 && !matches!(port.cfg.kind, PortKind::Vxlan(_)) {
            if let Some(rtt) = probe::reply_sent_at(frame).and_then(|t| probe::round_trip(t, now)) {
                port.stats.probes.answered += 1;
                port.stats.probes.rtt.record(rtt);
                return Disposition::Probe;
            }
        }
        port.stats.rx_packets += 1;
        port.stats.rx_bytes += frame.len() as u64;
        match (port.cfg.kind, vni) {
            (PortKind::Vxlan(t), None) => match vxlan::decap_ipv4(frame, t.dst_port) {
                Ok(d) => {
                    // Tail ranges name bytes of the caller's frame, not of the inner one.
                    let split = std::mem::replace(&mut fx.split, false);
                    let r = self.process(now, in_port, d.inner, Some(d.vni), fx);
                    fx.split = split;
                    r
                }
                Err(e) => {
                    port.stats.rx_errors += 1;
                    port.stats.drops.count(DropCode::TunnelError);
                    Disposition::Dropped(DropReason::Tunnel(e))
                }
            },
            (PortKind::Vxlan(_), Some(v)) => self.process(now, in_port, frame, Some(v), fx),
            (_, Some(_)) => {
                port.stats.rx_errors += 1;
                port.stats.drops.count(DropCode::TunnelError);
                Disposition::Dropped(DropReason::Tunnel(VxlanError::NotUdp))
            }
            (_, None) => self.process(now, in_port, frame, None, fx),
        }
    }

    /// Ingress classification of a parsed key: the packet's domain, with `tun_id` loaded where
    /// the port defines it. `None` (outer) means refused for isolation.
    fn ingress(cfg: &PortConfig, key: &mut FlowKey, vni: Option<u32>) -> Option<Option<Domain>> {
        let tag = key.vlan_vid().filter(|&v| v != 0);
        if let Some(v) = vni {
            key.set(Field::TunId, v as u64);
        }
        match (cfg.kind, cfg.domain) {
            (PortKind::Vxlan(_), Some(d @ Domain::Vni(v))) => (vni == Some(v)).then_some(Some(d)),
            (PortKind::Vxlan(t), None) if t.flow_keyed => Some(None),
            (PortKind::Vxlan(_), None) => Some(vni.map(Domain::Vni)),
            (PortKind::Vxlan(_), Some(Domain::Vlan(_))) => None,
            (_, Some(d @ Domain::Vlan(v))) => tag.is_none_or(|t| t == v).then_some(Some(d)),
            (_, Some(d @ Domain::Vni(v))) => {
                key.set(Field::TunId, v as u64);
                tag.is_none().then_some(Some(d))
            }
            (_, None) => Some(tag.map(Domain::Vlan)),
        }
    }

    fn process(
        &mut self,
        now: Duration,
        in_port: PortNo,
        frame: &[u8],
        vni: Option<u32>,
        fx: &mut Effects,
    ) -> Disposition {
        if self.pipeline.next_deadline().is_some_and(|d| now >= d) {
            self.pipeline.expire(now);
        }
        if self.ct.sweep_due(now) {
            self.ct.expire(now);
        }
        let generation = self.generation();
        let Switch {
            ports,
            pipeline,
            macs,
            stats,
            ct,
            lbs,
            meters,
            reply_bufs,
            ..
        } = self;
        let (parsed, layout) = match parse_frame(frame, in_port) {
            Ok(x) => x,
            Err(e) => {
                if let Some(p) = ports.get_mut(&in_port) {
                    p.stats.rx_errors += 1;
                    p.stats.drops.count(DropCode::ParseError);
                }
                return Disposition::Dropped(DropReason::Parse(e));
            }
        };
        let mut key = parsed;
        let Some(port) = ports.get(&in_port) else {
            return Disposition::Dropped(DropReason::UnknownPort);
        };
        let probed = port.stats.probes.sent > 0;
        let in_tunnel = matches!(port.cfg.kind, PortKind::Vxlan(_));
        let Some(domain) = Self::ingress(&port.cfg, &mut key, vni) else {
            stats.isolation_drops += 1;
            if let Some(p) = ports.get_mut(&in_port) {
                p.stats.rx_dropped += 1;
                p.stats.drops.count(DropCode::Isolation);
            }
            return Disposition::Dropped(DropReason::Isolation);
        };
        let trans = pipeline.classify(&key, frame.len() as u64, now);
        let seed = ct.config().hash_seed;
        let mut ex = Exec {
            ct,
            lbs,
            meters,
            seed,
            ctpkt: None,
            pending: [FlowKey::ZERO; MAX_RECIRC],
            rtt_taken: false,
            n_pending: 0,
            n_recirc: 0,
            ports,
            macs,
            stats,
            fx,
            frame,
            layout: &layout,
            parsed: &parsed,
            in_port,
            in_tunnel,
            domain,
            now,
            outputs: 0,
            refused: 0,
            bufs: reply_bufs,
            reply_drop: None,
            meter_drop: None,
            cause: None,
            miss: false,
            offload_ok: true,
            out: None,
            out_encap: None,
            learned: None,
        };
        if ex.fx.hints {
            // The hint's rules and connections, gathered over every pass.
            ex.fx.offload.rules.clear();
            ex.fx.offload.ct.clear();
            ex.fx.offload.rules.extend_from_slice(&trans.hits);
        }
        ex.run(trans, key);
        // Recirculations, in the order their ct actions ran: each pass is its own lookup.
        let mut next = 0;
        while next < ex.n_pending {
            let k = ex.pending[next];
            next += 1;
            let trans = pipeline.classify(&k, frame.len() as u64, now);
            if ex.fx.hints {
                ex.fx.offload.rules.extend_from_slice(&trans.hits);
            }
            ex.run(trans, k);
        }
        let hint = ex.fx.hints
            && ex.offload_ok
            && ex.outputs == 1
            && ex.refused == 0
            // A probed port's echo replies may be probe answers (taken in `receive`).
            && !(probed && parsed.nw_proto() == ipproto::ICMP && parsed.tp_src() == 0);
        if let (true, Some((out_port, out_key, out_tpid))) = (hint, ex.out) {
            let o = &mut ex.fx.offload;
            // The engine must see the packets that keep a rule with an idle timeout alive.
            if !o.rules.iter().any(|&r| pipeline.has_idle_timeout(r)) {
                o.in_port = in_port;
                o.key = parsed;
                o.in_tpid = if layout.vlan { layout.tpid } else { 0 };
                o.out_port = out_port;
                o.out_key = out_key;
                o.out_tpid = out_tpid;
                o.encap = ex.out_encap;
                o.learn = ex.learned;
                o.generation = generation;
                // From now on a change of these connections moves the generation.
                for u in &o.ct {
                    ex.ct.set_offloaded(u.id);
                }
                ex.fx.has_offload = true;
            }
        }
        let (outputs, refused, reply_drop) = (ex.outputs, ex.refused, ex.reply_drop);
        let (meter_drop, cause, miss) = (ex.meter_drop, ex.cause, ex.miss);
        if outputs == 0 {
            let code = cause.unwrap_or(if miss {
                DropCode::TableMiss
            } else {
                DropCode::DropAction
            });
            if let Some(p) = self.ports.get_mut(&in_port) {
                p.stats.rx_dropped += 1;
                p.stats.drops.count(code);
            }
            if let Some(d) = reply_drop {
                return Disposition::Dropped(DropReason::Reply(d));
            }
            if let Some(id) = meter_drop {
                return Disposition::Dropped(DropReason::Meter(id));
            }
            return Disposition::Dropped(if refused > 0 {
                DropReason::Isolation
            } else {
                DropReason::NoOutput
            });
        }
        Disposition::Forwarded(outputs)
    }

    /// Pure trace support: ingress domain and key for a frame (None = refused at ingress).
    pub(crate) fn ingress_for_trace(
        &self,
        in_port: PortNo,
        key: &mut FlowKey,
    ) -> Option<Option<Domain>> {
        let port = self.ports.get(&in_port)?;
        let vni = matches!(port.cfg.kind, PortKind::Vxlan(_)).then(|| key.tun_id() as u32);
        Self::ingress(&port.cfg, key, vni)
    }

    pub(crate) fn ct_parts(&self) -> (&Conntrack, &LbGroups) {
        (&self.ct, &self.lbs)
    }

    pub(crate) fn port_cfg(&self, p: PortNo) -> Option<&PortConfig> {
        self.ports.get(&p).map(|p| &p.cfg)
    }

    pub(crate) fn flood_ports(&self) -> impl Iterator<Item = (PortNo, &PortConfig)> + '_ {
        self.ports.iter().map(|(n, p)| (*n, &p.cfg))
    }
}

/// Per-packet execution state.
struct Exec<'a> {
    ct: &'a mut Conntrack,
    lbs: &'a LbGroups,
    meters: &'a mut Meters,
    seed: u64,
    /// The packet's headers for conntrack, read at its first ct action.
    ctpkt: Option<Option<CtPacket>>,
    /// Recirculated passes still to run (keys with ct fields and `recirc` set).
    pending: [FlowKey; MAX_RECIRC],
    /// A handshake round trip was counted for this packet (one per packet, though it may
    /// pass several zones: NAT's and the security groups').
    rtt_taken: bool,
    n_pending: usize,
    n_recirc: usize,
    ports: &'a mut BTreeMap<PortNo, Port>,
    macs: &'a mut MacTable,
    stats: &'a mut SwitchStats,
    fx: &'a mut Effects,
    frame: &'a [u8],
    layout: &'a Layout,
    parsed: &'a FlowKey,
    in_port: PortNo,
    in_tunnel: bool,
    domain: Option<Domain>,
    now: Duration,
    outputs: usize,
    refused: usize,
    bufs: &'a mut (Vec<u8>, Vec<u8>),
    /// Set when `dec_ttl` or a responder dropped the packet (the rest of the actions is skipped).
    reply_drop: Option<ReplyDrop>,
    /// Set when a meter dropped the packet (its id).
    meter_drop: Option<u32>,
    /// The last reason met that could make the packet die (`drops.rs`).
    cause: Option<DropCode>,
    /// A pass ended in a table miss.
    miss: bool,
    /// Nothing but rewrites and explicit (or learned) outputs happened so far: the result is
    /// a function of the key and the switch's generation (`offload.rs`).
    offload_ok: bool,
    /// The last output made: port, key as it left, TPID of its tag.
    out: Option<(PortNo, FlowKey, u16)>,
    /// The encapsulation of the last output (a VXLAN port's).
    out_encap: Option<Encap>,
    /// The source address learned from this packet, with its domain.
    learned: Option<(Option<Domain>, u64)>,
}

/// The frame outputs are made from: the received one, or an answer a responder built.
#[derive(Clone, Copy)]
struct Src<'b> {
    frame: &'b [u8],
    layout: &'b Layout,
    parsed: &'b FlowKey,
    /// True for a built answer: never split (its bytes are not the caller's frame).
    built: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An explicit output: refusal is counted.
    Explicit,
    /// Flood candidate: refusal just means "not a member".
    Flood,
}

impl Exec<'_> {
    fn run(&mut self, trans: &Translation, mut k: FlowKey) {
        let mut tpid = if self.layout.vlan {
            self.layout.tpid
        } else {
            ethertype::VLAN
        };
        if trans.visits.last().is_some_and(|v| v.hit.is_none()) {
            self.miss = true;
        }
        for (i, op) in trans.ops.iter().enumerate() {
            match *op {
                Action::Meter(id) => {
                    self.offload_ok = false;
                    if !self.meter(id) {
                        return;
                    }
                }
                Action::DecTtl | Action::ArpReply(_) | Action::IcmpEchoReply => {
                    self.offload_ok = false;
                    let r = match *op {
                        Action::DecTtl => respond::dec_ttl(&mut k).map(|_| None),
                        Action::ArpReply(mac) => respond::arp::reply(&mut k, mac).map(Some),
                        _ => respond::icmp::echo_reply(&mut k).map(Some),
                    };
                    match r {
                        Ok(kind) => kind
                            .into_iter()
                            .for_each(|x| self.stats.replies.count_reply(x)),
                        Err(d) => return self.refuse(d),
                    }
                }
                Action::IcmpError { .. } | Action::DhcpReply(_) => {
                    self.offload_ok = false;
                    return self.answer(op, &k, tpid, &trans.ops[i + 1..]);
                }
                Action::Output(p) => {
                    // OpenFlow: output to the input port only via `in_port`.
                    if p != self.in_port {
                        self.emit(p, &k, tpid, Mode::Explicit);
                    }
                }
                Action::OutputInPort => {
                    self.offload_ok = false;
                    self.emit(self.in_port, &k, tpid, Mode::Explicit)
                }
                Action::Flood => self.flood(&k, tpid),
                Action::LearnMac => self.learn(&k),
                Action::Normal => {
                    self.learn(&k);
                    let dst = k.get(Field::EthDst);
                    let known = if dst & 0x0100_0000_0000 == 0 {
                        self.macs.lookup(self.domain, dst, self.now)
                    } else {
                        None
                    };
                    match known {
                        Some(p) if p == self.in_port => {}
                        Some(p) => self.emit(p, &k, tpid, Mode::Explicit),
                        None => self.flood(&k, tpid),
                    }
                }
                Action::PushVlan(t) => {
                    if k.vlan_tci() & VLAN_PRESENT == 0 {
                        tpid = t;
                    }
                    apply_to_key(op, &mut k);
                }
                Action::Ct(a) => {
                    if !self.conntrack(&a, &mut k) {
                        return;
                    }
                }
                _ => {
                    apply_to_key(op, &mut k);
                }
            }
        }
    }

    /// One ct action; false if it drops the packet (the rest of this pass does not run).
    fn conntrack(&mut self, a: &crate::flow::CtAction, k: &mut FlowKey) -> bool {
        let (frame, layout, parsed) = (self.frame, self.layout, self.parsed);
        let pkt = *self
            .ctpkt
            .get_or_insert_with(|| ct_exec::parse(frame, layout, parsed));
        let s = ct_exec::step(
            Tracker::Live(self.ct),
            self.lbs,
            self.seed,
            self.now,
            a,
            pkt.as_ref(),
            k,
        );
        match s.drop {
            Some(CtDrop::Commit(crate::conntrack::CommitError::NatExhausted)) => {
                self.stats.nat_exhausted += 1;
                self.cause = Some(DropCode::NatExhausted);
                return false;
            }
            Some(CtDrop::Commit(_)) => {
                self.stats.ct_commit_refused += 1;
                self.cause = Some(DropCode::CtCommitRefused);
                return false;
            }
            Some(CtDrop::NoBackend(_)) => {
                self.stats.lb_no_backend += 1;
                self.cause = Some(DropCode::LbNoBackend);
                return false;
            }
            None => {}
        }
        if let (Some(rtt), false) = (s.rtt, self.rtt_taken) {
            self.rtt_taken = true;
            if let Some(p) = self.ports.get_mut(&self.in_port) {
                p.stats.handshake_rtt.record(rtt);
            }
        }
        if self.fx.hints && self.offload_ok {
            self.offload_ct(&s, a.zone);
        }
        if let Some(t) = a.table {
            if self.n_recirc < MAX_RECIRC {
                self.pending[self.n_pending] = ct_exec::recirc_key(k, &s, a.zone, t);
                self.n_pending += 1;
                self.n_recirc += 1;
            } else {
                self.stats.recirc_limit += 1;
                self.cause = Some(DropCode::RecircLimit);
                self.offload_ok = false;
            }
        }
        true
    }

    /// Whether the result can still be offloaded after ct step `s` (in `zone`): only if it
    /// found an established TCP connection (in the tracker's `established` state) or an
    /// answered UDP one, committed nothing new and changed no mark. Then every later packet
    /// with the key finds the same verdict, mark and translation while the connection lives
    /// unchanged (the key names a TCP or UDP connection exactly; TCP segments with SYN, FIN or
    /// RST are never offloaded by the port layer), which `Conntrack::offload_changes` tracks
    /// once the connection is marked offloaded. ICMP echo is left out: the key lacks the echo
    /// id, so it does not name the connection.
    fn offload_ct(&mut self, s: &ct_exec::CtStep, zone: u16) {
        use crate::conntrack::{ConnProto, CtState, TcpState};
        let proto_ok = matches!(self.parsed.nw_proto(), ipproto::TCP | ipproto::UDP);
        let conn = s
            .verdict
            .entry
            .filter(|_| {
                proto_ok
                    && s.drop.is_none()
                    && !s.committed
                    && !s.mark_changed
                    && s.verdict.state == CtState::Established
            })
            .and_then(|id| self.ct.get(id))
            .filter(|c| {
                matches!(
                    c.proto,
                    ConnProto::Tcp(TcpState::Established) | ConnProto::Udp
                )
            });
        match conn {
            Some(c) if self.fx.offload.ct.len() < MAX_CT_USES => self.fx.offload.ct.push(CtUse {
                zone,
                id: c.id,
                dir: s.verdict.dir,
            }),
            _ => self.offload_ok = false,
        }
    }

    /// `meter:N`: false if the meter drops the packet (the rest of this pass does not run).
    fn meter(&mut self, id: u32) -> bool {
        let len = self.frame.len() as u64;
        let code = match self.meters.admit(id, len, self.now) {
            Some(v) if v.admitted() => return true,
            Some(_) => DropCode::Meter,
            None => DropCode::MeterMissing,
        };
        self.stats.meter_drops += 1;
        self.meter_drop = Some(id);
        self.cause = Some(code);
        false
    }

    fn refuse(&mut self, d: ReplyDrop) {
        self.stats.replies.count_drop(d);
        self.reply_drop = Some(d);
        self.cause = Some(DropCode::Reply(d));
    }

    /// A frame-building responder: builds the answer, then runs the outputs that follow it
    /// (validation allows nothing else after a reply action) on the answer.
    fn answer(&mut self, op: &Action, k: &FlowKey, tpid: u16, rest: &[Action]) {
        let (mut cur, mut ans) = std::mem::take(self.bufs);
        let src = Src {
            frame: self.frame,
            layout: self.layout,
            parsed: self.parsed,
            built: false,
        };
        match reply_frame(
            op, src.frame, src.layout, src.parsed, k, tpid, &mut cur, &mut ans,
        ) {
            Err(d) => self.refuse(d),
            Ok((kind, akey, alay)) => {
                self.stats.replies.count_reply(kind);
                let nk = answer_key(&akey, k);
                let src = Src {
                    frame: &ans,
                    layout: &alay,
                    parsed: &akey,
                    built: true,
                };
                for a in rest {
                    match *a {
                        Action::Output(p) if p != self.in_port => {
                            self.emit_src(src, p, &nk, tpid, Mode::Explicit)
                        }
                        Action::OutputInPort => {
                            self.emit_src(src, self.in_port, &nk, tpid, Mode::Explicit)
                        }
                        _ => {}
                    }
                }
            }
        }
        *self.bufs = (cur, ans);
    }

    fn learn(&mut self, k: &FlowKey) {
        let mac = k.get(Field::EthSrc);
        self.macs.learn(self.domain, mac, self.in_port, self.now);
        self.learned = Some((self.domain, mac));
    }

    fn flood(&mut self, k: &FlowKey, tpid: u16) {
        self.offload_ok = false;
        let before = self.outputs;
        self.flood_all(k, tpid);
        if self.outputs == before {
            self.cause = Some(DropCode::NoFloodTarget);
        }
    }

    fn flood_all(&mut self, k: &FlowKey, tpid: u16) {
        // Collect candidates first: emit needs the map mutably. Stack buffer, no allocation for
        // switches up to 64 ports; beyond that, chunks.
        let mut start: PortNo = 0;
        loop {
            let mut cand = [0 as PortNo; 64];
            let mut n = 0;
            for (&no, p) in self.ports.range(start..) {
                if n == cand.len() {
                    break;
                }
                start = no.saturating_add(1);
                if no == self.in_port {
                    continue;
                }
                if self.in_tunnel && matches!(p.cfg.kind, PortKind::Vxlan(_)) {
                    continue;
                }
                cand[n] = no;
                n += 1;
            }
            for &p in &cand[..n] {
                self.emit(p, k, tpid, Mode::Flood);
            }
            if n < cand.len() {
                break;
            }
        }
    }

    fn emit(&mut self, p: PortNo, k: &FlowKey, tpid: u16, mode: Mode) {
        let src = Src {
            frame: self.frame,
            layout: self.layout,
            parsed: self.parsed,
            built: false,
        };
        self.emit_src(src, p, k, tpid, mode)
    }

    fn emit_src(&mut self, src: Src<'_>, p: PortNo, k: &FlowKey, tpid: u16, mode: Mode) {
        let Some(port) = self.ports.get_mut(&p) else {
            self.stats.output_to_unknown_port += 1;
            self.cause = Some(DropCode::OutputToUnknownPort);
            self.offload_ok = false;
            return;
        };
        if src.built || mode == Mode::Flood {
            self.offload_ok = false;
        }
        let Some(a) = adapt(&port.cfg, self.domain, k) else {
            if mode == Mode::Explicit {
                port.stats.tx_dropped += 1;
                port.stats.drops.count(DropCode::TxIsolation);
                self.stats.isolation_drops += 1;
                self.refused += 1;
                self.cause = Some(DropCode::Isolation);
            }
            return;
        };
        let fx = &mut *self.fx;
        let start = fx.buf.len();
        let encap = match (port.cfg.kind, a.vni) {
            (PortKind::Vxlan(tunnel), Some(vni)) => Some(Encap {
                vni,
                flow_hash: flow_hash(&a.key),
                tunnel,
            }),
            _ => None,
        };
        let cut = if fx.split && !src.built && src.frame.len() > SPLIT_MIN {
            SPLIT_HEAD
        } else {
            src.frame.len()
        };
        materialize(
            &src.frame[..cut],
            src.layout,
            src.parsed,
            &a.key,
            tpid,
            &mut fx.buf,
        );
        let tail = if src.built {
            (0, 0)
        } else {
            (cut, src.frame.len())
        };
        let tail_len = tail.1 - tail.0;
        let len = fx.buf.len() - start;
        // A tunnel port counts the frame as the underlay carries it (outer headers included),
        // and refuses what no outer IPv4 length field can hold.
        let overhead = if encap.is_some() {
            if !vxlan::fits_ipv4(len + tail_len) {
                fx.buf.truncate(start);
                port.stats.tx_dropped += 1;
                port.stats.drops.count(DropCode::TxTooBig);
                return;
            }
            VXLAN_OVERHEAD_V4
        } else {
            0
        };
        fx.emits.push(Emit {
            port: p,
            start,
            len,
            tail,
            encap,
        });
        port.stats.tx_packets += 1;
        port.stats.tx_bytes += (len + tail_len + overhead) as u64;
        self.outputs += 1;
        let out_tpid = if src.layout.vlan {
            src.layout.tpid
        } else {
            tpid
        };
        self.out = Some((p, a.key, out_tpid));
        self.out_encap = encap;
    }
}

/// Builds the answer of a frame-building responder (`icmp_error`, `dhcp_reply`) to the packet
/// `frame` (parsed as `parsed`, now `k` after the actions before it): the packet as rewritten
/// so far goes to `cur`, the answer to `ans`, parsed back into its key and layout. Used by
/// execution and by `trace`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reply_frame(
    op: &Action,
    frame: &[u8],
    layout: &Layout,
    parsed: &FlowKey,
    k: &FlowKey,
    tpid: u16,
    cur: &mut Vec<u8>,
    ans: &mut Vec<u8>,
) -> Result<(ReplyKind, FlowKey, Layout), ReplyDrop> {
    cur.clear();
    ans.clear();
    materialize(frame, layout, parsed, k, tpid, cur);
    let refused = match op {
        Action::DhcpReply(_) => ReplyDrop::DhcpMalformed,
        _ => ReplyDrop::IcmpErrorRefused,
    };
    let (ck, cl) = parse_frame(cur, k.in_port()).map_err(|_| refused)?;
    let kind = match *op {
        Action::IcmpError {
            icmp_type,
            code,
            src: std::net::IpAddr::V4(src),
        } => respond::icmp::error(cur, &cl, &ck, icmp_type, code, src, ans)?,
        Action::IcmpError {
            icmp_type,
            code,
            src: std::net::IpAddr::V6(src),
        } => respond::icmp::error_v6(cur, &cl, &ck, icmp_type, code, src, ans)?,
        Action::DhcpReply(ref c) => respond::dhcp::reply(cur, &cl, &ck, c, ans)?,
        _ => return Err(refused),
    };
    let (ak, al) = parse_frame(ans, k.in_port()).map_err(|_| refused)?;
    Ok((kind, ak, al))
}

/// The key an answer leaves with: its own header fields, and what is not on the wire (port,
/// tunnel id, metadata, registers) and the VLAN tag from the packet it answers.
pub(crate) fn answer_key(answer: &FlowKey, k: &FlowKey) -> FlowKey {
    let mut nk = *answer;
    for f in [Field::InPort, Field::VlanTci, Field::TunId, Field::Metadata] {
        nk.set(f, k.get(f));
    }
    for r in 0..8 {
        nk.set(Field::Reg(r), k.get(Field::Reg(r)));
    }
    nk
}

/// Hash of the inner flow for the VXLAN source port: addresses, protocol and ports, so one
/// TCP connection always takes one underlay path.
pub fn flow_hash(k: &FlowKey) -> u64 {
    let mut m = FlowKey::ZERO;
    for f in [
        Field::EthSrc,
        Field::EthDst,
        Field::EthType,
        Field::NwProto,
        Field::NwSrc,
        Field::NwDst,
        Field::Ipv6SrcHi,
        Field::Ipv6SrcLo,
        Field::Ipv6DstHi,
        Field::Ipv6DstLo,
        Field::TpSrc,
        Field::TpDst,
    ] {
        m.set(f, u64::MAX);
    }
    k.and(&m).hash_all()
}

/// Writes the frame as it leaves: the received bytes with the header fields that differ
/// between `orig` (as parsed) and `k` (after actions) rewritten, checksums updated
/// incrementally. Appends to `out`.
pub fn materialize(
    frame: &[u8],
    lay: &Layout,
    orig: &FlowKey,
    k: &FlowKey,
    tpid: u16,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&k.eth_dst());
    out.extend_from_slice(&k.eth_src());
    if k.vlan_tci() & VLAN_PRESENT != 0 {
        let tpid = if lay.vlan { lay.tpid } else { tpid };
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(k.vlan_tci() & !VLAN_PRESENT).to_be_bytes());
    }
    let l3_in = lay.l3 as usize;
    out.extend_from_slice(frame.get(l3_in - 2..).unwrap_or(&[]));
    let l3 = out.len() - (frame.len() - l3_in);
    let l4 = lay.l4.map(|x| l3 + (x as usize - l3_in));
    let b = &mut out[start..];
    let (l3, l4) = (l3 - start, l4.map(|x| x - start));
    match orig.eth_type() {
        ethertype::IPV4 if lay.l3_end as usize > l3_in => rewrite_v4(b, l3, l4, orig, k),
        ethertype::IPV6 if lay.l3_end as usize > l3_in => rewrite_v6(b, l3, l4, orig, k),
        ethertype::ARP => rewrite_arp(b, l3, orig, k),
        _ => {}
    }
}

/// ARP body fields the key holds (op, sha, spa, tha, tpa), written where they differ
/// (`arp_reply`).
fn rewrite_arp(b: &mut [u8], l3: usize, orig: &FlowKey, k: &FlowKey) {
    let Some(body) = b.get_mut(l3..l3 + crate::packet::ARP_LEN) else {
        return;
    };
    if orig.arp_op() != k.arp_op() {
        body[6..8].copy_from_slice(&k.arp_op().to_be_bytes());
    }
    for (off, old, new) in [
        (8, orig.arp_sha(), k.arp_sha()),
        (18, orig.arp_tha(), k.arp_tha()),
    ] {
        if old != new {
            body[off..off + 6].copy_from_slice(&new);
        }
    }
    for (off, old, new) in [
        (14, orig.nw_src(), k.nw_src()),
        (24, orig.nw_dst(), k.nw_dst()),
    ] {
        if old != new {
            body[off..off + 4].copy_from_slice(&new.octets());
        }
    }
}

/// TTL (`dec_ttl`, answers) and ICMP type/code (`icmp_echo_reply`), with incremental checksums.
fn rewrite_ttl_icmp(b: &mut [u8], l3: usize, l4: Option<usize>, orig: &FlowKey, k: &FlowKey) {
    if orig.nw_ttl() != k.nw_ttl() {
        let at = l3 + 8;
        let old = rd16(b, at);
        let new = ((k.nw_ttl() as u16) << 8) | (old & 0xff);
        wr16(b, at, new);
        let hc = rd16(b, l3 + 10);
        wr16(b, l3 + 10, csum::update16(hc, old, new));
    }
    let icmp = orig.nw_proto() == ipproto::ICMP;
    if icmp && (orig.tp_src(), orig.tp_dst()) != (k.tp_src(), k.tp_dst()) {
        if let Some(cpos) = l4_csum_pos(b, l4, ipproto::ICMP) {
            let l4 = cpos - 2;
            let old = rd16(b, l4);
            let new = ((k.tp_src() & 0xff) << 8) | (k.tp_dst() & 0xff);
            wr16(b, l4, new);
            let c = rd16(b, cpos);
            wr16(b, cpos, csum::update16(c, old, new));
        }
    }
}

fn l4_csum_pos(b: &[u8], l4: Option<usize>, proto: u8) -> Option<usize> {
    let l4 = l4?;
    let off = csum::l4_csum_offset(proto)?;
    (l4 + off + 2 <= b.len()).then_some(l4 + off)
}

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn rewrite_ports(b: &mut [u8], l4: Option<usize>, proto: u8, orig: &FlowKey, k: &FlowKey) {
    if proto != ipproto::TCP && proto != ipproto::UDP {
        return;
    }
    let Some(l4) = l4 else { return };
    let Some(cpos) = l4_csum_pos(b, Some(l4), proto) else {
        return;
    };
    for (off, old, new) in [
        (0, orig.tp_src(), k.tp_src()),
        (2, orig.tp_dst(), k.tp_dst()),
    ] {
        if old != new {
            wr16(b, l4 + off, new);
            let c = rd16(b, cpos);
            if !(proto == ipproto::UDP && c == 0) {
                let mut n = csum::update16(c, old, new);
                if n == 0 && proto == ipproto::UDP {
                    n = 0xffff;
                }
                wr16(b, cpos, n);
            }
        }
    }
}

fn rewrite_v4(b: &mut [u8], l3: usize, l4: Option<usize>, orig: &FlowKey, k: &FlowKey) {
    if b.len() < l3 + 20 {
        return;
    }
    let proto = orig.nw_proto();
    for (off, old, new) in [
        (12, u32::from(orig.nw_src()), u32::from(k.nw_src())),
        (16, u32::from(orig.nw_dst()), u32::from(k.nw_dst())),
    ] {
        if old == new {
            continue;
        }
        b[l3 + off..l3 + off + 4].copy_from_slice(&new.to_be_bytes());
        let hc = rd16(b, l3 + 10);
        wr16(b, l3 + 10, csum::update32(hc, old, new));
        // TCP/UDP checksums cover the pseudo header; ICMP's does not.
        if proto == ipproto::TCP || proto == ipproto::UDP {
            if let Some(cpos) = l4_csum_pos(b, l4, proto) {
                let c = rd16(b, cpos);
                if !(proto == ipproto::UDP && c == 0) {
                    let mut n = csum::update32(c, old, new);
                    if n == 0 && proto == ipproto::UDP {
                        n = 0xffff;
                    }
                    wr16(b, cpos, n);
                }
            }
        }
    }
    rewrite_ports(b, l4, proto, orig, k);
    rewrite_ttl_icmp(b, l3, l4, orig, k);
}

fn rewrite_v6(b: &mut [u8], l3: usize, l4: Option<usize>, orig: &FlowKey, k: &FlowKey) {
    if b.len() < l3 + 40 {
        return;
    }
    let proto = orig.nw_proto();
    for (off, old, new) in [
        (8, orig.ipv6_src().octets(), k.ipv6_src().octets()),
        (24, orig.ipv6_dst().octets(), k.ipv6_dst().octets()),
    ] {
        if old == new {
            continue;
        }
        b[l3 + off..l3 + off + 16].copy_from_slice(&new);
        if let Some(cpos) = l4_csum_pos(b, l4, proto) {
            let mut c = rd16(b, cpos);
            for i in 0..8 {
                c = csum::update16(
                    c,
                    u16::from_be_bytes([old[2 * i], old[2 * i + 1]]),
                    u16::from_be_bytes([new[2 * i], new[2 * i + 1]]),
                );
            }
            wr16(b, cpos, c);
        }
    }
    rewrite_ports(b, l4, proto, orig, k);
    if orig.nw_ttl() != k.nw_ttl() {
        b[l3 + 7] = k.nw_ttl(); // the hop limit; no IPv6 header checksum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build_frame;
    use std::net::Ipv4Addr;

    #[test]
    fn set_field_rewrites_with_valid_checksums() {
        let mut sw = Switch::default();
        let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
        let b = sw.add_port(PortConfig::tap("b", None)).unwrap();
        sw.add_flow(
            Duration::ZERO,
            "tcp,tp_dst=80,actions=set_field:10.0.0.5->nw_dst,set_field:8080->tp_dst,output:b",
        )
        .unwrap();
        let mut k = FlowKey::ZERO;
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwSrc, u32::from(Ipv4Addr::new(10, 0, 0, 1)) as u64);
        k.set(Field::NwDst, u32::from(Ipv4Addr::new(10, 0, 0, 2)) as u64);
        k.set(Field::TpSrc, 5555);
        k.set(Field::TpDst, 80);
        let f = build_frame(&k, 33);
        let mut fx = Effects::new();
        assert_eq!(
            sw.receive(Duration::ZERO, a, &f, &mut fx),
            Disposition::Forwarded(1)
        );
        let (p, out) = fx.iter().next().unwrap();
        assert_eq!(p, b);
        let (ok, lay) = parse_frame(out, b).unwrap();
        assert_eq!(ok.nw_dst(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(ok.tp_dst(), 8080);
        assert_eq!(
            csum::ipv4_header_checksum(&out[14..34]),
            rd16(out, 24),
            "IPv4 header checksum"
        );
        assert!(csum::verify_l4_checksum(
            out,
            lay.l3 as usize,
            lay.l4.unwrap() as usize
        ));
    }

    #[test]
    fn adapt_rules() {
        let k = FlowKey::ZERO;
        let access10 = PortConfig::tap("a", Some(Domain::Vlan(10)));
        let trunk = PortConfig::tap("t", None);
        assert!(adapt(&access10, Some(Domain::Vlan(10)), &k).is_some());
        assert!(adapt(&access10, Some(Domain::Vlan(20)), &k).is_none());
        assert!(adapt(&access10, None, &k).is_none());
        let tagged = adapt(&trunk, Some(Domain::Vlan(10)), &k).unwrap();
        assert_eq!(tagged.key.vlan_vid(), Some(10));
        assert!(adapt(&trunk, Some(Domain::Vni(5)), &k).is_none());
        assert!(adapt(&trunk, None, &k).is_some());
        let mut tagged20 = k;
        tagged20.set(Field::VlanTci, (VLAN_PRESENT | 20) as u64);
        assert!(adapt(&trunk, None, &tagged20).is_some(), "operator traffic");
        assert!(adapt(&trunk, Some(Domain::Vlan(10)), &tagged20).is_none());
        assert!(adapt(&access10, None, &tagged20).is_none());
    }

    #[test]
    fn split_effects_equal_whole_frames() {
        let mut sw = Switch::default();
        let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
        sw.add_port(PortConfig::tap("b", None)).unwrap();
        let t = VxlanTunnel::new(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 2));
        sw.add_port(PortConfig::vxlan("vx", t, None)).unwrap();
        sw.add_flow(
            Duration::ZERO,
            "tcp,actions=set_field:10.9.9.9->nw_dst,set_field:8080->tp_dst,set_tunnel:7,output:vx,\
             mod_vlan_vid:7,output:b",
        )
        .unwrap();
        let mut k = FlowKey::ZERO;
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, 0x0a00_0001);
        k.set(Field::NwDst, 0x0a00_0002);
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 80);
        for payload in [10, 1000, 9000] {
            let f = build_frame(&k, payload);
            let (mut whole, mut split) = (Effects::new(), Effects::new());
            split.set_split(true);
            let bytes =
                |sw: &Switch| -> Vec<u64> { sw.ports().map(|(_, _, st)| st.tx_bytes).collect() };
            let b0 = bytes(&sw);
            sw.receive(Duration::ZERO, a, &f, &mut whole);
            let b1 = bytes(&sw);
            sw.receive(Duration::ZERO, a, &f, &mut split);
            let b2 = bytes(&sw);
            for i in 0..b0.len() {
                assert_eq!(
                    b1[i] - b0[i],
                    b2[i] - b1[i],
                    "both modes count the same bytes"
                );
            }
            let w: Vec<(PortNo, Vec<u8>)> = whole.iter().map(|(p, b)| (p, b.to_vec())).collect();
            let s: Vec<(PortNo, Vec<u8>)> = split
                .outputs()
                .map(|o| (o.port, [o.head, &f[o.tail]].concat()))
                .collect();
            assert_eq!(w.len(), 2);
            assert_eq!(w, s, "payload {payload}");
            // The tunnel output is the inner frame plus the same encapsulation intent.
            let we: Vec<Option<Encap>> = whole.encaps().collect();
            let se: Vec<Option<Encap>> = split.encaps().collect();
            assert_eq!(we, se);
            assert_eq!(we.iter().filter(|e| e.is_some()).count(), 1);
            let copied: usize = split.outputs().map(|o| o.head.len()).sum();
            if f.len() > SPLIT_MIN {
                assert!(
                    copied < 2 * (SPLIT_HEAD + VXLAN_OVERHEAD_V4 + 4),
                    "tails not copied"
                );
            }
        }
    }
}
