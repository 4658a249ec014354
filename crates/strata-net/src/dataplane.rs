//! The forwarding loop: threads that share one [`Switch`] and read the devices of its ports
//! (epoll), run each frame through the switch and write the effects.
//!
//! Invariants:
//! - One switch, behind a mutex. A thread holds the lock only for [`Switch::receive`] (never
//!   across a system call) and reads the switch time under it, so the engine sees time move
//!   forward only, and rule changes, port changes, counter reads and MAC learning are ordered
//!   with every frame of every thread. Control reaches the leader thread through an mpsc queue
//!   plus an eventfd.
//! - Thread i reads queue i of every multi-queue TAP and writes to queue i of the output TAP;
//!   the kernel's flow steering then keeps both directions of a connection on one thread, so a
//!   flow is never reordered. Port-layer counters are per thread and summed by `stats()`.
//! - A port is in every thread's table or in none once `add_port`/`remove_port` returns; a
//!   removed TAP is closed by then.
//! - No allocation per packet: each thread's receive buffer, [`Effects`], segmentation output
//!   and scratch frames are allocated once and reused. Effects are split: a large frame's
//!   unchanged tail is written from the receive buffer, never copied in user space.
//! - Offloads end to end: a frame read from a TAP that negotiated offloads keeps its
//!   virtio-net header (GSO type and size, partial checksum) when it leaves by another such
//!   TAP, so 64 KiB TSO frames are never cut nor summed by the switch. Only where the output
//!   cannot take them (a VXLAN port, a TAP without offloads) is the frame segmented with
//!   [`gso::segment`] and its checksums completed.
//! - A partial checksum (`NEEDS_CSUM`) holds the pseudo-header sum, which the engine's
//!   incremental rewrites would get wrong; after a rewrite the port layer recomputes it from
//!   the received value and the address change ([`fix_partial_csum`]).

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::csum;
use crate::gso::{self, Segments, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use crate::key::{ethertype, PortNo};
use crate::pipeline::{PipelineStats, RuleId};
use crate::switch::{
    Domain, Effects, PortConfig, PortError, PortKind, PortStats, Switch, SwitchConfig, SwitchStats,
};
use crate::syntax::FlowParseError;
use crate::sys::{self, Epoll, EpollToken, EventFd, Tap, TapOptions};
use crate::vxlan::{self, VxlanTunnel, OUTER_VXLAN_OFFSET, VXLAN_OVERHEAD_V4};

/// Receive buffer: the virtio-net header plus the largest frame a TAP hands over (64 KiB of
/// IP plus Ethernet and VLAN headers), rounded up.
const RX_BUF: usize = VIRTIO_NET_HDR_LEN + 65_535 + 64;
/// Epoll token of the control eventfd.
const TOKEN_CTL: u64 = u64::MAX;
/// Epoll tokens of VXLAN sockets: this bit plus the socket's index.
const TOKEN_UDP: u64 = 1 << 40;

/// A port to add, with the device behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A TAP device (created if missing), optionally an access port of a tenant domain.
    Tap {
        /// Interface name (also the port name), at most 15 bytes.
        name: String,
        /// Isolation domain (None = trunk).
        domain: Option<Domain>,
        /// Negotiate checksum/TSO offloads (true unless testing the slow path).
        offload: bool,
    },
    /// The host-side internal port: a TAP device left in the switch's namespace.
    Internal {
        /// Interface name (also the port name).
        name: String,
        /// Isolation domain (None = trunk).
        domain: Option<Domain>,
    },
    /// A VXLAN tunnel over a UDP socket bound to `local:dst_port`. Ports with the same local
    /// address and UDP port share one socket; received datagrams go to the port whose remote
    /// address sent them.
    Vxlan {
        /// Port name.
        name: String,
        /// Local VTEP address (0.0.0.0 binds every address).
        local: Ipv4Addr,
        /// Remote VTEP address.
        remote: Ipv4Addr,
        /// Fixed VNI (the port is then in domain `Vni(vni)`); None = flow-based.
        vni: Option<u32>,
        /// UDP port, local and remote (4789 by default).
        dst_port: u16,
    },
}

impl PortSpec {
    /// A TAP port with offloads.
    pub fn tap(name: &str, domain: Option<Domain>) -> Self {
        PortSpec::Tap {
            name: name.to_string(),
            domain,
            offload: true,
        }
    }
    /// A VXLAN port on the standard UDP port.
    pub fn vxlan(name: &str, local: Ipv4Addr, remote: Ipv4Addr, vni: Option<u32>) -> Self {
        PortSpec::Vxlan {
            name: name.to_string(),
            local,
            remote,
            vni,
            dst_port: vxlan::VXLAN_PORT,
        }
    }
    /// The port name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Tap { name, .. }
            | PortSpec::Internal { name, .. }
            | PortSpec::Vxlan { name, .. } => name,
        }
    }
}

/// Dataplane configuration.
#[derive(Debug, Clone, Default)]
pub struct DataplaneConfig {
    /// Engine configuration.
    pub switch: SwitchConfig,
    /// Network namespace to run in (a path such as `/var/run/netns/NAME`): devices and sockets
    /// are opened there. None = the caller's namespace.
    pub netns: Option<PathBuf>,
    /// Frames read from one port per wake-up before the others get a turn (0 = 64).
    pub batch: usize,
    /// Forwarding threads (0 = one per CPU, at most [`MAX_THREADS`]). Each reads its own queue
    /// of every TAP port; all share one switch.
    pub threads: usize,
}

/// Most forwarding threads `DataplaneConfig::threads = 0` starts.
pub const MAX_THREADS: usize = 4;

