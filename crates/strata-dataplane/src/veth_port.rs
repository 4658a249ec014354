//! veth ports: making the pair, opening the packet socket on its host end, and the receive
//! path of its socket. The pair itself is `sys::netlink`, the socket and its `recvmmsg`
//! `sys::packet`, the reading of one received message `rx`.
//!
//! Invariants:
//! - One thread reads a veth port's socket (thread `port number % threads`, so two ports of one
//!   switch are read by different threads when there are two); every thread may send on its
//!   socket.
//! - The pair lives exactly as long as the port: it is made before the port joins the switch
//!   and deleted when the last thread drops its handle (port removal, switch stop, or a
//!   failed add).
//! - A frame the kernel cut short (it did not fit the buffer) is counted in `rx_errors` and
//!   dropped, never forwarded truncated.

use std::sync::Arc;

use strata_net::gso::{self, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use strata_net::key::PortNo;
use strata_net::switch::PortConfig;
use strata_net::Ingress;

use crate::deliver::deliver;
use crate::error::DataplaneError;
use crate::fastpath::plan::Out;
use crate::port::{Bufs, Dev, PortIo, Veth};
use crate::rx::{self, RxFrame, PACKET_VNET_HDR_LEN};
use crate::stats::PortIoStats;
use crate::sys::{self, PacketOptions, PacketSocket, VethPair};
use crate::worker::Worker;

/// Frames one `recvmmsg` call takes (the batch's size: 32 buffers of 64 KiB per thread).
const FRAMES_PER_CALL: usize = 32;
/// Calls made on one port per wake-up before the other ports get a turn.
const CALLS_PER_WAKE: usize = 4;

impl Worker {
    pub(crate) fn add_veth(
        &mut self,
        cfg: PortConfig,
        peer: &str,
        vnet_hdr: bool,
    ) -> Result<PortNo, DataplaneError> {
        let name = cfg.name.clone();
        if peer == name {
            // Both ends cannot have one name: the peer's is taken by the port itself.
            return Err(DataplaneError::DeviceExists(name));
        }
        for n in [name.as_str(), peer] {
            if n.is_empty() || n.len() > 15 || n.contains('/') {
                return Err(DataplaneError::io(
                    format!("creating veth {name}"),
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("bad interface name `{n}` (1 to 15 bytes, no `/`)"),
                    ),
                ));
            }
            if sys::if_index(n).is_some() {
                return Err(DataplaneError::DeviceExists(n.to_string()));
            }
        }
        let pair = VethPair::create(&name, peer).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                DataplaneError::DeviceExists(name.clone())
            } else {
                DataplaneError::io(format!("creating veth {name}"), e)
            }
        })?;
        // From here on, dropping `pair` deletes both ends again.
        let up = (|| {
            sys::set_link_up(&name)?;
            // The host end is the switch's wire, not a host interface: no IPv6 link-local
            // address, router solicitations or neighbour discovery of its own (best effort).
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            sys::if_index(&name).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))
        })();
        let idx =
            up.map_err(|e| DataplaneError::io(format!("opening packet socket on {name}"), e))?;
        // The fast path: the TC program on the host end first, then the socket with its
        // filter (attached before the socket is bound, so it sees every frame). A failure
        // leaves this port on the slow path, with one log line.
        let link = if vnet_hdr && self.ensure_fast() {
            match self.shared.fast().as_mut().map(|f| f.attach_tc(&name)) {
                Some(Ok(l)) => Some(l),
                Some(Err(e)) => {
                    tracing::warn!(port = %name, error = %e, "fast path not attached; the port uses the slow path");
                    None
                }
                None => None,
            }
        } else {
            None
        };
        let opts = PacketOptions {
            vnet_hdr,
            ..PacketOptions::default()
        };
        let fast = link.is_some();
        let shared = self.shared.clone();
        let opened = PacketSocket::open_with(idx, opts, |fd| match shared.fast().as_ref() {
            Some(f) if fast => f.attach_filter(fd),
            _ => Ok(()),
        });
        let undo = |w: &Worker, link: Option<crate::fastpath::LinkId>| {
            if let (Some(l), Some(f)) = (link, w.shared.fast().as_mut()) {
                f.drop_link(l);
            }
        };
        let sock = match opened {
            Ok(s) => s,
            Err(e) => {
                undo(self, link);
                return Err(DataplaneError::io(
                    format!("opening packet socket on {name}"),
                    e,
                ));
            }
        };
        let dev = Arc::new(Veth {
            sock,
            ifindex: idx,
            fast,
            _pair: pair,
        });
        let added = self.shared.lock().add_port(cfg);
        let no = match added {
            Ok(no) => no,
            Err(e) => {
                undo(self, link);
                return Err(e.into());
            }
        };
        if let (Some(l), Some(f)) = (link, self.shared.fast().as_mut()) {
            f.register(no, idx, l);
        }
        let threads = self.threads();
        let reader = no as usize % threads;
        let devs = (0..threads)
            .map(|i| PortIo {
                dev: Dev::Veth(dev.clone()),
                rx: i == reader,
                io: PortIoStats::default(),
            })
            .collect();
        drop(dev);
        if let Err(e) = self.install(no, devs) {
            let _ = self.shared.lock().remove_port(&name);
            if let Some(f) = self.shared.fast().as_mut() {
                f.detach(no);
            }
            return Err(e);
        }
        Ok(no)
    }

    /// Reads the frames waiting on veth port `no`'s socket (up to [`CALLS_PER_WAKE`] calls
    /// of [`FRAMES_PER_CALL`]) and forwards each.
    pub(crate) fn rx_veth(&mut self, no: PortNo) {
        let Some(PortIo {
            dev: Dev::Veth(v), ..
        }) = self.ports.get(&no)
        else {
            return;
        };
        let v = v.clone();
        let vnet = v.sock.vnet_hdr();
        let fast = v.fast.then_some(v.ifindex);
        let mut batch = self
            .veth_rx
            .take()
            .unwrap_or_else(|| sys::RecvBatch::new(FRAMES_PER_CALL));
        for _ in 0..CALLS_PER_WAKE {
            if let Some(p) = self.ports.get_mut(&no) {
                p.io.syscalls += 1;
            }
            let n = match v.sock.recv(&mut batch) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(port = no, error = %e, "veth receive failed");
                    if let Some(p) = self.ports.get_mut(&no) {
                        p.io.rx_errors += 1;
                    }
                    0
                }
            };
            for i in 0..n {
                let (data, cut, control) = batch.message(i);
                match rx::frame(data, cut, control, vnet) {
                    Some(f) => self.rx_frame(no, fast, &f),
                    None => {
                        if let Some(p) = self.ports.get_mut(&no) {
                            p.io.rx_errors += 1;
                        }
                    }
                }
            }
            if n < FRAMES_PER_CALL {
                break;
            }
        }
        self.veth_rx = Some(batch);
    }

    /// Forwards one frame received on port `no`; `fast` is the port's host-end ifindex when the
    /// fast path is attached to it, and then a result the kernel can repeat is offered to it.
    fn rx_frame(&mut self, no: PortNo, fast: Option<u32>, f: &RxFrame<'_>) {
        if f.len > f.data.len() {
            if let Some(p) = self.ports.get_mut(&no) {
                p.io.rx_errors += 1;
            }
            return;
        }
        let mut hdr = match f.vnet {
            Some(h) => {
                let mut b = [0u8; VIRTIO_NET_HDR_LEN];
                b[..PACKET_VNET_HDR_LEN].copy_from_slice(h);
                match VirtioNetHdr::parse(&b) {
                    Ok(h) => h,
                    Err(_) => return,
                }
            }
            None => VirtioNetHdr::default(),
        };
        if hdr.gso_type != gso::GSO_NONE {
            if let Some(p) = self.ports.get_mut(&no) {
                p.io.rx_gso += 1;
            }
        }
        self.rx_frames += 1;
        let Bufs { rx, fx, tx } = &mut self.bufs;
        // The kernel took an 802.1Q tag out of the frame (veth offloads VLAN receive): put
        // it back where it was, so the switch sees the frame as sent, and move the offload
        // offsets with it.
        let frame: &[u8] = match f.vlan {
            Some((tpid, tci)) if f.data.len() >= 12 && f.data.len() + 4 <= rx.len() => {
                let n = f.data.len();
                rx[..12].copy_from_slice(&f.data[..12]);
                rx[12..14].copy_from_slice(&tpid.to_be_bytes());
                rx[14..16].copy_from_slice(&tci.to_be_bytes());
                rx[16..n + 4].copy_from_slice(&f.data[12..]);
                if hdr.flags & gso::F_NEEDS_CSUM != 0 {
                    hdr.csum_start += 4;
                }
                if hdr.hdr_len != 0 {
                    hdr.hdr_len += 4;
                }
                &rx[..n + 4]
            }
            _ => f.data,
        };
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
        if let (Some(in_if), Some(o)) = (fast, fx.offload()) {
            let out = match self.ports.get(&o.out_port).map(|p| &p.dev) {
                // Whole offloaded frames on both sides, as the slow path writes them.
                Some(Dev::Veth(v)) if v.sock.vnet_hdr() => Some(Out::Peer(v.ifindex)),
                Some(Dev::Vxlan { tx, .. }) => tx.underlay().map(|ifindex| Out::Vxlan {
                    ifindex,
                    mtu: tx.mtu(),
                    ports: tx.ports(),
                }),
                _ => None,
            };
            if let Some(out) = out {
                self.shared.fast_offer(o, in_if, out, frame);
            }
        }
    }
}
