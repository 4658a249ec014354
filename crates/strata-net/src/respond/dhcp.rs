//! `dhcp_reply(...)`: a DHCPv4 server (RFC 2131, options RFC 2132) on a flow, for one static
//! binding: the client the flow matches gets `yiaddr`.
//!
//! The parser is hand-written and bounds-checked (every read is `slice::get` or follows a
//! length check), allocates nothing and never panics (fuzz target `net_dhcp`, proptests on
//! random and mutated messages). It reads the fixed BOOTP header, the magic cookie and the
//! options, in the options field and, when option 52 (overload) says so, in `file` then
//! `sname`. An option given more than once is concatenated (RFC 3396) for the options the
//! server reads (53, 50, 54, 52); one longer than 8 bytes after concatenation is refused.
//!
//! What the server answers:
//!
//! | message | answer |
//! |---|---|
//! | DISCOVER | OFFER of `yiaddr` |
//! | REQUEST naming this server (selecting) | ACK if option 50 is `yiaddr`, else NAK |
//! | REQUEST naming another server | nothing (`dhcp_not_for_us`) |
//! | REQUEST without server id, with option 50 (init-reboot) | ACK if it is `yiaddr`, else NAK |
//! | REQUEST without either, `ciaddr` set (renewing, rebinding) | ACK if `ciaddr` is `yiaddr`, else NAK |
//! | INFORM (`ciaddr` set) | ACK without `yiaddr` and without lease options |
//! | RELEASE, DECLINE | nothing (`dhcp_no_reply`: the binding is static) |
//! | OFFER, ACK, NAK, unknown type | nothing (`dhcp_unexpected`) |
//! | not a DHCP request (BOOTREPLY, no cookie, no type, bad options) | nothing (`dhcp_malformed`) |
//!
//! The answer (Ethernet from `server_mac`, IPv4 from `server`, TTL 64, UDP 67 → 68 with its
//! checksum) is addressed as RFC 2131 4.1 says: through a relay (`giaddr` set) to the relay on
//! port 67; a NAK to the broadcast address; with `ciaddr` set, unicast to `ciaddr`; with the
//! broadcast flag, to 255.255.255.255 and ff:ff:ff:ff:ff:ff; otherwise unicast to `yiaddr` at
//! `chaddr`. Options, in order: 53, 54, 51, 58 (lease/2), 59 (lease·7/8), 1, 3, 6, 15, 26, 255;
//! the BOOTP part is padded to 300 bytes, the minimum some clients require.

use std::net::Ipv4Addr;

use super::icmp::{not_one_host, REPLY_TTL};
use super::{mac_is_group, ReplyDrop, ReplyKind};
use crate::csum;
use crate::key::{ethertype, ipproto, FlowKey};
use crate::packet::{Layout, IPV4_HLEN, UDP_HLEN};

/// UDP port of a DHCP server.
pub const SERVER_PORT: u16 = 67;
/// UDP port of a DHCP client.
pub const CLIENT_PORT: u16 = 68;
/// Lease when `dhcp_reply` names none (one day).
pub const DEFAULT_LEASE: u32 = 86_400;
/// At most this many DNS servers in `dns=`.
pub const MAX_DNS: usize = 8;
/// Longest `domain=`.
pub const MAX_DOMAIN: usize = 253;

