//! The forwarding threads: the leader (thread 0: control commands, expiry, VXLAN receive
//! sockets, port installation) and its peers, each with its own epoll, buffers and handle of
//! every port's device. The receive paths are in `tap_port`, `veth_port` and `vxlan_port`, the
//! transmit path in `deliver`.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_net::gso::VirtioNetHdr;
use strata_net::key::PortNo;
use strata_net::switch::{PortConfig, PortError, PortKind};
use strata_net::vxlan::SourcePorts;
use strata_net::Switch;

use crate::config::{DataplaneConfig, PortSpec};
use crate::deliver::deliver;
use crate::error::DataplaneError;
use crate::fastpath::{self, FastPath};
use crate::port::{Bufs, Dev, PortIo, VxSock};
use crate::stats::{DataplaneStats, PortCounters, PortIoStats};
use crate::sys::{self, Epoll, EpollToken, EventFd};

/// A call on the switch; what it returns runs once the fast path has caught up with the
/// change (it sends the caller's answer).
pub(crate) type SwitchFn =
    Box<dyn FnOnce(&mut Switch, Duration) -> Box<dyn FnOnce() + Send> + Send>;

/// A request to the leader thread, from the [`crate::Dataplane`] handle.
pub(crate) enum Cmd {
    AddPort(PortSpec, mpsc::Sender<Result<PortNo, DataplaneError>>),
    RemovePort(String, mpsc::Sender<Result<(), DataplaneError>>),
    Call(SwitchFn),
    Stats(mpsc::Sender<DataplaneStats>),
    /// Sends one probe to each port named (`Switch::probe`); answers how many went out.
    Probe(
        Vec<(PortNo, strata_net::probe::ProbeTarget)>,
        mpsc::Sender<usize>,
    ),
    /// `Switch::trace` of a packet description, with what the fast path does with its flow.
    Trace(
        String,
        mpsc::Sender<Result<String, strata_net::trace::TraceError>>,
    ),
    Stop,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::AddPort(..) => "AddPort",
            Cmd::RemovePort(..) => "RemovePort",
            Cmd::Call(_) => "Call",
            Cmd::Stats(_) => "Stats",
            Cmd::Probe(..) => "Probe",
            Cmd::Trace(..) => "Trace",
            Cmd::Stop => "Stop",
        })
    }
}

/// Epoll token of the control eventfd.
pub(crate) const TOKEN_CTL: u64 = u64::MAX;
/// Epoll tokens of VXLAN sockets: this bit plus the socket's index.
pub(crate) const TOKEN_UDP: u64 = 1 << 40;

/// What every dataplane thread shares: the one switch and the clock it runs on, and the fast
/// path (its mutex is never taken with the switch's held, nor the other way round).
#[derive(Debug)]
pub(crate) struct Shared {
    sw: Mutex<Switch>,
    start: Instant,
    /// `CLOCK_MONOTONIC` at `start` (the kernel programs' clock).
    start_ns: u64,
    fast: Mutex<Option<FastPath>>,
    /// The fast path is loaded.
    fast_on: AtomicBool,
    /// The generation the fast path last wrote, plus one (0: none): lets a thread see without
    /// the mutex that there is nothing to write.
    fast_gen: AtomicU64,
}

impl Shared {
    /// Locks the switch. A closure that panicked in `with_switch` poisons nothing we rely on:
    /// the engine keeps its invariants between calls, so the lock is taken anyway.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Switch> {
        self.sw.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Switch time. Read with the lock held, so the engine sees it never go backwards.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The fast path, locked (None when it is not loaded).
    pub(crate) fn fast(&self) -> MutexGuard<'_, Option<FastPath>> {
        self.fast.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the fast path is loaded.
    pub(crate) fn fast_on(&self) -> bool {
        self.fast_on.load(Ordering::Acquire)
    }

