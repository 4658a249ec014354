//! The block cipher alone: seal and open of one 4 KiB block (MiB/s), by the engine's
//! [`BlockCipher`] and, beside it in the same run, by RustCrypto `aes-gcm-siv` (the
//! implementation the engine used before, same construction and bytes), so one run gives the
//! before and the after.
//!
//! Run with `cargo bench -p strata-block --bench cipher` (add `-- --quick` for a short run).

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use strata_block::crypt::{BlockCipher, DataKey};

const BS: usize = 4096;

fn nonce(pblock: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&pblock.to_le_bytes());
    Nonce::from(n)
}

fn one_block(c: &mut Criterion) {
    let key = DataKey::from_bytes([7; 32]);
    let ours = BlockCipher::new(key.clone());
    let theirs = Aes256GcmSiv::new_from_slice(key.bytes()).unwrap();
    let mut g = c.benchmark_group("block_4k");
    g.throughput(Throughput::Bytes(BS as u64));
    let mut blk = vec![0x5au8; BS];

    g.bench_function("seal/engine", |b| {
        b.iter(|| black_box(ours.seal(black_box(11), 3, &mut blk)))
    });
    let mut sealed = vec![0x5au8; BS];
    let tag = ours.seal(11, 3, &mut sealed);
    g.bench_function("open/engine", |b| {
        b.iter(|| {
            blk.copy_from_slice(&sealed);
            ours.open(11, 3, &mut blk, &tag).unwrap()
        })
    });
    g.bench_function("seal/rustcrypto", |b| {
        b.iter(|| {
            black_box(
                theirs
                    .encrypt_in_place_detached(&nonce(11), &3u64.to_le_bytes(), &mut blk)
                    .unwrap(),
            )
        })
    });
    g.bench_function("open/rustcrypto", |b| {
        b.iter(|| {
            blk.copy_from_slice(&sealed);
            theirs
                .decrypt_in_place_detached(
                    &nonce(11),
                    &3u64.to_le_bytes(),
                    &mut blk,
                    Tag::from_slice(&tag),
                )
                .unwrap()
        })
    });
    // The copy the open benches include (a failed open leaves the block changed, so each
    // iteration starts from the sealed bytes): subtract it when comparing.
    g.bench_function("copy_only", |b| {
        b.iter(|| {
            blk.copy_from_slice(&sealed);
            black_box(&blk);
        })
    });
    g.finish();
}

criterion_group!(benches, one_block);
criterion_main!(benches);
