//! The intent log's bytes (version 1). Little-endian; CRC-32C (Castagnoli).
//!
//! ```text
//! offset size field
//!      0    8 magic "STRATAWI"
//!      8    4 format version (1)
//!     12    4 header length (64)
//!     16    8 region size in bytes (a power of two, at least 4096)
//!     24    8 region count (bits in the bitmap)
//!     32    8 generation
//!     40    1 number of copies (1 to 3)
//!     41    3 copy flags, one byte each (0 stale, 1 in sync, 2 new; unused ones 0)
//!     44    4 CRC-32C of the bitmap
//!     48   12 reserved, zero
//!     60    4 CRC-32C of bytes 0..60
//!     64    . bitmap: ceil(count / 8) bytes, region r is bit (r % 8) of byte r / 8
//! ```
//!
//! The decoder checks the magic and version first ("not an intent log" and "a newer format"
//! are different errors), then the header CRC, then every field, then that the file is exactly
//! header plus bitmap, the bitmap CRC and that no bit lies beyond the count. It never panics
//! and allocates only what the checked length allows.

use thiserror::Error;

use super::{CopyFlag, IntentRecord};
use crate::types::{RegionSet, MAX_COPIES};

/// The magic.
pub const MAGIC: &[u8; 8] = b"STRATAWI";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// The header's length.
pub const HEADER_LEN: usize = 64;
const OFF_VERSION: usize = 8;
const OFF_HLEN: usize = 12;
const OFF_REGION_SIZE: usize = 16;
const OFF_COUNT: usize = 24;
const OFF_GEN: usize = 32;
const OFF_NCOPIES: usize = 40;
const OFF_FLAGS: usize = 41;
const OFF_BITMAP_CRC: usize = 44;
const OFF_RESERVED: usize = 48;
const OFF_HEADER_CRC: usize = 60;
/// Largest region count accepted (a 2^40-region volume; keeps a hostile count harmless).
const MAX_COUNT: u64 = 1 << 40;

/// Why bytes are not a valid intent log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    /// Not an intent log.
    #[error("bad magic")]
    BadMagic,
    /// A format this build does not read.
    #[error("format version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u32),
    /// The header's checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// A header field is out of range.
    #[error("invalid field: {0}")]
    BadField(&'static str),
    /// The length is not header plus bitmap.
    #[error("length {found} does not match the header (expected {expected})")]
    Length {
        /// Bytes found.
        found: usize,
        /// Bytes the header implies.
        expected: u64,
    },
    /// The bitmap's checksum does not match.
    #[error("bitmap checksum mismatch")]
    BitmapChecksum,
}

