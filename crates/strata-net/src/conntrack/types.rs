//! The vocabulary of connection tracking: verdicts, directions, entry handles, marks, invalid
//! reasons, NAT bindings and counters. This file imports nothing from the other conntrack files, so every one
//! of them may import it.

/// The state a packet is classified in (what a flow matches as `ct_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// Could start a connection and none is tracked (or one is, but the other side has not
    /// answered yet).
    New,
    /// Part of a tracked connection that has seen packets both ways.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// Not acceptable: out of the TCP window, flags impossible in the state, no connection to
    /// belong to, or unparseable. Dropping it is the caller's call.
    Invalid,
}

/// Direction of a packet relative to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the side that opened the connection.
    Original,
    /// From the side that answered.
    Reply,
}

impl Dir {
    /// The other direction.
    pub fn flip(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
    /// 0 for original, 1 for reply (index into per-direction arrays).
    pub fn idx(self) -> usize {
        self as usize
    }
}

/// Handle of a tracked connection: slot plus generation, so a stale handle never aliases a
/// later connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

/// The opaque per-connection data that `commit` sets and every later packet of the connection
/// reports: as OVS's `ct_mark` (32 bits) and `ct_label` (128 bits). Security groups can store a
/// rule generation, the load balancer a backend, NAT a translation index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtMark {
    /// 32-bit mark.
    pub mark: u32,
    /// 128-bit label.
    pub label: u128,
}

/// Why a packet was classified [`CtState::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// The IP or L4 header could not be read.
    Malformed,
    /// A later IP fragment (no ports; conntrack expects reassembled packets).
    Fragment,
    /// A TCP flag combination that is never valid (e.g. SYN+FIN, or no ACK on data).
    TcpFlags,
    /// Flags not acceptable in the connection's state (e.g. data before the handshake).
    TcpState,
    /// Sequence or acknowledgement number outside the tracked window.
    TcpWindow,
    /// No tracked connection, and the packet cannot start one (e.g. an ACK, an echo reply).
    NoConnection,
    /// An ICMP error that quotes no tracked connection.
    IcmpUnrelated,
    /// An ICMP message that is neither echo nor an error (neighbour discovery, ...).
    Untrackable,
}

impl InvalidReason {
    /// Every reason, in counter order.
    pub const ALL: [InvalidReason; 8] = [
        InvalidReason::Malformed,
        InvalidReason::Fragment,
        InvalidReason::TcpFlags,
        InvalidReason::TcpState,
        InvalidReason::TcpWindow,
        InvalidReason::NoConnection,
        InvalidReason::IcmpUnrelated,
        InvalidReason::Untrackable,
    ];
    /// Stable name for counters and metrics.
    pub fn code(self) -> &'static str {
        match self {
            InvalidReason::Malformed => "malformed",
            InvalidReason::Fragment => "fragment",
            InvalidReason::TcpFlags => "tcp_flags",
            InvalidReason::TcpState => "tcp_state",
            InvalidReason::TcpWindow => "tcp_window",
            InvalidReason::NoConnection => "no_connection",
            InvalidReason::IcmpUnrelated => "icmp_unrelated",
            InvalidReason::Untrackable => "untrackable",
        }
    }
}

/// Which side of a connection a NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT: original packets leave from `to`; replies to `to` go back to `from`.
    Src,
    /// Destination NAT: original packets go to `to`; replies from `to` come from `from`.
    Dst,
}

/// An address and port (the port is the echo id for ICMP echo, 0 without ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address.
    pub addr: std::net::IpAddr,
    /// Port.
    pub port: u16,
}

/// The translation of a NATed connection, fixed at commit.
///
/// For `Src`, `from` is the opener's source and `to` what it became; for `Dst`, `from` is the
/// destination the opener addressed and `to` the one it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatBinding {
    /// Which side.
    pub kind: NatKind,
    /// Before translation.
    pub from: Endpoint,
    /// After translation.
    pub to: Endpoint,
}

impl NatBinding {
    /// The rewrite a packet of direction `dir` gets: `(new source, new destination)`.
    pub fn rewrite(&self, dir: Dir) -> (Option<Endpoint>, Option<Endpoint>) {
        match (self.kind, dir) {
            (NatKind::Src, Dir::Original) => (Some(self.to), None),
            (NatKind::Src, Dir::Reply) => (None, Some(self.from)),
            (NatKind::Dst, Dir::Original) => (None, Some(self.to)),
            (NatKind::Dst, Dir::Reply) => (Some(self.from), None),
        }
    }
}

