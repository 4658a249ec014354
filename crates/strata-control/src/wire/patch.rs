//! Partial updates (`PATCH`, in the manner of JSON merge patch, RFC 7396): a field that is
//! absent leaves the stored value as it is, `null` removes it (unlimited), a value sets it.
//!
//! # Invariants
//! - A patch field is `Option<Option<T>>`: `None` absent (unchanged), `Some(None)` null
//!   (removed), `Some(Some(v))` set. Serialized back, an absent field stays absent.
//! - The merge runs on the fresh record inside the change's transaction (the controller's
//!   `update_*` functions), so two patches of different fields never undo each other.

use serde::{Deserialize, Deserializer};

/// `#[serde(default, deserialize_with = "super::patch::int")]`: null or an integer (whole
/// floats included, as [`super::whole::opt`]); present, so `Some`.
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    super::whole::opt(d).map(Some)
}

/// `#[serde(default, deserialize_with = "super::patch::value")]`: null or a `T`; present, so
/// `Some`.
pub fn value<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Applies one patch field to its stored value.
pub fn apply<T: Clone>(stored: &mut Option<T>, patch: &Option<Option<T>>) {
    if let Some(v) = patch {
        *stored = v.clone();
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    struct P {
        #[serde(
            default,
            deserialize_with = "super::int",
            skip_serializing_if = "Option::is_none"
        )]
        a: Option<Option<u64>>,
        #[serde(
            default,
            deserialize_with = "super::value",
            skip_serializing_if = "Option::is_none"
        )]
        b: Option<Option<String>>,
    }

    #[test]
    fn absent_null_and_value_are_three_things() {
        let p: P = serde_json::from_str(r#"{"a": null, "b": "x"}"#).unwrap();
        assert_eq!(p.a, Some(None));
        assert_eq!(p.b, Some(Some("x".into())));
        let p: P = serde_json::from_str(r#"{"a": 5.0}"#).unwrap();
        assert_eq!((p.a, p.b.clone()), (Some(Some(5)), None));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"a":5}"#);
        let mut stored = Some(7u64);
        super::apply(&mut stored, &None);
        assert_eq!(stored, Some(7));
        super::apply(&mut stored, &Some(None));
        assert_eq!(stored, None);
        super::apply(&mut stored, &Some(Some(9)));
        assert_eq!(stored, Some(9));
    }
}
