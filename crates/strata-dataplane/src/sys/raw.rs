//! The raw IPv4 socket VXLAN output is sent on (`IPPROTO_RAW`: the caller writes the IPv4
//! header, `IP_HDRINCL` is implied, and the socket receives nothing), and the route MTU query
//! that tells the sender when to fragment.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, setsockopt_int};

/// A send-only raw IPv4 socket, non-blocking and close-on-exec, with a 4 MiB send buffer.
#[derive(Debug)]
pub struct RawIpSocket {
    fd: OwnedFd,
}

impl RawIpSocket {
    /// Opens the socket (needs `CAP_NET_RAW`).
    pub fn new() -> io::Result<Self> {
        // SAFETY: socket takes no pointers; on success it returns a fresh fd we now own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Best effort, as for the UDP socket: the FORCE variant needs CAP_NET_ADMIN.
        let raw = fd.as_raw_fd();
        if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20).is_err() {
            let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        }
        Ok(RawIpSocket { fd })
    }
}

impl AsRawFd for RawIpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// MTU of the route from `local` to `remote` (what a raw socket may send unfragmented): a UDP
/// socket connected there reports it with `IP_MTU`. No packet is sent.
pub fn route_mtu(local: Ipv4Addr, remote: Ipv4Addr, port: u16) -> io::Result<usize> {
    let s = UdpSocket::bind(SocketAddrV4::new(local, 0))?;
    s.connect(SocketAddrV4::new(remote, port))?;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are writable locals of the sizes we pass; the kernel writes at most
    // `len` bytes into `v` and updates `len`.
    cvt(unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v.max(0) as usize)
}

/// Index of the interface that holds IPv4 address `addr` (the underlay device of a tunnel
/// whose local address it is), from `getifaddrs`.
pub fn ifindex_of_addr(addr: Ipv4Addr) -> io::Result<u32> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocated into `list`, which we free
    // below with freeifaddrs and never use after.
    cvt(unsafe { libc::getifaddrs(&mut list) })?;
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed; its
        // `ifa_addr` is null or points to a sockaddr whose family says its type, and its
        // `ifa_name` to a NUL-terminated name.
        unsafe {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                if u32::from_be(sin.sin_addr.s_addr) == u32::from(addr) {
                    let idx = libc::if_nametoindex(ifa.ifa_name);
                    if idx != 0 {
                        found = Some(idx);
                        break;
                    }
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface has {addr}")))
}
