//! Connection tracking: the engine that security groups, the load balancer and NAT build on.
//!
//! Pure and driven like the rest of the crate: the caller passes the time, the zone and a parsed
//! packet ([`crate::l4::parse_ip`]), and gets a [`Verdict`]. Nothing here reads a clock or does
//! I/O. The semantics follow OVS's `ct()` action:
//!
//! - [`Conntrack::process`] classifies a packet as `New`, `Established`, `Related` or `Invalid`
//!   and, for a packet of a tracked connection, advances its state (TCP state machine and window
//!   tracking) and refreshes its timeout. A packet of no tracked connection creates nothing.
//! - [`Conntrack::commit`] creates the entry for a `New` packet (the pipeline calls it once it
//!   decided to allow the connection), within the global and per-zone limits, and sets its
//!   [`CtMark`]. On a packet of an existing connection it only sets the mark.
//! - [`Conntrack::expire`] reclaims expired entries; call it about once a second. Expiry is exact
//!   without it: a lookup never returns an entry past its deadline.
//!
//! Per protocol: TCP (see [`tcp`]); UDP and other IP protocols are pseudo-connections, `New` until
//! the other side answers; ICMP/ICMPv6 echo pairs request and reply by echo id; an ICMP error that
//! quotes a packet of a tracked connection, and is addressed to that packet's sender, is
//! `Related`; neighbour discovery and other ICMP messages are `Invalid` (`untrackable`), so the
//! switch must let them bypass conntrack where they are wanted. Later fragments are `Invalid`
//! (`fragment`): the caller reassembles first, as Linux does.
//!
//! Invariants: a packet given to `process` counts in exactly one verdict counter; an `Invalid`
//! packet changes no entry; the table never holds more than `max_entries` entries, nor more than
//! a zone's limit in that zone; the structures of [`table`] stay consistent (checked by
//! `Conntrack::check` in tests).

pub mod config;
pub mod key;
pub mod nat;
pub mod table;
pub mod tcp;
pub mod types;
pub mod wheel;

use std::collections::HashMap;
use std::time::Duration;

pub use config::{CtConfig, Limits, Timeouts};
pub use key::CtKey;
pub use tcp::{TcpConn, TcpState};
pub use types::{
    CommitError, CtCounters, CtId, CtMark, CtState, Dir, Endpoint, InvalidReason, NatBinding,
    NatKind, NatRequest, Verdict,
};

/// What `process` changes for a packet, decided by the read-only `judge`.
enum Effect {
    None,
    /// The entry found is past its deadline: remove it.
    Expired(u32),
    /// A SYN reopens a closed tuple: remove the old entry.
    Reopen(u32),
    /// An accepted packet: store the advanced protocol state, count, refresh.
    Accept {
        slot: u32,
        proto: ProtoState,
        dir: Dir,
    },
}

use crate::l4::{CtPacket, Tuple, L4};
use table::{Entry, NatEntry, ProtoState, Table};
use tcp::Outcome;

/// What a dump shows of a connection's protocol state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnProto {
    /// TCP in this state.
    Tcp(TcpState),
    /// UDP.
    Udp,
    /// ICMP echo.
    Echo,
    /// Another protocol.
    Other,
}

/// A tracked connection, as [`Conntrack::get`] and [`Conntrack::entries`] show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Handle.
    pub id: CtId,
    /// Zone.
    pub zone: u16,
    /// Tuple of the opening packet.
    pub orig: Tuple,
    /// Protocol state.
    pub proto: ConnProto,
    /// The other side answered.
    pub replied: bool,
    /// Mark and label.
    pub mark: CtMark,
    /// Committed at.
    pub created: Duration,
    /// Expires at unless refreshed.
    pub deadline: Duration,
    /// Packets per direction (original, reply).
    pub packets: [u64; 2],
    /// IP bytes per direction.
    pub bytes: [u64; 2],
}

/// The connection tracker.
#[derive(Debug)]
pub struct Conntrack {
    cfg: CtConfig,
    table: Table,
    zone_limits: HashMap<u16, Option<u32>>,
    counters: CtCounters,
    /// Mark and TCP state changes of offloaded entries (their removals: the table's count).
    offload_changes: u64,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack::new(CtConfig::default())
    }
}

