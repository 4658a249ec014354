//! Integers in JSON bodies as JSON Schema counts them: `type: integer` admits any number with
//! a zero fractional part, so `1.0` and `1e3` are integers a client may send (schemathesis
//! does). serde reads those as floats and refuses them for `u64`; these helpers read them.
//!
//! # Invariants
//! - A whole number that fits the field's type is read as that integer; a fraction, a negative
//!   number, a value too large for the type, a string or a boolean is refused (`invalid_body`),
//!   so what the schema calls "not an integer" the server refuses too.
//! - `null` (and, with `#[serde(default)]`, an absent field) is `None`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// `2^64` as a float: the first whole float no `u64` holds.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

/// A whole float as a `u64`, if it is one.
pub fn whole(f: f64) -> Option<u64> {
    (f.fract() == 0.0 && (0.0..U64_END).contains(&f)).then_some(f as u64)
}

struct Whole<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a non-negative integer within the field's range")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        match whole(v) {
            Some(u) => self.visit_u64(u),
            None => Err(E::invalid_value(de::Unexpected::Float(v), &self)),
        }
    }
}

struct OptWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for OptWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "null or a non-negative integer within the field's range")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Whole(PhantomData)).map(Some)
    }
}

/// `#[serde(deserialize_with = "whole::int")]`: an integer, whole floats included.
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(PhantomData))
}

/// `#[serde(default, deserialize_with = "whole::opt")]`: null or an integer, whole floats
/// included.
pub fn opt<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptWhole(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::opt")]
        a: Option<u64>,
        #[serde(default, deserialize_with = "super::opt")]
        b: Option<u16>,
    }

    fn read(s: &str) -> Result<(Option<u64>, Option<u16>), String> {
        serde_json::from_str::<T>(s)
            .map(|t| (t.a, t.b))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_the_rest_is_refused() {
        assert_eq!(read(r#"{"a": 1.0, "b": 546.0}"#), Ok((Some(1), Some(546))));
        assert_eq!(read(r#"{"a": 1e3}"#), Ok((Some(1000), None)));
        assert_eq!(
            read(r#"{"a": 2564640122387544.0}"#),
            Ok((Some(2564640122387544), None))
        );
        assert_eq!(read(r#"{"a": 7, "b": null}"#), Ok((Some(7), None)));
        assert_eq!(read(r#"{}"#), Ok((None, None)));
        for bad in [
            r#"{"a": 1.5}"#,
            r#"{"a": -1}"#,
            r#"{"a": -1.0}"#,
            r#"{"a": "1"}"#,
            r#"{"a": true}"#,
            r#"{"a": 1e30}"#,
            r#"{"b": 70000}"#,
            r#"{"b": 70000.0}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
