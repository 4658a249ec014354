//! Strata's shared vocabulary: the small types every layer agrees on.
//!
//! This crate does no I/O and has no dependencies, so the engines, the control plane and the CLI
//! can all speak it. It holds THE registry of stable error codes (`codes.rs`): an
//! [`ErrorCode`]'s string form never changes once released, because scripts and the REST API's
//! clients match on it.

use std::fmt;
use std::str::FromStr;

mod codes;

pub use codes::{nbd_errno, ErrorCode, UnknownErrorCode};

/// The class of a physical device. Placement inside a pool can be restricted to one class.
///
/// The numeric value is part of the on-disk format (superblocks store it): never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceClass {
    /// Rotating disk.
    Hdd = 1,
    /// SATA/SAS flash.
    Ssd = 2,
    /// NVMe flash.
    Nvme = 3,
}

impl DeviceClass {
    /// All classes, slowest first.
    pub const ALL: [DeviceClass; 3] = [DeviceClass::Hdd, DeviceClass::Ssd, DeviceClass::Nvme];

    /// The value stored on disk.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Decodes the on-disk value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(DeviceClass::Hdd),
            2 => Some(DeviceClass::Ssd),
            3 => Some(DeviceClass::Nvme),
            _ => None,
        }
    }

    /// The lower-case name used by the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Hdd => "hdd",
            DeviceClass::Ssd => "ssd",
            DeviceClass::Nvme => "nvme",
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returned when a device class name is not one of `hdd`, `ssd`, `nvme`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDeviceClass(pub String);

impl fmt::Display for UnknownDeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown device class {:?} (expected hdd, ssd or nvme)",
            self.0
        )
    }
}

impl std::error::Error for UnknownDeviceClass {}

impl FromStr for DeviceClass {
    type Err = UnknownDeviceClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hdd" => Ok(DeviceClass::Hdd),
            "ssd" => Ok(DeviceClass::Ssd),
            "nvme" => Ok(DeviceClass::Nvme),
            _ => Err(UnknownDeviceClass(s.to_string())),
        }
    }
}

/// Parses a human size such as `10G`, `512M`, `4096`, `1.5T` (binary multiples: K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let upper = t.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, mult): (&str, u64) = match body.chars().last() {
        Some('K') => (&body[..body.len() - 1], 1 << 10),
        Some('M') => (&body[..body.len() - 1], 1 << 20),
        Some('G') => (&body[..body.len() - 1], 1 << 30),
        Some('T') => (&body[..body.len() - 1], 1 << 40),
        Some('P') => (&body[..body.len() - 1], 1 << 50),
        _ => (body, 1),
    };
    let num = num.trim();
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large"));
    }
    let f: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if !f.is_finite() || f < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    let v = f * mult as f64;
    if v >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(v as u64)
}

/// Formats bytes with a binary unit, e.g. `10.0G`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("200M").unwrap(), 200 << 20);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert!(parse_size("").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999P").is_err());
    }

    #[test]
    fn classes_round_trip() {
        for c in DeviceClass::ALL {
            assert_eq!(DeviceClass::from_u8(c.to_u8()), Some(c));
            assert_eq!(c.as_str().parse::<DeviceClass>().unwrap(), c);
        }
        assert_eq!(DeviceClass::from_u8(0), None);
        assert!("floppy".parse::<DeviceClass>().is_err());
    }

    #[test]
    fn sizes_format() {
        assert_eq!(format_size(512), "512");
        assert_eq!(format_size(10 << 30), "10.0G");
    }
}
