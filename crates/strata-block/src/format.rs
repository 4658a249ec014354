//! On-disk structures with fixed layouts: the device superblock, the checkpoint header and the
//! journal record header. The byte layouts are drawn in `docs/block-format.md`; the offsets here
//! are the single source of truth for them.
//!
//! Every structure starts with an 8-byte magic and a u32 format version, so a reader can tell
//! "not ours" from "ours but newer" before trusting anything else, and ends its header with a
//! CRC-32C over the bytes before it.

use strata_types::DeviceClass;
use uuid::Uuid;

/// CRC-32C (Castagnoli), the checksum of every structure and data block, computed with the
/// fastest kernel the CPU offers (carry-less multiply folding where available).
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Size of a data block: the unit of allocation, mapping and checksumming.
pub const BLOCK_SIZE: u64 = 4096;
/// Region reserved at the start of every device for the superblock.
pub const SUPERBLOCK_REGION: u64 = 1 << 20;
/// Everything the engine places is aligned to this.
pub const ALIGN: u64 = 1 << 20;
/// Smallest device the engine accepts.
pub const MIN_DEVICE_SIZE: u64 = 4 << 20;
/// Largest volume size accepted (thin: may exceed the pool). 1 PiB.
pub const MAX_VOLUME_SIZE: u64 = 1 << 50;
/// Highest device index: physical addresses keep the device in the top 16 bits.
pub const MAX_DEVICES: usize = 256;

/// Superblock magic: "STRATAPD" (Strata pool device).
pub const SB_MAGIC: [u8; 8] = *b"STRATAPD";
/// Superblock format version this build writes and reads.
pub const SB_VERSION: u32 = 1;
/// Bytes covered by the superblock CRC (the CRC itself sits at `SB_CRC`).
pub const SB_LEN: usize = 256;

// Superblock field offsets.
const SB_OFF_MAGIC: usize = 0;
const SB_OFF_VERSION: usize = 8;
const SB_OFF_LEN: usize = 12;
const SB_OFF_POOL: usize = 16;
const SB_OFF_DEVICE: usize = 32;
const SB_OFF_INDEX: usize = 48;
const SB_OFF_COUNT: usize = 52;
const SB_OFF_CLASS: usize = 56;
const SB_OFF_FLAGS: usize = 57;
const SB_OFF_SIZE: usize = 64;
const SB_OFF_BLOCK_SIZE: usize = 72;
const SB_OFF_DATA_OFFSET: usize = 80;
const SB_OFF_DATA_BLOCKS: usize = 88;
const SB_OFF_META_DEVICE: usize = 96;
const SB_OFF_CKPT_OFFSET: usize = 112;
const SB_OFF_CKPT_LEN: usize = 120;
const SB_OFF_JOURNAL_OFFSET: usize = 128;
const SB_OFF_JOURNAL_LEN: usize = 136;
const SB_OFF_CREATED: usize = 144;
const SB_CRC: usize = SB_LEN - 4;

/// Flag: this device holds the pool's metadata (checkpoints and journal).
pub const SB_FLAG_META: u8 = 1;

