//! The client's handshake must survive any server: bad magic, oldstyle greetings, replies to
//! other options, lengths out of bounds, info of the wrong size, streams cut short. The
//! input is the server's side of the conversation; the client answers into nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = strata_nbd::client::replay_handshake(data, "vol") {
        assert!(info.min_block >= 1 && info.min_block <= info.max_payload);
    }
    if data.len() >= 16 {
        let b: [u8; 16] = data[..16].try_into().expect("16 bytes");
        let _ = strata_nbd::client::haggle::simple_reply(&b, 7);
    }
});
