//! An `AF_PACKET` socket bound to one interface (a veth port's host end): a `TPACKET_V3`
//! receive ring mapped into our memory, and transmit by `writev` of one frame at a time.
//!
//! Setup order matters to the kernel: the socket is made with protocol 0 (it receives nothing
//! until bound, so it never sees another interface's frames), then `PACKET_VERSION`,
//! `PACKET_VNET_HDR` (refused once a ring exists), `PACKET_IGNORE_OUTGOING` (our own transmitted
//! frames are not looped back to us), `PACKET_RX_RING`, `mmap`, the caller's hook (the fast
//! path's socket filter, so no frame is received unfiltered), and last `bind` to the
//! interface with `ETH_P_ALL`.
//!
//! # Invariants
//! - The ring is unmapped before the socket is closed (field order and `Drop`).
//! - A block is read only while its `block_status` has `TP_STATUS_USER` (read with acquire
//!   ordering), and handed back with a release store of `TP_STATUS_KERNEL` after the last read
//!   of it; blocks are consumed in ring order, which is the order the kernel retires them.
//! - Only one caller at a time walks the ring (the cursor is behind a mutex), so a block is
//!   never handed back while another thread still reads it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::{cvt, cvt_size, setsockopt_int};

const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TPACKET_V3: libc::c_int = 2;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// Offset of `block_status` in `struct tpacket_block_desc`.
const BLOCK_STATUS_AT: usize = 8;

/// `struct tpacket_req3`.
#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// How to open a packet socket.
#[derive(Debug, Clone, Copy)]
pub struct PacketOptions {
    /// Exchange a virtio-net header with every frame (`PACKET_VNET_HDR`): GSO frames of up to
    /// 64 KiB and partial checksums pass whole, as on a TAP with offloads.
    pub vnet_hdr: bool,
    /// Bytes per ring block (a multiple of the page size, holding at least one 64 KiB frame).
    pub block_size: u32,
    /// Blocks in the ring.
    pub blocks: u32,
    /// Milliseconds after which the kernel hands over a block that is not full.
    pub retire_ms: u32,
}

impl Default for PacketOptions {
    fn default() -> Self {
        PacketOptions {
            vnet_hdr: true,
            block_size: 256 << 10,
            blocks: 32,
            retire_ms: 1,
        }
    }
}

/// The mapped receive ring.
#[derive(Debug)]
struct Ring {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only read through
// `PacketSocket::rx_blocks`, which serializes readers with the cursor mutex.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, and nothing borrows the
        // mapping any more (borrows of a block end inside `rx_blocks`).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A packet socket bound to one interface, with its receive ring.
#[derive(Debug)]
pub struct PacketSocket {
    // Field order: the ring is unmapped before the fd closes.
    ring: Ring,
    fd: OwnedFd,
    opts: PacketOptions,
    /// The next block to read.
    cursor: Mutex<u32>,
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
        setsockopt_int(raw, SOL_PACKET, PACKET_VERSION, TPACKET_V3)?;
        if opts.vnet_hdr {
            setsockopt_int(raw, SOL_PACKET, PACKET_VNET_HDR, 1)?;
        }
        setsockopt_int(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20).is_err() {
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        }
        let req = TpacketReq3 {
            block_size: opts.block_size,
            block_nr: opts.blocks,
            frame_size: opts.block_size,
            frame_nr: opts.blocks,
            retire_blk_tov: opts.retire_ms,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        // SAFETY: PACKET_RX_RING reads one `struct tpacket_req3`, which `req` is (#[repr(C)],
        // seven u32), alive for the call; we pass its exact size.
        cvt(unsafe {
            libc::setsockopt(
                raw,
                SOL_PACKET,
                PACKET_RX_RING,
                (&req as *const TpacketReq3).cast(),
                std::mem::size_of::<TpacketReq3>() as libc::socklen_t,
            )
        })?;
        let len = opts.block_size as usize * opts.blocks as usize;
        // SAFETY: a fresh shared mapping of the ring the kernel just allocated for this fd;
        // no existing memory is touched. Failure is MAP_FAILED, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = Ring {
            base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        };
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
        Ok(PacketSocket {
            ring,
            fd,
            opts,
            cursor: Mutex::new(0),
        })
    }

    /// Raw fd (for epoll: readable when a block is retired).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True if frames carry a virtio-net header.
    pub fn vnet_hdr(&self) -> bool {
        self.opts.vnet_hdr
    }

    fn status(&self, block: u32) -> &AtomicU32 {
        let at = block as usize * self.opts.block_size as usize + BLOCK_STATUS_AT;
        // SAFETY: `at` is inside the mapping (block < blocks) and 4-byte aligned (blocks are
        // page-aligned); the kernel updates this word concurrently, so it is only accessed
        // as an atomic, which has the layout of a u32.
        unsafe { &*self.ring.base.as_ptr().add(at).cast::<AtomicU32>() }
    }

    /// Hands each retired block (up to `max`) to `f`, then back to the kernel. Returns how
    /// many blocks were read.
    pub fn rx_blocks(&self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut cur = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < max {
            let st = self.status(*cur);
            if st.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let bs = self.opts.block_size as usize;
            // SAFETY: the block is inside the mapping, and while its status says USER the
            // kernel does not write it (the TPACKET_V3 protocol); the slice does not outlive
            // this iteration, and the block is handed back only after `f` returns.
            let block = unsafe {
                std::slice::from_raw_parts(self.ring.base.as_ptr().add(*cur as usize * bs), bs)
            };
            f(block);
            st.store(TP_STATUS_KERNEL, Ordering::Release);
            *cur = (*cur + 1) % self.opts.blocks;
            n += 1;
        }
        n
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