/// The superblock at offset 0 of every device of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The pool this device belongs to.
    pub pool: Uuid,
    /// This device's own id.
    pub device: Uuid,
    /// Position of this device in the pool (0-based; part of every physical address).
    pub index: u32,
    /// How many devices the pool has.
    pub count: u32,
    /// Device class.
    pub class: DeviceClass,
    /// Bit flags (`SB_FLAG_META`).
    pub flags: u8,
    /// Device size in bytes when the pool was formatted.
    pub size: u64,
    /// Byte offset of the first data block.
    pub data_offset: u64,
    /// Number of data blocks.
    pub data_blocks: u64,
    /// Which device holds the metadata.
    pub meta_device: Uuid,
    /// Offset of checkpoint slot A (slot B follows it); 0 on devices without metadata.
    pub ckpt_offset: u64,
    /// Length of one checkpoint slot.
    pub ckpt_len: u64,
    /// Offset of the journal.
    pub journal_offset: u64,
    /// Length of the journal.
    pub journal_len: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// Why a superblock was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuperblockError {
    /// The magic is not ours: the device was never part of a Strata pool.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u32),
    /// The CRC does not match: the superblock is damaged.
    BadChecksum,
    /// A field is out of range.
    Invalid(&'static str),
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn get_uuid(b: &[u8], off: usize) -> Uuid {
    Uuid::from_bytes(b[off..off + 16].try_into().expect("16 bytes"))
}

impl Superblock {
    /// Encodes into a full block (the rest zero).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE as usize];
        b[SB_OFF_MAGIC..SB_OFF_MAGIC + 8].copy_from_slice(&SB_MAGIC);
        put_u32(&mut b, SB_OFF_VERSION, SB_VERSION);
        put_u32(&mut b, SB_OFF_LEN, SB_LEN as u32);
        b[SB_OFF_POOL..SB_OFF_POOL + 16].copy_from_slice(self.pool.as_bytes());
        b[SB_OFF_DEVICE..SB_OFF_DEVICE + 16].copy_from_slice(self.device.as_bytes());
        put_u32(&mut b, SB_OFF_INDEX, self.index);
        put_u32(&mut b, SB_OFF_COUNT, self.count);
        b[SB_OFF_CLASS] = self.class.to_u8();
        b[SB_OFF_FLAGS] = self.flags;
        put_u64(&mut b, SB_OFF_SIZE, self.size);
        put_u32(&mut b, SB_OFF_BLOCK_SIZE, BLOCK_SIZE as u32);
        put_u64(&mut b, SB_OFF_DATA_OFFSET, self.data_offset);
        put_u64(&mut b, SB_OFF_DATA_BLOCKS, self.data_blocks);
        b[SB_OFF_META_DEVICE..SB_OFF_META_DEVICE + 16].copy_from_slice(self.meta_device.as_bytes());
        put_u64(&mut b, SB_OFF_CKPT_OFFSET, self.ckpt_offset);
        put_u64(&mut b, SB_OFF_CKPT_LEN, self.ckpt_len);
        put_u64(&mut b, SB_OFF_JOURNAL_OFFSET, self.journal_offset);
        put_u64(&mut b, SB_OFF_JOURNAL_LEN, self.journal_len);
        put_u64(&mut b, SB_OFF_CREATED, self.created);
        let crc = crc32c(&b[..SB_CRC]);
        put_u32(&mut b, SB_CRC, crc);
        b
    }

    /// Decodes and validates a superblock read from offset 0.
    pub fn decode(b: &[u8]) -> Result<Self, SuperblockError> {
        if b.len() < SB_LEN || b[SB_OFF_MAGIC..SB_OFF_MAGIC + 8] != SB_MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        let version = get_u32(b, SB_OFF_VERSION);
        if version != SB_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        if get_u32(b, SB_CRC) != crc32c(&b[..SB_CRC]) {
            return Err(SuperblockError::BadChecksum);
        }
        if get_u32(b, SB_OFF_LEN) as usize != SB_LEN {
            return Err(SuperblockError::Invalid("header length"));
        }
        if get_u32(b, SB_OFF_BLOCK_SIZE) as u64 != BLOCK_SIZE {
            return Err(SuperblockError::Invalid("block size"));
        }
        let class = DeviceClass::from_u8(b[SB_OFF_CLASS])
            .ok_or(SuperblockError::Invalid("device class"))?;
        let sb = Superblock {
            pool: get_uuid(b, SB_OFF_POOL),
            device: get_uuid(b, SB_OFF_DEVICE),
            index: get_u32(b, SB_OFF_INDEX),
            count: get_u32(b, SB_OFF_COUNT),
            class,
            flags: b[SB_OFF_FLAGS],
            size: get_u64(b, SB_OFF_SIZE),
            data_offset: get_u64(b, SB_OFF_DATA_OFFSET),
            data_blocks: get_u64(b, SB_OFF_DATA_BLOCKS),
            meta_device: get_uuid(b, SB_OFF_META_DEVICE),
            ckpt_offset: get_u64(b, SB_OFF_CKPT_OFFSET),
            ckpt_len: get_u64(b, SB_OFF_CKPT_LEN),
            journal_offset: get_u64(b, SB_OFF_JOURNAL_OFFSET),
            journal_len: get_u64(b, SB_OFF_JOURNAL_LEN),
            created: get_u64(b, SB_OFF_CREATED),
        };
        if sb.count == 0 || sb.count as usize > MAX_DEVICES || sb.index >= sb.count {
            return Err(SuperblockError::Invalid("device index or count"));
        }
        let data_end = sb
            .data_blocks
            .checked_mul(BLOCK_SIZE)
            .and_then(|l| l.checked_add(sb.data_offset));
        if data_end.is_none_or(|e| e > sb.size) || sb.data_offset < SUPERBLOCK_REGION {
            return Err(SuperblockError::Invalid("data area"));
        }
        if sb.flags & SB_FLAG_META != 0 {
            let meta_end = sb
                .ckpt_len
                .checked_mul(2)
                .and_then(|l| l.checked_add(sb.ckpt_offset))
                .filter(|&e| e <= sb.journal_offset)
                .and_then(|_| sb.journal_offset.checked_add(sb.journal_len));
            if meta_end.is_none_or(|e| e > sb.data_offset)
                || sb.ckpt_offset < SUPERBLOCK_REGION
                || sb.ckpt_len < 2 * BLOCK_SIZE
                || sb.journal_len < BLOCK_SIZE
            {
                return Err(SuperblockError::Invalid("metadata area"));
            }
        }
        Ok(sb)
    }
}

