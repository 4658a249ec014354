//! The one writer of VXLAN outer headers. The engine emits an inner frame with an
//! [`Encap`] (VNI, flow hash, tunnel); [`VxlanTx::send`] writes the outer IPv4, UDP and VXLAN
//! headers in front of it and sends the packet on a raw IP socket (`IPPROTO_RAW`, so
//! `IP_HDRINCL`).
//!
//! Why a raw socket: the outer UDP source port carries the flow hash (RFC 7348 section 5), so
//! it differs per inner flow. A UDP socket sends from the one port it is bound to; a raw socket
//! sends whatever header we write. The alternative, a pool of UDP sockets bound to every port
//! of the range, would hold up to 16,384 descriptors per VTEP and take ports from the host's
//! ephemeral range. Receiving stays on the UDP socket bound to the VXLAN port (`vxlan_port`).
//!
//! Invariants:
//! - every packet sent has UDP checksum 0 (RFC 7348 allows it over IPv4; Linux's default), the
//!   tunnel's TTL and DF setting, a source port `SourcePorts::pick(flow_hash)` and an IPv4
//!   identification from this port's counter (shared by the threads, so fragments of different
//!   packets never share one within a wrap);
//! - a kernel raw socket does not fragment (it refuses a packet above the device MTU), so a
//!   packet larger than the route MTU is fragmented here when DF is off, as the kernel's vxlan
//!   device with `df unset` would let the underlay do, and dropped (counted) when DF is on;
//! - nothing is allocated per packet: headers are written into a stack array, fragments into a
//!   thread's reusable buffer.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use strata_net::vxlan::{self, SourcePorts, IP_UDP_VXLAN_LEN};
use strata_net::Encap;

use crate::stats::PortIoStats;
use crate::sys::{self, RawIpSocket};

/// Datagrams per `sendmmsg` (a 64 KiB TSO frame makes up to about 45).
const BATCH: usize = 64;
/// IPv4 header without options.
const IPV4_HLEN: usize = 20;
/// Route MTU assumed when the kernel cannot tell (no route yet).
const DEFAULT_MTU: usize = 1500;

/// The sending side of one VXLAN port, shared by every forwarding thread.
#[derive(Debug)]
pub(crate) struct VxlanTx {
    sock: RawIpSocket,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    dst_port: u16,
    ports: SourcePorts,
    /// MTU of the route toward `remote` (bytes of IPv4 packet), refreshed on EMSGSIZE.
    mtu: AtomicUsize,
    ip_id: AtomicU16,
    /// The device holding `local` (where the fast path sends what it encapsulates), if any.
    underlay: Option<u32>,
}

impl VxlanTx {
    /// Opens the raw socket for tunnel `local -> remote` and reads the route MTU.
    pub(crate) fn open(
        local: Ipv4Addr,
        remote: Ipv4Addr,
        dst_port: u16,
        ports: SourcePorts,
    ) -> io::Result<Self> {
        let sock = RawIpSocket::new()?;
        let mtu = sys::route_mtu(local, remote, dst_port).unwrap_or(DEFAULT_MTU);
        let underlay = sys::ifindex_of_addr(local).ok();
        Ok(VxlanTx {
            underlay,
            sock,
            local,
            remote,
            dst_port,
            ports,
            mtu: AtomicUsize::new(mtu),
            ip_id: AtomicU16::new(1),
        })
    }

    /// The underlay device's index: the interface holding the local address.
    pub(crate) fn underlay(&self) -> Option<u32> {
        self.underlay
    }

    /// The outer source-port range.
    pub(crate) fn ports(&self) -> SourcePorts {
        self.ports
    }

    /// The route MTU as last read.
    pub(crate) fn mtu(&self) -> usize {
        self.mtu.load(Ordering::Relaxed)
    }

    fn refresh_mtu(&self) {
        if let Ok(m) = sys::route_mtu(self.local, self.remote, self.dst_port) {
            self.mtu.store(m, Ordering::Relaxed);
        }
    }

    /// Sends every frame of `frames` encapsulated as `e` asks, batching the system calls.
    /// Counts syscalls and failures in `io`; `frags` is the thread's fragment buffer.
    pub(crate) fn send<'a>(
        &self,
        e: &Encap,
        frames: impl Iterator<Item = &'a [u8]>,
        frags: &mut Vec<u8>,
        io: &mut PortIoStats,
    ) {
        let sport = self.ports.pick(e.flow_hash);
        let mtu = self.mtu();
        let dst = SocketAddrV4::new(e.tunnel.remote_ip, 0);
        let mut hdrs = [[0u8; IP_UDP_VXLAN_LEN]; BATCH];
        let mut bodies: [&[u8]; BATCH] = [&[]; BATCH];
        let mut k = 0;
        for f in frames {
            let id = self.ip_id.fetch_add(1, Ordering::Relaxed);
            let mut hdr = [0u8; IP_UDP_VXLAN_LEN];
            if vxlan::write_ip_udp_vxlan(&mut hdr, &e.tunnel, e.vni, sport, id, f.len()).is_err() {
                io.tx_errors += 1;
                continue;
            }
            if IP_UDP_VXLAN_LEN + f.len() > mtu {
                if e.tunnel.df {
                    io.tx_errors += 1;
                    continue;
                }
                fragment_ipv4(&hdr, f, mtu, frags);
                self.send_fragments(frags, dst, io);
                continue;
            }
            hdrs[k] = hdr;
            bodies[k] = f;
            k += 1;
            if k == BATCH {
                self.flush(&hdrs, &bodies, dst, io);
                k = 0;
            }
        }
        if k > 0 {
            self.flush(&hdrs[..k], &bodies[..k], dst, io);
        }
    }

    fn flush(
        &self,
        hdrs: &[[u8; IP_UDP_VXLAN_LEN]],
        bodies: &[&[u8]],
        dst: SocketAddrV4,
        io: &mut PortIoStats,
    ) {
        let mut parts: [(&[u8], &[u8]); BATCH] = [(&[], &[]); BATCH];
        for (i, (h, b)) in hdrs.iter().zip(bodies).enumerate() {
            parts[i] = (&h[..], b);
        }
        let n = hdrs.len();
        io.syscalls += 1;
        let sent = match sys::send_datagrams(&self.sock, dst, &parts[..n]) {
            Ok(s) => s,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EMSGSIZE) {
                    self.refresh_mtu();
                }
                0
            }
        };
        io.tx_errors += (n - sent.min(n)) as u64;
    }

    /// Sends the fragments `fragment_ipv4` left in `frags` (each prefixed by its length).
    fn send_fragments(&self, frags: &[u8], dst: SocketAddrV4, io: &mut PortIoStats) {
        let mut parts: [(&[u8], &[u8]); BATCH] = [(&[], &[]); BATCH];
        let mut all = Fragments(frags).peekable();
        let mut lost = false;
        while all.peek().is_some() {
            let mut n = 0;
            for f in all.by_ref().take(BATCH) {
                parts[n] = (f, &[]);
                n += 1;
            }
            io.syscalls += 1;
            lost |= sys::send_datagrams(&self.sock, dst, &parts[..n]).unwrap_or(0) < n;
        }
        // A lost fragment loses the packet: count it once.
        if lost {
            io.tx_errors += 1;
        }
    }
}

