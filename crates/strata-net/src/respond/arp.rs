//! `arp_reply:MAC`: an ARP request becomes the reply for its target address, from `MAC`.
//!
//! A key rewrite (the reply has the request's layout; `switch::materialize` writes the ARP
//! body from the key): `eth_dst` = the requester, `eth_src` = `MAC`, op 2, `sha` = `MAC`,
//! `spa` = the requested `tpa`, `tha` = the requester's `sha`, `tpa` = the requester's `spa`.
//! Refused (`arp_refused`): anything but an Ethernet/IPv4 ARP request, or one whose sender
//! (Ethernet source or `sha`) is a group address.

use super::{mac_is_group, ReplyDrop, ReplyKind};
use crate::key::{ethertype, mac_from_bytes, Field, FlowKey};

/// ARP opcode of a request.
pub const ARP_REQUEST: u16 = 1;
/// ARP opcode of a reply.
pub const ARP_REPLY: u16 = 2;

/// Rewrites the key of an ARP request into the reply from `mac`.
pub fn reply(k: &mut FlowKey, mac: u64) -> Result<ReplyKind, ReplyDrop> {
    if k.eth_type() != ethertype::ARP || k.arp_op() != ARP_REQUEST {
        return Err(ReplyDrop::ArpRefused);
    }
    let sha = mac_from_bytes(k.arp_sha());
    let src = k.get(Field::EthSrc);
    if mac_is_group(src) || mac_is_group(sha) || sha == 0 {
        return Err(ReplyDrop::ArpRefused);
    }
    let (spa, tpa) = (k.get(Field::NwSrc), k.get(Field::NwDst));
    k.set(Field::EthDst, src);
    k.set(Field::EthSrc, mac);
    k.set(Field::ArpOp, ARP_REPLY as u64);
    k.set(Field::ArpSha, mac);
    k.set(Field::ArpTha, sha);
    k.set(Field::NwSrc, tpa);
    k.set(Field::NwDst, spa);
    Ok(ReplyKind::Arp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthType, ethertype::ARP as u64);
        k.set(Field::EthSrc, 0x0200_0000_0001);
        k.set(Field::EthDst, 0xffff_ffff_ffff);
        k.set(Field::ArpOp, 1);
        k.set(Field::ArpSha, 0x0200_0000_0001);
        k.set(Field::NwSrc, 0x0a00_0005);
        k.set(Field::NwDst, 0x0a00_0001);
        k
    }

    #[test]
    fn request_becomes_reply() {
        let mut k = request();
        assert_eq!(reply(&mut k, 0x0200_0000_00fe), Ok(ReplyKind::Arp));
        assert_eq!(k.get(Field::EthDst), 0x0200_0000_0001);
        assert_eq!(k.get(Field::EthSrc), 0x0200_0000_00fe);
        assert_eq!(k.arp_op(), 2);
        assert_eq!(k.get(Field::ArpSha), 0x0200_0000_00fe);
        assert_eq!(k.get(Field::ArpTha), 0x0200_0000_0001);
        assert_eq!(k.get(Field::NwSrc), 0x0a00_0001);
        assert_eq!(k.get(Field::NwDst), 0x0a00_0005);
    }

    #[test]
    fn refuses_replies_and_group_senders() {
        let mut k = request();
        k.set(Field::ArpOp, 2);
        assert_eq!(reply(&mut k, 1), Err(ReplyDrop::ArpRefused));
        let mut k = request();
        k.set(Field::EthSrc, 0x0100_5e00_0001);
        assert_eq!(reply(&mut k, 1), Err(ReplyDrop::ArpRefused));
        let mut k = request();
        k.set(Field::ArpSha, 0);
        let before = k;
        assert_eq!(reply(&mut k, 1), Err(ReplyDrop::ArpRefused));
        assert_eq!(k, before, "a refused key is untouched");
    }
}