    /// Writes the switch's generation `gen` (read under the switch lock) to the fast path if it
    /// is newer than what it has. Call after every change and every received frame, without
    /// the switch lock.
    pub(crate) fn fast_sync(&self, gen: u64) {
        if !self.fast_on() || self.fast_gen.load(Ordering::Acquire) > gen {
            return;
        }
        if let Some(f) = self.fast().as_mut() {
            f.sync(gen);
            self.fast_gen.store(
                f.generation().map_or(0, |g| g.saturating_add(1)),
                Ordering::Release,
            );
        }
    }

    /// Offers the offload hint of a frame just forwarded from a fast veth port (host end
    /// `in_ifindex`) to a veth or VXLAN port (reached as `out` says) to the fast path.
    pub(crate) fn fast_offer(
        &self,
        o: &strata_net::Offload,
        in_ifindex: u32,
        out: fastpath::plan::Out,
        frame: &[u8],
    ) {
        if let Some(f) = self.fast().as_mut() {
            f.offer(o, in_ifindex, out, frame, sys::monotonic_ns());
            self.fast_gen.store(
                f.generation().map_or(0, |g| g.saturating_add(1)),
                Ordering::Release,
            );
        }
    }

    /// Folds what the kernel forwarded into the switch's counters.
    pub(crate) fn fast_fold(&self) {
        if !self.fast_on() {
            return;
        }
        let credits = match self.fast().as_mut() {
            Some(f) => f.fold(sys::monotonic_ns()),
            None => return,
        };
        if credits.is_empty() {
            return;
        }
        let mut sw = self.lock();
        let now = self.now();
        for c in &credits {
            sw.credit_offloaded(&strata_net::OffloadCredit {
                in_port: c.in_port,
                out_port: c.out_port,
                rules: &c.rules,
                packets: c.packets,
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                learn: c.learn,
                ct: &c.ct,
                ip_bytes: c.ip_bytes,
                last_used: fastpath::switch_time(c.last_ns, self.start_ns).min(now),
            });
        }
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
pub(crate) struct PeerThread {
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
pub(crate) struct Leader {
    pub(crate) socks: Vec<Option<VxSock>>,
    pub(crate) peers: Vec<PeerThread>,
    pub(crate) unknown_tunnel_remote: u64,
    /// Outer UDP source ports of the VXLAN ports this leader opens.
    pub(crate) src_ports: SourcePorts,
    /// Carry veth ports' established flows in the kernel (`DataplaneConfig::fastpath`).
    pub(crate) fastpath: bool,
    /// Loading the fast path was tried (it is loaded at the first veth port).
    pub(crate) fast_tried: bool,
    /// `DataplaneConfig::bpf_object`.
    pub(crate) bpf_object: Option<std::path::PathBuf>,
    /// Why the fast path could not be loaded.
    pub(crate) fast_error: Option<String>,
}

/// One forwarding thread: its epoll, its handle of every port's device and its buffers. The
/// leader (thread 0) also serves the control channel and owns the VXLAN sockets.
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) epoll: Epoll,
    wake: Arc<EventFd>,
    pub(crate) ports: BTreeMap<PortNo, PortIo>,
    pub(crate) bufs: Bufs,
    /// Receive buffers for veth ports' packet sockets, made at the first veth frame.
    pub(crate) veth_rx: Option<crate::sys::RecvBatch>,
    pub(crate) batch: usize,
    pub(crate) lead: Option<Leader>,
    /// Frames (and datagrams) this thread read.
    pub(crate) rx_frames: u64,
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
        Ok(Worker {
            shared,
            epoll,
            wake,
            ports: BTreeMap::new(),
            bufs: Bufs::new(),
            veth_rx: None,
            batch,
            lead: None,
            rx_frames: 0,
        })
    }

    /// The leader: enters the namespace, makes the switch and starts the other threads.
    pub(crate) fn leader(
        cfg: &DataplaneConfig,
        wake: Arc<EventFd>,
    ) -> Result<Worker, DataplaneError> {
        if let Some(ns) = &cfg.netns {
            sys::enter_netns(ns)
                .map_err(|e| DataplaneError::io(format!("entering {}", ns.display()), e))?;
        }
        let batch = if cfg.batch == 0 { 64 } else { cfg.batch };
        let start = Instant::now();
        let shared = Arc::new(Shared {
            sw: Mutex::new(Switch::new(cfg.switch)),
            start,
            start_ns: sys::monotonic_ns(),
            fast: Mutex::new(None),
            fast_on: AtomicBool::new(false),
            fast_gen: AtomicU64::new(0),
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
            src_ports: cfg.vxlan_src_ports,
            fastpath: cfg.fastpath,
            fast_tried: false,
            bpf_object: cfg.bpf_object.clone(),
            fast_error: None,
        });
        Ok(w)
    }

