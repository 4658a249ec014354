//! Fuzz the virtio-net header parser and software segmentation: the first 12 bytes are the
//! header, the rest the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_net::gso::{segment, Segments, VirtioNetHdr, VIRTIO_NET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(hdr) = VirtioNetHdr::parse(data) else { return };
    assert_eq!(VirtioNetHdr::parse(&hdr.to_bytes()), Ok(hdr));
    let frame = &data[VIRTIO_NET_HDR_LEN..];
    let mut out = Segments::new();
    if segment(&hdr, frame, &mut out).is_ok() {
        for s in out.iter() {
            assert!(s.len() <= frame.len().max(1) + 64);
        }
    }
});