fn timeout(t: &Timeouts, p: &ProtoState, replied: bool) -> Duration {
    match p {
        ProtoState::Tcp(c) => match c.state {
            TcpState::SynSent | TcpState::SynSent2 => t.tcp_syn_sent,
            TcpState::SynRecv => t.tcp_syn_recv,
            TcpState::Established => t.tcp_established,
            TcpState::FinWait => t.tcp_fin_wait,
            TcpState::CloseWait => t.tcp_close_wait,
            TcpState::LastAck => t.tcp_last_ack,
            TcpState::TimeWait => t.tcp_time_wait,
            TcpState::Close => t.tcp_close,
        },
        ProtoState::Udp if replied => t.udp_stream,
        ProtoState::Udp => t.udp,
        ProtoState::Echo => t.icmp,
        ProtoState::Other => t.generic,
    }
}

/// Direction of a packet whose source is the lower endpoint (`src_lo`) in a connection opened
/// from the lower endpoint (`orig_lo`) or not.
#[inline]
fn dir_of(orig_lo: bool, src_lo: bool) -> Dir {
    if orig_lo == src_lo {
        Dir::Original
    } else {
        Dir::Reply
    }
}

/// What a packet of no connection would open, or why it cannot.
fn opener(pkt: &CtPacket) -> Result<ProtoState, InvalidReason> {
    match &pkt.l4 {
        L4::Tcp(seg) => TcpConn::open(seg).map(ProtoState::Tcp),
        L4::Udp => Ok(ProtoState::Udp),
        L4::Echo { request: true } => Ok(ProtoState::Echo),
        L4::Echo { request: false } => Err(InvalidReason::NoConnection),
        L4::Other => Ok(ProtoState::Other),
        L4::IcmpError { .. } => Err(InvalidReason::IcmpUnrelated),
        L4::IcmpOther { .. } => Err(InvalidReason::Untrackable),
        L4::Fragment => Err(InvalidReason::Fragment),
    }
}

