//! The veth fast path: established flows between two veth ports of a switch forwarded in the
//! kernel by a TC program on the input port's host end, with the slow path's result (see
//! docs/net-engine.md, "Fast path"). This file is the manager: it loads the programs, attaches
//! them to ports, installs entries from the engine's offload hints, keeps the generation,
//! folds the entries' counters back into the switch and expires idle entries.
//!
//! - `key`: the byte layouts shared with `bpf/fastpath.c`; `plan`: what a hint becomes (pure);
//!   `object`: the committed object and the test that rebuilds it.
//!
//! # Invariants
//! - An entry is written with the generation of the hint it came from, and the map's
//!   generation is raised to a hint's generation before an entry of it is written, so the
//!   kernel never uses an entry made under rules that have changed since: an entry of another
//!   generation is a miss. The map's generation is the switch's [`strata_net::Switch::generation`]
//!   plus one (0 means "carry nothing").
//! - Every packet the kernel forwarded is counted once: an entry's counters are read before it
//!   is overwritten or deleted (the kernel no longer counts on it by then: its generation is
//!   old, or it has been idle for [`IDLE`]), and the counts since the last fold are handed
//!   back as [`Credit`]s, which the caller gives to the switch
//!   ([`strata_net::Switch::credit_offloaded`]).
//! - A port's TC program is attached before its socket's filter, and an entry is only made
//!   for an input port that has both and an output that is a veth port of the same switch or
//!   one of its VXLAN ports (encapsulated in the kernel, `plan::Out::Vxlan`).
//! - No lock order: the caller takes this manager's mutex and the switch's lock one after
//!   the other, never one inside the other; system calls happen under this mutex only.

pub(crate) mod key;
pub(crate) mod object;
pub(crate) mod plan;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::{SchedClassifier, SocketFilter, TcAttachType};
use strata_net::key::PortNo;
use strata_net::{CtUse, Domain, FlowKey, Offload, RuleId};

use crate::stats::FastPathStats;
pub(crate) use key::FpKey;
use key::{stat, FpValue};
use plan::Refusal;

/// An entry unused this long is deleted (its counts folded first). The same idle time as the
/// engine's megaflow cache: an entry never outlives by much the cached result it repeats, and
/// a flow that pauses longer comes back through the slow path, which costs one packet.
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// Why the fast path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// The object file could not be read.
    #[error("reading {what}: {source}")]
    Object {
        /// Which object.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The object did not parse or its maps could not be made.
    #[error("loading {what}: {source}")]
    Load {
        /// Which object.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object lacks a program or map of that name.
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// The kernel refused a program (no BPF, no permission, the verifier).
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map of the wrong type, or an operation on it failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The possible CPUs could not be read.
    #[error("counting CPUs: {0}")]
    Cpus(std::io::Error),
}

/// Packets the kernel forwarded by one entry since the last fold, to count in the switch.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    pub(crate) in_port: PortNo,
    pub(crate) out_port: PortNo,
    pub(crate) rules: Vec<RuleId>,
    pub(crate) packets: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) learn: Option<(Option<Domain>, u64)>,
    /// Connections to count the packets on.
    pub(crate) ct: Vec<CtUse>,
    /// The packets' IP bytes (for the connections).
    pub(crate) ip_bytes: u64,
    /// Monotonic nanoseconds of the last packet.
    pub(crate) last_ns: u64,
}

/// What userspace keeps of an entry it wrote.
#[derive(Debug)]
struct Entry {
    id: u32,
    /// Generation of the hint (the switch's; the map holds it plus one).
    gen: u64,
    in_port: PortNo,
    out_port: PortNo,
    rules: Vec<RuleId>,
    learn: Option<(Option<Domain>, u64)>,
    ct: Vec<CtUse>,
    /// Bytes per packet the switch counts beyond `skb->len` (offloaded tags): in, out.
    extra: (u64, u64),
    /// Bytes of a received frame before its IP header, as the switch counts it (Ethernet,
    /// and the tag if it has one).
    l2: u64,
    /// Totals already credited.
    packets: u64,
    bytes: u64,
    /// Last packet (monotonic ns), or the install time.
    last_ns: u64,
}

/// A TC attachment.
pub(crate) type LinkId = aya::programs::tc::SchedClassifierLinkId;

/// A port the programs are attached to.
#[derive(Debug)]
struct Attached {
    ifindex: u32,
    link: Option<LinkId>,
}

