//! Linux port I/O: TAP devices with virtio-net offloads, veth pairs (rtnetlink) and the
//! `AF_PACKET` sockets with a mapped ring that read and write their host ends, the VXLAN receive UDP socket and the
//! raw IP socket VXLAN output goes out on, epoll, eventfd, network namespaces and synchronous
//! signals. The only module of the crate allowed to use `unsafe`.
//!
//! Invariants:
//! - every file descriptor is held in an [`OwnedFd`] (or a std socket), so it is closed exactly
//!   once, when its owner drops;
//! - every fd this module opens is non-blocking and close-on-exec;
//! - buffers passed to the kernel are Rust slices whose length is passed with them, so the
//!   kernel never writes past what we own.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub mod netlink;
pub mod packet;
pub mod raw;
pub mod tap;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub use netlink::{delete_link, if_index, VethPair};
pub use packet::{PacketOptions, PacketSocket, RecvBatch};
pub use raw::{ifindex_of_addr, route_mtu, RawIpSocket};
pub use tap::{set_link_up, Tap, TapOptions};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `std::time::Instant` on Linux and of the
/// kernel's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec on our stack; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Maps a libc return value (-1 = error) to an `io::Result`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Maps a libc `ssize_t` return value (-1 = error) to an `io::Result`.
fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness event: the token registered with the fd.
pub type EpollToken = u64;

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; on success it returns a fresh fd we now own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for readability (level-triggered), reporting `token`.
    pub fn add(&self, fd: RawFd, token: EpollToken) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event on our stack for the duration of the call; the
        // kernel copies it. An invalid `fd` is reported as an error, not UB.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1 = forever) and appends the tokens of ready fds to `out`
    /// (cleared first). EINTR returns with no events.
    pub fn wait(&self, out: &mut Vec<EpollToken>, timeout_ms: i32) -> io::Result<()> {
        const MAX: usize = 64;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        out.clear();
        // SAFETY: `evs` is a writable array of MAX epoll_event and we pass MAX as its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr(),
                MAX as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        out.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// An eventfd used to wake the dataplane thread when a control message is queued.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; on success the kernel returns a fresh fd we now own.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Raw fd (for epoll).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Adds 1 to the counter (wakes a waiter).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: we pass a pointer to an 8-byte value and length 8, as eventfd requires. A
        // full counter (EAGAIN) still leaves the fd readable, which is all we need.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: we pass a pointer to an 8-byte writable value and length 8.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Moves the calling thread into the network namespace at `path` (e.g.
/// `/var/run/netns/NAME`). Everything the thread opens afterwards (TAP devices, sockets) lives
/// in that namespace; other threads are unaffected.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: `f` is an open fd for the duration of the call; setns takes no pointers.
    cvt(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// `SO_NO_CHECK` (asm-generic/socket.h): send UDP datagrams with a zero checksum.
const SO_NO_CHECK: libc::c_int = 11;

pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a c_int on our stack with its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Opens the receive socket of a VXLAN endpoint: bound to `local:port`, non-blocking, with
/// large buffers so bursts of segments are not dropped. (Sending goes through a
/// [`RawIpSocket`]; the send options below, UDP checksum 0 and no DF, only matter to a caller
/// that sends on it.)
pub fn vxlan_socket(local: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(local, port))?;
    s.set_nonblocking(true)?;
    let fd = s.as_fd().as_raw_fd();
    setsockopt_int(fd, libc::SOL_SOCKET, SO_NO_CHECK, 1)?;
    setsockopt_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    // Best effort: without CAP_NET_ADMIN the FORCE variants fail; the plain ones are capped.
    for (force, plain) in [
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, 4 << 20).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, 4 << 20);
        }
    }
    Ok(s)
}

/// Sends several datagrams (or, on a raw socket, IP packets) to `dst` with one `sendmmsg`
/// call. Each is the concatenation of its two parts (a header and a body, so nothing is copied
/// to join them). Returns how many were sent; the rest would block and are the caller's to
/// drop or retry.
pub fn send_datagrams(
    sock: &impl AsRawFd,
    dst: SocketAddrV4,
    parts: &[(&[u8], &[u8])],
) -> io::Result<usize> {
    const MAX: usize = 64;
    let addr = sockaddr_in(dst);
    let mut sent = 0;
    while sent < parts.len() {
        let n = (parts.len() - sent).min(MAX);
        let mut iovs = [[libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2]; MAX];
        // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value.
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let (h, b) = parts[sent + i];
            iovs[i][0] = libc::iovec {
                iov_base: h.as_ptr() as *mut libc::c_void,
                iov_len: h.len(),
            };
            iovs[i][1] = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
            msgs[i].msg_hdr.msg_name = (&addr as *const libc::sockaddr_in) as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            msgs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = 2;
        }
        // SAFETY: `msgs[..n]` point at `iovs[i]` (2 entries each) and at `addr`, all alive on
        // our stack during the call; the iovecs point into `parts`, which the caller borrows
        // for the call. sendmmsg only reads them.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if sent > 0 || e.kind() == io::ErrorKind::WouldBlock {
                return Ok(sent);
            }
            return Err(e);
        }
        sent += r as usize;
        if (r as usize) < n {
            break;
        }
    }
    Ok(sent)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Receives one datagram without blocking: (length, source). `Ok(None)` when none is queued.
pub fn recv_datagram(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddrV4)>> {
    match sock.recv_from(buf) {
        Ok((n, std::net::SocketAddr::V4(a))) => Ok(Some((n, a))),
        Ok((n, std::net::SocketAddr::V6(a))) => {
            // Not bound to IPv6, so this does not happen; report the mapped address anyway.
            let ip = a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
            Ok(Some((n, SocketAddrV4::new(ip, a.port()))))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// A set of signals blocked in the calling thread and taken synchronously with
/// [`SignalSet::wait`]. Block them before spawning threads: threads inherit the mask, so the
/// signals are only ever delivered through `wait`.
#[derive(Debug)]
pub struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    /// Blocks `signals` in the calling thread.
    pub fn block(signals: &[libc::c_int]) -> io::Result<Self> {
        // SAFETY: sigset_t is a plain bit array; all-zero is a valid (empty) value, and
        // sigemptyset/sigaddset only write inside it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &s in signals {
            // SAFETY: as above; an invalid signal number is reported as an error.
            cvt(unsafe { libc::sigaddset(&mut set, s) })?;
        }
        // SAFETY: `set` is initialized; the old-mask pointer may be null.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(SignalSet { set })
    }

    /// Waits for one of the signals and returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialized sigset_t and `sig` a writable c_int.
        let r = unsafe { libc::sigwait(&self.set, &mut sig) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(sig)
    }
}
