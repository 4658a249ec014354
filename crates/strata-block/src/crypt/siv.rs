//! AES-256-GCM-SIV (RFC 8452) with detached tags, in place: the one AEAD of the engine, used
//! for data blocks ([`super::BlockCipher`]) and for wrapping data keys ([`super::MasterKey`]).
//! This file is the only one that names the library behind it.
//!
//! # Implementation (see `docs/encryption.md`, "Which implementation")
//! `aws-lc-rs` (AWS-LC, BoringSSL's x86-64 assembly for GCM-SIV: AES-NI for the key
//! derivation and CTR, eight blocks of POLYVAL per reduction with CLMUL). It builds with a C
//! compiler alone on x86-64 Linux (no cmake, Go or NASM). Where that assembly does not apply
//! AWS-LC falls back to its portable C code: same bytes, slower.
//!
//! # Invariants
//! - The output is RFC 8452 AES-256-GCM-SIV byte for byte (tested against the RFC's vectors
//!   and against RustCrypto `aes-gcm-siv`, the implementation that wrote earlier pools): a
//!   change of implementation never changes the bytes on disk.
//! - A failed open reports only that it failed; the buffer then holds unspecified bytes that
//!   the caller must not return.
//! - The expanded key lives in memory that AWS-LC allocates and wipes when freeing it (its
//!   `OPENSSL_free` cleanses every allocation), so dropping a [`Siv`] leaves no key schedule
//!   behind. The per-message keys GCM-SIV derives live on AWS-LC's stack during a call.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};

/// Bytes of a key.
pub const SIV_KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const SIV_NONCE_LEN: usize = 12;
/// Bytes of a tag.
pub const SIV_TAG_LEN: usize = 16;

/// An AES-256-GCM-SIV key ready to seal and open.
pub struct Siv(LessSafeKey);

impl std::fmt::Debug for Siv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Siv(..)")
    }
}

/// A message failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SivFailed;

impl Siv {
    /// The cipher of a 32-byte key.
    pub fn new(key: &[u8; SIV_KEY_LEN]) -> Siv {
        let k = UnboundKey::new(&AES_256_GCM_SIV, key).expect("a 32-byte key is valid");
        Siv(LessSafeKey::new(k))
    }

