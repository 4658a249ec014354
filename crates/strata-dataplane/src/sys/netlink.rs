//! Creating and deleting veth pairs over rtnetlink (`NETLINK_ROUTE`), without the `ip` command.
//!
//! The messages are built by pure functions ([`new_veth_msg`], [`del_link_msg`]) and the
//! kernel's answer is read by [`parse_ack`], so their bytes are unit-tested without a socket;
//! [`Rtnl`] only sends and receives.
//!
//! # `RTM_NEWLINK` for a veth pair (all integers native-endian, attributes padded to 4 bytes)
//! ```text
//! nlmsghdr   len u32 | type u16 = 16 | flags u16 = REQUEST|ACK|CREATE|EXCL | seq u32 | pid u32 = 0
//! ifinfomsg  family u8 = 0 | pad u8 | type u16 | index i32 = 0 | flags u32 | change u32  (16 bytes)
//! IFLA_IFNAME (3)      "NAME\0"
//! IFLA_LINKINFO (18)   nested:
//!   IFLA_INFO_KIND (1)   "veth"
//!   IFLA_INFO_DATA (2)   nested:
//!     VETH_INFO_PEER (1)   ifinfomsg (16 bytes of 0) + IFLA_IFNAME (3) "PEER\0"
//! ```
//! `NLM_F_EXCL` makes an existing name fail with `EEXIST` instead of changing that link.
//! `RTM_DELLINK` (17) carries an ifinfomsg and `IFLA_IFNAME`; deleting one end of a veth pair
//! deletes both, wherever the peer is (another namespace included).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, cvt_size};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (header, payload, padding).
fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// Appends a nested attribute whose payload `f` writes.
fn nested(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    f(buf);
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    buf[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
}

fn cstr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn message(ty: u16, flags: u16, seq: u32, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDR_LEN];
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&[0; IFINFOMSG_LEN]);
    body(&mut m);
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// The `RTM_NEWLINK` request that creates veth `name` with peer `peer` (see the module doc).
pub fn new_veth_msg(seq: u32, name: &str, peer: &str) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    message(RTM_NEWLINK, flags, seq, |m| {
        attr(m, IFLA_IFNAME, &cstr(name));
        nested(m, IFLA_LINKINFO, |m| {
            attr(m, IFLA_INFO_KIND, b"veth");
            nested(m, IFLA_INFO_DATA, |m| {
                nested(m, VETH_INFO_PEER, |m| {
                    m.extend_from_slice(&[0; IFINFOMSG_LEN]);
                    attr(m, IFLA_IFNAME, &cstr(peer));
                });
            });
        });
    })
}

/// The `RTM_DELLINK` request that deletes link `name`.
pub fn del_link_msg(seq: u32, name: &str) -> Vec<u8> {
    message(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, |m| {
        attr(m, IFLA_IFNAME, &cstr(name))
    })
}

/// Reads the kernel's answer to request `seq`: `Ok(Some(()))` for an ack, `Ok(Some(Err(errno)))`
/// for a refusal, `Ok(None)` if `buf` holds no answer to `seq` (read again). A message that
/// does not fit its own length is an error.
pub fn parse_ack(buf: &[u8], seq: u32) -> io::Result<Option<Result<(), i32>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink answer");
    let mut at = 0;
    while at + NLMSG_HDR_LEN <= buf.len() {
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let len = u32_at(at) as usize;
        if len < NLMSG_HDR_LEN || at + len > buf.len() {
            return Err(bad());
        }
        let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if ty == NLMSG_ERROR && u32_at(at + 8) == seq {
            if len < NLMSG_HDR_LEN + 4 {
                return Err(bad());
            }
            let err = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
            return Ok(Some(if err == 0 { Ok(()) } else { Err(-err) }));
        }
        at += align4(len);
    }
    Ok(None)
}

/// An rtnetlink socket (close-on-exec), used for one request at a time.
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: socket takes no pointers; on success it returns a fresh fd we now own.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rtnl { fd, seq: 1 })
    }

    /// Sends the request `build(seq)` makes and waits for its ack; a refusal is the kernel's
    /// errno as an `io::Error`.
    fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = build(seq);
        // SAFETY: `msg` is a live slice whose exact length we pass; the kernel only reads it.
        // With no address, a netlink socket sends to the kernel.
        cvt_size(unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) })?;
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: `buf` is a writable slice and we pass its exact length.
            let n = cvt_size(unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
            })?;
            match parse_ack(&buf[..n], seq)? {
                Some(Ok(())) => return Ok(()),
                Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
                None => continue,
            }
        }
    }

    /// Creates veth `name` with peer `peer` (both in this namespace, down). `EEXIST` if either
    /// name is taken.
    pub fn add_veth(&mut self, name: &str, peer: &str) -> io::Result<()> {
        self.request(|seq| new_veth_msg(seq, name, peer))
    }

    /// Deletes link `name` (for a veth, both ends). `ENODEV` if there is none.
    pub fn del_link(&mut self, name: &str) -> io::Result<()> {
        self.request(|seq| del_link_msg(seq, name))
    }
}