/// The magic cookie that starts the options (RFC 2131 3).
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Offset of `op` in the BOOTP message.
pub const OFF_OP: usize = 0;
/// Offset of `htype`.
pub const OFF_HTYPE: usize = 1;
/// Offset of `hlen`.
pub const OFF_HLEN: usize = 2;
/// Offset of `xid`.
pub const OFF_XID: usize = 4;
/// Offset of `secs`.
pub const OFF_SECS: usize = 8;
/// Offset of `flags` (bit 15: broadcast).
pub const OFF_FLAGS: usize = 10;
/// Offset of `ciaddr`.
pub const OFF_CIADDR: usize = 12;
/// Offset of `yiaddr`.
pub const OFF_YIADDR: usize = 16;
/// Offset of `siaddr`.
pub const OFF_SIADDR: usize = 20;
/// Offset of `giaddr`.
pub const OFF_GIADDR: usize = 24;
/// Offset of `chaddr` (16 bytes).
pub const OFF_CHADDR: usize = 28;
/// Offset of `sname` (64 bytes).
pub const OFF_SNAME: usize = 44;
/// Offset of `file` (128 bytes).
pub const OFF_FILE: usize = 108;
/// Offset of the magic cookie.
pub const OFF_MAGIC: usize = 236;
/// Offset of the options.
pub const OFF_OPTIONS: usize = 240;
/// Smallest BOOTP message a reply is padded to.
pub const MIN_BOOTP: usize = 300;
/// The broadcast bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// DHCP message types (option 53).
pub mod msg {
    /// DHCPDISCOVER.
    pub const DISCOVER: u8 = 1;
    /// DHCPOFFER.
    pub const OFFER: u8 = 2;
    /// DHCPREQUEST.
    pub const REQUEST: u8 = 3;
    /// DHCPDECLINE.
    pub const DECLINE: u8 = 4;
    /// DHCPACK.
    pub const ACK: u8 = 5;
    /// DHCPNAK.
    pub const NAK: u8 = 6;
    /// DHCPRELEASE.
    pub const RELEASE: u8 = 7;
    /// DHCPINFORM.
    pub const INFORM: u8 = 8;
}

/// Option codes used here.
pub mod opt {
    /// Pad.
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const NETMASK: u8 = 1;
    /// Router.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Domain name.
    pub const DOMAIN: u8 = 15;
    /// Interface MTU.
    pub const MTU: u8 = 26;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// Message type.
    pub const MSG_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Renewal (T1) time.
    pub const T1: u8 = 58;
    /// Rebinding (T2) time.
    pub const T2: u8 = 59;
    /// End.
    pub const END: u8 = 255;
}

/// What `dhcp_reply` hands out: one binding and the network's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DhcpConfig {
    /// The address the client gets.
    pub yiaddr: Ipv4Addr,
    /// Subnet mask (option 1), if any.
    pub netmask: Option<Ipv4Addr>,
    /// Default gateway (option 3), if any.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6), at most [`MAX_DNS`].
    pub dns: Vec<Ipv4Addr>,
    /// Lease in seconds (option 51; `u32::MAX` is infinite).
    pub lease: u32,
    /// The server's address: IPv4 source of answers and option 54.
    pub server: Ipv4Addr,
    /// The server's MAC: Ethernet source of answers.
    pub server_mac: u64,
    /// Interface MTU (option 26), if any.
    pub mtu: Option<u16>,
    /// Domain name (option 15), if any.
    pub domain: Option<String>,
}

impl DhcpConfig {
    /// A binding with no optional parameter and the default lease.
    pub fn new(yiaddr: Ipv4Addr, server: Ipv4Addr, server_mac: u64) -> Self {
        DhcpConfig {
            yiaddr,
            netmask: None,
            router: None,
            dns: Vec::new(),
            lease: DEFAULT_LEASE,
            server,
            server_mac,
            mtu: None,
            domain: None,
        }
    }

    /// Checks the values (rule validation calls this), naming the first bad one.
    pub fn check(&self) -> Result<(), &'static str> {
        if not_one_host(self.yiaddr) || self.yiaddr.is_broadcast() {
            return Err("yiaddr is not a host address");
        }
        if not_one_host(self.server) {
            return Err("server is not a host address");
        }
        if mac_is_group(self.server_mac) || self.server_mac == 0 || self.server_mac >> 48 != 0 {
            return Err("server_mac is not a unicast MAC");
        }
        if let Some(m) = self.netmask {
            let m = u32::from(m);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err("netmask is not contiguous");
            }
        }
        if self.dns.len() > MAX_DNS {
            return Err("more than 8 DNS servers");
        }
        if self.dns.iter().any(|a| not_one_host(*a)) {
            return Err("a DNS server is not a host address");
        }
        if self.lease == 0 {
            return Err("lease is 0");
        }
        if self.mtu.is_some_and(|m| m < 68) {
            return Err("mtu below 68");
        }
        if let Some(d) = &self.domain {
            let ok = !d.is_empty()
                && d.len() <= MAX_DOMAIN
                && !d.starts_with(['.', '-'])
                && d.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
            if !ok {
                return Err("domain is not a host name");
            }
        }
        Ok(())
    }
}