impl Conntrack {
    /// An empty tracker.
    pub fn new(cfg: CtConfig) -> Conntrack {
        Conntrack {
            cfg,
            table: Table::default(),
            zone_limits: HashMap::new(),
            counters: CtCounters::default(),
            offload_changes: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CtConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn counters(&self) -> &CtCounters {
        &self.counters
    }

    /// Live entries (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.table.len() as usize
    }

    /// True if no entry is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Entries held in `zone`.
    pub fn zone_len(&self, zone: u16) -> usize {
        self.table.zone_len(zone) as usize
    }

    /// Sets the entry limit of `zone` (`None`: no zone limit, only the global one). Existing
    /// entries beyond a lowered limit stay; new commits in the zone are refused until it is
    /// below.
    pub fn set_zone_limit(&mut self, zone: u16, limit: Option<u32>) {
        self.zone_limits.insert(zone, limit);
    }

    /// The limit in force for `zone`.
    pub fn zone_limit(&self, zone: u16) -> Option<u32> {
        self.zone_limits
            .get(&zone)
            .copied()
            .unwrap_or(self.cfg.limits.zone_default)
    }

    fn count(&mut self, v: Verdict) -> Verdict {
        match v.state {
            CtState::New => self.counters.new += 1,
            CtState::Established => self.counters.established += 1,
            CtState::Related => self.counters.related += 1,
            CtState::Invalid => {
                let r = v.reason.unwrap_or(InvalidReason::Malformed);
                self.counters.invalid[r as usize] += 1;
            }
        }
        v
    }

    /// Counts a packet that could not be parsed (`Invalid`, `malformed`) and returns its verdict,
    /// so that every packet offered to the tracker is counted once.
    pub fn malformed(&mut self) -> Verdict {
        self.count(Verdict::invalid(InvalidReason::Malformed))
    }

    /// The live slot of `key`, removing it first if its deadline passed.
    fn find_live(&mut self, now: Duration, key: &CtKey, hash: u64) -> Option<u32> {
        let slot = self.table.find(key, hash)?;
        if self.table.at(slot).deadline <= now {
            self.table.remove(slot);
            self.counters.expired += 1;
            return None;
        }
        Some(slot)
    }

    /// The slot of `key` unless expired (`Err(slot)`: found but past its deadline).
    fn find_peek(&self, now: Duration, key: &CtKey, hash: u64) -> Option<Result<u32, u32>> {
        let slot = self.table.find(key, hash)?;
        Some(if self.table.at(slot).deadline <= now {
            Err(slot)
        } else {
            Ok(slot)
        })
    }

    /// Direction of a packet whose key (normalized with `src_lo`) found `e`: by the entry's
    /// key, or by its NAT reply key.
    fn dir_in(e: &Entry, key: &CtKey, src_lo: bool) -> Dir {
        match &e.nat {
            Some(n) if e.key != *key => {
                if src_lo == n.reply_lo {
                    Dir::Reply
                } else {
                    Dir::Original
                }
            }
            _ => dir_of(e.orig_lo, src_lo),
        }
    }

    /// Classifies `pkt` in `zone` and advances its connection (see the module doc).
    pub fn process(&mut self, now: Duration, zone: u16, pkt: &CtPacket) -> Verdict {
        self.process_timed(now, zone, pkt).0
    }

    /// [`Conntrack::process`], with a round-trip sample when this packet completes half of a
    /// TCP handshake: a SYN-ACK accepted in the reply direction gives the time since the
    /// entry was committed (the SYN: the switch to the answerer and back), the ACK that
    /// establishes the connection the time since that SYN-ACK (the switch to the originator
    /// and back). Either way the sample is the round trip from the switch to the side that
    /// sent this packet. A retransmitted SYN or SYN-ACK makes its sample longer, never shorter
    /// (the entry keeps the first time). A simultaneous open gives none.
    pub fn process_timed(
        &mut self,
        now: Duration,
        zone: u16,
        pkt: &CtPacket,
    ) -> (Verdict, Option<Duration>) {
        let mut rtt = None;
        let (v, effect) = self.judge(now, zone, pkt);
        match effect {
            Effect::None => {}
            Effect::Expired(slot) => {
                self.table.remove(slot);
                self.counters.expired += 1;
            }
            Effect::Reopen(slot) => {
                self.table.remove(slot);
                self.counters.reopened += 1;
            }
            Effect::Accept { slot, proto, dir } => {
                let timeouts = self.cfg.timeouts;
                let e = self.table.at_mut(slot);
                if let (ProtoState::Tcp(old), ProtoState::Tcp(new)) = (&e.proto, &proto) {
                    match (old.state, new.state, dir) {
                        (TcpState::SynSent, TcpState::SynRecv, Dir::Reply) => {
                            e.answered = now;
                            rtt = Some(now.saturating_sub(e.created));
                        }
                        (TcpState::SynRecv, TcpState::Established, Dir::Original)
                            if e.answered != Duration::ZERO =>
                        {
                            rtt = Some(now.saturating_sub(e.answered));
                        }
                        _ => {}
                    }
                }
                if e.offloaded {
                    if let (ProtoState::Tcp(old), ProtoState::Tcp(new)) = (&e.proto, &proto) {
                        if old.state != new.state {
                            self.offload_changes += 1;
                        }
                    }
                }
                e.proto = proto;
                if dir == Dir::Reply {
                    e.replied = true;
                }
                e.packets[dir.idx()] += 1;
                e.bytes[dir.idx()] += pkt.ip_len as u64;
                e.deadline = now.saturating_add(timeout(&timeouts, &e.proto, e.replied));
            }
        }
        (self.count(v), rtt)
    }

    /// The verdict `process` would give, changing nothing (no state, no counter, no expiry):
    /// what `trace` shows.
    pub fn peek(&self, now: Duration, zone: u16, pkt: &CtPacket) -> Verdict {
        self.judge(now, zone, pkt).0
    }

    /// The verdict for `pkt` and the change `process` applies for it. Read-only, so `peek`
    /// and `process` cannot disagree.
    fn judge(&self, now: Duration, zone: u16, pkt: &CtPacket) -> (Verdict, Effect) {
        match &pkt.l4 {
            L4::IcmpError { inner, .. } => return self.related(now, zone, pkt, inner),
            // Never looked up: their port-less tuple could collide with a real entry's.
            L4::Fragment => return (Verdict::invalid(InvalidReason::Fragment), Effect::None),
            L4::IcmpOther { .. } => {
                return (Verdict::invalid(InvalidReason::Untrackable), Effect::None)
            }
            _ => {}
        }
        let (key, src_lo) = CtKey::with_side(zone, &pkt.tuple);
        let hash = key.hash(self.cfg.hash_seed);
        let mut effect = Effect::None;
        match self.find_peek(now, &key, hash) {
            Some(Err(slot)) => effect = Effect::Expired(slot),
            Some(Ok(slot)) => {
                let id = self.table.id_of(slot);
                let e = self.table.at(slot);
                let dir = Self::dir_in(e, &key, src_lo);
                let mut proto = e.proto;
                let ok = match (&mut proto, &pkt.l4) {
                    (ProtoState::Tcp(c), L4::Tcp(seg)) => match c.update(dir, seg) {
                        Outcome::Accept => Ok(()),
                        Outcome::Reject(r) => Err(r),
                        Outcome::Reopen => {
                            let v =
                                opener(pkt).map_or_else(Verdict::invalid, |_| Verdict::new_conn());
                            return (v, Effect::Reopen(slot));
                        }
                    },
                    (ProtoState::Echo, L4::Echo { request }) => {
                        if *request == (dir == Dir::Original) {
                            Ok(())
                        } else {
                            Err(InvalidReason::NoConnection)
                        }
                    }
                    (ProtoState::Udp, L4::Udp) | (ProtoState::Other, L4::Other) => Ok(()),
                    _ => Err(InvalidReason::Malformed),
                };
                let mut v = Verdict {
                    state: CtState::Invalid,
                    entry: Some(id),
                    dir,
                    mark: e.mark,
                    reason: None,
                    nat: e.nat.as_ref().map(|n| n.binding),
                };
                match ok {
                    Err(r) => v.reason = Some(r),
                    Ok(()) => {
                        v.state = if e.replied || dir == Dir::Reply {
                            CtState::Established
                        } else {
                            CtState::New
                        };
                        return (v, Effect::Accept { slot, proto, dir });
                    }
                }
                return (v, Effect::None);
            }
            None => {}
        }
        let v = match opener(pkt) {
            Ok(_) => Verdict::new_conn(),
            Err(r) => Verdict::invalid(r),
        };
        (v, effect)
    }

    fn related(
        &self,
        now: Duration,
        zone: u16,
        pkt: &CtPacket,
        inner: &Tuple,
    ) -> (Verdict, Effect) {
        let unrelated = Verdict::invalid(InvalidReason::IcmpUnrelated);
        // The error goes back to the sender of the quoted packet.
        if pkt.tuple.dst != inner.src {
            return (unrelated, Effect::None);
        }
        let (key, inner_lo) = CtKey::with_side(zone, inner);
        let hash = key.hash(self.cfg.hash_seed);
        let slot = match self.find_peek(now, &key, hash) {
            None => return (unrelated, Effect::None),
            Some(Err(slot)) => return (unrelated, Effect::Expired(slot)),
            Some(Ok(slot)) => slot,
        };
        let e = self.table.at(slot);
        let v = Verdict {
            state: CtState::Related,
            entry: Some(self.table.id_of(slot)),
            dir: Self::dir_in(e, &key, inner_lo).flip(),
            mark: e.mark,
            reason: None,
            nat: e.nat.as_ref().map(|n| n.binding),
        };
        (v, Effect::None)
    }

    /// Commits the connection of `pkt` with `mark`: creates its entry if the packet opens one
    /// (a `New` packet: TCP SYN, UDP, echo request, other protocol), or sets the mark of the
    /// entry it belongs to. Refused, with nothing changed, when the table or the zone is full or
    /// the packet cannot open a connection.
    pub fn commit(
        &mut self,
        now: Duration,
        zone: u16,
        pkt: &CtPacket,
        mark: CtMark,
    ) -> Result<CtId, CommitError> {
        self.commit_nat(now, zone, pkt, mark, None)
            .map(|(id, _)| id)
    }

    /// [`Conntrack::commit`] with a translation for a new connection: picks the first free
    /// address and port of `nat` (see [`nat`]) and indexes the translated reply tuple. A packet
    /// of an existing connection keeps that connection's translation (returned). Refused with
    /// `NatExhausted` (counted in `nat_exhausted`) when no address and port is free.
    pub fn commit_nat(
        &mut self,
        now: Duration,
        zone: u16,
        pkt: &CtPacket,
        mark: CtMark,
        nat: Option<NatRequest>,
    ) -> Result<(CtId, Option<NatBinding>), CommitError> {
        match pkt.l4 {
            L4::IcmpError { .. } => return Err(CommitError::NotNew(CtState::Related)),
            L4::Fragment | L4::IcmpOther { .. } => {
                return Err(CommitError::NotNew(CtState::Invalid))
            }
            _ => {}
        }
        let (key, src_lo) = CtKey::with_side(zone, &pkt.tuple);
        let hash = key.hash(self.cfg.hash_seed);
        if let Some(slot) = self.find_live(now, &key, hash) {
            let reopen = match (&self.table.at(slot).proto, &pkt.l4) {
                (ProtoState::Tcp(c), L4::Tcp(seg)) => {
                    matches!(c.state, TcpState::TimeWait | TcpState::Close)
                        && TcpConn::can_open(seg)
                }
                _ => false,
            };
            if !reopen {
                let e = self.table.at_mut(slot);
                if e.offloaded && e.mark != mark {
                    self.offload_changes += 1;
                }
                e.mark = mark;
                let b = e.nat.as_ref().map(|n| n.binding);
                return Ok((self.table.id_of(slot), b));
            }
            self.table.remove(slot);
            self.counters.reopened += 1;
        }
        let proto = opener(pkt).map_err(|_| CommitError::NotNew(CtState::Invalid))?;
        let max = self.cfg.limits.max_entries;
        // At a limit, reclaim expired entries first, but sweep at most once per second: a flood
        // of refused SYNs must not rescan the current bucket for each one.
        if self.table.len() >= max {
            self.expire_if_due(now);
            if self.table.len() >= max {
                self.counters.table_full += 1;
                return Err(CommitError::TableFull(max));
            }
        }
        if let Some(limit) = self.zone_limit(zone) {
            if self.table.zone_len(zone) >= limit {
                self.expire_if_due(now);
                if self.table.zone_len(zone) >= limit {
                    self.counters.zone_full += 1;
                    return Err(CommitError::ZoneFull { zone, limit });
                }
            }
        }
        let natted = match nat {
            None => None,
            Some(req) => match nat::choose(&self.table, self.cfg.hash_seed, zone, pkt, &req) {
                Some(n) => Some(n),
                None => {
                    self.counters.nat_exhausted += 1;
                    return Err(CommitError::NatExhausted);
                }
            },
        };
        let deadline = now.saturating_add(timeout(&self.cfg.timeouts, &proto, false));
        let mut e = Entry::new(key, hash, src_lo, proto, mark, now, deadline, pkt.ip_len);
        let binding = natted.as_ref().map(|n: &NatEntry| n.binding);
        // An identity translation (the range holds the packet's own endpoint) needs no
        // second key.
        e.nat = natted.filter(|n| n.rkey != key).map(Box::new);
        self.counters.committed += 1;
        Ok((self.table.insert(e, zone), binding))
    }

    /// Removes entries whose timeout passed; returns how many. Amortized O(1) per entry (see
    /// [`wheel`]).
    pub fn expire(&mut self, now: Duration) -> u64 {
        let n = self.table.sweep(now);
        self.counters.expired += n;
        n
    }

    /// True if [`Conntrack::expire`] at `now` has a second to sweep that the last one did not
    /// (an O(1) check the switch makes per packet).
    pub fn sweep_due(&self, now: Duration) -> bool {
        !self.table.is_empty() && self.table.sweep_due(now)
    }

    fn expire_if_due(&mut self, now: Duration) {
        if self.table.sweep_due(now) {
            self.expire(now);
        }
    }

    /// Sets the mark of a live entry; false if it is gone.
    pub fn set_mark(&mut self, id: CtId, mark: CtMark) -> bool {
        match self.table.slot_of(id) {
            Some(s) => {
                let e = self.table.at_mut(s);
                if e.offloaded && e.mark != mark {
                    self.offload_changes += 1;
                }
                e.mark = mark;
                true
            }
            None => false,
        }
    }

    /// Notes that a port layer may forward packets of connection `id` without the engine (an
    /// offload hint named it): from now on its removal, a change of its mark and a change of
    /// its TCP state count in [`Conntrack::offload_changes`]. A TCP connection also stops
    /// trusting its window data at once ([`TcpConn::resync`]): the next segments may go by
    /// without the tracker, and the other side's next segment, judged here, may acknowledge
    /// them. False if it is gone.
    pub fn set_offloaded(&mut self, id: CtId) -> bool {
        match self.table.slot_of(id) {
            Some(s) => {
                let e = self.table.at_mut(s);
                e.offloaded = true;
                if let ProtoState::Tcp(c) = &mut e.proto {
                    c.resync();
                }
                true
            }
            None => false,
        }
    }

    /// How many times a connection named by an offload hint was removed (expired, swept,
    /// reopened, removed, flushed), changed its mark or moved to another TCP state: a result
    /// offloaded before such a change may no longer be what the engine would give. Part of
    /// [`crate::Switch::generation`].
    pub fn offload_changes(&self) -> u64 {
        self.offload_changes + self.table.offload_changes()
    }

    /// Counts `packets` packets of `ip_bytes` IP bytes in direction `dir` of connection `id`
    /// that a port layer forwarded without the engine, the last at `now`, as
    /// [`Conntrack::process`] would have counted them had it judged them `Established`: the
    /// entry's packet and byte counts, the `established` counter, and the deadline (the
    /// state's timeout from `now`; never moved back). A TCP connection also stops trusting
    /// its window data until each side has sent one segment through the engine again
    /// ([`TcpConn::resync`]): the segments it did not see moved the sequence numbers. False
    /// (nothing counted) if the connection is gone.
    pub fn touch(
        &mut self,
        now: Duration,
        id: CtId,
        dir: Dir,
        packets: u64,
        ip_bytes: u64,
    ) -> bool {
        let Some(s) = self.table.slot_of(id) else {
            return false;
        };
        if packets == 0 {
            return true;
        }
        let timeouts = self.cfg.timeouts;
        let e = self.table.at_mut(s);
        if let ProtoState::Tcp(c) = &mut e.proto {
            c.resync();
        }
        if dir == Dir::Reply {
            e.replied = true;
        }
        e.packets[dir.idx()] += packets;
        e.bytes[dir.idx()] += ip_bytes;
        let d = now.saturating_add(timeout(&timeouts, &e.proto, e.replied));
        e.deadline = e.deadline.max(d);
        self.counters.established += packets;
        true
    }

    /// Removes a live entry (a security-group change that applies to existing connections);
    /// false if it is gone.
    pub fn remove(&mut self, id: CtId) -> bool {
        match self.table.slot_of(id) {
            Some(s) => {
                self.table.remove(s);
                self.counters.removed += 1;
                true
            }
            None => false,
        }
    }

    /// Removes every entry of `zone`; returns how many. O(table capacity).
    pub fn flush_zone(&mut self, zone: u16) -> usize {
        let slots: Vec<u32> = self
            .table
            .live_slots()
            .filter(|&s| self.table.at(s).key.zone == zone)
            .collect();
        for &s in &slots {
            self.table.remove(s);
        }
        self.counters.removed += slots.len() as u64;
        slots.len()
    }

    fn info(&self, slot: u32) -> ConnInfo {
        let e = self.table.at(slot);
        ConnInfo {
            id: self.table.id_of(slot),
            zone: e.key.zone,
            orig: e.key.tuple(e.orig_lo),
            proto: match e.proto {
                ProtoState::Tcp(c) => ConnProto::Tcp(c.state),
                ProtoState::Udp => ConnProto::Udp,
                ProtoState::Echo => ConnProto::Echo,
                ProtoState::Other => ConnProto::Other,
            },
            replied: e.replied,
            mark: e.mark,
            created: e.created,
            deadline: e.deadline,
            packets: e.packets,
            bytes: e.bytes,
        }
    }

    /// A live entry.
    pub fn get(&self, id: CtId) -> Option<ConnInfo> {
        self.table.slot_of(id).map(|s| self.info(s))
    }

    /// The entry `tuple` in `zone` belongs to (either direction), expired or not.
    pub fn lookup(&self, zone: u16, tuple: &Tuple) -> Option<ConnInfo> {
        let key = CtKey::of(zone, tuple);
        let s = self.table.find(&key, key.hash(self.cfg.hash_seed))?;
        Some(self.info(s))
    }

    /// Every held entry (O(table capacity); for dumps).
    pub fn entries(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.table.live_slots().map(|s| self.info(s))
    }

    /// Checks the table's invariants and the limits (for tests).
    pub fn check(&self) -> Result<(), String> {
        self.table.check()?;
        if self.table.len() > self.cfg.limits.max_entries {
            return Err("more entries than max_entries".into());
        }
        Ok(())
    }
}
