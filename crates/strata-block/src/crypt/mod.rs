//! Encryption at rest: the per-block cipher and the master keys that wrap data keys.
//!
//! # Construction (see `docs/encryption.md` for the reasons)
//! Every 4 KiB data block of an encrypted volume is sealed with AES-256-GCM-SIV under its
//! lineage's data key. The nonce is the block's physical address (8 bytes little-endian, then
//! 4 zero bytes) and the associated data is its virtual block number, so a block cannot be
//! moved to another place of a volume, nor to another physical block, without failing to
//! open. The nonce repeats when a physical block is rewritten (in place within an epoch, or
//! reused after a free): GCM-SIV is built for that, and a repeat reveals only that the same
//! plaintext was written to the same physical block for the same virtual block again. The
//! ciphertext has the plaintext's length, so the data layout does not change; the 16-byte tag
//! lives in the map entry's metadata, journaled with the mapping in the same record.
//!
//! # Invariants
//! - A data key is 32 bytes from the operating system's CSPRNG, never written unwrapped: the
//!   metadata holds it only wrapped by a [`KeyWrapper`], and memory holds it in a
//!   [`DataKey`] that is zeroed when dropped.
//! - The checksum of an encrypted block is over its ciphertext: scrub and the read path check
//!   it without the key; the tag is checked only after the checksum matched.
//!
//! # Files
//! - `mod.rs`: the data key and the block cipher.
//! - `siv.rs`: AES-256-GCM-SIV itself (the one file that names the implementation).
//! - `wrap.rs`: the [`KeyWrapper`] trait and its key-file and environment implementations.

mod siv;
mod wrap;

pub use wrap::{EnvKey, KeyError, KeyFile, KeyWrapper, MasterKey};

use rand::RngCore;
use siv::Siv;
use zeroize::Zeroizing;

use crate::format::BLOCK_SIZE;

/// Bytes of a data key and of a master key.
pub const KEY_LEN: usize = 32;
/// Bytes of a block's authentication tag.
pub const TAG_LEN: usize = 16;
/// A block's authentication tag.
pub type BlockTag = [u8; TAG_LEN];
/// The scheme byte recorded for an encrypted volume (0 is "not encrypted").
pub const SCHEME_AES256_GCM_SIV: u8 = 1;

/// A data key in memory (zeroed on drop).
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> DataKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut k[..]);
        DataKey(k)
    }
    /// A key from its bytes (an unwrapped key).
    pub fn from_bytes(b: [u8; KEY_LEN]) -> DataKey {
        DataKey(Zeroizing::new(b))
    }
    /// The key's bytes (to wrap it).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A lineage's data key, ready to seal and open blocks.
pub struct BlockCipher {
    key: DataKey,
    aead: Siv,
}

impl std::fmt::Debug for BlockCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockCipher(..)")
    }
}

/// A block failed to authenticate under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

fn nonce(pblock: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&pblock.to_le_bytes());
    n
}

impl BlockCipher {
    /// The cipher of `key`.
    pub fn new(key: DataKey) -> BlockCipher {
        let aead = Siv::new(key.bytes());
        BlockCipher { key, aead }
    }

    /// The data key (for re-wrapping under a new master key).
    pub fn key(&self) -> &DataKey {
        &self.key
    }

    /// Encrypts one block in place; returns its tag.
    pub fn seal(&self, pblock: u64, vblock: u64, block: &mut [u8]) -> BlockTag {
        debug_assert_eq!(block.len() as u64, BLOCK_SIZE);
        self.aead.seal(nonce(pblock), &vblock.to_le_bytes(), block)
    }

    /// Decrypts one block in place if `tag` authenticates it; on failure the block's bytes
    /// are unspecified and must not be returned.
    pub fn open(
        &self,
        pblock: u64,
        vblock: u64,
        block: &mut [u8],
        tag: &BlockTag,
    ) -> Result<(), AuthFailed> {
        self.aead
            .open(nonce(pblock), &vblock.to_le_bytes(), block, tag)
            .map_err(|_| AuthFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let c = BlockCipher::new(DataKey::generate());
        let plain = vec![7u8; 4096];
        let mut b = plain.clone();
        let tag = c.seal(5, 9, &mut b);
        assert_ne!(b, plain);
        let sealed = b.clone();
        c.open(5, 9, &mut b, &tag).unwrap();
        assert_eq!(b, plain);
        // Another physical block, another virtual block, a flipped bit: refused.
        for (p, v) in [(6, 9), (5, 10)] {
            let mut x = sealed.clone();
            assert_eq!(c.open(p, v, &mut x, &tag), Err(AuthFailed));
        }
        let mut x = sealed.clone();
        x[100] ^= 1;
        assert_eq!(c.open(5, 9, &mut x, &tag), Err(AuthFailed));
        // Another key: refused.
        let other = BlockCipher::new(DataKey::generate());
        let mut x = sealed;
        assert_eq!(other.open(5, 9, &mut x, &tag), Err(AuthFailed));
    }

    #[test]
    fn same_place_other_plaintext_gives_unrelated_ciphertext() {
        // The nonce repeats on a rewrite of a physical block: GCM-SIV's synthetic IV still
        // differs with the plaintext, so two writes do not share a keystream.
        let c = BlockCipher::new(DataKey::generate());
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        b[0] = 1;
        c.seal(1, 1, &mut a);
        c.seal(1, 1, &mut b);
        let same = a.iter().zip(&b).skip(16).filter(|(x, y)| x == y).count();
        assert!(same < 64, "{same} equal bytes after the first block");
    }
}
