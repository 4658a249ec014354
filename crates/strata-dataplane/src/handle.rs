//! [`Dataplane`]: the handle to a running dataplane. Every call is a message to the leader
//! thread (an mpsc queue plus an eventfd that wakes it) and a wait for its reply, so calls are
//! ordered with the frames every thread forwards.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use strata_net::{RuleId, Switch};

use crate::config::{DataplaneConfig, PortSpec};
use crate::error::DataplaneError;
use crate::stats::{empty_stats, DataplaneStats};
use crate::sys::EventFd;
use crate::worker::{Cmd, Worker};
use strata_net::key::PortNo;

/// Handle to a running dataplane (its threads). Dropping it stops them and closes the devices.
#[derive(Debug)]
pub struct Dataplane {
    tx: mpsc::Sender<Cmd>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<DataplaneStats>>,
}

/// Interface names the kernel keeps for itself.
pub const RESERVED_NAMES: [&str; 2] = ["all", "default"];

impl Dataplane {
    /// Starts the forwarding threads (in `cfg.netns` if given), with no ports and no rules.
    pub fn spawn(cfg: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let ports = cfg.vxlan_src_ports;
        if ports.lo == 0 || ports.lo > ports.hi {
            return Err(DataplaneError::BadSourcePorts {
                lo: ports.lo,
                hi: ports.hi,
            });
        }
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
        // The kernel keeps `all` and `default` for its per-interface settings
        // (`/proc/sys/net/*/conf/`): no device may take them, as if they existed.
        let names: Vec<&str> = match &spec {
            PortSpec::Tap { name, .. } | PortSpec::Internal { name, .. } => vec![name],
            PortSpec::Veth { name, peer, .. } => [Some(name.as_str()), peer.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            _ => Vec::new(),
        };
        if let Some(n) = names.iter().find(|n| RESERVED_NAMES.contains(n)) {
            return Err(DataplaneError::DeviceExists(n.to_string()));
        }
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
    /// goes through here. The fast path's counts are folded into the switch before `f` runs,
    /// and it has stopped using what `f` changed before this returns.
    pub fn with_switch<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Switch, Duration) -> T + Send + 'static,
    ) -> Result<T, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::Call(Box::new(move |sw, now| {
            let v = f(sw, now);
            Box::new(move || {
                let _ = t.send(v);
            })
        })))?;
        r.recv().map_err(|_| DataplaneError::Stopped)
    }

    /// `Switch::trace` of a packet description (`in_port=NAME,tcp,...`), rendered, with a
    /// last line saying whether the fast path carries the flow when it is loaded.
    pub fn trace(
        &self,
        spec: &str,
    ) -> Result<Result<String, strata_net::trace::TraceError>, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::Trace(spec.to_string(), t))?;
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

    /// Sends one probe (an ICMP echo request from the target's source, `strata_net::probe`)
    /// to each port named, at once; answers how many went out (unknown ports and tunnels are
    /// skipped). The answers show in each port's `probes` counters as they come.
    pub fn probe(
        &self,
        targets: Vec<(PortNo, strata_net::probe::ProbeTarget)>,
    ) -> Result<usize, DataplaneError> {
        let (t, r) = mpsc::channel();
        self.send(Cmd::Probe(targets, t))?;
        r.recv().map_err(|_| DataplaneError::Stopped)
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