/// The loaded programs and maps of one dataplane, and what userspace knows of the entries.
pub(crate) struct FastPath {
    bpf: aya::Ebpf,
    flows: PerCpuHashMap<MapData, FpKey, FpValue>,
    gen_map: Array<MapData, u64>,
    stats_map: PerCpuArray<MapData, u64>,
    ncpus: usize,
    ports: HashMap<PortNo, Attached>,
    entries: HashMap<FpKey, Entry>,
    next_entry: u32,
    /// The switch generation written to the map (None: not yet).
    gen: Option<u64>,
    /// Counts of entries retired since the last fold.
    retired: Vec<Credit>,
    counts: FastPathStats,
    /// Packets carried per port: in from it, out to it.
    per_port: BTreeMap<PortNo, (u64, u64)>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("ports", &self.ports)
            .field("entries", &self.entries.len())
            .field("gen", &self.gen)
            .finish()
    }
}

fn program(name: &'static str, e: aya::programs::ProgramError) -> FastPathError {
    FastPathError::Program {
        name,
        source: Box::new(e),
    }
}

fn map<T>(
    bpf: &mut aya::Ebpf,
    name: &'static str,
    conv: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, FastPathError> {
    let m = bpf.take_map(name).ok_or(FastPathError::Missing(name))?;
    conv(m).map_err(|source| FastPathError::Map {
        name,
        source: Box::new(source),
    })
}

impl FastPath {
    /// Loads the programs (from `path`, else the embedded object) into the kernel.
    pub(crate) fn load(path: Option<&std::path::Path>) -> Result<FastPath, FastPathError> {
        let (bytes, what) = object::object(path).map_err(|source| FastPathError::Object {
            what: path.map_or("the BPF object".into(), |p| p.display().to_string()),
            source,
        })?;
        let mut bpf = aya::Ebpf::load(&bytes).map_err(|source| FastPathError::Load {
            what: what.clone(),
            source: Box::new(source),
        })?;
        let prog = |name| FastPathError::Missing(name);
        {
            let p: &mut SchedClassifier = bpf
                .program_mut("fp_tc")
                .ok_or(prog("fp_tc"))?
                .try_into()
                .map_err(|e| program("fp_tc", e))?;
            p.load().map_err(|e| program("fp_tc", e))?;
        }
        {
            let p: &mut SocketFilter = bpf
                .program_mut("fp_sock")
                .ok_or(prog("fp_sock"))?
                .try_into()
                .map_err(|e| program("fp_sock", e))?;
            p.load().map_err(|e| program("fp_sock", e))?;
        }
        let flows = map(&mut bpf, "fp_flows", PerCpuHashMap::try_from)?;
        let gen_map = map(&mut bpf, "fp_gen", Array::try_from)?;
        let stats_map = map(&mut bpf, "fp_stats", PerCpuArray::try_from)?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| FastPathError::Cpus(e))?;
        Ok(FastPath {
            bpf,
            flows,
            gen_map,
            stats_map,
            ncpus,
            ports: HashMap::new(),
            entries: HashMap::new(),
            next_entry: 0,
            gen: None,
            retired: Vec::new(),
            counts: FastPathStats::default(),
            per_port: BTreeMap::new(),
        })
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier, FastPathError> {
        self.bpf
            .program_mut("fp_tc")
            .ok_or(FastPathError::Missing("fp_tc"))?
            .try_into()
            .map_err(|e| program("fp_tc", e))
    }

    /// Attaches the TC program to the ingress of host end `name`. Call
    /// before [`FastPath::attach_filter`] on its socket, then [`FastPath::register`] the port
    /// (or [`FastPath::drop_link`] if it is not added after all).
    pub(crate) fn attach_tc(&mut self, name: &str) -> Result<LinkId, FastPathError> {
        // Kernels before TCX (6.6) attach through the clsact qdisc; it may exist already.
        let _ = aya::programs::tc::qdisc_add_clsact(name);
        self.tc()?
            .attach(name, TcAttachType::Ingress)
            .map_err(|e| program("fp_tc", e))
    }

    /// Records that port `no` (host end `ifindex`) has the programs (`link` from
    /// [`FastPath::attach_tc`]).
    pub(crate) fn register(&mut self, no: PortNo, ifindex: u32, link: LinkId) {
        self.ports.insert(
            no,
            Attached {
                ifindex,
                link: Some(link),
            },
        );
    }

    /// Detaches a TC program attached by [`FastPath::attach_tc`] for a port not added.
    pub(crate) fn drop_link(&mut self, link: LinkId) {
        if let Ok(p) = self.tc() {
            let _ = p.detach(link);
        }
    }

    /// Attaches the socket filter to a port's packet socket (before it is bound).
    pub(crate) fn attach_filter(&self, sock: BorrowedFd<'_>) -> std::io::Result<()> {
        let p: &SocketFilter = self
            .bpf
            .program("fp_sock")
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| std::io::Error::other("no fp_sock program"))?;
        p.attach(sock).map_err(std::io::Error::other)
    }

    /// Forgets port `no`: the entries from or to it are folded and deleted, and its TC
    /// program detached (the host end still exists).
    pub(crate) fn detach(&mut self, no: PortNo) {
        let gone: Vec<FpKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.in_port == no || e.out_port == no)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.retire(&k);
        }
        if let Some(link) = self.ports.remove(&no).and_then(|a| a.link) {
            self.drop_link(link);
        }
        self.per_port.remove(&no);
    }

    /// The host-end ifindex of port `no` if the programs are attached to it.
    pub(crate) fn ifindex(&self, no: PortNo) -> Option<u32> {
        self.ports.get(&no).map(|a| a.ifindex)
    }

    /// Raises the map's generation to the switch's `gen` (entries of older ones become
    /// misses). Never lowers it.
    pub(crate) fn sync(&mut self, gen: u64) {
        if self.gen.is_some_and(|g| g >= gen) {
            return;
        }
        match self.gen_map.set(0, gen + 1, 0) {
            Ok(()) => self.gen = Some(gen),
            Err(e) => {
                // Without a current generation nothing new is carried; old entries stay
                // misses only if the write succeeds later. Stop carrying: write 0.
                tracing::error!(error = %e, "fast path: cannot write the generation; stopping it");
                let _ = self.gen_map.set(0, 0, 0);
                self.gen = Some(u64::MAX);
            }
        }
    }

    /// The generation written, if any.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.gen
    }

    /// Installs the entry for hint `o` from port `o.in_port` (host end `in_ifindex`) to port
    /// `o.out_port` (reached as `out` says), unless the fast path cannot carry it or an
    /// entry of its generation exists. `frame` is the received frame; `now_ns` monotonic.
    pub(crate) fn offer(
        &mut self,
        o: &Offload,
        in_ifindex: u32,
        out: plan::Out,
        frame: &[u8],
        now_ns: u64,
    ) {
        self.sync(o.generation);
        if self.gen != Some(o.generation) {
            return; // the hint is older than the rules now in force
        }
        let (key, act) = match plan::plan(o, in_ifindex, out, frame) {
            Ok(x) => x,
            Err(r) => {
                match r {
                    Refusal::Protocol => self.counts.refused_protocol += 1,
                    Refusal::TcpFlags => self.counts.refused_tcp_flags += 1,
                    Refusal::Rewrite => self.counts.refused_rewrite += 1,
                    Refusal::Tunnel => self.counts.refused_tunnel += 1,
                }
                return;
            }
        };
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.gen == o.generation)
        {
            return;
        }
        if self.entries.contains_key(&key) {
            self.retire(&key);
        }
        let id = self.next_entry;
        self.next_entry = self.next_entry.wrapping_add(1);
        let v = FpValue {
            gen: o.generation + 1,
            entry: id,
            act,
            ..FpValue::default()
        };
        let values = match PerCpuValues::try_from(vec![v; self.ncpus]) {
            Ok(v) => v,
            Err(_) => return,
        };
        if let Err(e) = self.flows.insert(key, values, 0) {
            // Full (E2BIG) or out of memory: this flow stays on the slow path.
            self.counts.install_failed += 1;
            tracing::debug!(error = %e, "fast path: entry not installed");
            return;
        }
        self.counts.installs += 1;
        self.entries.insert(
            key,
            Entry {
                id,
                gen: o.generation,
                in_port: o.in_port,
                out_port: o.out_port,
                rules: o.rules.clone(),
                learn: o.learn,
                ct: o.ct.clone(),
                extra: {
                    // A VXLAN port counts the frame with its outer headers, as the underlay
                    // carries it.
                    let (i, t) = plan::tag_bytes(&o.key, &o.out_key);
                    let outer = match out {
                        plan::Out::Vxlan { .. } => strata_net::vxlan::VXLAN_OVERHEAD_V4 as u64,
                        plan::Out::Peer(_) => 0,
                    };
                    (i, t + outer)
                },
                l2: 14 + plan::tag_bytes(&o.key, &o.out_key).0,
                packets: 0,
                bytes: 0,
                last_ns: now_ns,
            },
        );
    }

    /// Reads entry `k`'s counters: (packets, bytes, last packet ns) over all CPUs.
    fn read(&self, k: &FpKey) -> Option<(u64, u64, u64)> {
        let v = self.flows.get(k, 0).ok()?;
        Some(v.iter().fold((0, 0, 0), |(p, b, t), x| {
            (p + x.packets, b + x.bytes, t.max(x.last_ns))
        }))
    }

    /// The counts of entry `k` since the last fold, and its new totals.
    fn delta(&mut self, k: &FpKey) -> Option<Credit> {
        let (p, b, t) = self.read(k)?;
        let e = self.entries.get_mut(k)?;
        if p <= e.packets {
            return None;
        }
        let (dp, db) = (p - e.packets, b.saturating_sub(e.bytes));
        e.packets = p;
        e.bytes = b;
        e.last_ns = e.last_ns.max(t);
        let pp = self.per_port.entry(e.in_port).or_default();
        pp.0 += dp;
        let pp = self.per_port.entry(e.out_port).or_default();
        pp.1 += dp;
        Some(Credit {
            in_port: e.in_port,
            out_port: e.out_port,
            rules: e.rules.clone(),
            packets: dp,
            rx_bytes: db + dp * e.extra.0,
            tx_bytes: db + dp * e.extra.1,
            learn: e.learn,
            ct: e.ct.clone(),
            ip_bytes: (db + dp * e.extra.0).saturating_sub(dp * e.l2),
            last_ns: e.last_ns,
        })
    }

    /// Folds entry `k` one last time and deletes it.
    fn retire(&mut self, k: &FpKey) {
        if let Some(c) = self.delta(k) {
            self.retired.push(c);
        }
        let _ = self.flows.remove(k);
        self.entries.remove(k);
    }

    /// Everything the kernel forwarded since the last fold; also deletes the entries of old
    /// generations and those idle for [`IDLE`] at `now_ns`.
    pub(crate) fn fold(&mut self, now_ns: u64) -> Vec<Credit> {
        let mut out = std::mem::take(&mut self.retired);
        let keys: Vec<FpKey> = self.entries.keys().copied().collect();
        for k in keys {
            if let Some(c) = self.delta(&k) {
                out.push(c);
            }
            let Some(e) = self.entries.get(&k) else {
                continue;
            };
            let stale = Some(e.gen) != self.gen;
            let idle = now_ns.saturating_sub(e.last_ns) >= IDLE.as_nanos() as u64;
            if stale || idle {
                if stale {
                    self.counts.invalidated += 1;
                } else {
                    self.counts.expired += 1;
                }
                self.retire(&k);
                out.append(&mut self.retired);
            }
        }
        out
    }

    /// Packets carried per port: (in from it, out to it).
    pub(crate) fn port_packets(&self, no: PortNo) -> (u64, u64) {
        self.per_port.get(&no).copied().unwrap_or_default()
    }

    /// The manager's and the programs' counters.
    pub(crate) fn stats(&self) -> FastPathStats {
        let mut s = self.counts;
        s.entries = self.entries.len() as u64;
        let get = |i: u32| -> u64 {
            self.stats_map
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        s.forwarded = get(stat::FAST);
        s.left_to_socket = get(stat::SLOW);
        s.no_filter = get(stat::NO_FILTER);
        s.errors = get(stat::ERROR);
        s.stale_hits = get(stat::STALE);
        s
    }

    /// What `trace` says of the flow whose packets have the engine key `k` (as parsed) on
    /// port `in_port` (tag TPID `tpid`).
    pub(crate) fn describe(&self, in_port: PortNo, k: &FlowKey, tpid: u16) -> String {
        let Some(ifindex) = self.ifindex(in_port) else {
            return "Fast path: not on this port (its packets all take the slow path)".into();
        };
        let key = FpKey::of(ifindex, k, tpid);
        match self.entries.get(&key) {
            Some(e) if Some(e.gen) == self.gen => {
                let (p, _, _) = self.read(&key).unwrap_or((e.packets, e.bytes, e.last_ns));
                format!(
                    "Fast path: served in the kernel (entry {}, {} packets since it was \
                     installed)",
                    e.id, p
                )
            }
            Some(_) => "Fast path: its entry is stale (rules changed); the next packet takes \
                        the slow path and installs a new one"
                .into(),
            None => "Fast path: not installed (the slow path installs an entry after a packet \
                     whose result the kernel can repeat)"
                .into(),
        }
    }
}

/// Switch time of a monotonic instant, given the monotonic time of switch time zero.
pub(crate) fn switch_time(ns: u64, start_ns: u64) -> Duration {
    Duration::from_nanos(ns.saturating_sub(start_ns))
}