fn crc(b: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, b) as u32
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Encodes a record. The record must be valid (1 to 3 copies, bits below the count).
pub fn encode(r: &IntentRecord) -> Vec<u8> {
    let bitmap_len = r.regions.div_ceil(8) as usize;
    let mut out = vec![0u8; HEADER_LEN + bitmap_len];
    for &b in &r.dirty {
        debug_assert!(b < r.regions);
        out[HEADER_LEN + (b / 8) as usize] |= 1 << (b % 8);
    }
    out[..8].copy_from_slice(MAGIC);
    out[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    out[OFF_HLEN..OFF_HLEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out[OFF_REGION_SIZE..OFF_REGION_SIZE + 8].copy_from_slice(&r.region_size.to_le_bytes());
    out[OFF_COUNT..OFF_COUNT + 8].copy_from_slice(&r.regions.to_le_bytes());
    out[OFF_GEN..OFF_GEN + 8].copy_from_slice(&r.generation.to_le_bytes());
    out[OFF_NCOPIES] = r.copies.len() as u8;
    for (i, f) in r.copies.iter().enumerate() {
        out[OFF_FLAGS + i] = f.to_byte();
    }
    let bc = crc(&out[HEADER_LEN..]);
    out[OFF_BITMAP_CRC..OFF_BITMAP_CRC + 4].copy_from_slice(&bc.to_le_bytes());
    let hc = crc(&out[..OFF_HEADER_CRC]);
    out[OFF_HEADER_CRC..HEADER_LEN].copy_from_slice(&hc.to_le_bytes());
    out
}

/// Decodes and validates a record.
pub fn decode(b: &[u8]) -> Result<IntentRecord, DecodeError> {
    if b.len() < HEADER_LEN {
        return Err(DecodeError::TooShort(b.len()));
    }
    if &b[..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u32_at(b, OFF_VERSION);
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if crc(&b[..OFF_HEADER_CRC]) != u32_at(b, OFF_HEADER_CRC) {
        return Err(DecodeError::HeaderChecksum);
    }
    if u32_at(b, OFF_HLEN) as usize != HEADER_LEN {
        return Err(DecodeError::BadField("header length"));
    }
    let region_size = u64_at(b, OFF_REGION_SIZE);
    if region_size < 4096 || !region_size.is_power_of_two() {
        return Err(DecodeError::BadField("region size"));
    }
    let regions = u64_at(b, OFF_COUNT);
    if regions > MAX_COUNT {
        return Err(DecodeError::BadField("region count"));
    }
    let n = b[OFF_NCOPIES] as usize;
    if n == 0 || n > MAX_COPIES {
        return Err(DecodeError::BadField("number of copies"));
    }
    let mut copies = Vec::with_capacity(n);
    for i in 0..MAX_COPIES {
        let byte = b[OFF_FLAGS + i];
        if i < n {
            copies.push(CopyFlag::from_byte(byte).ok_or(DecodeError::BadField("copy flag"))?);
        } else if byte != 0 {
            return Err(DecodeError::BadField("unused copy flag"));
        }
    }
    if b[OFF_RESERVED..OFF_HEADER_CRC].iter().any(|&x| x != 0) {
        return Err(DecodeError::BadField("reserved"));
    }
    let expected = HEADER_LEN as u64 + regions.div_ceil(8);
    if b.len() as u64 != expected {
        return Err(DecodeError::Length {
            found: b.len(),
            expected,
        });
    }
    let bitmap = &b[HEADER_LEN..];
    if crc(bitmap) != u32_at(b, OFF_BITMAP_CRC) {
        return Err(DecodeError::BitmapChecksum);
    }
    let mut dirty = RegionSet::new();
    for (i, &byte) in bitmap.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) != 0 {
                let r = i as u64 * 8 + bit;
                if r >= regions {
                    return Err(DecodeError::BadField("bit beyond the region count"));
                }
                dirty.insert(r);
            }
        }
    }
    Ok(IntentRecord {
        generation: u64_at(b, OFF_GEN),
        region_size,
        regions,
        copies,
        dirty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> IntentRecord {
        IntentRecord {
            generation: 7,
            region_size: 1 << 20,
            regions: 20,
            copies: vec![CopyFlag::InSync, CopyFlag::Stale, CopyFlag::New],
            dirty: [0, 9, 19].into_iter().collect(),
        }
    }

    #[test]
    fn layout_is_frozen() {
        let b = encode(&record());
        assert_eq!(b.len(), 64 + 3);
        assert_eq!(&b[..8], b"STRATAWI");
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 64, 0, 0, 0]);
        assert_eq!(u64_at(&b, 16), 1 << 20);
        assert_eq!(u64_at(&b, 24), 20);
        assert_eq!(u64_at(&b, 32), 7);
        assert_eq!(&b[40..44], &[3, 1, 0, 2]);
        assert_eq!(&b[64..], &[0b0000_0001, 0b0000_0010, 0b0000_1000]);
        assert_eq!(decode(&b), Ok(record()));
    }

    #[test]
    fn every_damage_is_named() {
        let good = encode(&record());
        assert_eq!(decode(&good[..10]), Err(DecodeError::TooShort(10)));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(DecodeError::BadMagic));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(2)));
        let mut b = good.clone();
        b[33] ^= 1;
        assert_eq!(decode(&b), Err(DecodeError::HeaderChecksum));
        let mut b = good.clone();
        b[65] ^= 4;
        assert_eq!(decode(&b), Err(DecodeError::BitmapChecksum));
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(decode(&b), Err(DecodeError::Length { .. })));
    }

    #[test]
    fn a_bit_beyond_the_count_is_refused() {
        let mut r = record();
        r.regions = 19;
        r.dirty = [3].into_iter().collect();
        let mut b = encode(&r);
        b[64 + 2] |= 0b0000_1000; // region 19 of a 19-region volume
        let bc = crc(&b[HEADER_LEN..]);
        b[OFF_BITMAP_CRC..OFF_BITMAP_CRC + 4].copy_from_slice(&bc.to_le_bytes());
        let hc = crc(&b[..OFF_HEADER_CRC]);
        b[OFF_HEADER_CRC..HEADER_LEN].copy_from_slice(&hc.to_le_bytes());
        assert_eq!(
            decode(&b),
            Err(DecodeError::BadField("bit beyond the region count"))
        );
    }

    fn arb_record() -> impl Strategy<Value = IntentRecord> {
        (
            any::<u64>(),
            12u32..30,
            0u64..5000,
            prop::collection::vec(0u8..3, 1..=3),
            prop::collection::vec(any::<u64>(), 0..50),
        )
            .prop_map(|(generation, shift, regions, flags, bits)| IntentRecord {
                generation,
                region_size: 1 << shift,
                regions,
                copies: flags
                    .into_iter()
                    .map(|f| CopyFlag::from_byte(f).unwrap())
                    .collect(),
                dirty: if regions == 0 {
                    RegionSet::new()
                } else {
                    bits.into_iter().map(|b| b % regions).collect()
                },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&b);
        }

        #[test]
        fn mutated_records_never_panic_nor_decode_wrong(
            r in arb_record(),
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut b = encode(&r);
            let i = pos.index(b.len());
            let old = b[i];
            b[i] = byte;
            match decode(&b) {
                // Only an unchanged byte (or one the CRC cannot see) may still decode, and
                // then it must decode to what was stored.
                Ok(d) => prop_assert!(old == byte && d == r),
                Err(_) => prop_assert_ne!(old, byte),
            }
        }

        #[test]
        fn round_trip(r in arb_record()) {
            prop_assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }
}
