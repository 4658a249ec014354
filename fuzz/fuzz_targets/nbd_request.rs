//! The transmission phase must survive any request stream: bad magic, unknown commands and
//! flags, ranges past the end, huge lengths, payloads cut short. Requests run on a real (memory)
//! pool; every reply must be well framed and the pool must stay consistent.
//!
//! Input: one mode byte (bit 0 read-only snapshot export, bit 1 structured replies with both
//! metadata contexts, bit 2 raw bytes), then either raw wire bytes or 12-byte records
//! `[cmd u8][flags u8][offset u32][len u32][payload-len u16]` turned into well-framed
//! requests, so most inputs reach the command logic instead of stopping at the magic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::{DeviceSpec, MemDevice, Pool};
use strata_nbd::export::MetaContext;
use strata_nbd::proto::{put_request, Request, CMD_WRITE};
use strata_nbd::framing::replay_requests;
use strata_nbd::{Catalog, Session};
use strata_types::DeviceClass;

const SIZE: u64 = 1 << 20;

fn records(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in data.chunks_exact(12).enumerate() {
        let cmd = (r[0] % 10) as u16;
        let flags = r[1] as u16 & 0x1f;
        // Offsets mostly near the export, sometimes anywhere.
        let raw_off = u32::from_be_bytes([r[2], r[3], r[4], r[5]]) as u64;
        let offset = if r[1] & 0x80 != 0 { raw_off << 20 } else { raw_off % (SIZE + 8192) };
        let raw_len = u32::from_be_bytes([r[6], r[7], r[8], r[9]]);
        let len = if r[1] & 0x40 != 0 { raw_len } else { raw_len % 70_000 };
        let len = if cmd == CMD_WRITE { len % 70_000 } else { len };
        put_request(&mut out, &Request { flags, cmd, handle: i as u64, offset, len });
        if cmd == CMD_WRITE {
            out.extend(std::iter::repeat_n(r[10], len as usize));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let dev = MemDevice::new(8 << 20, "fuzz");
    let pool = Pool::create(vec![DeviceSpec { device: dev, class: DeviceClass::Ssd }])
        .expect("pool");
    let v = pool.create_volume("vol", SIZE, None).expect("volume");
    pool.create_snapshot(v, "snap").expect("snapshot");
    let read_only = mode & 1 != 0;
    let catalog = Catalog::new(pool.clone());
    let export = catalog.lookup(if read_only { "vol@snap" } else { "vol" }).expect("export");
    // The volume's token even on the snapshot export: its BLOCK_STATUS then meets the
    // backend's refusal, a path worth fuzzing too.
    let since = catalog.lookup("vol").expect("volume").io.since("snap").expect("snapshot");
    let structured = mode & 2 != 0;
    let contexts = if structured {
        vec![MetaContext::BaseAllocation, MetaContext::ChangedSince { name: "snap".into(), since }]
    } else {
        Vec::new()
    };
    let session = Session { flags: export.flags(structured), export, structured, contexts };
    let input = if mode & 4 != 0 { data.to_vec() } else { records(data) };
    let _ = replay_requests(&session, &input);
    pool.check_consistency().expect("pool consistent after any request stream");
});
