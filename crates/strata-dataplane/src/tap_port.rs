//! TAP ports: opening a port's queues (one per thread) and the receive path of a TAP queue.
//! The device itself (ioctls, offloads, multi-queue) is `sys::tap`.

use std::io;
use std::sync::Arc;

use strata_net::gso::{self, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use strata_net::key::PortNo;
use strata_net::switch::PortConfig;
use strata_net::Ingress;

use crate::deliver::deliver;
use crate::error::DataplaneError;
use crate::port::{Bufs, Dev, PortIo};
use crate::stats::PortIoStats;
use crate::sys::{Tap, TapOptions};
use crate::worker::Worker;

impl Worker {
    pub(crate) fn add_tap(
        &mut self,
        cfg: PortConfig,
        offload: bool,
    ) -> Result<PortNo, DataplaneError> {
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

    /// Reads up to `batch` frames from this thread's queue of TAP port `no` and forwards each.
    pub(crate) fn rx_tap(&mut self, no: PortNo) {
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
            let Bufs { rx, fx, tx } = &mut self.bufs;
            let frame = &rx[VIRTIO_NET_HDR_LEN..n];
            fx.clear();
            let gen = {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                sw.receive(now, Ingress::port(no), frame, fx);
                sw.generation()
            };
            self.shared.fast_sync(gen);
            if !fx.is_empty() {
                deliver(&mut self.ports, fx, tx, &hdr, frame);
            }
        }
    }
}
