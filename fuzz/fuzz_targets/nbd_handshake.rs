//! The NBD handshake must survive any client byte stream: client flags, option headers and
//! option payloads of every shape, over a pool with a volume and a snapshot. No panic, no
//! unbounded allocation; whatever reaches transmission has a consistent session.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_block::{DeviceSpec, MemDevice, Pool};
use strata_nbd::negotiate::replay_handshake;
use strata_nbd::proto::{parse_option, parse_option_header, parse_request};
use strata_nbd::Catalog;
use strata_types::DeviceClass;

fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(|| {
        let dev = MemDevice::new(64 << 20, "fuzz");
        let pool = Pool::create(vec![DeviceSpec { device: dev, class: DeviceClass::Ssd }])
            .expect("pool");
        let v = pool.create_volume("vol", 1 << 20, None).expect("volume");
        pool.create_snapshot(v, "snap").expect("snapshot");
        Catalog::new(pool)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_option_header(data);
    let _ = parse_request(data);
    if data.len() >= 4 {
        let opt = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let _ = parse_option(opt % 16, &data[4..]);
    }
    let (_, session) = replay_handshake(data, catalog());
    if let Some(s) = session {
        assert_eq!(s.export.read_only, s.export.name.contains('@'));
        assert!(s.contexts.len() <= strata_nbd::export::MAX_CONTEXTS);
    }
});
