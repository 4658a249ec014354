//! What one forwarding thread holds per port ([`PortIo`]: its handle of the device and its
//! counters) and the reusable buffers of its hot path ([`Bufs`]). Vocabulary of the threads,
//! imported by the receive and transmit files, importing none of them.

use std::sync::Arc;

use strata_net::gso::{Segments, VIRTIO_NET_HDR_LEN};
use strata_net::Effects;

use crate::encap::VxlanTx;
use crate::stats::PortIoStats;
use crate::sys::{PacketSocket, Tap, VethPair};

/// Receive buffer: the virtio-net header plus the largest frame a TAP hands over (64 KiB of
/// IP plus Ethernet and VLAN headers), rounded up.
pub(crate) const RX_BUF: usize = VIRTIO_NET_HDR_LEN + 65_535 + 64;

/// The device behind a port, as one thread sees it.
#[derive(Debug)]
pub(crate) enum Dev {
    /// This thread's queue of the TAP (shared with other threads if the device has fewer
    /// queues than there are threads).
    Tap(Arc<Tap>),
    /// A veth port's host end: its packet socket (one thread reads the ring, any thread
    /// sends).
    Veth(Arc<Veth>),
    /// The VXLAN port's sender (any thread may send on it). `idx` names the receive socket,
    /// which only the leader reads.
    Vxlan { tx: Arc<VxlanTx>, idx: usize },
}

/// A veth port's device: the pair (deleted when the last thread drops this) and the socket
/// on its host end. Field order: the socket closes before the pair is deleted.
#[derive(Debug)]
pub(crate) struct Veth {
    pub(crate) sock: PacketSocket,
    /// The host end's interface index (where the fast path redirects to, for the peer).
    pub(crate) ifindex: u32,
    /// The fast path's programs are attached to the host end and its socket: its established
    /// flows to other veth ports may be carried in the kernel.
    pub(crate) fast: bool,
    /// Held for its `Drop`, which deletes both ends.
    pub(crate) _pair: VethPair,
}

impl Dev {
    /// The fd this thread waits on when it reads the port, if the port is read by epoll.
    pub(crate) fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Dev::Tap(t) => Some(t.raw()),
            Dev::Veth(v) => Some(v.sock.raw()),
            Dev::Vxlan { .. } => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct PortIo {
    pub(crate) dev: Dev,
    /// This thread reads the device (a TAP queue of its own).
    pub(crate) rx: bool,
    pub(crate) io: PortIoStats,
}

/// Reusable buffers of the hot path: the receive buffer, the engine's effects, and what the
/// transmit path needs.
#[derive(Debug)]
pub(crate) struct Bufs {
    pub(crate) rx: Vec<u8>,
    pub(crate) fx: Effects,
    pub(crate) tx: TxBufs,
}

/// The transmit path's scratch space.
#[derive(Debug)]
pub(crate) struct TxBufs {
    pub(crate) segs: Segments,
    pub(crate) scratch: Vec<u8>,
    pub(crate) joined: Vec<u8>,
    /// Outer IPv4 fragments being built (VXLAN output larger than the underlay MTU).
    pub(crate) frags: Vec<u8>,
}

impl Bufs {
    pub(crate) fn new() -> Self {
        let mut fx = Effects::new();
        fx.set_split(true);
        // Hints cost a copy of the rule list for results that could be repeated without the
        // engine; only veth ports with the fast path act on them.
        fx.set_offload_hints(true);
        Bufs {
            rx: vec![0; RX_BUF],
            fx,
            tx: TxBufs {
                segs: Segments::new(),
                scratch: Vec::with_capacity(RX_BUF),
                joined: Vec::with_capacity(RX_BUF),
                frags: Vec::with_capacity(RX_BUF + 4096),
            },
        }
    }
}

/// The receive socket shared by the VXLAN ports of one local address and UDP port (only the
/// leader reads it), and which remote VTEP is which port.
#[derive(Debug)]
pub(crate) struct VxSock {
    pub(crate) sock: std::net::UdpSocket,
    pub(crate) local: std::net::SocketAddrV4,
    pub(crate) members: Vec<(std::net::Ipv4Addr, strata_net::PortNo)>,
}
