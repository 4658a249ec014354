//! Limits and timeouts of the connection tracker, with their defaults and why.
//!
//! Timeouts are Linux nf_conntrack's defaults (the `nf_conntrack_*_timeout_*` sysctls), so a
//! tenant moving from a Linux or OVS kernel datapath host sees the same ageing. One deliberate
//! exception is noted on [`Timeouts::tcp_established`].

use std::time::Duration;

/// Per-state idle timeouts. An entry expires when no valid packet refreshed it for the timeout
/// of the state it is in; each accepted packet restarts the clock with the new state's timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// SYN seen, no answer: 120 s (Linux `tcp_timeout_syn_sent`).
    pub tcp_syn_sent: Duration,
    /// SYN-ACK seen, waiting for the final ACK: 60 s (`tcp_timeout_syn_recv`).
    pub tcp_syn_recv: Duration,
    /// Handshake done: 432,000 s = 5 days (`tcp_timeout_established`). Long on purpose: an idle
    /// SSH session or database connection must survive; the table limit, not this timeout,
    /// bounds memory. (OVS userspace uses 24 h; set it lower per deployment if wanted.)
    pub tcp_established: Duration,
    /// One FIN seen: 120 s (`tcp_timeout_fin_wait`).
    pub tcp_fin_wait: Duration,
    /// First FIN acknowledged, the other side still open: 60 s (`tcp_timeout_close_wait`).
    pub tcp_close_wait: Duration,
    /// Both FINs seen, the last not yet acknowledged: 30 s (`tcp_timeout_last_ack`).
    pub tcp_last_ack: Duration,
    /// Both FINs acknowledged: 120 s (`tcp_timeout_time_wait`, 2 MSL), so late duplicates of the
    /// old connection are still recognized. A new SYN reopens the tuple at once.
    pub tcp_time_wait: Duration,
    /// Reset seen: 10 s (`tcp_timeout_close`).
    pub tcp_close: Duration,
    /// UDP, one direction only: 30 s (`udp_timeout`).
    pub udp: Duration,
    /// UDP with replies seen: 120 s (`udp_timeout_stream`).
    pub udp_stream: Duration,
    /// ICMP and ICMPv6 echo: 30 s (`icmp_timeout`, `icmpv6_timeout`).
    pub icmp: Duration,
    /// Other protocols: 600 s (`generic_timeout`).
    pub generic: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
            generic: s(600),
        }
    }
}

/// Table size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in the whole table. Default 262,144 (about 45 MB with the index); Linux sizes
    /// `nf_conntrack_max` from memory (262,144 on a 16 GB host), OVS userspace allows 3,000,000.
    pub max_entries: u32,
    /// Default entries per zone (`None`: only the global limit). Overridden per zone with
    /// [`crate::conntrack::Conntrack::set_zone_limit`].
    pub zone_default: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1 << 18,
            zone_default: None,
        }
    }
}

/// Everything [`crate::conntrack::Conntrack::new`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtConfig {
    /// Size limits.
    pub limits: Limits,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Seed of the key hash (the caller picks it at random at start).
    pub hash_seed: u64,
}