/// Why bytes are not a DHCP request the server can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpParseError {
    /// Shorter than the fixed header and the cookie.
    #[error("DHCP message truncated: {len} bytes, need {need}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        len: usize,
    },
    /// `op` is not BOOTREQUEST.
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    /// Hardware type other than Ethernet (1, length 6).
    #[error("hardware type {htype}/{hlen} is not Ethernet")]
    NotEthernet {
        /// `htype`.
        htype: u8,
        /// `hlen`.
        hlen: u8,
    },
    /// No DHCP magic cookie.
    #[error("no DHCP magic cookie")]
    BadMagic,
    /// An option runs past the end of its field.
    #[error("option {0} runs past the end of its field")]
    OptionTruncated(u8),
    /// An option read by the server is longer than it can be, after concatenation.
    #[error("option {0} is too long")]
    OptionTooLong(u8),
    /// An option with the wrong length for its type.
    #[error("option {code} has length {len}")]
    BadOptionLength {
        /// The option.
        code: u8,
        /// Its length.
        len: usize,
    },
    /// Option 52 with a value other than 1..=3, or outside the options field.
    #[error("bad option overload")]
    BadOverload,
}

/// A parsed DHCP request: the fields and options the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRequest {
    /// Transaction id.
    pub xid: u32,
    /// Flags (bit 15: broadcast).
    pub flags: u16,
    /// Client address (set when the client has one: renewing, rebinding, INFORM).
    pub ciaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (16 bytes, Ethernet in the first 6).
    pub chaddr: [u8; 16],
    /// Option 53.
    pub msg_type: Option<u8>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 52 (0 when absent).
    pub overload: u8,
}

/// The value of one option being accumulated (RFC 3396 concatenation), at most 8 bytes.
#[derive(Default, Clone, Copy)]
struct Acc {
    buf: [u8; 8],
    len: usize,
    seen: bool,
}

impl Acc {
    fn push(&mut self, code: u8, v: &[u8]) -> Result<(), DhcpParseError> {
        let end = self.len + v.len();
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(DhcpParseError::OptionTooLong(code))?;
        dst.copy_from_slice(v);
        self.len = end;
        self.seen = true;
        Ok(())
    }
    fn value(&self, code: u8, len: usize) -> Result<Option<&[u8]>, DhcpParseError> {
        if !self.seen {
            return Ok(None);
        }
        if self.len != len {
            return Err(DhcpParseError::BadOptionLength {
                code,
                len: self.len,
            });
        }
        Ok(self.buf.get(..len))
    }
}

/// The options the server reads: 53, 50, 54, 52.
#[derive(Default)]
struct Options {
    msg_type: Acc,
    requested: Acc,
    server_id: Acc,
    overload: Acc,
}

impl Options {
    /// Walks one field of options. `main` is the options field (the only place option 52 may
    /// be).
    fn walk(&mut self, area: &[u8], main: bool) -> Result<(), DhcpParseError> {
        let mut i = 0;
        while let Some(&code) = area.get(i) {
            match code {
                opt::PAD => {
                    i += 1;
                    continue;
                }
                opt::END => return Ok(()),
                _ => {}
            }
            let len = *area
                .get(i + 1)
                .ok_or(DhcpParseError::OptionTruncated(code))? as usize;
            let v = area
                .get(i + 2..i + 2 + len)
                .ok_or(DhcpParseError::OptionTruncated(code))?;
            match code {
                opt::MSG_TYPE => self.msg_type.push(code, v)?,
                opt::REQUESTED_IP => self.requested.push(code, v)?,
                opt::SERVER_ID => self.server_id.push(code, v)?,
                opt::OVERLOAD if !main => return Err(DhcpParseError::BadOverload),
                opt::OVERLOAD => self.overload.push(code, v)?,
                _ => {}
            }
            i += 2 + len;
        }
        Ok(())
    }
}