impl DataplaneConfig {
    /// Threads this configuration starts.
    pub fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
            n => n,
        }
    }
}

/// Why a dataplane operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// A system call failed (opening a device, binding a socket, entering a namespace).
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The switch refused the port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A flow did not parse or validate.
    #[error(transparent)]
    Flow(#[from] FlowParseError),
    /// A second VXLAN port for the same remote on one socket.
    #[error("a VXLAN port to {0} on this local address and UDP port already exists")]
    DuplicateRemote(Ipv4Addr),
    /// The dataplane thread is gone.
    #[error("the dataplane has stopped")]
    Stopped,
}

impl DataplaneError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            DataplaneError::Io { .. } => "port_io_error",
            DataplaneError::Port(e) => e.code(),
            DataplaneError::Flow(e) => e.code(),
            DataplaneError::DuplicateRemote(_) => "vxlan_remote_exists",
            DataplaneError::Stopped => "dataplane_stopped",
        }
    }
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        DataplaneError::Io {
            what: what.into(),
            source,
        }
    }
}

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
}

impl PortIoStats {
    fn add(&mut self, o: &PortIoStats) {
        self.rx_gso += o.rx_gso;
        self.tx_gso += o.tx_gso;
        self.tx_segments += o.tx_segments;
        self.tx_csum_completed += o.tx_csum_completed;
        self.tx_errors += o.tx_errors;
        self.rx_errors += o.rx_errors;
        self.syscalls += o.syscalls;
    }
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
}

impl DataplaneStats {
    /// The counters of port `name`.
    pub fn port(&self, name: &str) -> Option<&PortCounters> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// One line per port then one for the switch, `key=value` separated by spaces:
    /// `port name=tap1 no=1 rx_packets=.. rx_bytes=.. rx_dropped=.. rx_errors=.. tx_packets=..
    /// tx_bytes=.. tx_dropped=.. rx_gso=.. tx_gso=.. tx_segments=.. tx_csum_completed=..
    /// tx_errors=.. io_rx_errors=.. syscalls=..` and
    /// `switch isolation_drops=.. unknown_port=.. output_to_unknown_port=.. unknown_tunnel_remote=..`,
    /// then `threads rx_frames=N,N,..` (frames read by each forwarding thread).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for p in &self.ports {
            let (st, io) = (&p.stats, &p.io);
            let _ = writeln!(
                s,
                "port name={} no={} rx_packets={} rx_bytes={} rx_dropped={} rx_errors={} \
                 tx_packets={} tx_bytes={} tx_dropped={} rx_gso={} tx_gso={} tx_segments={} \
                 tx_csum_completed={} tx_errors={} io_rx_errors={} syscalls={}",
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
                io.syscalls
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
        s
    }
}

type SwitchFn = Box<dyn FnOnce(&mut Switch, Duration) + Send>;

enum Cmd {
    AddPort(PortSpec, mpsc::Sender<Result<PortNo, DataplaneError>>),
    RemovePort(String, mpsc::Sender<Result<(), DataplaneError>>),
    Call(SwitchFn),
    Stats(mpsc::Sender<DataplaneStats>),
    Stop,
}

/// Handle to a running dataplane (its threads). Dropping it stops them and closes the devices.
#[derive(Debug)]
pub struct Dataplane {
    tx: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<DataplaneStats>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::AddPort(..) => "AddPort",
            Cmd::RemovePort(..) => "RemovePort",
            Cmd::Call(_) => "Call",
            Cmd::Stats(_) => "Stats",
            Cmd::Stop => "Stop",
        })
    }
}

