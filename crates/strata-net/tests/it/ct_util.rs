//! Builders of raw IP packets for the conntrack tests (our own, so the parser is tested on
//! bytes, not on structs it produced).

use std::net::IpAddr;

use strata_net::l4::{parse_ip, CtPacket};

/// TCP header bytes with `payload` zero bytes after it. `opts` must be a multiple of 4 long.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[u8],
    payload: usize,
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let doff = (20 + opts.len()) / 4;
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((doff as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&win.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(opts);
    t.resize(t.len() + payload, 0);
    t
}

/// UDP header plus `payload` zero bytes.
pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let len = (8 + payload) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(u.len() + payload, 0);
    u
}

/// An ICMP (or ICMPv6) echo message.
pub fn echo(v6: bool, request: bool, id: u16) -> Vec<u8> {
    let t = match (v6, request) {
        (false, true) => 8,
        (false, false) => 0,
        (true, true) => 128,
        (true, false) => 129,
    };
    vec![t, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1]
}

/// An ICMP error of `icmp_type`/`code` quoting `quoted` (an IP packet; cut to what RFC 792
/// guarantees: its header plus 8 bytes).
pub fn icmp_error(icmp_type: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let ihl = if quoted[0] >> 4 == 4 {
        ((quoted[0] & 15) as usize) * 4
    } else {
        40
    };
    let mut m = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&quoted[..(ihl + 8).min(quoted.len())]);
    m
}

/// An IP packet from `src` to `dst` carrying `l4` (IPv4 or IPv6 by the addresses).
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let tot = (20 + l4.len()) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&tot.to_be_bytes());
            p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    p.extend_from_slice(l4);
    p
}

/// Parses a packet the builders made (they only make valid ones).
pub fn parse(p: &[u8]) -> CtPacket {
    parse_ip(p).expect("builders make valid packets")
}

/// Shorthand: a parsed TCP packet.
#[allow(clippy::too_many_arguments)]
pub fn tcp_pkt(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
) -> CtPacket {
    parse(&ip(
        src,
        dst,
        6,
        &tcp(sport, dport, seq, ack, flags, 65535, &[], payload),
    ))
}
