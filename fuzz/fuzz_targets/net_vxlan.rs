//! Fuzz VXLAN decapsulation of outer frames and of UDP payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_net::vxlan::{decap_ipv4, decap_payload, VXLAN_PORT};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decap_ipv4(data, VXLAN_PORT) {
        assert!(d.vni <= strata_net::vxlan::MAX_VNI);
    }
    let _ = decap_payload(data);
});
