//! Every on-disk decoder of the storage engine must reject hostile bytes without panicking or
//! allocating without bound: superblocks, checkpoint/journal headers, checkpoint payloads and
//! journal op streams (wrapped-key records and sealed map runs included), wrapped data keys.
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
    if let Ok(ops) = Op::decode_all(data) {
        // Ops (the wrapped-key records and sealed map runs included) re-encode to what
        // decodes to them.
        let mut w = strata_block::codec::Writer::new();
        for op in &ops {
            op.encode(&mut w);
        }
        assert_eq!(Op::decode_all(&w.buf).expect("re-encoded ops decode"), ops);
    }
    // A wrapped key is parsed by the master key: hostile bytes are refused, never a panic.
    let master = strata_block::MasterKey::from_bytes(&[1; 32]);
    let _ = strata_block::KeyWrapper::unwrap(&master, data, b"ctx");
});