/// What `commit_nat` may translate to: IPv4 addresses `addrs.0..=addrs.1` and ports
/// `ports.0..=ports.1` (`(0, 0)`: keep the port if it is free; for source NAT, any port from
/// 1024 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatRequest {
    /// Source or destination.
    pub kind: NatKind,
    /// First and last address.
    pub addrs: (std::net::Ipv4Addr, std::net::Ipv4Addr),
    /// First and last port, or `(0, 0)`.
    pub ports: (u16, u16),
}

/// The answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Classification.
    pub state: CtState,
    /// The connection (for `Related`: the connection the error is about). `None` for a packet
    /// of no tracked connection (a `New` packet before commit, or most `Invalid` ones).
    pub entry: Option<CtId>,
    /// Direction of the packet in that connection (`Original` when there is none).
    pub dir: Dir,
    /// The connection's mark (default when there is no connection).
    pub mark: CtMark,
    /// Set when `state` is `Invalid`.
    pub reason: Option<InvalidReason>,
    /// The connection's translation, if it has one.
    pub nat: Option<NatBinding>,
}

impl Verdict {
    pub(crate) fn invalid(reason: InvalidReason) -> Verdict {
        Verdict {
            state: CtState::Invalid,
            entry: None,
            dir: Dir::Original,
            mark: CtMark::default(),
            reason: Some(reason),
            nat: None,
        }
    }
    pub(crate) fn new_conn() -> Verdict {
        Verdict {
            state: CtState::New,
            entry: None,
            dir: Dir::Original,
            mark: CtMark::default(),
            reason: None,
            nat: None,
        }
    }
    /// True for `Established` or `Related`: traffic of a connection already accepted (what a
    /// security group lets through without looking at its rules).
    pub fn is_tracked_ok(&self) -> bool {
        matches!(self.state, CtState::Established | CtState::Related)
    }
}

/// Why `commit` refused to create an entry. The packet should be dropped; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The whole table holds `max_entries`.
    #[error("connection table full ({0} entries)")]
    TableFull(u32),
    /// The zone holds its limit.
    #[error("zone {zone} full ({limit} entries)")]
    ZoneFull {
        /// The zone.
        zone: u16,
        /// Its limit.
        limit: u32,
    },
    /// The packet is not one that may start a connection (it was not classified `New`).
    #[error("packet cannot start a connection ({0:?})")]
    NotNew(CtState),
    /// Every address and port of the NAT range is taken for this remote endpoint.
    #[error("NAT range exhausted")]
    NatExhausted,
}

impl CommitError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            CommitError::TableFull(_) => "ct_table_full",
            CommitError::ZoneFull { .. } => "ct_zone_full",
            CommitError::NotNew(_) => "ct_not_new",
            CommitError::NatExhausted => "ct_nat_exhausted",
        }
    }
}

/// Counters of the whole tracker. Every packet given to `process` counts in exactly one of
/// `new`, `established`, `related` or one `invalid` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtCounters {
    /// Packets classified `New`.
    pub new: u64,
    /// Packets classified `Established`.
    pub established: u64,
    /// Packets classified `Related`.
    pub related: u64,
    /// Packets classified `Invalid`, per [`InvalidReason`] (index as in `InvalidReason::ALL`).
    pub invalid: [u64; 8],
    /// Entries created by `commit`.
    pub committed: u64,
    /// Entries removed because their timeout passed.
    pub expired: u64,
    /// Entries replaced because a SYN reopened a tuple in TIME_WAIT or CLOSE.
    pub reopened: u64,
    /// Entries removed by `remove` or `flush_zone`.
    pub removed: u64,
    /// Commits refused: table full.
    pub table_full: u64,
    /// Commits refused: zone full.
    pub zone_full: u64,
    /// NAT commits refused: no free address and port in the range.
    pub nat_exhausted: u64,
}

impl CtCounters {
    /// Invalid packets of one reason.
    pub fn invalid_of(&self, r: InvalidReason) -> u64 {
        self.invalid[r as usize]
    }
    /// All invalid packets.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }
}