/// Checkpoint header magic: "STRATACK".
pub const CKPT_MAGIC: [u8; 8] = *b"STRATACK";
/// Journal record magic: "STRATAJR".
pub const JOURNAL_MAGIC: [u8; 8] = *b"STRATAJR";
/// Version of the checkpoint and journal headers and of the encoding of their payloads.
pub const META_VERSION: u32 = 1;
/// Size of a checkpoint or journal header (the payload follows it directly).
pub const META_HEADER_LEN: usize = 64;
const MH_OFF_MAGIC: usize = 0;
const MH_OFF_VERSION: usize = 8;
const MH_OFF_SEQ: usize = 16;
const MH_OFF_LEN: usize = 24;
const MH_OFF_PAYLOAD_CRC: usize = 32;
const MH_OFF_POOL: usize = 36;
const MH_OFF_CRC: usize = 60;

/// The header in front of a checkpoint or a journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaHeader {
    /// Which structure: `CKPT_MAGIC` or `JOURNAL_MAGIC`.
    pub magic: [u8; 8],
    /// Commit sequence number this checkpoint covers up to, or of this journal record.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// CRC-32C of the payload.
    pub payload_crc: u32,
    /// The pool it belongs to (so a reused device's stale records are never replayed).
    pub pool: Uuid,
}

impl MetaHeader {
    /// Encodes the 64-byte header.
    pub fn encode(&self) -> [u8; META_HEADER_LEN] {
        let mut b = [0u8; META_HEADER_LEN];
        b[MH_OFF_MAGIC..MH_OFF_MAGIC + 8].copy_from_slice(&self.magic);
        put_u32(&mut b, MH_OFF_VERSION, META_VERSION);
        put_u64(&mut b, MH_OFF_SEQ, self.seq);
        put_u64(&mut b, MH_OFF_LEN, self.len);
        put_u32(&mut b, MH_OFF_PAYLOAD_CRC, self.payload_crc);
        b[MH_OFF_POOL..MH_OFF_POOL + 16].copy_from_slice(self.pool.as_bytes());
        let crc = crc32c(&b[..MH_OFF_CRC]);
        put_u32(&mut b, MH_OFF_CRC, crc);
        b
    }

