//! Sizes in requests: a number of bytes, or a short text such as `"10G"` (binary units).
//!
//! # Invariants
//! - The server accepts exactly what the document declares: an integer within the bounds of
//!   `bounds.rs` (and a whole number of blocks for a volume size), or a text matching the
//!   declared pattern, which only spells values within those bounds.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use super::bounds::*;
use crate::error::ControlError;

/// Bytes, or a text size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// A text size, e.g. `"10G"`.
    Text(String),
}

/// Bytes (an integer, whole floats such as `4096.0` included: JSON Schema counts them as
/// integers) or a text.
impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a number of bytes or a size text such as \"10G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SizeValue, E> {
                super::whole::whole(v)
                    .map(SizeValue::Bytes)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl SizeValue {
    fn bytes(
        &self,
        field: &'static str,
        (min, max): (u64, u64),
        multiple: u64,
        pattern: &'static str,
    ) -> Result<u64, ControlError> {
        let b = match self {
            SizeValue::Bytes(b) => *b,
            SizeValue::Text(t) => {
                check_text(field, t, pattern)?;
                strata_types::parse_size(t).map_err(|e| ControlError::invalid(field, e))?
            }
        };
        check_int(field, b, min, max)?;
        if b % multiple != 0 {
            return Err(ControlError::invalid(
                field,
                format!("{b} is not a multiple of {multiple} bytes"),
            ));
        }
        Ok(b)
    }
}

/// A volume size: bytes (a multiple of 4096) or text like `"10G"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VolumeSize(pub SizeValue);

impl VolumeSize {
    /// The size in bytes, checked against the declared bounds.
    pub fn bytes(&self, field: &'static str) -> Result<u64, ControlError> {
        self.0.bytes(
            field,
            (VOLUME_SIZE_MIN, VOLUME_SIZE_MAX),
            VOLUME_SIZE_MULTIPLE,
            VOLUME_SIZE_PATTERN,
        )
    }
}

impl From<u64> for VolumeSize {
    fn from(b: u64) -> Self {
        VolumeSize(SizeValue::Bytes(b))
    }
}

/// A bandwidth (per second) or burst in bytes: bytes or text like `"200M"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bandwidth(pub SizeValue);

impl Bandwidth {
    /// The value in bytes, checked against the declared bounds.
    pub fn bytes(&self, field: &'static str) -> Result<u64, ControlError> {
        self.0
            .bytes(field, (BANDWIDTH_MIN, BANDWIDTH_MAX), 1, BANDWIDTH_PATTERN)
    }
}

impl From<u64> for Bandwidth {
    fn from(b: u64) -> Self {
        Bandwidth(SizeValue::Bytes(b))
    }
}

impl utoipa::PartialSchema for VolumeSize {
    fn schema() -> RefOr<Schema> {
        size(
            VOLUME_SIZE_MIN,
            VOLUME_SIZE_MAX,
            Some(VOLUME_SIZE_MULTIPLE),
            VOLUME_SIZE_PATTERN,
            "10G",
        )
    }
}
impl utoipa::ToSchema for VolumeSize {
    fn name() -> Cow<'static, str> {
        "VolumeSize".into()
    }
}
impl utoipa::PartialSchema for Bandwidth {
    fn schema() -> RefOr<Schema> {
        size(
            BANDWIDTH_MIN,
            BANDWIDTH_MAX,
            None,
            BANDWIDTH_PATTERN,
            "200M",
        )
    }
}
impl utoipa::ToSchema for Bandwidth {
    fn name() -> Cow<'static, str> {
        "Bandwidth".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_refused_outside_the_declared_bounds() {
        let v = |s: SizeValue| VolumeSize(s).bytes("size");
        assert_eq!(v(SizeValue::Text("10G".into())).unwrap(), 10 << 30);
        assert_eq!(v(SizeValue::Bytes(4096)).unwrap(), 4096);
        for bad in [
            SizeValue::Bytes(0),
            SizeValue::Bytes(4097),
            SizeValue::Bytes(VOLUME_SIZE_MAX + 4096),
            SizeValue::Text("1000T".into()),
            SizeValue::Text("1.5G".into()),
            SizeValue::Text("12Q".into()),
            SizeValue::Text("10G\n".into()),
        ] {
            assert!(v(bad.clone()).is_err(), "{bad:?}");
        }
        let b = |s: SizeValue| Bandwidth(s).bytes("bandwidth_limit");
        assert_eq!(b(SizeValue::Bytes(1)).unwrap(), 1);
        assert_eq!(b(SizeValue::Text("999G".into())).unwrap(), 999 << 30);
        assert!(b(SizeValue::Bytes(0)).is_err());
        assert!(b(SizeValue::Bytes(BANDWIDTH_MAX + 1)).is_err());
        assert!(b(SizeValue::Text("1T".into())).is_err());
    }

    #[test]
    fn a_whole_float_is_bytes_and_a_fraction_is_refused() {
        let read = |s: &str| serde_json::from_str::<SizeValue>(s).map_err(|e| e.to_string());
        assert_eq!(read("525824000.0"), Ok(SizeValue::Bytes(525824000)));
        assert_eq!(read("4096"), Ok(SizeValue::Bytes(4096)));
        assert_eq!(read("\"10G\""), Ok(SizeValue::Text("10G".into())));
        for bad in ["1.5", "-4096", "true", "null", "[]"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