impl Dataplane {
    /// Starts the forwarding threads (in `cfg.netns` if given), with no ports and no rules.
    pub fn spawn(cfg: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let wake = Arc::new(EventFd::new().map_err(|e| DataplaneError::io("eventfd", e))?);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let w = wake.clone();
        let thread = std::thread::Builder::new()
            .name("strata-dataplane".into())
            .spawn(move || {
                let mut lp = match Worker::leader(&cfg, w) {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return empty_stats();
                    }
                };
                lp.run(&rx);
                lp.stats()
            })
            .map_err(|e| DataplaneError::io("spawning the dataplane thread", e))?;
        ready_rx.recv().map_err(|_| DataplaneError::Stopped)??;
        Ok(Dataplane {
            tx,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, c: Cmd) -> Result<(), DataplaneError> {
        self.tx.send(c).map_err(|_| DataplaneError::Stopped)?;
        self.wake.notify();
        Ok(())
    }

    /// Adds a port, opening its device (TAPs are created if missing and brought up).
    pub fn add_port(&self, spec: PortSpec) -> Result<PortNo, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::AddPort(spec, t))?;
        r.recv().map_err(|_| DataplaneError::Stopped)?
    }

    /// Removes a port and closes its device.
    pub fn remove_port(&self, name: &str) -> Result<(), DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::RemovePort(name.to_string(), t))?;
        r.recv().map_err(|_| DataplaneError::Stopped)?
    }

    /// Runs `f` on the leader thread with the switch locked (so between two frames of every
    /// thread) and the current switch time. Every engine operation (flows, trace, MAC table)
    /// goes through here.
    pub fn with_switch<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Switch, Duration) -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::Call(Box::new(move |sw, now| {
            let _ = t.send(f(sw, now));
        })))?;
        r.recv().map_err(|_| DataplaneError::Stopped)
    }

    /// Adds a flow in `ovs-ofctl` syntax.
    pub fn add_flow(&self, text: &str) -> Result<RuleId, DataplaneError> {
        let text = text.to_string();
        Ok(self.with_switch(move |sw, now| sw.add_flow(now, &text))??)
    }

    /// `del-flows` with a filter (`""` = all).
    pub fn del_flows(&self, filter: &str, strict: bool) -> Result<usize, DataplaneError> {
        let filter = filter.to_string();
        Ok(self.with_switch(move |sw, _| sw.del_flows(&filter, strict))??)
    }

    /// `dump-flows` text.
    pub fn dump_flows(&self) -> Result<String, DataplaneError> {
        self.with_switch(|sw, now| sw.dump_flows_text(now))
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> Result<DataplaneStats, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::Stats(t))?;
        r.recv().map_err(|_| DataplaneError::Stopped)
    }

    /// Stops the threads, closes every device and returns the final counters.
    pub fn stop(mut self) -> DataplaneStats {
        self.stop_inner().unwrap_or_else(empty_stats)
    }

    fn stop_inner(&mut self) -> Option<DataplaneStats> {
        let th = self.thread.take()?;
        let _ = self.send(Cmd::Stop);
        th.join().ok()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn empty_stats() -> DataplaneStats {
    DataplaneStats {
        ports: Vec::new(),
        switch: SwitchStats::default(),
        pipeline: PipelineStats::default(),
        unknown_tunnel_remote: 0,
        thread_rx_frames: Vec::new(),
    }
}

/// The device behind a port, as one thread sees it.
#[derive(Debug)]
enum Dev {
    /// This thread's queue of the TAP (shared with other threads if the device has fewer
    /// queues than there are threads).
    Tap(Arc<Tap>),
    /// The VXLAN socket (any thread may send on it; only the leader reads it).
    Vxlan {
        sock: Arc<UdpSocket>,
        idx: usize,
        remote: SocketAddrV4,
    },
}

#[derive(Debug)]
struct PortIo {
    dev: Dev,
    /// This thread reads the device (a TAP queue of its own).
    rx: bool,
    io: PortIoStats,
}

/// A UDP socket shared by the VXLAN ports of one local address and port.
#[derive(Debug)]
struct VxSock {
    sock: Arc<UdpSocket>,
    local: SocketAddrV4,
    members: Vec<(Ipv4Addr, PortNo)>,
}

/// Reusable buffers of the hot path.
#[derive(Debug)]
struct Bufs {
    rx: Vec<u8>,
    fx: Effects,
    segs: Segments,
    scratch: Vec<u8>,
    joined: Vec<u8>,
}

/// What every dataplane thread shares: the one switch and the clock it runs on.
#[derive(Debug)]
struct Shared {
    sw: Mutex<Switch>,
    start: Instant,
}

impl Shared {
    /// Locks the switch. A closure that panicked in `with_switch` poisons nothing we rely on:
    /// the engine keeps its invariants between calls, so the lock is taken anyway.
    fn lock(&self) -> MutexGuard<'_, Switch> {
        self.sw.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Switch time. Read with the lock held, so the engine sees it never go backwards.
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Requests from the leader thread to the others.
enum Peer {
    /// Use this device for port `no` (and read it if `port.rx`).
    AddPort(PortNo, PortIo, mpsc::Sender<io::Result<()>>),
    /// Forget port `no` and drop this thread's handle of its device.
    RemovePort(PortNo, mpsc::Sender<()>),
    /// This thread's frame count and port-layer counters.
    Stats(mpsc::Sender<(u64, Vec<(PortNo, PortIoStats)>)>),
    Stop,
}

/// A thread other than the leader, as the leader holds it.
#[derive(Debug)]
struct PeerThread {
    tx: mpsc::Sender<Peer>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::AddPort(..) => "AddPort",
            Peer::RemovePort(..) => "RemovePort",
            Peer::Stats(_) => "Stats",
            Peer::Stop => "Stop",
        })
    }
}

impl PeerThread {
    fn send(&self, m: Peer) -> bool {
        let ok = self.tx.send(m).is_ok();
        self.wake.notify();
        ok
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.send(Peer::Stop);
            let _ = t.join();
        }
    }
}

/// What only the leader thread holds: the VXLAN sockets (it alone reads them) and the other
/// threads.
#[derive(Debug)]
struct Leader {
    socks: Vec<Option<VxSock>>,
    peers: Vec<PeerThread>,
    unknown_tunnel_remote: u64,
}