    /// Decodes a header and checks its magic, version and CRC. None if any fails: the caller
    /// treats that as "no valid structure here".
    pub fn decode(b: &[u8], magic: [u8; 8]) -> Option<Self> {
        if b.len() < META_HEADER_LEN || b[MH_OFF_MAGIC..MH_OFF_MAGIC + 8] != magic {
            return None;
        }
        if get_u32(b, MH_OFF_VERSION) != META_VERSION
            || get_u32(b, MH_OFF_CRC) != crc32c(&b[..MH_OFF_CRC])
        {
            return None;
        }
        Some(MetaHeader {
            magic,
            seq: get_u64(b, MH_OFF_SEQ),
            len: get_u64(b, MH_OFF_LEN),
            payload_crc: get_u32(b, MH_OFF_PAYLOAD_CRC),
            pool: get_uuid(b, MH_OFF_POOL),
        })
    }
}

/// Rounds `v` up to a multiple of `a` (a power of two).
pub fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Sizes of the metadata area for a pool of `total_bytes` raw capacity.
///
/// A checkpoint slot must hold the whole mapping state: about 20 bytes per mapped block (36
/// for a block of an encrypted volume, with its tag), plus tombstones; we reserve 40 bytes
/// per data block of the pool plus 1 MiB of headroom (pools formatted before encryption
/// reserved 24: they hold encrypted volumes too, up to what their slot holds). The journal
/// takes 1/64 of the pool, between 1 MiB and 256 MiB.
pub fn meta_sizes(total_bytes: u64) -> (u64, u64) {
    let blocks = total_bytes / BLOCK_SIZE;
    let ckpt = align_up((1 << 20) + blocks * 40, ALIGN);
    let journal = align_up((total_bytes / 64).clamp(1 << 20, 256 << 20), ALIGN);
    (ckpt, journal)
}

/// Bytes of checkpoint payload one mapping entry takes (vblock, pblock, csum).
pub const ENTRY_ENCODED_LEN: u64 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            pool: Uuid::from_u128(1),
            device: Uuid::from_u128(2),
            index: 0,
            count: 2,
            class: DeviceClass::Ssd,
            flags: SB_FLAG_META,
            size: 64 << 20,
            data_offset: 16 << 20,
            data_blocks: 1024,
            meta_device: Uuid::from_u128(2),
            ckpt_offset: 1 << 20,
            ckpt_len: 2 << 20,
            journal_offset: 5 << 20,
            journal_len: 1 << 20,
            created: 1,
        }
    }

    #[test]
    fn superblock_round_trip() {
        let sb = sample();
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
    }

    /// Freezes the byte layout: a change here is a format change and needs a new version.
    #[test]
    fn superblock_layout_is_frozen() {
        let b = sample().encode();
        assert_eq!(&b[0..8], b"STRATAPD");
        assert_eq!(&b[8..12], &1u32.to_le_bytes());
        assert_eq!(&b[12..16], &256u32.to_le_bytes());
        assert_eq!(b[56], 2);
        assert_eq!(&b[72..76], &4096u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(b[252..256].try_into().unwrap()),
            crc32c(&b[..252])
        );
    }

    #[test]
    fn superblock_damage_is_detected() {
        let mut b = sample().encode();
        b[70] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(SuperblockError::BadChecksum));
        let mut b = sample().encode();
        b[0] = b'X';
        assert_eq!(Superblock::decode(&b), Err(SuperblockError::BadMagic));
        let mut b = sample().encode();
        b[8] = 9;
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn meta_header_round_trip() {
        let h = MetaHeader {
            magic: JOURNAL_MAGIC,
            seq: 9,
            len: 100,
            payload_crc: 5,
            pool: Uuid::from_u128(3),
        };
        let b = h.encode();
        assert_eq!(MetaHeader::decode(&b, JOURNAL_MAGIC), Some(h));
        assert_eq!(MetaHeader::decode(&b, CKPT_MAGIC), None);
        let mut b2 = b;
        b2[20] ^= 4;
        assert_eq!(MetaHeader::decode(&b2, JOURNAL_MAGIC), None);
    }
}