/// A veth pair this process created: deleted (both ends) when dropped, wherever the peer
/// went. Drop it in the namespace it was made in (the dataplane's threads all are).
#[derive(Debug)]
pub struct VethPair {
    name: String,
    peer: String,
}

impl VethPair {
    /// Creates veth `name` with peer `peer`. `EEXIST` if either name is taken.
    pub fn create(name: &str, peer: &str) -> io::Result<VethPair> {
        Rtnl::open()?.add_veth(name, peer)?;
        Ok(VethPair {
            name: name.to_string(),
            peer: peer.to_string(),
        })
    }

    /// The host end's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let r = Rtnl::open().and_then(|mut n| n.del_link(&self.name));
        match r {
            Ok(()) => {}
            // Someone deleted it already: what we wanted.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => tracing::warn!(veth = %self.name, error = %e, "cannot delete veth pair"),
        }
    }
}

/// Deletes interface `name` of the calling thread's namespace (a veth's other end goes with
/// it, wherever it is). For devices a caller's own records name, left by a process that died.
pub fn delete_link(name: &str) -> io::Result<()> {
    Rtnl::open()?.del_link(name)
}

/// The index of interface `name` in the calling thread's namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string alive for the call; the function only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a veth request, frozen: a change of layout must be deliberate.
    #[test]
    fn new_veth_bytes() {
        let m = new_veth_msg(7, "ve1", "ve1p");
        let mut want: Vec<u8> = Vec::new();
        let le = |v: &mut Vec<u8>, b: &[u8]| v.extend_from_slice(b);
        // header: len 88, type 16, flags 0x605, seq 7, pid 0
        le(&mut want, &88u32.to_ne_bytes());
        le(&mut want, &16u16.to_ne_bytes());
        le(&mut want, &0x605u16.to_ne_bytes());
        le(&mut want, &7u32.to_ne_bytes());
        le(&mut want, &0u32.to_ne_bytes());
        le(&mut want, &[0; 16]);
        // IFLA_IFNAME "ve1\0": 8 bytes
        le(&mut want, &8u16.to_ne_bytes());
        le(&mut want, &3u16.to_ne_bytes());
        le(&mut want, b"ve1\0");
        // IFLA_LINKINFO: 4 + kind 8 + data (4 + peer (4 + 16 + 12)) = 48
        le(&mut want, &48u16.to_ne_bytes());
        le(&mut want, &18u16.to_ne_bytes());
        le(&mut want, &8u16.to_ne_bytes());
        le(&mut want, &1u16.to_ne_bytes());
        le(&mut want, b"veth");
        le(&mut want, &36u16.to_ne_bytes());
        le(&mut want, &2u16.to_ne_bytes());
        le(&mut want, &32u16.to_ne_bytes());
        le(&mut want, &1u16.to_ne_bytes());
        le(&mut want, &[0; 16]);
        le(&mut want, &9u16.to_ne_bytes());
        le(&mut want, &3u16.to_ne_bytes());
        le(&mut want, b"ve1p\0\0\0\0");
        assert_eq!(m, want);
    }

    #[test]
    fn del_link_bytes() {
        let m = del_link_msg(3, "abc");
        assert_eq!(m.len(), 16 + 16 + 8);
        assert_eq!(&m[4..6], &17u16.to_ne_bytes());
        assert_eq!(&m[6..8], &5u16.to_ne_bytes());
        assert_eq!(&m[36..40], b"abc\0");
    }

    fn ack(seq: u32, err: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&err.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn acks_and_refusals() {
        assert_eq!(parse_ack(&ack(5, 0), 5).unwrap(), Some(Ok(())));
        assert_eq!(
            parse_ack(&ack(5, -libc::EEXIST), 5).unwrap(),
            Some(Err(libc::EEXIST))
        );
        assert_eq!(parse_ack(&ack(4, 0), 5).unwrap(), None, "another request's");
        let mut two = ack(4, 0);
        two.extend(ack(5, -1));
        assert_eq!(parse_ack(&two, 5).unwrap(), Some(Err(1)));
        let mut short = ack(5, 0);
        short[0] = 200;
        assert!(parse_ack(&short, 5).is_err(), "a length past the buffer");
        assert_eq!(parse_ack(&[1, 2, 3], 5).unwrap(), None);
    }
}