/// One forwarding thread: its epoll, its handle of every port's device and its buffers. The
/// leader (thread 0) also serves the control channel and owns the VXLAN sockets.
struct Worker {
    shared: Arc<Shared>,
    epoll: Epoll,
    wake: Arc<EventFd>,
    ports: BTreeMap<PortNo, PortIo>,
    bufs: Bufs,
    batch: usize,
    lead: Option<Leader>,
    /// Frames (and datagrams) this thread read.
    rx_frames: u64,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        wake: Arc<EventFd>,
        batch: usize,
    ) -> Result<Worker, DataplaneError> {
        let epoll = Epoll::new().map_err(|e| DataplaneError::io("epoll", e))?;
        epoll
            .add(wake.raw(), TOKEN_CTL)
            .map_err(|e| DataplaneError::io("epoll", e))?;
        let mut fx = Effects::new();
        fx.set_split(true);
        Ok(Worker {
            shared,
            epoll,
            wake,
            ports: BTreeMap::new(),
            bufs: Bufs {
                rx: vec![0; RX_BUF],
                fx,
                segs: Segments::new(),
                scratch: Vec::with_capacity(RX_BUF),
                joined: Vec::with_capacity(RX_BUF),
            },
            batch,
            lead: None,
            rx_frames: 0,
        })
    }

    /// The leader: enters the namespace, makes the switch and starts the other threads.
    fn leader(cfg: &DataplaneConfig, wake: Arc<EventFd>) -> Result<Worker, DataplaneError> {
        if let Some(ns) = &cfg.netns {
            sys::enter_netns(ns)
                .map_err(|e| DataplaneError::io(format!("entering {}", ns.display()), e))?;
        }
        let batch = if cfg.batch == 0 { 64 } else { cfg.batch };
        let shared = Arc::new(Shared {
            sw: Mutex::new(Switch::new(cfg.switch)),
            start: Instant::now(),
        });
        let mut w = Worker::new(shared.clone(), wake, batch)?;
        let mut peers = Vec::new();
        for i in 1..cfg.thread_count() {
            let pw = Arc::new(EventFd::new().map_err(|e| DataplaneError::io("eventfd", e))?);
            let mut p = Worker::new(shared.clone(), pw.clone(), batch)?;
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("strata-dp{i}"))
                .spawn(move || p.run_peer(&rx))
                .map_err(|e| DataplaneError::io("spawning a dataplane thread", e))?;
            peers.push(PeerThread {
                tx,
                wake: pw,
                thread: Some(thread),
            });
        }
        w.lead = Some(Leader {
            socks: Vec::new(),
            peers,
            unknown_tunnel_remote: 0,
        });
        Ok(w)
    }

    fn lead(&mut self) -> &mut Leader {
        self.lead.as_mut().expect("only the leader serves control")
    }

    /// Number of threads (the leader and its peers).
    fn threads(&self) -> usize {
        self.lead.as_ref().map_or(1, |l| l.peers.len() + 1)
    }

    /// Waits for readiness (up to `timeout_ms`) and forwards from every ready device. True if
    /// the control eventfd fired.
    fn poll(&mut self, ready: &mut Vec<EpollToken>, timeout_ms: i32) -> io::Result<bool> {
        self.epoll.wait(ready, timeout_ms)?;
        let mut ctl = false;
        for &tok in ready.iter() {
            if tok == TOKEN_CTL {
                self.wake.drain();
                ctl = true;
            } else if tok & TOKEN_UDP != 0 {
                self.rx_udp((tok & !TOKEN_UDP) as usize);
            } else {
                self.rx_tap(tok as PortNo);
            }
        }
        Ok(ctl)
    }

    /// The leader's loop: forwarding, control and expiry, until `Cmd::Stop`.
    fn run(&mut self, rx: &mpsc::Receiver<Cmd>) {
        let mut ready = Vec::with_capacity(64);
        let mut last_expire = Duration::ZERO;
        loop {
            match self.poll(&mut ready, 1000) {
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; dataplane stops");
                    return;
                }
                Ok(true) => {
                    while let Ok(c) = rx.try_recv() {
                        if !self.command(c) {
                            return;
                        }
                    }
                }
                Ok(false) => {}
            }
            if self.shared.now() >= last_expire + Duration::from_secs(1) {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                sw.expire(now);
                last_expire = now;
            }
        }
    }

    /// A peer's loop: forwarding and the leader's requests, until `Peer::Stop`.
    fn run_peer(&mut self, rx: &mpsc::Receiver<Peer>) {
        let mut ready = Vec::with_capacity(64);
        loop {
            match self.poll(&mut ready, -1) {
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; dataplane thread stops");
                    return;
                }
                Ok(true) => {
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Peer::AddPort(no, p, done) => {
                                let _ = done.send(self.attach(no, p));
                            }
                            Peer::RemovePort(no, done) => {
                                self.detach(no);
                                let _ = done.send(());
                            }
                            Peer::Stats(reply) => {
                                let _ = reply.send((self.rx_frames, self.io_stats()));
                            }
                            Peer::Stop => return,
                        }
                    }
                }
                Ok(false) => {}
            }
        }
    }

    /// Handles one control message; false = stop.
    fn command(&mut self, c: Cmd) -> bool {
        match c {
            Cmd::AddPort(spec, reply) => {
                let _ = reply.send(self.add_port(spec));
            }
            Cmd::RemovePort(name, reply) => {
                let _ = reply.send(self.remove_port(&name));
            }
            Cmd::Call(f) => {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                f(&mut sw, now);
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Cmd::Stop => return false,
        }
        true
    }

    /// Takes this thread's handle of port `no`'s device, and reads it if it is ours.
    fn attach(&mut self, no: PortNo, p: PortIo) -> io::Result<()> {
        if let (true, Dev::Tap(t)) = (p.rx, &p.dev) {
            self.epoll.add(t.raw(), no as u64)?;
        }
        self.ports.insert(no, p);
        Ok(())
    }

    /// Drops this thread's handle of port `no`'s device.
    fn detach(&mut self, no: PortNo) -> Option<PortIo> {
        let p = self.ports.remove(&no)?;
        if let (true, Dev::Tap(t)) = (p.rx, &p.dev) {
            let _ = self.epoll.delete(t.raw());
        }
        Some(p)
    }

    /// Gives every thread its handle of port `no` (`devs[i]` to thread i), waiting until each
    /// has it. On failure the port is left in no thread.
    fn install(&mut self, no: PortNo, devs: Vec<PortIo>) -> Result<(), DataplaneError> {
        let mut devs = devs.into_iter();
        let mine = devs.next().expect("one device per thread");
        let mut res = self
            .attach(no, mine)
            .map_err(|e| DataplaneError::io("epoll", e));
        for (peer, p) in self.lead().peers.iter().zip(devs) {
            let (t, r) = mpsc::channel();
            let got = if peer.send(Peer::AddPort(no, p, t)) {
                r.recv().map_err(|_| DataplaneError::Stopped)
            } else {
                Err(DataplaneError::Stopped)
            };
            if res.is_ok() {
                res = got.and_then(|x| x.map_err(|e| DataplaneError::io("epoll", e)));
            }
        }
        if res.is_err() {
            self.uninstall(no);
        }
        res
    }

    /// Takes port `no` from every thread, waiting until each has dropped its handle; returns
    /// the leader's.
    fn uninstall(&mut self, no: PortNo) -> Option<PortIo> {
        for peer in &self.lead().peers {
            let (t, r) = mpsc::channel();
            if peer.send(Peer::RemovePort(no, t)) {
                let _ = r.recv();
            }
        }
        self.detach(no)
    }

    fn add_port(&mut self, spec: PortSpec) -> Result<PortNo, DataplaneError> {
        if self
            .shared
            .lock()
            .port_names()
            .port_no(spec.name())
            .is_some()
        {
            return Err(PortError::NameTaken(spec.name().to_string()).into());
        }
        match spec {
            PortSpec::Tap {
                name,
                domain,
                offload,
            } => self.add_tap(PortConfig::tap(&name, domain), offload),
            PortSpec::Internal { name, domain } => {
                let mut cfg = PortConfig::tap(&name, domain);
                cfg.kind = PortKind::Internal;
                self.add_tap(cfg, true)
            }
            PortSpec::Vxlan {
                name,
                local,
                remote,
                vni,
                dst_port,
            } => self.add_vxlan(&name, local, remote, vni, dst_port),
        }
    }

    fn add_tap(&mut self, cfg: PortConfig, offload: bool) -> Result<PortNo, DataplaneError> {
        let name = cfg.name.clone();
        let threads = self.threads();
        let taps = Tap::open_queues(&name, TapOptions { offload, up: true }, threads)
            .map_err(|e| DataplaneError::io(format!("opening TAP {name}"), e))?;
        let taps: Vec<Arc<Tap>> = taps.into_iter().map(Arc::new).collect();
        let no = self.shared.lock().add_port(cfg)?;
        // Thread i reads queue i. A device with fewer queues (one that existed without
        // IFF_MULTI_QUEUE) is read by the first threads; the others only write to it.
        let devs = (0..threads)
            .map(|i| PortIo {
                dev: Dev::Tap(taps[i % taps.len()].clone()),
                rx: i < taps.len(),
                io: PortIoStats::default(),
            })
            .collect();
        drop(taps);
        if let Err(e) = self.install(no, devs) {
            let _ = self.shared.lock().remove_port(&name);
            return Err(e);
        }
        Ok(no)
    }

    fn add_vxlan(
        &mut self,
        name: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        vni: Option<u32>,
        port: u16,
    ) -> Result<PortNo, DataplaneError> {
        let laddr = SocketAddrV4::new(local, port);
        let threads = self.threads();
        let epoll_fd = &self.epoll;
        let lead = self.lead.as_mut().expect("only the leader serves control");
        let idx = match lead
            .socks
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.local == laddr))
        {
            Some(i) => {
                let s = lead.socks[i].as_ref().expect("position found it");
                if s.members.iter().any(|m| m.0 == remote) {
                    return Err(DataplaneError::DuplicateRemote(remote));
                }
                i
            }
            None => {
                let sock = sys::vxlan_socket(local, port)
                    .map_err(|e| DataplaneError::io(format!("binding UDP {laddr}"), e))?;
                let i = lead
                    .socks
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(lead.socks.len());
                epoll_fd
                    .add(sock.as_raw_fd(), TOKEN_UDP | i as u64)
                    .map_err(|e| DataplaneError::io("epoll", e))?;
                let vs = VxSock {
                    sock: Arc::new(sock),
                    local: laddr,
                    members: Vec::new(),
                };
                if i == lead.socks.len() {
                    lead.socks.push(Some(vs));
                } else {
                    lead.socks[i] = Some(vs);
                }
                i
            }
        };
        let sock = lead.socks[idx]
            .as_ref()
            .map(|s| s.sock.clone())
            .expect("socket just found or made");
        let mut t = VxlanTunnel::new(local, remote);
        t.dst_port = port;
        let added = self.shared.lock().add_port(PortConfig::vxlan(name, t, vni));
        let no = match added {
            Ok(n) => n,
            Err(e) => {
                self.release_sock(idx);
                return Err(e.into());
            }
        };
        if let Some(s) = self.lead().socks[idx].as_mut() {
            s.members.push((remote, no));
        }
        let devs = (0..threads)
            .map(|_| PortIo {
                dev: Dev::Vxlan {
                    sock: sock.clone(),
                    idx,
                    remote: SocketAddrV4::new(remote, port),
                },
                rx: false,
                io: PortIoStats::default(),
            })
            .collect();
        drop(sock);
        if let Err(e) = self.install(no, devs) {
            let _ = self.shared.lock().remove_port(name);
            if let Some(s) = self.lead().socks[idx].as_mut() {
                s.members.retain(|m| m.1 != no);
            }
            self.release_sock(idx);
            return Err(e);
        }
        Ok(no)
    }

    /// Closes socket `idx` if no port uses it any more.
    fn release_sock(&mut self, idx: usize) {
        let epoll = &self.epoll;
        let lead = self.lead.as_mut().expect("only the leader serves control");
        if let Some(s) = lead.socks.get_mut(idx) {
            if s.as_ref().is_some_and(|v| v.members.is_empty()) {
                if let Some(v) = s.take() {
                    let _ = epoll.delete(v.sock.as_raw_fd());
                }
            }
        }
    }

    fn remove_port(&mut self, name: &str) -> Result<(), DataplaneError> {
        let no = {
            let mut sw = self.shared.lock();
            let no = sw
                .port_names()
                .port_no(name)
                .ok_or_else(|| PortError::NoSuchPort(name.to_string()))?;
            sw.remove_port(name)?;
            no
        };
        if let Some(PortIo {
            dev: Dev::Vxlan { idx, .. },
            ..
        }) = self.uninstall(no)
        {
            if let Some(s) = self.lead().socks[idx].as_mut() {
                s.members.retain(|m| m.1 != no);
            }
            self.release_sock(idx);
        }
        Ok(())
    }

    /// This thread's port-layer counters.
    fn io_stats(&self) -> Vec<(PortNo, PortIoStats)> {
        self.ports.iter().map(|(&n, p)| (n, p.io)).collect()
    }

    /// Every counter: the engine's, and the port layer's summed over the threads.
    fn stats(&mut self) -> DataplaneStats {
        let mut io: BTreeMap<PortNo, PortIoStats> = self.io_stats().into_iter().collect();
        let mut thread_rx_frames = vec![self.rx_frames];
        let lead = self.lead();
        for peer in &lead.peers {
            let (t, r) = mpsc::channel();
            let (frames, ports) = if peer.send(Peer::Stats(t)) {
                r.recv().unwrap_or_default()
            } else {
                Default::default()
            };
            thread_rx_frames.push(frames);
            for (n, s) in ports {
                io.entry(n).or_default().add(&s);
            }
        }
        let unknown_tunnel_remote = lead.unknown_tunnel_remote;
        let sw = self.shared.lock();
        DataplaneStats {
            ports: sw
                .ports()
                .map(|(n, cfg, st)| PortCounters {
                    number: n,
                    name: cfg.name.clone(),
                    stats: st,
                    io: io.get(&n).copied().unwrap_or_default(),
                })
                .collect(),
            switch: sw.stats(),
            pipeline: sw.pipeline_stats(),
            unknown_tunnel_remote,
            thread_rx_frames,
        }
    }

    /// Reads up to `batch` frames from this thread's queue of TAP port `no` and forwards each.
    fn rx_tap(&mut self, no: PortNo) {
        for _ in 0..self.batch {
            let Some(PortIo {
                dev: Dev::Tap(tap),
                io,
                ..
            }) = self.ports.get_mut(&no)
            else {
                return;
            };
            io.syscalls += 1;
            let n = match tap.recv(&mut self.bufs.rx) {
                Ok(Some(n)) if n >= VIRTIO_NET_HDR_LEN => n,
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
                Err(e) => {
                    // The device is gone (its namespace deleted: EBADFD) or broken. Epoll
                    // would report it ready forever: stop reading it, once, and say so. The
                    // port stays until removed.
                    io.rx_errors += 1;
                    tracing::warn!(port = no, error = %e, "TAP read failed; no longer reading this port");
                    let fd = tap.raw();
                    let _ = self.epoll.delete(fd);
                    if let Some(p) = self.ports.get_mut(&no) {
                        p.rx = false;
                    }
                    return;
                }
            };
            let Ok(hdr) = VirtioNetHdr::parse(&self.bufs.rx[..VIRTIO_NET_HDR_LEN]) else {
                continue;
            };
            if hdr.gso_type != gso::GSO_NONE {
                io.rx_gso += 1;
            }
            self.rx_frames += 1;
            let Bufs { rx, fx, .. } = &mut self.bufs;
            fx.clear();
            {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                sw.receive(now, no, &rx[VIRTIO_NET_HDR_LEN..n], fx);
            }
            if !fx.is_empty() {
                deliver(&mut self.ports, &mut self.bufs, &hdr, VIRTIO_NET_HDR_LEN..n);
            }
        }
    }

    /// Reads up to `batch` datagrams from VXLAN socket `idx` and forwards each inner frame.
    fn rx_udp(&mut self, idx: usize) {
        for _ in 0..self.batch {
            let Some(lead) = self.lead.as_mut() else {
                return;
            };
            let Some(Some(vs)) = lead.socks.get(idx) else {
                return;
            };
            let (n, src) = match sys::recv_datagram(&vs.sock, &mut self.bufs.rx) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "VXLAN socket read failed");
                    return;
                }
            };
            self.rx_frames += 1;
            let Some(no) = vs.members.iter().find(|m| m.0 == *src.ip()).map(|m| m.1) else {
                lead.unknown_tunnel_remote += 1;
                continue;
            };
            if let Some(p) = self.ports.get_mut(&no) {
                p.io.syscalls += 1;
            }
            let Bufs { rx, fx, .. } = &mut self.bufs;
            let (vni, inner) = match vxlan::decap_payload(&rx[..n]) {
                Ok(x) => x,
                Err(_) => {
                    if let Some(p) = self.ports.get_mut(&no) {
                        p.io.rx_errors += 1;
                    }
                    continue;
                }
            };
            let inner_start = n - inner.len();
            fx.clear();
            {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                sw.receive_vxlan(now, no, vni, inner, fx);
            }
            if !fx.is_empty() {
                deliver(
                    &mut self.ports,
                    &mut self.bufs,
                    &VirtioNetHdr::default(),
                    inner_start..n,
                );
            }
        }
    }
}

