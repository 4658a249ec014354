//! Fuzz the reading of a veth port's received message (`strata_dataplane::rx`): arbitrary
//! data and control bytes never panic, a frame is always a part of the data, and a frame
//! said to be whole is exactly what arrived after the virtio-net header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_dataplane::rx::{aux, frame, PACKET_VNET_HDR_LEN};

fuzz_target!(|input: (bool, bool, Vec<u8>, Vec<u8>)| {
    let (vnet, cut, data, control) = input;
    let _ = aux(&control);
    if let Some(f) = frame(&data, cut, &control, vnet) {
        let skip = if vnet { PACKET_VNET_HDR_LEN } else { 0 };
        assert_eq!(f.data, &data[skip..]);
        assert!(f.len >= f.data.len());
        if cut {
            assert!(f.len > f.data.len());
        }
    } else {
        assert!(vnet && data.len() < PACKET_VNET_HDR_LEN);
    }
});
