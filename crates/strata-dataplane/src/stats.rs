//! Port-layer counters ([`PortIoStats`], kept per thread and summed) and the snapshot of every
//! counter a dataplane returns ([`DataplaneStats`]).

use strata_net::key::PortNo;
use strata_net::pipeline::PipelineStats;
use strata_net::rates::PortRates;
use strata_net::switch::{PortStats, SwitchStats};

/// Port I/O counters (what the port layer did, beside the engine's [`PortStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortIoStats {
    /// Offloaded (GSO) frames received.
    pub rx_gso: u64,
    /// Offloaded frames sent whole (the fast path).
    pub tx_gso: u64,
    /// Frames cut by software segmentation for this port (one count per segment produced).
    pub tx_segments: u64,
    /// Partial checksums completed in software for this port.
    pub tx_csum_completed: u64,
    /// Frames that could not be written (device down, queue full) or segmented.
    pub tx_errors: u64,
    /// Datagrams on a VXLAN socket from an unknown remote, or that did not decapsulate; TAP
    /// reads that failed (the thread then stops reading that device).
    pub rx_errors: u64,
    /// Read or write system calls made (batching shows as fewer calls than frames).
    pub syscalls: u64,
    /// Packets from this port forwarded in the kernel by the fast path (also in the engine's
    /// `rx_packets`, folded back; the slow path read the others).
    pub fast_rx_packets: u64,
    /// Packets to this port forwarded in the kernel by the fast path (also in `tx_packets`).
    pub fast_tx_packets: u64,
}

impl PortIoStats {
    pub(crate) fn add(&mut self, o: &PortIoStats) {
        self.rx_gso += o.rx_gso;
        self.tx_gso += o.tx_gso;
        self.tx_segments += o.tx_segments;
        self.tx_csum_completed += o.tx_csum_completed;
        self.tx_errors += o.tx_errors;
        self.rx_errors += o.rx_errors;
        self.syscalls += o.syscalls;
        self.fast_rx_packets += o.fast_rx_packets;
        self.fast_tx_packets += o.fast_tx_packets;
    }
}

/// Counters of a dataplane's veth fast path (docs/net-engine.md, "Fast path").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Entries in the kernel's flow map now.
    pub entries: u64,
    /// Entries written (one per flow and generation).
    pub installs: u64,
    /// Entries the kernel refused (map full, no memory).
    pub install_failed: u64,
    /// Offered results left to the slow path: not IPv4 TCP/UDP/ICMP, or a fragment.
    pub refused_protocol: u64,
    /// ... a TCP SYN, FIN or RST.
    pub refused_tcp_flags: u64,
    /// ... a rewrite the kernel program does not make.
    pub refused_rewrite: u64,
    /// ... a VXLAN output the kernel cannot encapsulate (a tagged inner frame, a header
    /// that does not encode).
    pub refused_tunnel: u64,
    /// Entries deleted because the switch's generation moved on.
    pub invalidated: u64,
    /// Entries deleted after [`crate::fastpath::IDLE`] unused.
    pub expired: u64,
    /// Packets the kernel forwarded.
    pub forwarded: u64,
    /// Packets the TC program left to the slow path's socket.
    pub left_to_socket: u64,
    /// Packets the TC program saw with no socket filter decision (passed to the host).
    pub no_filter: u64,
    /// Packets dropped because a rewrite failed in the kernel.
    pub errors: u64,
    /// Lookups that found an entry of an older generation (taken by the slow path).
    pub stale_hits: u64,
}

/// One port's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCounters {
    /// Port number.
    pub number: PortNo,
    /// Port name.
    pub name: String,
    /// Engine counters.
    pub stats: PortStats,
    /// Port-layer counters.
    pub io: PortIoStats,
    /// Drops by reason: the engine's (`PortStats::drops`) then the port layer's (`tx_error`:
    /// a write failed or the queue was full; `rx_io_error`: a read failed), nonzero only.
    pub drops: Vec<(&'static str, u64)>,
    /// Engine rates over the last 1 s and 10 s (`strata_net::rates`), at the snapshot.
    pub rates: PortRates,
}

impl PortCounters {
    pub(crate) fn new(
        number: PortNo,
        name: String,
        stats: PortStats,
        io: PortIoStats,
        rates: PortRates,
    ) -> Self {
        let mut drops = stats.drops();
        for (code, n) in [("tx_error", io.tx_errors), ("rx_io_error", io.rx_errors)] {
            if n > 0 {
                drops.push((code, n));
            }
        }
        PortCounters {
            number,
            name,
            stats,
            io,
            drops,
            rates,
        }
    }

    /// Drops of one reason (0 if none).
    pub fn dropped(&self, code: &str) -> u64 {
        self.drops
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n)
    }
}

