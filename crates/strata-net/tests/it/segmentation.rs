//! GSO/TSO segmentation: re-assemble the payload and verify every checksum.

use std::net::{Ipv4Addr, Ipv6Addr};

use strata_net::csum;
use strata_net::gso::{
    segment, Segments, VirtioNetHdr, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6,
};
use strata_net::key::{Field, FlowKey};
use strata_net::packet::{build_frame, parse_frame};

use crate::tcp_key;

fn big_frame(v6: bool, payload: usize) -> Vec<u8> {
    let mut k = tcp_key(
        1,
        2,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        5201,
    );
    if v6 {
        k = FlowKey::ZERO;
        k.set(Field::EthType, 0x86dd);
        k.set(Field::NwProto, 6);
        k.set_ipv6_src(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
        k.set_ipv6_dst(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
        k.set(Field::TpSrc, 40000);
        k.set(Field::TpDst, 5201);
    }
    let mut f = build_frame(&k, payload);
    let (_, lay) = parse_frame(&f, 0).unwrap();
    let l4 = lay.l4.unwrap() as usize;
    let hlen = l4 + 20;
    for (i, b) in f[hlen..].iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    f[l4 + 13] = 0x19; // FIN|PSH|ACK: FIN and PSH must stay on the last segment only
    f
}

fn check(v6: bool, payload: usize, mss: u16) {
    let f = big_frame(v6, payload);
    let (_, lay) = parse_frame(&f, 0).unwrap();
    let (l3, l4) = (lay.l3 as usize, lay.l4.unwrap() as usize);
    let hlen = l4 + 20;
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: hlen as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    };
    let mut out = Segments::new();
    let n = segment(&hdr, &f, &mut out).unwrap();
    assert_eq!(n, payload.div_ceil(mss as usize).max(1));
    let mut data = Vec::new();
    let seq0 = u32::from_be_bytes(f[l4 + 4..l4 + 8].try_into().unwrap());
    for (i, s) in out.iter().enumerate() {
        assert!(s.len() <= hlen + mss as usize);
        let (k, slay) = parse_frame(s, 0).unwrap();
        assert_eq!(k.tp_dst(), 5201);
        assert!(
            csum::verify_l4_checksum(s, l3, slay.l4.unwrap() as usize),
            "segment {i}"
        );
        if !v6 {
            let c = u16::from_be_bytes([s[l3 + 10], s[l3 + 11]]);
            assert_eq!(csum::ipv4_header_checksum(&s[l3..l3 + 20]), c);
            let id = u16::from_be_bytes([s[l3 + 4], s[l3 + 5]]);
            assert_eq!(id, 0x1234u16.wrapping_add(i as u16));
        }
        let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
        assert_eq!(seq, seq0.wrapping_add(data.len() as u32));
        let last = i + 1 == n;
        assert_eq!(
            s[l4 + 13] & 0x09 != 0,
            last,
            "FIN/PSH only on the last segment"
        );
        data.extend_from_slice(&s[hlen..]);
    }
    assert_eq!(data, f[hlen..]);
}

#[test]
fn tcpv4_segments_reassemble_with_valid_checksums() {
    check(false, 65000, 1448);
    check(false, 1448 * 3, 1448);
    check(false, 10, 1448);
}

#[test]
fn tcpv6_segments_reassemble_with_valid_checksums() {
    check(true, 30000, 1428);
}

#[test]
fn partial_checksum_is_completed() {
    let f = big_frame(false, 500);
    let (_, lay) = parse_frame(&f, 0).unwrap();
    let (l3, l4) = (lay.l3 as usize, lay.l4.unwrap() as usize);
    let mut partial = f.clone();
    csum::fill_l4_checksum(&mut partial, l3, l4);
    let full = partial.clone();
    // What a sender with checksum offload leaves: the folded pseudo-header sum.
    let ps = csum::pseudo_sum_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, partial.len() - l4);
    partial[l4 + 16..l4 + 18].copy_from_slice(&csum::fold(ps).to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..Default::default()
    };
    let mut out = Segments::new();
    assert_eq!(segment(&hdr, &partial, &mut out).unwrap(), 1);
    assert_eq!(out.iter().next().unwrap(), &full[..]);
    // Offsets outside the frame are an error, not a panic.
    let bad = VirtioNetHdr {
        csum_start: 60000,
        ..hdr
    };
    assert!(segment(&bad, &partial, &mut out).is_err());
}

#[test]
fn mismatched_gso_type_is_refused() {
    let f = big_frame(true, 3000);
    let hdr = VirtioNetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1000,
        ..Default::default()
    };
    let mut out = Segments::new();
    assert!(segment(&hdr, &f, &mut out).is_err());
    let hdr = VirtioNetHdr {
        gso_type: GSO_TCPV6,
        gso_size: 0,
        ..Default::default()
    };
    assert!(segment(&hdr, &f, &mut out).is_err());
}