fn ip_at(b: &[u8], off: usize) -> Ipv4Addr {
    match b.get(off..off + 4) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

fn ip_of(v: Option<&[u8]>) -> Option<Ipv4Addr> {
    v.map(|s| ip_at(s, 0))
}

/// Parses a DHCP message (the UDP payload) as a request to a server.
pub fn parse(b: &[u8]) -> Result<DhcpRequest, DhcpParseError> {
    if b.len() < OFF_OPTIONS {
        return Err(DhcpParseError::Truncated {
            need: OFF_OPTIONS,
            len: b.len(),
        });
    }
    let byte = |o: usize| b.get(o).copied().unwrap_or(0);
    if byte(OFF_OP) != 1 {
        return Err(DhcpParseError::NotRequest(byte(OFF_OP)));
    }
    let (htype, hlen) = (byte(OFF_HTYPE), byte(OFF_HLEN));
    if htype != 1 || hlen != 6 {
        return Err(DhcpParseError::NotEthernet { htype, hlen });
    }
    if b.get(OFF_MAGIC..OFF_OPTIONS) != Some(&MAGIC[..]) {
        return Err(DhcpParseError::BadMagic);
    }
    let mut o = Options::default();
    o.walk(b.get(OFF_OPTIONS..).unwrap_or(&[]), true)?;
    let overload = match o.overload.value(opt::OVERLOAD, 1)? {
        None => 0,
        Some(&[v @ 1..=3]) => v,
        Some(_) => return Err(DhcpParseError::BadOverload),
    };
    // RFC 2131 4.1: options field, then `file`, then `sname`.
    if overload & 1 != 0 {
        o.walk(b.get(OFF_FILE..OFF_MAGIC).unwrap_or(&[]), false)?;
    }
    if overload & 2 != 0 {
        o.walk(b.get(OFF_SNAME..OFF_FILE).unwrap_or(&[]), false)?;
    }
    let mut chaddr = [0u8; 16];
    if let Some(s) = b.get(OFF_CHADDR..OFF_CHADDR + 16) {
        chaddr.copy_from_slice(s);
    }
    let rd16 = |o: usize| u16::from_be_bytes([byte(o), byte(o + 1)]);
    Ok(DhcpRequest {
        xid: u32::from(ip_at(b, OFF_XID)),
        flags: rd16(OFF_FLAGS),
        ciaddr: ip_at(b, OFF_CIADDR),
        giaddr: ip_at(b, OFF_GIADDR),
        chaddr,
        msg_type: o.msg_type.value(opt::MSG_TYPE, 1)?.map(|v| v[0]),
        requested_ip: ip_of(o.requested.value(opt::REQUESTED_IP, 4)?),
        server_id: ip_of(o.server_id.value(opt::SERVER_ID, 4)?),
        overload,
    })
}

/// The answer the server gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// DHCPOFFER.
    Offer,
    /// DHCPACK to a REQUEST.
    Ack,
    /// DHCPACK to an INFORM (no `yiaddr`, no lease).
    InformAck,
    /// DHCPNAK.
    Nak,
}

/// What the server answers to `req` (see the module table).
pub fn decide(req: &DhcpRequest, cfg: &DhcpConfig) -> Result<Answer, ReplyDrop> {
    let ours = |a: Ipv4Addr| {
        if a == cfg.yiaddr {
            Answer::Ack
        } else {
            Answer::Nak
        }
    };
    match req.msg_type {
        None => Err(ReplyDrop::DhcpMalformed),
        Some(msg::DISCOVER) => Ok(Answer::Offer),
        Some(msg::REQUEST) => match (req.server_id, req.requested_ip) {
            (Some(s), _) if s != cfg.server => Err(ReplyDrop::DhcpNotForUs),
            (Some(_), Some(r)) => Ok(ours(r)),
            (Some(_), None) if !req.ciaddr.is_unspecified() => Ok(ours(req.ciaddr)),
            (Some(_), None) => Ok(Answer::Nak),
            (None, Some(r)) => Ok(ours(r)),
            (None, None) if !req.ciaddr.is_unspecified() => Ok(ours(req.ciaddr)),
            (None, None) => Err(ReplyDrop::DhcpMalformed),
        },
        Some(msg::INFORM) if !req.ciaddr.is_unspecified() => Ok(Answer::InformAck),
        Some(msg::INFORM) => Err(ReplyDrop::DhcpMalformed),
        Some(msg::RELEASE | msg::DECLINE) => Err(ReplyDrop::DhcpNoReply),
        Some(_) => Err(ReplyDrop::DhcpUnexpected),
    }
}

