//! TAP devices with the virtio-net header (`IFF_VNET_HDR`) and offloads (`TUNSETOFFLOAD`).
//!
//! Every frame read or written is preceded by a 12-byte [`strata_net::gso::VirtioNetHdr`] (the
//! `virtio_net_hdr_mrg_rxbuf` form: `TUNSETVNETHDRSZ 12`). We chose 12 over 10 because it is
//! the form virtio 1.0 devices use and the one `gso.rs` already freezes; `num_buffers` is
//! always 0 from the kernel and ignored on write.
//!
//! With offloads on (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN`) the kernel hands
//! us TCP frames of up to 64 KiB with a partial checksum (`NEEDS_CSUM`) and accepts the same
//! from us, so a flow between two such ports is never segmented nor checksummed by the switch.
//!
//! [`Tap::open_queues`] opens a multi-queue device (`IFF_MULTI_QUEUE`): one fd per queue, each
//! read by one dataplane thread. The kernel puts a frame it sends us on the queue where we last
//! wrote a frame of the same flow (tun's automatic flow steering, a symmetric flow hash), else on
//! one picked by that hash, so both directions of a TCP connection stay on one queue and so on
//! one thread.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{cvt, cvt_size};
use strata_net::gso::VIRTIO_NET_HDR_LEN;

/// `struct ifreq` as the TUN and SIOC* ioctls use it: a name and a 24-byte union, of which we
/// use the leading `short` (flags), `int` (mtu) or `sockaddr` (hardware address).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) || b.contains(&b'/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name `{name}` (1 to 15 bytes, no `/`)"),
            ));
        }
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..b.len()].copy_from_slice(b);
        Ok(r)
    }
    fn flags(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }
    fn set_flags(&mut self, f: i16) {
        self.data[..2].copy_from_slice(&f.to_ne_bytes());
    }
    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
    fn name(&self) -> String {
        CStr::from_bytes_until_nul(&self.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// How to open a TAP.
#[derive(Debug, Clone, Copy)]
pub struct TapOptions {
    /// Negotiate checksum and TSO offloads (the fast path). Off: the kernel sends complete,
    /// MTU-sized frames, and the switch must segment what it writes to this TAP.
    pub offload: bool,
    /// Bring the interface up after opening it.
    pub up: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            offload: true,
            up: true,
        }
    }
}

/// An open TAP device (non-blocking). The device disappears when the fd closes, unless it was
/// made persistent by someone else.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    offload: bool,
}

/// Offload flags we negotiate.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

impl Tap {
    /// Opens (creating it if missing) the TAP device `name` in the calling thread's network
    /// namespace, with one queue.
    pub fn open(name: &str, opts: TapOptions) -> io::Result<Tap> {
        let tap = Self::open_fd(name, opts, false)?;
        if opts.up {
            set_link_up(&tap.name)?;
        }
        Ok(tap)
    }

    /// Opens `queues` queues of the multi-queue TAP device `name` (created if missing), one fd
    /// each. With `queues <= 1`, or if `name` exists as a single-queue device (the kernel then
    /// refuses `IFF_MULTI_QUEUE` with EINVAL), returns one single-queue fd as [`Tap::open`].
    pub fn open_queues(name: &str, opts: TapOptions, queues: usize) -> io::Result<Vec<Tap>> {
        if queues <= 1 {
            return Ok(vec![Self::open(name, opts)?]);
        }
        let first = match Self::open_fd(name, opts, true) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok(vec![Self::open(name, opts)?]);
            }
            Err(e) => return Err(e),
        };
        let mut v = vec![first];
        for _ in 1..queues {
            v.push(Self::open_fd(&v[0].name, opts, true)?);
        }
        if opts.up {
            set_link_up(&v[0].name)?;
        }
        Ok(v)
    }

    fn open_fd(name: &str, opts: TapOptions, multi_queue: bool) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let fd: OwnedFd = file.into();
        let mut req = IfReq::new(name)?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.set_flags(flags as i16);
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is a #[repr(C)] struct
        // of exactly that size (40 bytes) that lives across the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) })?;
        let hdr_len = VIRTIO_NET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one c_int through the pointer, which is valid.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) })?;
        let offload = opts.offload;
        let flags: libc::c_uint = if offload { OFFLOADS } else { 0 };
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long); no pointers.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) })?;
        Ok(Tap {
            fd,
            name: req.name(),
            offload,
        })
    }

    /// Interface name as the kernel reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if checksum and TSO offloads were negotiated.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Raw fd (for epoll).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads one frame with its 12-byte virtio-net header into `buf`. Returns the total length
    /// (header included), or `None` if nothing is queued. `buf` should hold 65,550 bytes: a
    /// shorter buffer truncates large frames.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is a writable slice and we pass its exact length.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_size(r) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one frame preceded by its virtio-net header (one `writev`, no copy to join them).
    pub fn send(&self, hdr: &[u8; VIRTIO_NET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        self.send_parts(hdr, frame, &[])
    }

    /// Writes one frame made of `head` then `tail`, preceded by its virtio-net header (one
    /// `writev`: the switch rewrites only the head of a frame and passes the rest as received).
    pub fn send_parts(
        &self,
        hdr: &[u8; VIRTIO_NET_HDR_LEN],
        head: &[u8],
        tail: &[u8],
    ) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: tail.as_ptr() as *mut libc::c_void,
                iov_len: tail.len(),
            },
        ];
        let n = if tail.is_empty() { 2 } else { 3 };
        // SAFETY: `n` iovecs pointing at borrowed, live slices with their exact lengths; the
        // kernel only reads them.
        cvt_size(unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), n) })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        let mut req = IfReq::new(&self.name)?;
        with_ctl_socket(|s| {
            // SAFETY: SIOCGIFHWADDR fills one `struct ifreq`, which `req` is (see IfReq).
            cvt(unsafe { libc::ioctl(s, libc::SIOCGIFHWADDR, &mut req) }).map(|_| ())
        })?;
        // The union holds a `struct sockaddr`: 2 bytes of family, then the address.
        let mut m = [0u8; 6];
        m.copy_from_slice(&req.data[2..8]);
        Ok(m)
    }
}

/// Runs `f` with a throwaway datagram socket, the handle the SIOC* interface ioctls need.
fn with_ctl_socket<T>(f: impl FnOnce(RawFd) -> io::Result<T>) -> io::Result<T> {
    // SAFETY: no pointers; on success we own the returned fd and wrap it immediately.
    let s = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `s` is a fresh fd owned by nobody else; OwnedFd closes it on every path.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    f(owned.as_raw_fd())
}

/// Sets `IFF_UP` on interface `name` (in the calling thread's namespace) with
/// `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, the equivalent of `ip link set NAME up`.
pub fn set_link_up(name: &str) -> io::Result<()> {
    let mut req = IfReq::new(name)?;
    with_ctl_socket(|s| {
        // SAFETY: SIOCGIFFLAGS fills one `struct ifreq`, which `req` is.
        cvt(unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) })?;
        req.set_flags(req.flags() | libc::IFF_UP as i16);
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq`, which `req` is.
        cvt(unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) })?;
        Ok(())
    })
}

/// Sets the MTU of interface `name` (`SIOCSIFMTU`).
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mut req = IfReq::new(name)?;
    req.set_int(mtu as i32);
    with_ctl_socket(|s| {
        // SAFETY: SIOCSIFMTU reads one `struct ifreq`, which `req` is.
        cvt(unsafe { libc::ioctl(s, libc::SIOCSIFMTU, &req) }).map(|_| ())
    })
}
