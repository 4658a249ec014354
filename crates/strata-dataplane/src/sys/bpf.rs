//! The map layouts shared with the kernel programs, declared plain old data for the loader.
#![allow(unsafe_code)]

use crate::fastpath::key::{FpAction, FpKey, FpValue};

// SAFETY: `#[repr(C)]` structs of integers and byte arrays with no implicit padding (their
// sizes and offsets are pinned by `fastpath::key`'s test), `Copy` and `'static`: any byte
// pattern the kernel writes is a valid value, and reading one as bytes reads no padding.
unsafe impl aya::Pod for FpKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FpAction {}
// SAFETY: as above: four u64, two u32, then the 48-byte action at 40, 88 bytes in all, a
// multiple of its 8-byte alignment, so no padding anywhere.
unsafe impl aya::Pod for FpValue {}
