//! An `AF_PACKET` socket bound to one interface (a veth port's host end): receive by
//! `recvmmsg` into the caller's batch of buffers, transmit by `writev` of one frame at a time.
//!
//! Setup order matters to the kernel: the socket is made with protocol 0 (it receives nothing
//! until bound, so it never sees another interface's frames), then `PACKET_VNET_HDR`,
//! `PACKET_AUXDATA` (each message says the frame's length and the VLAN tag the kernel took
//! out), `PACKET_IGNORE_OUTGOING` (our own transmitted frames are not looped back to us), the
//! buffer sizes, the caller's hook (the fast path's socket filter, so no frame is received
//! unfiltered), and last `bind` to the interface with `ETH_P_ALL`.
//!
//! Why not a `TPACKET_V3` ring (the first version): the ring hands frames over a block at a
//! time, when the block is full or its retire timer (1 ms at least) fires, which cost every
//! slow-path round trip more than a millisecond (`rx.rs` has the figure).
//!
//! # Invariants
//! - `recvmmsg` is given only iovecs and control buffers that point into the batch's own
//!   buffers, alive and exclusively borrowed for the call, with their exact lengths.
//! - What the kernel reports back (`msg_len`, `msg_controllen`) is clamped to the buffers'
//!   lengths before any slice is made of it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size, setsockopt_int};

const SOL_PACKET: libc::c_int = 263;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const ETH_P_ALL: u16 = 0x0003;

/// Bytes of one receive buffer: the largest GSO frame a veth hands over (64 KiB) with its
/// virtio-net header, and room to spare.
pub const RX_BUF: usize = (64 << 10) + 512;
/// Bytes of one message's control buffer (`CMSG_SPACE(sizeof(struct tpacket_auxdata))` is
/// 40 on 64-bit Linux).
const CONTROL_BUF: usize = 64;
/// The most messages one [`RecvBatch`] holds, so a receive call's headers fit in arrays on
/// the stack (about 5 KiB) instead of being allocated on every call.
pub const MAX_BATCH: usize = 64;

/// How to open a packet socket.
#[derive(Debug, Clone, Copy)]
pub struct PacketOptions {
    /// Exchange a virtio-net header with every frame (`PACKET_VNET_HDR`): GSO frames of up to
    /// 64 KiB and partial checksums pass whole, as on a TAP with offloads.
    pub vnet_hdr: bool,
    /// Bytes of the socket's receive buffer (frames waiting for the switch).
    pub rcvbuf: usize,
}

impl Default for PacketOptions {
    fn default() -> Self {
        PacketOptions {
            vnet_hdr: true,
            rcvbuf: 8 << 20,
        }
    }
}

/// Buffers for one `recvmmsg` call, owned by the thread that reads (a worker): `n` messages
/// of [`RX_BUF`] bytes each, and what the kernel said of each.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    controls: Vec<[u64; CONTROL_BUF / 8]>,
    /// Per message received: (bytes written, MSG_TRUNC set, control bytes written).
    got: Vec<(usize, bool, usize)>,
}

impl RecvBatch {
    /// A batch of `n` messages (at least one, at most [`MAX_BATCH`]).
    pub fn new(n: usize) -> RecvBatch {
        let n = n.clamp(1, MAX_BATCH);
        RecvBatch {
            bufs: (0..n)
                .map(|_| vec![0u8; RX_BUF].into_boxed_slice())
                .collect(),
            controls: vec![[0u64; CONTROL_BUF / 8]; n],
            got: Vec::with_capacity(n),
        }
    }

    /// How many messages the last call received.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// True if the last call received nothing.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }

    /// Message `i` of the last call: (its data, whether it was cut, its control data).
    pub fn message(&self, i: usize) -> (&[u8], bool, &[u8]) {
        let (len, trunc, clen) = self.got[i];
        let c = &self.controls[i];
        // SAFETY: viewing an array of u64 as bytes: same memory, u8 has no alignment or
        // validity requirement, and the length is the array's size in bytes.
        let control = unsafe { std::slice::from_raw_parts(c.as_ptr().cast::<u8>(), CONTROL_BUF) };
        (&self.bufs[i][..len], trunc, &control[..clen])
    }
}

/// A packet socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    opts: PacketOptions,
}

impl PacketSocket {
    /// Opens the socket on interface `ifindex` (in the calling thread's namespace).
    pub fn open(ifindex: u32, opts: PacketOptions) -> io::Result<PacketSocket> {
        Self::open_with(ifindex, opts, |_| Ok(()))
    }

    /// [`PacketSocket::open`], calling `before_bind` on the socket just before it is bound:
    /// a socket filter attached there sees every frame the socket will ever receive.
    pub fn open_with(
        ifindex: u32,
        opts: PacketOptions,
        before_bind: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<PacketSocket> {
        // SAFETY: socket takes no pointers; on success it returns a fresh fd we now own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        if opts.vnet_hdr {
            setsockopt_int(raw, SOL_PACKET, PACKET_VNET_HDR, 1)?;
        }
        setsockopt_int(raw, SOL_PACKET, PACKET_AUXDATA, 1)?;
        setsockopt_int(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20).is_err() {
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        }
        let rcv = opts.rcvbuf.min(i32::MAX as usize) as libc::c_int;
        if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv).is_err() {
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
        }
        before_bind(std::os::fd::AsFd::as_fd(&fd))?;
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll on our stack and we pass its exact size.
        cvt(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, opts })
    }

    /// Raw fd (for epoll: readable when a frame is waiting).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True if frames carry a virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.opts.vnet_hdr
    }

    /// Receives up to the batch's size of waiting frames without blocking (one `recvmmsg`).
    /// Returns how many; 0 when none was waiting.
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.got.clear();
        let n = batch.bufs.len();
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_BATCH];
        for (v, b) in iovs.iter_mut().zip(batch.bufs.iter_mut()) {
            v.iov_base = b.as_mut_ptr().cast();
            v.iov_len = b.len();
        }
        // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value (null name, no
        // iovecs, no control).
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, m) in msgs.iter_mut().take(n).enumerate() {
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = batch.controls[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CONTROL_BUF;
        }
        // SAFETY: the first `n` (at most MAX_BATCH) of `msgs` are headers, each naming one
        // iovec of `iovs` (alive until after the call) that points at a distinct buffer of the
        // batch with its exact length, and a distinct control buffer of CONTROL_BUF bytes; all are exclusively
        // borrowed for the call; no timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for m in msgs.iter().take(r as usize) {
            batch.got.push((
                (m.msg_len as usize).min(RX_BUF),
                m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                m.msg_hdr.msg_controllen.min(CONTROL_BUF),
            ));
        }
        Ok(batch.got.len())
    }

    /// Sends one frame made of `head` then `tail` on the bound interface, preceded by `vnet`
    /// (the 10-byte virtio-net header) when the socket has `PACKET_VNET_HDR`.
    pub fn send_parts(&self, vnet: &[u8], head: &[u8], tail: &[u8]) -> io::Result<usize> {
        let parts: [&[u8]; 3] = [if self.opts.vnet_hdr { vnet } else { &[] }, head, tail];
        let iov = parts.map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        });
        // SAFETY: three iovecs pointing at borrowed, live slices with their exact lengths
        // (empty ones are allowed); the kernel only reads them.
        cvt_size(unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 3) })
    }
}