/// Length of the Ethernet header of `f` (14, or 18 with one VLAN tag).
fn l2_len(f: &[u8]) -> usize {
    match f.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) {
        Some(ethertype::VLAN) | Some(ethertype::QINQ) => 18,
        _ => 14,
    }
}

/// The virtio-net header for a frame that came in as `input` with `hdr` and leaves as `out`:
/// the same offload, with offsets moved by the VLAN tag pushed or popped on the way.
fn shift_hdr(hdr: &VirtioNetHdr, input: &[u8], out: &[u8]) -> VirtioNetHdr {
    let mut h = *hdr;
    let delta = l2_len(out) as i32 - l2_len(input) as i32;
    if delta != 0 {
        h.csum_start = (h.csum_start as i32 + delta).max(0) as u16;
        if h.hdr_len != 0 {
            h.hdr_len = (h.hdr_len as i32 + delta).max(0) as u16;
        }
    }
    h.num_buffers = 0;
    h
}

/// If `out` (with partial checksum at `h.csum_start + h.csum_offset`) was rewritten by the
/// engine, writes into `scratch` a copy whose partial checksum is right again, and returns
/// true. The field of a partial checksum holds the (not complemented) pseudo-header sum, so an
/// address change must add the new address and subtract the old; port changes need nothing
/// (they are in the summed data). The engine's RFC 1624 update assumed a complemented
/// checksum, so we recompute from the received field instead of correcting its result.
pub fn fix_partial_csum(
    input: &[u8],
    in_hdr: &VirtioNetHdr,
    out: &[u8],
    h: &VirtioNetHdr,
    scratch: &mut Vec<u8>,
) -> bool {
    let (ip_in, ip_out) = (l2_len(input), l2_len(out));
    let pin = in_hdr.csum_start as usize + in_hdr.csum_offset as usize;
    let pout = h.csum_start as usize + h.csum_offset as usize;
    let et = u16::from_be_bytes([
        input.get(ip_in - 2).copied().unwrap_or(0),
        input.get(ip_in - 1).copied().unwrap_or(0),
    ]);
    let (a, b) = match et {
        ethertype::IPV4 => (12, 20),
        ethertype::IPV6 => (8, 40),
        _ => return false,
    };
    let (Some(ai), Some(ao), Some(fi), Some(fo)) = (
        input.get(ip_in + a..ip_in + b),
        out.get(ip_out + a..ip_out + b),
        input.get(pin..pin + 2),
        out.get(pout..pout + 2),
    ) else {
        return false;
    };
    if ai == ao && fi == fo {
        return false;
    }
    // S' = S + new - old, in ones' complement: add the new words and the complements of the
    // old ones.
    let mut s = u16::from_be_bytes([fi[0], fi[1]]) as u32;
    s = csum::ones_sum(ao, s);
    for w in ai.chunks_exact(2) {
        s += (!u16::from_be_bytes([w[0], w[1]])) as u32;
    }
    let v = csum::fold(s);
    scratch.clear();
    scratch.extend_from_slice(out);
    scratch[pout..pout + 2].copy_from_slice(&v.to_be_bytes());
    true
}