fn put_opt(out: &mut Vec<u8>, code: u8, v: &[u8]) {
    out.push(code);
    out.push(v.len() as u8);
    out.extend_from_slice(v);
}

/// Answers the DHCP request carried by the IPv4/UDP packet in `frame` (parsed as `k`, `lay`):
/// appends the whole answer frame (untagged Ethernet) to `out`.
pub fn reply(
    frame: &[u8],
    lay: &Layout,
    k: &FlowKey,
    cfg: &DhcpConfig,
    out: &mut Vec<u8>,
) -> Result<ReplyKind, ReplyDrop> {
    if k.eth_type() != ethertype::IPV4 || k.nw_proto() != ipproto::UDP || k.nw_frag() != 0 {
        return Err(ReplyDrop::DhcpMalformed);
    }
    let l4 = lay.l4.ok_or(ReplyDrop::DhcpMalformed)? as usize;
    let end = (lay.l3_end as usize).min(frame.len());
    let ulen = frame
        .get(l4 + 4..l4 + 6)
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]) as usize);
    if ulen < UDP_HLEN || l4 + ulen > end {
        return Err(ReplyDrop::DhcpMalformed);
    }
    let req = parse(&frame[l4 + UDP_HLEN..l4 + ulen]).map_err(|_| ReplyDrop::DhcpMalformed)?;
    let answer = decide(&req, cfg)?;
    write_answer(&req, cfg, answer, k.eth_src(), out);
    Ok(match answer {
        Answer::Offer => ReplyKind::DhcpOffer,
        Answer::Ack | Answer::InformAck => ReplyKind::DhcpAck,
        Answer::Nak => ReplyKind::DhcpNak,
    })
}