/// A snapshot of every counter.
#[derive(Debug, Clone)]
pub struct DataplaneStats {
    /// Ports in number order.
    pub ports: Vec<PortCounters>,
    /// Switch-wide counters.
    pub switch: SwitchStats,
    /// Pipeline and cache counters.
    pub pipeline: PipelineStats,
    /// Datagrams received on VXLAN sockets from remotes no port names.
    pub unknown_tunnel_remote: u64,
    /// Frames read by each forwarding thread (index 0 is the leader): how the kernel spread
    /// the flows over the TAP queues.
    pub thread_rx_frames: Vec<u64>,
    /// The veth fast path's counters, when it is loaded.
    pub fastpath: Option<FastPathStats>,
    /// Why the fast path could not be loaded (the ports then use the slow path).
    pub fastpath_error: Option<String>,
}

impl DataplaneStats {
    /// The counters of port `name`.
    pub fn port(&self, name: &str) -> Option<&PortCounters> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// One line per port then one for the switch, `key=value` separated by spaces:
    /// `port name=tap1 no=1 rx_packets=.. rx_bytes=.. rx_dropped=.. rx_errors=.. tx_packets=..
    /// tx_bytes=.. tx_dropped=.. rx_gso=.. tx_gso=.. tx_segments=.. tx_csum_completed=..
    /// tx_errors=.. io_rx_errors=.. syscalls=.. rx_bps_1s=.. rx_bps_10s=.. tx_bps_1s=..
    /// tx_bps_10s=.. drops=reason:N,reason:N` (`drops=-` when none) and
    /// `switch isolation_drops=.. unknown_port=.. output_to_unknown_port=.. unknown_tunnel_remote=..`,
    /// then `threads rx_frames=N,N,..` (frames read by each forwarding thread) and, when the
    /// fast path is loaded, one `fastpath entries=.. installs=.. ...` line. Port lines also
    /// carry `fast_rx_packets=.. fast_tx_packets=..`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for p in &self.ports {
            let (st, io) = (&p.stats, &p.io);
            let _ = writeln!(
                s,
                "port name={} no={} rx_packets={} rx_bytes={} rx_dropped={} rx_errors={} \
                 tx_packets={} tx_bytes={} tx_dropped={} rx_gso={} tx_gso={} tx_segments={} \
                 tx_csum_completed={} tx_errors={} io_rx_errors={} syscalls={} rx_bps_1s={} \
                 rx_bps_10s={} tx_bps_1s={} tx_bps_10s={} fast_rx_packets={} \
                 fast_tx_packets={} drops={}",
                p.name,
                p.number,
                st.rx_packets,
                st.rx_bytes,
                st.rx_dropped,
                st.rx_errors,
                st.tx_packets,
                st.tx_bytes,
                st.tx_dropped,
                io.rx_gso,
                io.tx_gso,
                io.tx_segments,
                io.tx_csum_completed,
                io.tx_errors,
                io.rx_errors,
                io.syscalls,
                p.rates.last_1s.rx_bps,
                p.rates.last_10s.rx_bps,
                p.rates.last_1s.tx_bps,
                p.rates.last_10s.tx_bps,
                io.fast_rx_packets,
                io.fast_tx_packets,
                drops_text(&p.drops),
            );
        }
        let _ = writeln!(
            s,
            "switch isolation_drops={} unknown_port={} output_to_unknown_port={} \
             unknown_tunnel_remote={}",
            self.switch.isolation_drops,
            self.switch.unknown_port,
            self.switch.output_to_unknown_port,
            self.unknown_tunnel_remote
        );
        let per: Vec<String> = self.thread_rx_frames.iter().map(u64::to_string).collect();
        let _ = writeln!(s, "threads rx_frames={}", per.join(","));
        if let Some(f) = &self.fastpath {
            let _ = writeln!(
                s,
                "fastpath entries={} installs={} install_failed={} refused_protocol={} \
                 refused_tcp_flags={} refused_rewrite={} refused_tunnel={} invalidated={} expired={} \
                 forwarded={} left_to_socket={} no_filter={} errors={} stale_hits={}",
                f.entries,
                f.installs,
                f.install_failed,
                f.refused_protocol,
                f.refused_tcp_flags,
                f.refused_rewrite,
                f.refused_tunnel,
                f.invalidated,
                f.expired,
                f.forwarded,
                f.left_to_socket,
                f.no_filter,
                f.errors,
                f.stale_hits
            );
        }
        s
    }
}

fn drops_text(d: &[(&'static str, u64)]) -> String {
    if d.is_empty() {
        return "-".into();
    }
    let v: Vec<String> = d.iter().map(|(c, n)| format!("{c}:{n}")).collect();
    v.join(",")
}

pub(crate) fn empty_stats() -> DataplaneStats {
    DataplaneStats {
        ports: Vec::new(),
        switch: SwitchStats::default(),
        pipeline: PipelineStats::default(),
        unknown_tunnel_remote: 0,
        thread_rx_frames: Vec::new(),
        fastpath: None,
        fastpath_error: None,
    }
}