/// `head` then `tail` in one slice: `head` itself if there is no tail, else a copy in `buf`.
fn joined<'a>(buf: &'a mut Vec<u8>, head: &'a [u8], tail: &[u8]) -> &'a [u8] {
    if tail.is_empty() {
        return head;
    }
    buf.clear();
    buf.extend_from_slice(head);
    buf.extend_from_slice(tail);
    buf
}

/// Writes every frame of `bufs.fx` to its port. `hdr` describes the received frame, which is
/// `bufs.rx[input]`. The effects are split (see [`Effects`]): each frame is a rewritten head
/// and a tail still in the receive buffer, written together with one `writev`, so a 64 KiB
/// frame is not copied in user space. Only outputs that must cut or checksum the frame (VXLAN,
/// a TAP without offloads) join the two first.
fn deliver(
    ports: &mut BTreeMap<PortNo, PortIo>,
    bufs: &mut Bufs,
    hdr: &VirtioNetHdr,
    input: std::ops::Range<usize>,
) {
    let Bufs {
        rx,
        fx,
        segs,
        scratch,
        joined: join_buf,
    } = bufs;
    let input = &rx[input];
    let offloaded = hdr.gso_type != gso::GSO_NONE || hdr.flags & gso::F_NEEDS_CSUM != 0;
    for (p, head, tail) in fx.iter_split() {
        let tail = &input[tail];
        let Some(port) = ports.get_mut(&p) else {
            continue;
        };
        match &port.dev {
            Dev::Tap(tap) => {
                if !offloaded {
                    let h = VirtioNetHdr {
                        flags: hdr.flags & gso::F_DATA_VALID,
                        ..VirtioNetHdr::default()
                    };
                    port.io.syscalls += 1;
                    if tap.send_parts(&h.to_bytes(), head, tail).is_err() {
                        port.io.tx_errors += 1;
                    }
                    continue;
                }
                let h = shift_hdr(hdr, input, head);
                // The partial checksum lies in the head unless extension headers pushed it
                // out; then work on the whole frame, as for software segmentation.
                let (head, tail) = if !tap.offload() || csum_field_end(&h) > head.len() {
                    (joined(join_buf, head, tail), &[][..])
                } else {
                    (head, tail)
                };
                let head = if h.flags & gso::F_NEEDS_CSUM != 0
                    && fix_partial_csum(input, hdr, head, &h, scratch)
                {
                    &scratch[..]
                } else {
                    head
                };
                if tap.offload() {
                    if h.gso_type != gso::GSO_NONE {
                        port.io.tx_gso += 1;
                    }
                    port.io.syscalls += 1;
                    if tap.send_parts(&h.to_bytes(), head, tail).is_err() {
                        port.io.tx_errors += 1;
                    }
                } else {
                    segs.clear();
                    match gso::segment(&h, head, segs) {
                        Ok(n) => {
                            count_sw_offload(&mut port.io, &h, n);
                            let zero = VirtioNetHdr::default().to_bytes();
                            for s in segs.iter() {
                                port.io.syscalls += 1;
                                if tap.send(&zero, s).is_err() {
                                    port.io.tx_errors += 1;
                                }
                            }
                        }
                        Err(_) => port.io.tx_errors += 1,
                    }
                }
            }
            Dev::Vxlan { sock, remote, .. } => {
                let Some(vx_hdr) = head.get(OUTER_VXLAN_OFFSET..VXLAN_OVERHEAD_V4) else {
                    port.io.tx_errors += 1;
                    continue;
                };
                let inner = joined(join_buf, &head[VXLAN_OVERHEAD_V4..], tail);
                if !offloaded {
                    port.io.syscalls += 1;
                    if !matches!(
                        sys::send_datagrams(sock, *remote, &[(vx_hdr, inner)]),
                        Ok(1)
                    ) {
                        port.io.tx_errors += 1;
                    }
                    continue;
                }
                let h = shift_hdr(hdr, input, inner);
                let inner = if h.flags & gso::F_NEEDS_CSUM != 0
                    && fix_partial_csum(input, hdr, inner, &h, scratch)
                {
                    &scratch[..]
                } else {
                    inner
                };
                segs.clear();
                let n = match gso::segment(&h, inner, segs) {
                    Ok(n) => n,
                    Err(_) => {
                        port.io.tx_errors += 1;
                        continue;
                    }
                };
                count_sw_offload(&mut port.io, &h, n);
                // A 64 KiB TSO frame makes up to ~45 datagrams: one sendmmsg for all.
                let mut parts: [(&[u8], &[u8]); 64] = [(&[], &[]); 64];
                let mut k = 0;
                let mut sent = 0;
                for s in segs.iter() {
                    parts[k] = (vx_hdr, s);
                    k += 1;
                    if k == parts.len() {
                        port.io.syscalls += 1;
                        sent += sys::send_datagrams(sock, *remote, &parts[..k]).unwrap_or(0);
                        k = 0;
                    }
                }
                if k > 0 {
                    port.io.syscalls += 1;
                    sent += sys::send_datagrams(sock, *remote, &parts[..k]).unwrap_or(0);
                }
                port.io.tx_errors += (n - sent.min(n)) as u64;
            }
        }
    }
}

