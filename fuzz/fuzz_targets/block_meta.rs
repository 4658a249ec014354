//! Every on-disk decoder of the storage engine must reject hostile bytes without panicking or
//! allocating without bound: superblocks, checkpoint/journal headers, checkpoint payloads and
//! journal op streams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::format::{MetaHeader, Superblock, CKPT_MAGIC, JOURNAL_MAGIC};
use strata_block::meta::{Op, State};

fuzz_target!(|data: &[u8]| {
    let _ = Superblock::decode(data);
    let _ = MetaHeader::decode(data, CKPT_MAGIC);
    let _ = MetaHeader::decode(data, JOURNAL_MAGIC);
    if let Ok(state) = State::decode(data) {
        // Whatever decodes must hold the invariants and survive a round trip.
        state.check().expect("decoded state is consistent");
        State::decode(&state.encode()).expect("re-encoded state decodes");
    }
    let _ = Op::decode_all(data);
});
