//! Active probes: ICMP echo requests the switch sends to a port's endpoint on behalf of its
//! gateway, and the recognition of their replies, for a port's round-trip time and loss.
//!
//! A probe is an Ethernet/IPv4/ICMP echo request from the target's `src` (the subnet's
//! gateway MAC and address) to its `dst` (the port's MAC and address), identifier
//! [`PROBE_ID`], a sequence number, and a 16-byte payload: [`MAGIC`] then the switch's clock
//! at sending, in nanoseconds, big-endian. The endpoint's IP stack answers with the payload
//! unchanged, so the reply carries its own send time: the switch keeps no table of probes in
//! flight, and a reply is taken whenever it comes.
//!
//! A reply is recognised only on bytes: untagged IPv4, ICMP type 0 code 0, identifier
//! [`PROBE_ID`], payload starting with [`MAGIC`], a send time not in the future and at most
//! [`MAX_AGE`] old. An endpoint that forges one changes only its own port's figures (the
//! reply is taken by the switch, never forwarded), which is all a tenant can reach anyway.
//!
//! Invariants: no allocation beyond the caller's buffer; parsing never panics (every read is
//! bounds-checked).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::csum;
use crate::latency::RttHistogram;

/// ICMP identifier of every probe.
pub const PROBE_ID: u16 = 0x5354;
/// First bytes of a probe's payload.
pub const MAGIC: [u8; 8] = *b"strataPR";
/// Replies older than this are not probe answers (a clock far behind, or a forgery).
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Length of a probe frame: Ethernet 14, IPv4 20, ICMP 8, payload 16.
pub const FRAME_LEN: usize = 14 + 20 + 8 + 16;

/// Who a probe is from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Source MAC (the gateway's).
    pub src_mac: [u8; 6],
    /// Source address (the gateway's).
    pub src_ip: Ipv4Addr,
    /// Destination MAC (the port's).
    pub dst_mac: [u8; 6],
    /// Destination address (the port's).
    pub dst_ip: Ipv4Addr,
}

/// A port's probe figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Probes sent.
    pub sent: u64,
    /// Replies taken.
    pub answered: u64,
    /// Their round trips.
    pub rtt: RttHistogram,
}

/// Writes a probe from `t.src` to `t.dst` with sequence `seq`, sent at `now`, into `out`
/// (cleared first).
pub fn request(t: &ProbeTarget, seq: u16, now: Duration, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&t.dst_mac);
    out.extend_from_slice(&t.src_mac);
    out.extend_from_slice(&[0x08, 0x00]);
    let total = (FRAME_LEN - 14) as u16;
    out.extend_from_slice(&[0x45, 0x00]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()); // IP id
    out.extend_from_slice(&[0x40, 0x00, 64, 1, 0, 0]); // DF, TTL 64, ICMP, checksum
    out.extend_from_slice(&t.src_ip.octets());
    out.extend_from_slice(&t.dst_ip.octets());
    let hc = csum::ipv4_header_checksum(&out[14..34]);
    out[24..26].copy_from_slice(&hc.to_be_bytes());
    out.extend_from_slice(&[8, 0, 0, 0]);
    out.extend_from_slice(&PROBE_ID.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&MAGIC);
    let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
    out.extend_from_slice(&nanos.to_be_bytes());
    let ic = !csum::fold(csum::ones_sum(&out[34..], 0));
    out[36..38].copy_from_slice(&ic.to_be_bytes());
}

/// If `frame` is the reply to a probe, the time the probe was sent, as its payload says.
pub fn reply_sent_at(frame: &[u8]) -> Option<Duration> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = ((*ip.first()? & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != 1 {
        return None;
    }
    // A fragment is never a probe reply (the reply of a 16-byte payload is not fragmented).
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0 {
        return None;
    }
    let icmp = ip.get(ihl..)?;
    if icmp.get(..2)? != [0, 0] || icmp.get(4..6)? != PROBE_ID.to_be_bytes() {
        return None;
    }
    if icmp.get(8..16)? != MAGIC {
        return None;
    }
    let nanos = u64::from_be_bytes(icmp.get(16..24)?.try_into().ok()?);
    Some(Duration::from_nanos(nanos))
}

/// The round trip of a reply sent at `sent` and taken at `now`, if it can be one.
pub fn round_trip(sent: Duration, now: Duration) -> Option<Duration> {
    let rtt = now.checked_sub(sent)?;
    (rtt <= MAX_AGE).then_some(rtt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target() -> ProbeTarget {
        ProbeTarget {
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(10, 0, 0, 5),
        }
    }

    /// What an IP stack does with an echo request: swap addresses, type 0, fix the checksum.
    fn answer(req: &[u8]) -> Vec<u8> {
        let mut r = req.to_vec();
        r[0..6].copy_from_slice(&req[6..12]);
        r[6..12].copy_from_slice(&req[0..6]);
        r[26..30].copy_from_slice(&req[30..34]);
        r[30..34].copy_from_slice(&req[26..30]);
        r[34] = 0;
        r[36..38].copy_from_slice(&[0, 0]);
        let ic = !csum::fold(csum::ones_sum(&r[34..], 0));
        r[36..38].copy_from_slice(&ic.to_be_bytes());
        r
    }

    #[test]
    fn a_probe_is_a_valid_echo_request_and_its_answer_gives_the_send_time() {
        let mut f = Vec::new();
        let t0 = Duration::from_micros(123_456_789);
        request(&target(), 7, t0, &mut f);
        assert_eq!(f.len(), FRAME_LEN);
        assert_eq!(
            csum::ipv4_header_checksum(&f[14..34]),
            u16::from_be_bytes([f[24], f[25]])
        );
        assert_eq!(
            csum::fold(csum::ones_sum(&f[34..], 0)),
            0xffff,
            "ICMP checksum"
        );
        assert_eq!((f[34], f[35]), (8, 0), "echo request");
        assert_eq!(reply_sent_at(&f), None, "a request is not a reply");
        let r = answer(&f);
        assert_eq!(reply_sent_at(&r), Some(t0));
        assert_eq!(
            round_trip(t0, t0 + Duration::from_micros(80)),
            Some(Duration::from_micros(80))
        );
        assert_eq!(
            round_trip(t0, t0 - Duration::from_micros(1)),
            None,
            "from the future"
        );
        assert_eq!(round_trip(t0, t0 + MAX_AGE + Duration::from_secs(1)), None);
        // Another identifier, another payload, a fragment: not ours.
        let mut other = r.clone();
        other[38] ^= 1;
        assert_eq!(reply_sent_at(&other), None);
        let mut other = r.clone();
        other[42] ^= 1;
        assert_eq!(reply_sent_at(&other), None);
        let mut frag = r;
        frag[20] = 0x20; // more fragments
        assert_eq!(reply_sent_at(&frag), None);
    }

    proptest! {
        /// Never panics on any bytes, and a truncated reply is never taken.
        #[test]
        fn any_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = reply_sent_at(&bytes);
        }

        #[test]
        fn truncated_replies_are_not_taken(cut in 0usize..FRAME_LEN) {
            let mut f = Vec::new();
            request(&target(), 1, Duration::from_secs(1), &mut f);
            let r = answer(&f);
            prop_assert_eq!(reply_sent_at(&r[..cut]), None);
        }
    }
}