/// End of the partial checksum field `h` names (0 if the frame has none).
fn csum_field_end(h: &VirtioNetHdr) -> usize {
    if h.flags & gso::F_NEEDS_CSUM == 0 {
        return 0;
    }
    h.csum_start as usize + h.csum_offset as usize + 2
}

fn count_sw_offload(io: &mut PortIoStats, h: &VirtioNetHdr, n: usize) {
    if h.gso_type != gso::GSO_NONE {
        io.tx_segments += n as u64;
    } else {
        io.tx_csum_completed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Field, FlowKey};
    use crate::packet::build_frame;

    /// A TCP/IPv4 frame as a TAP with offloads hands it over: the checksum field holds the
    /// folded pseudo-header sum, and the header says NEEDS_CSUM at 34 + 16.
    fn partial_tcp_frame() -> (Vec<u8>, VirtioNetHdr) {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0x0200_0000_0002);
        k.set(Field::EthType, 0x0800);
        k.set(Field::NwProto, 6);
        k.set(Field::NwTtl, 64);
        k.set(Field::NwSrc, 0x0a00_0001);
        k.set(Field::NwDst, 0x0a00_0002);
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 80);
        let mut f = build_frame(&k, 100);
        let l4_len = f.len() - 34;
        let p = csum::fold(csum::pseudo_sum_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, l4_len));
        f[50..52].copy_from_slice(&p.to_be_bytes());
        let h = VirtioNetHdr {
            flags: gso::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VirtioNetHdr::default()
        };
        (f, h)
    }

    fn completes_to_valid(frame: &[u8], h: &VirtioNetHdr) -> bool {
        let mut segs = Segments::new();
        gso::segment(h, frame, &mut segs).unwrap();
        let out = segs.iter().next().unwrap();
        let l3 = l2_len(out);
        csum::verify_l4_checksum(out, l3, l3 + 20)
    }

    #[test]
    fn partial_checksum_survives_address_and_port_rewrites() {
        let (f, h) = partial_tcp_frame();
        assert!(completes_to_valid(&f, &h), "the test frame itself is right");
        let mut sw = Switch::default();
        let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
        sw.add_port(PortConfig::tap("b", None)).unwrap();
        sw.add_flow(
            Duration::ZERO,
            "tcp,actions=set_field:10.9.9.9->nw_dst,set_field:8080->tp_dst,mod_vlan_vid:7,output:b",
        )
        .unwrap();
        let mut fx = Effects::new();
        sw.receive(Duration::ZERO, a, &f, &mut fx);
        let (_, out) = fx.iter().next().unwrap();
        assert_eq!(l2_len(out), 18, "a tag was pushed");
        let oh = shift_hdr(&h, &f, out);
        assert_eq!(oh.csum_start, 38, "offsets follow the tag");
        assert!(
            !completes_to_valid(out, &oh),
            "the engine's complemented update is wrong for a partial sum"
        );
        let mut scratch = Vec::new();
        assert!(fix_partial_csum(&f, &h, out, &oh, &mut scratch));
        let (k, _) = crate::parse_frame(&scratch, 1).unwrap();
        assert_eq!(k.nw_dst(), Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(k.tp_dst(), 8080);
        assert!(
            completes_to_valid(&scratch, &oh),
            "fixed partial sum completes right"
        );
    }

    #[test]
    fn untouched_frames_need_no_fix() {
        let (f, h) = partial_tcp_frame();
        let mut scratch = Vec::new();
        assert!(!fix_partial_csum(&f, &h, &f, &h, &mut scratch));
        assert_eq!(shift_hdr(&h, &f, &f), h);
    }
}