    /// Loads the fast path if the configuration wants it and it is not loaded yet (once:
    /// a failure is one log line, and every veth port then stays on the slow path). True if
    /// it is loaded.
    pub(crate) fn ensure_fast(&mut self) -> bool {
        if self.shared.fast_on() {
            return true;
        }
        let lead = self.lead();
        if !lead.fastpath || lead.fast_tried {
            return false;
        }
        lead.fast_tried = true;
        match FastPath::load(lead.bpf_object.as_deref()) {
            Ok(f) => {
                *self.shared.fast() = Some(f);
                self.shared.fast_on.store(true, Ordering::Release);
                tracing::info!("fast path loaded: established flows between veth ports are forwarded in the kernel");
                let gen = self.shared.lock().generation();
                self.shared.fast_sync(gen);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "fast path unavailable; veth ports use the slow path");
                self.lead().fast_error = Some(e.to_string());
                false
            }
        }
    }

    pub(crate) fn lead(&mut self) -> &mut Leader {
        self.lead.as_mut().expect("only the leader serves control")
    }

    /// Number of threads (the leader and its peers).
    pub(crate) fn threads(&self) -> usize {
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
                let no = tok as PortNo;
                match self.ports.get(&no).map(|p| &p.dev) {
                    Some(Dev::Veth(_)) => self.rx_veth(no),
                    _ => self.rx_tap(no),
                }
            }
        }
        Ok(ctl)
    }

    /// The leader's loop: forwarding, control and expiry, until `Cmd::Stop`.
    pub(crate) fn run(&mut self, rx: &mpsc::Receiver<Cmd>) {
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
                // Fold first: the fast path's packets count as uses of their rules and MACs.
                self.shared.fast_fold();
                let gen = {
                    let mut sw = self.shared.lock();
                    let now = self.shared.now();
                    sw.expire(now);
                    last_expire = now;
                    sw.generation()
                };
                self.shared.fast_sync(gen);
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
                let r = self.add_port(spec);
                let gen = self.shared.lock().generation();
                self.shared.fast_sync(gen);
                let _ = reply.send(r);
            }
            Cmd::RemovePort(name, reply) => {
                let _ = reply.send(self.remove_port(&name));
            }
            Cmd::Call(f) => {
                // Counters first (dump-flows, a rule about to go), then the call, then the
                // fast path stops using what the call changed, then the answer.
                self.shared.fast_fold();
                let (answer, gen) = {
                    let mut sw = self.shared.lock();
                    let now = self.shared.now();
                    let a = f(&mut sw, now);
                    (a, sw.generation())
                };
                self.shared.fast_sync(gen);
                answer();
            }
            Cmd::Stats(reply) => {
                self.shared.fast_fold();
                let _ = reply.send(self.stats());
            }
            Cmd::Trace(spec, reply) => {
                self.shared.fast_fold();
                let _ = reply.send(self.trace(&spec));
            }
            Cmd::Probe(targets, reply) => {
                let Bufs { fx, tx, .. } = &mut self.bufs;
                fx.clear();
                let mut sent = 0;
                let gen = {
                    let mut sw = self.shared.lock();
                    let now = self.shared.now();
                    for (port, t) in &targets {
                        sent += sw.probe(now, *port, t, fx) as usize;
                    }
                    sw.generation()
                };
                self.shared.fast_sync(gen);
                if !fx.is_empty() {
                    deliver(&mut self.ports, fx, tx, &VirtioNetHdr::default(), &[]);
                }
                let _ = reply.send(sent);
            }
            Cmd::Stop => return false,
        }
        true
    }

    /// Takes this thread's handle of port `no`'s device, and reads it if it is ours.
    fn attach(&mut self, no: PortNo, p: PortIo) -> io::Result<()> {
        if let (true, Some(fd)) = (p.rx, p.dev.rx_fd()) {
            self.epoll.add(fd, no as u64)?;
        }
        self.ports.insert(no, p);
        Ok(())
    }

    /// Drops this thread's handle of port `no`'s device.
    fn detach(&mut self, no: PortNo) -> Option<PortIo> {
        let p = self.ports.remove(&no)?;
        if let (true, Some(fd)) = (p.rx, p.dev.rx_fd()) {
            let _ = self.epoll.delete(fd);
        }
        Some(p)
    }

    /// Gives every thread its handle of port `no` (`devs[i]` to thread i), waiting until each
    /// has it. On failure the port is left in no thread.
    pub(crate) fn install(&mut self, no: PortNo, devs: Vec<PortIo>) -> Result<(), DataplaneError> {
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
            PortSpec::Veth {
                name,
                peer,
                domain,
                vnet_hdr,
            } => self.add_veth(
                PortConfig::tap(&name, domain),
                &crate::config::veth_peer_name(&name, peer.as_deref()),
                vnet_hdr,
            ),
            PortSpec::Vxlan {
                name,
                local,
                remote,
                vni,
                dst_port,
                flow_keyed,
            } => self.add_vxlan(&name, local, remote, vni, dst_port, flow_keyed),
        }
    }

    fn remove_port(&mut self, name: &str) -> Result<(), DataplaneError> {
        self.shared.fast_fold();
        let (no, gen) = {
            let mut sw = self.shared.lock();
            let no = sw
                .port_names()
                .port_no(name)
                .ok_or_else(|| PortError::NoSuchPort(name.to_string()))?;
            sw.remove_port(name)?;
            (no, sw.generation())
        };
        self.shared.fast_sync(gen);
        // The port's entries go (their counts fold into the rules) and its TC program is
        // detached while the host end still exists.
        if let Some(f) = self.shared.fast().as_mut() {
            f.detach(no);
        }
        self.shared.fast_fold();
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

    /// `Switch::trace` of `spec`, and a line saying whether the fast path carries the flow.
    fn trace(&mut self, spec: &str) -> Result<String, strata_net::trace::TraceError> {
        let t = {
            let sw = self.shared.lock();
            let now = self.shared.now();
            sw.trace(spec, now)?
        };
        let mut text = t.to_string();
        if let Some(f) = self.shared.fast().as_ref() {
            let k = t.in_key;
            let tpid = if k.vlan_tci() & strata_net::key::VLAN_PRESENT != 0 {
                strata_net::key::ethertype::VLAN
            } else {
                0
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&f.describe(k.in_port(), &k, tpid));
            text.push('\n');
        }
        Ok(text)
    }

    /// This thread's port-layer counters.
    fn io_stats(&self) -> Vec<(PortNo, PortIoStats)> {
        self.ports.iter().map(|(&n, p)| (n, p.io)).collect()
    }

    /// Every counter: the engine's, and the port layer's summed over the threads.
    pub(crate) fn stats(&mut self) -> DataplaneStats {
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
        let fastpath_error = lead.fast_error.clone();
        let fastpath = self.shared.fast().as_ref().map(|f| {
            for (n, s) in io.iter_mut() {
                (s.fast_rx_packets, s.fast_tx_packets) = f.port_packets(*n);
            }
            f.stats()
        });
        let sw = self.shared.lock();
        let now = self.shared.now();
        DataplaneStats {
            ports: sw
                .ports()
                .map(|(n, cfg, st)| {
                    PortCounters::new(
                        n,
                        cfg.name.clone(),
                        st,
                        io.get(&n).copied().unwrap_or_default(),
                        sw.port_rates(n, now).unwrap_or_default(),
                    )
                })
                .collect(),
            switch: sw.stats(),
            pipeline: sw.pipeline_stats(),
            unknown_tunnel_remote,
            thread_rx_frames,
            fastpath,
            fastpath_error,
        }
    }
}
