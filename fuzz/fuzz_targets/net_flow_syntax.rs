//! Fuzz the flow-syntax parsers; anything accepted must print and parse back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_net::syntax::{format_flow, parse_filter, parse_flow, parse_packet_spec, PortNames};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut names = PortNames::new();
    names.insert("tap1", 1);
    names.insert("vx1", 2);
    if let Ok(r) = parse_flow(s, Some(&names)) {
        let text = format_flow(&r, Some(&names));
        assert_eq!(parse_flow(&text, Some(&names)).as_ref(), Ok(&r), "{text}");
    }
    let _ = parse_filter(s, Some(&names), false);
    let _ = parse_filter(s, Some(&names), true);
    let _ = parse_packet_spec(s, Some(&names));
});