/// Writes the IPv4 fragments of the packet `hdr` + `inner` (`hdr` from
/// [`vxlan::write_ip_udp_vxlan`], DF off) for a link of `mtu` bytes into `out`, each as a
/// 2-byte little-endian length then the fragment. Every fragment carries the identification
/// of `hdr`; offsets are in 8-byte units, MF is set on all but the last, and each header
/// checksum is recomputed. The UDP and VXLAN headers travel in the first fragment.
pub(crate) fn fragment_ipv4(
    hdr: &[u8; IP_UDP_VXLAN_LEN],
    inner: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    let payload_len = IP_UDP_VXLAN_LEN - IPV4_HLEN + inner.len();
    let per = (mtu.max(IPV4_HLEN + 8 + 68) - IPV4_HLEN) & !7;
    let mut off = 0;
    while off < payload_len {
        let len = per.min(payload_len - off);
        let last = off + len == payload_len;
        let tot = IPV4_HLEN + len;
        out.extend_from_slice(&(tot as u16).to_le_bytes());
        let start = out.len();
        out.extend_from_slice(&hdr[..IPV4_HLEN]);
        let ip = &mut out[start..start + IPV4_HLEN];
        ip[2..4].copy_from_slice(&(tot as u16).to_be_bytes());
        let frag = ((off / 8) as u16) | if last { 0 } else { 0x2000 };
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[10..12].fill(0);
        let c = strata_net::csum::ipv4_header_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        // The first fragment holds the 16 header bytes; copy the body in one piece after.
        let hdr_part = (IP_UDP_VXLAN_LEN - IPV4_HLEN).saturating_sub(off).min(len);
        out.extend_from_slice(&hdr[IPV4_HLEN + off.min(16)..][..hdr_part]);
        let body_from = off + hdr_part - (IP_UDP_VXLAN_LEN - IPV4_HLEN);
        out.extend_from_slice(&inner[body_from..body_from + (len - hdr_part)]);
        off += len;
    }
}

/// The fragments `fragment_ipv4` wrote.
struct Fragments<'a>(&'a [u8]);

impl<'a> Iterator for Fragments<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes([*self.0.first()?, *self.0.get(1)?]) as usize;
        let f = self.0.get(2..2 + n)?;
        self.0 = &self.0[2 + n..];
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_net::vxlan::VxlanTunnel;

    #[test]
    fn fragments_reassemble_to_the_packet() {
        let t = VxlanTunnel::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let inner: Vec<u8> = (0..1514u32).map(|i| (i * 7) as u8).collect();
        let mut hdr = [0u8; IP_UDP_VXLAN_LEN];
        vxlan::write_ip_udp_vxlan(&mut hdr, &t, 42, 50000, 0x1234, inner.len()).unwrap();
        let whole = [&hdr[..], &inner[..]].concat();
        let mut out = Vec::new();
        fragment_ipv4(&hdr, &inner, 1500, &mut out);
        let frags: Vec<&[u8]> = Fragments(&out).collect();
        assert_eq!(frags.len(), 2, "1550 bytes over a 1500 MTU");
        let mut payload = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1500);
            assert_eq!(&f[4..6], &[0x12, 0x34], "one identification");
            let c = u16::from_be_bytes([f[10], f[11]]);
            assert_eq!(
                strata_net::csum::ipv4_header_checksum(&f[..20]),
                c,
                "checksum"
            );
            assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, f.len());
            let ff = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(
                ff & 0x2000 != 0,
                i + 1 < frags.len(),
                "MF on all but the last"
            );
            assert_eq!((ff & 0x1fff) as usize * 8, payload.len(), "offsets follow");
            assert_eq!(&f[12..20], &whole[12..20], "addresses kept");
            payload.extend_from_slice(&f[20..]);
        }
        assert_eq!(
            payload,
            &whole[20..],
            "the fragments carry the UDP datagram"
        );
        // A packet that fits is one fragment equal to the packet, but for the checksum.
        fragment_ipv4(&hdr, &inner[..100], 1500, &mut out);
        let one: Vec<&[u8]> = Fragments(&out).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(&one[0][20..], &[&hdr[20..], &inner[..100]].concat()[..]);
    }
}