    /// Encrypts `buf` in place and returns its tag.
    pub fn seal(
        &self,
        nonce: [u8; SIV_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; SIV_TAG_LEN] {
        // GCM-SIV is built for repeated nonces (that is why it is used): the name of
        // `assume_unique_for_key` is the library's contract for GCM, not a need here.
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .expect("a message of at most 2^36 bytes seals");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypts `buf` in place if `tag` authenticates it (with `nonce` and `aad`).
    pub fn open(
        &self,
        nonce: [u8; SIV_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; SIV_TAG_LEN],
    ) -> Result<(), SivFailed> {
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                tag,
                buf,
            )
            .map(|_| ())
            .map_err(|_| SivFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
    use aes_gcm_siv::{Aes256GcmSiv, Nonce as RcNonce, Tag as RcTag};
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8452, appendix C.2 (AEAD_AES_256_GCM_SIV): key, nonce, AAD, plaintext, and the
    /// result (ciphertext then tag).
    const RFC8452_C2: &[[&str; 5]] = &[
        [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "",
            "",
            "07f5f4169bbf55a8400cd47ea6fd400f",
        ],
        [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "01",
            "0200000000000000",
            "1de22967237a813291213f267e3b452f02d01ae33e4ec854",
        ],
        [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "01",
            "020000000000000000000000000000000300000000000000000000000000000004000000000000000000\
             00000000000005000000000000000000000000000000",
            "67fd45e126bfb9a79930c43aad2d36967d3f0e4d217c1e551f59727870beefc98cb933a8fce9de887b1e\
             40799988db1fc3f91880ed405b2dd298318858467c895bde0285037c5de81e5b570a049b62a0",
        ],
        [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "030000000000000000000000",
            "010000000000000000000000000000000200",
            "0300000000000000000000000000000004000000",
            "43dd0163cdb48f9fe3212bf61b201976067f342bb879ad976d8242acc188ab59cabfe307",
        ],
        [
            "e66021d5eb8e4f4066d4adb9c33560e4f46e44bb3da0015c94f7088736864200",
            "e0eaf5284d884a0e77d31646",
            "",
            "",
            "169fbb2fbf389a995f6390af22228a62",
        ],
        [
            "9745b3d1ae06556fb6aa7890bebc18fe6b3db4da3d57aa94842b9803a96e07fb",
            "6de71860f762ebfbd08284e4",
            "f37de21c7ff901cfe8a69615a93fdf7a98cad481796245709f",
            "21702de0de18baa9c9596291b08466",
            "793576dfa5c0f88729a7ed3c2f1bffb3080d28f6ebb5d3648ce97bd5ba67fd",
        ],
        [
            "3c535de192eaed3822a2fbbe2ca9dfc88255e14a661b8aa82cc54236093bbc23",
            "688089e55540db1872504e1c",
            "734320ccc9d9bbbb19cb81b2af4ecbc3e72834321f7aa0f70b7282b4f33df23f167541",
            "ced532ce4159b035277d4dfbb7db62968b13cd4eec",
            "626660c26ea6612fb17ad91e8e767639edd6c9faee9d6c7029675b89eaf4ba1ded1a286594",
        ],
    ];

    #[test]
    fn rfc8452_aes256_vectors_seal_and_open() {
        for (i, [k, n, a, p, r]) in RFC8452_C2.iter().enumerate() {
            let s = Siv::new(&unhex(k).try_into().unwrap());
            let nonce: [u8; 12] = unhex(n).try_into().unwrap();
            let (aad, plain, result) = (unhex(a), unhex(p), unhex(r));
            let mut buf = plain.clone();
            let tag = s.seal(nonce, &aad, &mut buf);
            let (ct, want_tag) = result.split_at(plain.len());
            assert_eq!(buf, ct, "vector {i}: ciphertext");
            assert_eq!(&tag[..], want_tag, "vector {i}: tag");
            s.open(nonce, &aad, &mut buf, &tag).unwrap();
            assert_eq!(buf, plain, "vector {i}: opened");
            if !plain.is_empty() {
                let mut bad = ct.to_vec();
                bad[0] ^= 0x80;
                assert_eq!(s.open(nonce, &aad, &mut bad, &tag), Err(SivFailed));
            }
            let mut bad_tag = tag;
            bad_tag[15] ^= 1;
            let mut buf = ct.to_vec();
            assert_eq!(s.open(nonce, &aad, &mut buf, &bad_tag), Err(SivFailed));
        }
    }

    /// The bytes on disk do not change with the implementation: for random keys, nonces, AAD
    /// and messages (4 KiB blocks as the engine seals them, and the odd lengths of wrapped
    /// keys and key check values), aws-lc-rs and RustCrypto `aes-gcm-siv` (which sealed the
    /// blocks of existing pools) give the same ciphertext and tag, and each opens the other's.
    #[test]
    fn same_bytes_as_rustcrypto_and_each_opens_the_other() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        for round in 0..300 {
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut nonce);
            let len = match round % 3 {
                0 => 4096,
                1 => 32,
                _ => rng.gen_range(0..9000),
            };
            let aad_len = if round % 2 == 0 {
                8
            } else {
                rng.gen_range(0..100)
            };
            let mut plain = vec![0u8; len];
            rng.fill_bytes(&mut plain);
            let mut aad = vec![0u8; aad_len];
            rng.fill_bytes(&mut aad);

            let ours = Siv::new(&key);
            let theirs = Aes256GcmSiv::new_from_slice(&key).unwrap();
            let n = RcNonce::from(nonce);

            let mut a = plain.clone();
            let tag_a = ours.seal(nonce, &aad, &mut a);
            let mut b = plain.clone();
            let tag_b: [u8; 16] = theirs
                .encrypt_in_place_detached(&n, &aad, &mut b)
                .unwrap()
                .into();
            assert_eq!(a, b, "seed {seed} round {round}: ciphertext");
            assert_eq!(tag_a, tag_b, "seed {seed} round {round}: tag");

            // Each opens the other's output.
            theirs
                .decrypt_in_place_detached(&n, &aad, &mut a, RcTag::from_slice(&tag_a))
                .unwrap();
            assert_eq!(a, plain, "seed {seed} round {round}: RustCrypto opens ours");
            ours.open(nonce, &aad, &mut b, &tag_b).unwrap();
            assert_eq!(
                b, plain,
                "seed {seed} round {round}: ours opens RustCrypto's"
            );
        }
    }
}