/// Writes the answer frame for `req` (whose Ethernet source was `req_mac`).
pub fn write_answer(
    req: &DhcpRequest,
    cfg: &DhcpConfig,
    answer: Answer,
    req_mac: [u8; 6],
    out: &mut Vec<u8>,
) {
    const BCAST_MAC: [u8; 6] = [0xff; 6];
    let mut chmac = [0u8; 6];
    chmac.copy_from_slice(&req.chaddr[..6]);
    let mut flags = req.flags;
    let (eth_dst, ip_dst, port) = if !req.giaddr.is_unspecified() {
        if answer == Answer::Nak {
            flags |= FLAG_BROADCAST;
        }
        (req_mac, req.giaddr, SERVER_PORT)
    } else if answer == Answer::Nak {
        (BCAST_MAC, Ipv4Addr::BROADCAST, CLIENT_PORT)
    } else if !req.ciaddr.is_unspecified() {
        (chmac, req.ciaddr, CLIENT_PORT)
    } else if req.flags & FLAG_BROADCAST != 0 {
        (BCAST_MAC, Ipv4Addr::BROADCAST, CLIENT_PORT)
    } else {
        (chmac, cfg.yiaddr, CLIENT_PORT)
    };
    let start = out.len();
    out.extend_from_slice(&eth_dst);
    out.extend_from_slice(&crate::key::mac_to_bytes(cfg.server_mac));
    out.extend_from_slice(&ethertype::IPV4.to_be_bytes());
    let l3 = out.len();
    out.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, REPLY_TTL, ipproto::UDP, 0, 0]);
    out.extend_from_slice(&cfg.server.octets());
    out.extend_from_slice(&ip_dst.octets());
    let l4 = out.len();
    out.extend_from_slice(&SERVER_PORT.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let bootp = out.len();
    let (ciaddr, yiaddr) = match answer {
        Answer::Offer => (Ipv4Addr::UNSPECIFIED, cfg.yiaddr),
        Answer::Ack => (req.ciaddr, cfg.yiaddr),
        Answer::InformAck => (req.ciaddr, Ipv4Addr::UNSPECIFIED),
        Answer::Nak => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
    };
    out.extend_from_slice(&[2, 1, 6, 0]);
    out.extend_from_slice(&req.xid.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&ciaddr.octets());
    out.extend_from_slice(&yiaddr.octets());
    out.extend_from_slice(&[0; 4]); // siaddr: no next server
    out.extend_from_slice(&req.giaddr.octets());
    out.extend_from_slice(&req.chaddr);
    out.resize(bootp + OFF_MAGIC, 0); // sname, file
    out.extend_from_slice(&MAGIC);
    let mt = match answer {
        Answer::Offer => msg::OFFER,
        Answer::Ack | Answer::InformAck => msg::ACK,
        Answer::Nak => msg::NAK,
    };
    put_opt(out, opt::MSG_TYPE, &[mt]);
    put_opt(out, opt::SERVER_ID, &cfg.server.octets());
    if matches!(answer, Answer::Offer | Answer::Ack) {
        let lease = cfg.lease;
        let part = |num: u64, den: u64| -> u32 {
            if lease == u32::MAX {
                u32::MAX
            } else {
                (lease as u64 * num / den) as u32
            }
        };
        put_opt(out, opt::LEASE, &lease.to_be_bytes());
        put_opt(out, opt::T1, &part(1, 2).to_be_bytes());
        put_opt(out, opt::T2, &part(7, 8).to_be_bytes());
    }
    if answer != Answer::Nak {
        if let Some(m) = cfg.netmask {
            put_opt(out, opt::NETMASK, &m.octets());
        }
        if let Some(r) = cfg.router {
            put_opt(out, opt::ROUTER, &r.octets());
        }
        if !cfg.dns.is_empty() {
            out.push(opt::DNS);
            out.push((cfg.dns.len().min(MAX_DNS) * 4) as u8);
            for a in cfg.dns.iter().take(MAX_DNS) {
                out.extend_from_slice(&a.octets());
            }
        }
        if let Some(d) = &cfg.domain {
            let d = &d.as_bytes()[..d.len().min(MAX_DOMAIN)];
            put_opt(out, opt::DOMAIN, d);
        }
        if let Some(m) = cfg.mtu {
            put_opt(out, opt::MTU, &m.to_be_bytes());
        }
    }
    out.push(opt::END);
    if out.len() - bootp < MIN_BOOTP {
        out.resize(bootp + MIN_BOOTP, 0);
    }
    let ip_len = (out.len() - l3) as u16;
    let udp_len = (out.len() - l4) as u16;
    out[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
    let hc = csum::ipv4_header_checksum(&out[l3..l3 + IPV4_HLEN]);
    out[l3 + 10..l3 + 12].copy_from_slice(&hc.to_be_bytes());
    out[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
    csum::fill_l4_checksum(&mut out[start..], l3 - start, l4 - start);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BOOTREQUEST with the given options (already encoded, without the end option).
    pub(crate) fn message(ciaddr: [u8; 4], flags: u16, options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; OFF_OPTIONS];
        b[OFF_OP] = 1;
        b[OFF_HTYPE] = 1;
        b[OFF_HLEN] = 6;
        b[OFF_XID..OFF_XID + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
        b[OFF_CIADDR..OFF_CIADDR + 4].copy_from_slice(&ciaddr);
        b[OFF_CHADDR..OFF_CHADDR + 6].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        b[OFF_MAGIC..OFF_OPTIONS].copy_from_slice(&MAGIC);
        b.extend_from_slice(options);
        b.push(opt::END);
        b
    }

    fn cfg() -> DhcpConfig {
        DhcpConfig::new(
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            0x0200_0000_00fe,
        )
    }

    #[test]
    fn the_state_table() {
        let c = cfg();
        let d = |ci: [u8; 4], o: &[u8]| decide(&parse(&message(ci, 0, o)).unwrap(), &c);
        let z = [0; 4];
        assert_eq!(d(z, &[53, 1, 1]), Ok(Answer::Offer));
        let sel = [53, 1, 3, 54, 4, 10, 0, 0, 1, 50, 4, 10, 0, 0, 5];
        assert_eq!(d(z, &sel), Ok(Answer::Ack));
        let sel_other = [53, 1, 3, 54, 4, 10, 0, 0, 1, 50, 4, 10, 0, 0, 6];
        assert_eq!(d(z, &sel_other), Ok(Answer::Nak));
        let not_us = [53, 1, 3, 54, 4, 10, 0, 0, 2, 50, 4, 10, 0, 0, 5];
        assert_eq!(d(z, &not_us), Err(ReplyDrop::DhcpNotForUs));
        assert_eq!(d(z, &[53, 1, 3, 50, 4, 10, 0, 0, 5]), Ok(Answer::Ack));
        assert_eq!(d(z, &[53, 1, 3, 50, 4, 10, 0, 0, 9]), Ok(Answer::Nak));
        assert_eq!(d([10, 0, 0, 5], &[53, 1, 3]), Ok(Answer::Ack), "renewing");
        assert_eq!(d([10, 0, 0, 8], &[53, 1, 3]), Ok(Answer::Nak));
        assert_eq!(d(z, &[53, 1, 3]), Err(ReplyDrop::DhcpMalformed));
        assert_eq!(d([10, 0, 0, 5], &[53, 1, 8]), Ok(Answer::InformAck));
        assert_eq!(d(z, &[53, 1, 8]), Err(ReplyDrop::DhcpMalformed));
        assert_eq!(d(z, &[53, 1, 7]), Err(ReplyDrop::DhcpNoReply));
        assert_eq!(d(z, &[53, 1, 4]), Err(ReplyDrop::DhcpNoReply));
        assert_eq!(d(z, &[53, 1, 2]), Err(ReplyDrop::DhcpUnexpected));
        assert_eq!(d(z, &[53, 1, 99]), Err(ReplyDrop::DhcpUnexpected));
        assert_eq!(d(z, &[]), Err(ReplyDrop::DhcpMalformed), "plain BOOTP");
    }

    #[test]
    fn concatenation_and_overload() {
        // RFC 3396: option 50 split in two.
        let m = message([0; 4], 0, &[53, 1, 3, 50, 2, 10, 0, 50, 2, 0, 5]);
        assert_eq!(
            parse(&m).unwrap().requested_ip,
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        // Too long once concatenated.
        let m = message([0; 4], 0, &[50, 6, 1, 2, 3, 4, 5, 6, 50, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&m), Err(DhcpParseError::OptionTooLong(50)));
        // Overload 1: the message type lives in `file`.
        let mut m = message([0; 4], 0, &[52, 1, 1]);
        m[OFF_FILE..OFF_FILE + 4].copy_from_slice(&[53, 1, 1, 255]);
        let r = parse(&m).unwrap();
        assert_eq!((r.overload, r.msg_type), (1, Some(1)));
        // Overload 3 reads file then sname; option 52 in sname is refused.
        let mut m = message([0; 4], 0, &[52, 1, 3]);
        m[OFF_FILE..OFF_FILE + 3].copy_from_slice(&[53, 1, 3]);
        m[OFF_SNAME..OFF_SNAME + 6].copy_from_slice(&[50, 4, 10, 0, 0, 5]);
        let r = parse(&m).unwrap();
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
        m[OFF_SNAME..OFF_SNAME + 3].copy_from_slice(&[52, 1, 1]);
        assert_eq!(parse(&m), Err(DhcpParseError::BadOverload));
        let m = message([0; 4], 0, &[52, 1, 4]);
        assert_eq!(parse(&m), Err(DhcpParseError::BadOverload));
        // Truncated option and bad lengths.
        let mut m = message([0; 4], 0, &[]);
        m.pop();
        m.extend_from_slice(&[53, 5, 1]);
        assert_eq!(parse(&m), Err(DhcpParseError::OptionTruncated(53)));
        let m = message([0; 4], 0, &[53, 2, 1, 1]);
        assert_eq!(
            parse(&m),
            Err(DhcpParseError::BadOptionLength { code: 53, len: 2 })
        );
    }

    #[test]
    fn config_checks() {
        assert_eq!(cfg().check(), Ok(()));
        let mut c = cfg();
        c.netmask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert!(c.check().is_err());
        let mut c = cfg();
        c.server_mac = 0x0100_0000_0001;
        assert!(c.check().is_err());
        let mut c = cfg();
        c.domain = Some("a,b".into());
        assert!(c.check().is_err());
        let mut c = cfg();
        c.dns = vec![Ipv4Addr::new(10, 0, 0, 2); 9];
        assert!(c.check().is_err());
    }
}
