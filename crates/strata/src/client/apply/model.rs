//! The vocabulary of `strata apply`: an object's identity ([`Key`]), its fields, and the
//! static description of a kind ([`KindMeta`]) that parsing, planning and `get` share.
//!
//! Invariants: an object's fields are canonical — sizes are whole bytes, lists of names are
//! sorted and free of duplicates, references to other objects are names (never ids) — so
//! two objects are equal exactly when the daemon would hold the same thing. A kind is
//! described once, in [`super::kinds::KINDS`]; this file holds no behaviour of any kind.

use std::fmt;

use serde_json::{Map, Value};

/// An object's fields by name (nested mappings for groups of fields such as `quota`).
pub type Fields = Map<String, Value>;

/// What names an object: its kind, its tenant (for tenant-scoped kinds) and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The kind (`volume`, `network`, ...).
    pub kind: &'static str,
    /// The owning tenant; `None` for cluster-wide kinds (tenant, switch, node).
    pub tenant: Option<String>,
    /// The object's name (unique per kind and tenant).
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{} {t}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object, desired (from a file) or current (read from the daemon).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its identity.
    pub key: Key,
    /// Its fields. In a desired object, a field left out is not managed: apply leaves the
    /// daemon's value as it is.
    pub fields: Fields,
    /// Where it starts in its file (1-based; 0 for objects read from the daemon).
    pub line: usize,
    /// A fact the plan must state loudly when this (current) object is deleted or replaced,
    /// such as "holds 1.2G of data".
    pub note: Option<String>,
}

/// The type of one field, as the file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text.
    Str,
    /// A whole number.
    Int,
    /// `true` or `false`.
    Bool,
    /// Bytes: a whole number or text such as `10G` (binary units).
    Size,
    /// A set of strings (order does not matter; duplicates are one).
    Strs,
    /// A mapping of sub-fields, each managed on its own.
    Map(&'static [FieldSpec]),
    /// A set of mappings; each element is identified by the sub-field named `key`, or by its
    /// whole content when `key` is `None`.
    List(&'static [FieldSpec], Option<&'static str>),
}

/// One field of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Its name in the file.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// The file must give it (what the daemon needs to create the object).
    pub required: bool,
    /// It may be `null` (no value, no limit).
    pub nullable: bool,
    /// The daemon cannot change it in place: a change needs the object replaced.
    pub replace: bool,
    /// It may only grow (a volume's size): a smaller value is refused.
    pub grow_only: bool,
    /// It names an object of this kind in the same tenant (or several, for `Strs`): the
    /// object then depends on the one(s) named.
    pub refers: Option<&'static str>,
}

impl FieldSpec {
    /// A plain optional field of type `ty`, changed in place.
    pub const fn new(name: &'static str, ty: FieldType) -> FieldSpec {
        FieldSpec {
            name,
            ty,
            required: false,
            nullable: false,
            replace: false,
            grow_only: false,
            refers: None,
        }
    }
    /// The file must give it.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// `null` is a value.
    pub const fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
    /// Changed only by replacing the object.
    pub const fn replace(mut self) -> Self {
        self.replace = true;
        self
    }
    /// Only grows.
    pub const fn grow_only(mut self) -> Self {
        self.grow_only = true;
        self
    }
    /// Names objects of `kind`.
    pub const fn refers(mut self, kind: &'static str) -> Self {
        self.refers = Some(kind);
        self
    }
}

/// What planning needs to know of a kind (no I/O: see `kinds.rs` for reading and writing).
#[derive(Debug, Clone, Copy)]
pub struct KindMeta {
    /// The kind's name in files (`kind: volume`).
    pub name: &'static str,
    /// Its place in the apply order (lower first; deletes run in the reverse order).
    pub rank: u8,
    /// Whether objects of the kind belong to a tenant (`tenant:` required).
    pub scoped: bool,
    /// Whether `--prune` may delete objects of the kind.
    pub prunable: bool,
    /// Names `--prune` never deletes (made by the daemon itself, like the `default`
    /// security group).
    pub keep: &'static [&'static str],
    /// The object's name itself names an object of this kind (a floating IP is named by the
    /// port it is bound to), on which it then depends.
    pub name_refers: Option<&'static str>,
    /// Its fields.
    pub fields: &'static [FieldSpec],
    /// Brings fields to the form the daemon answers (defaults it fills in), on both sides
    /// before they are compared.
    pub canon: fn(&mut Fields),
}

/// Sizes as exact text: the largest binary unit that divides `bytes`, else the byte count.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)];
    for (u, shift) in UNITS {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{u}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_text_is_exact() {
        assert_eq!(size_text(10 << 30), "10G");
        assert_eq!(size_text(1536 << 20), "1536M");
        assert_eq!(size_text(4096), "4K");
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(0), "0");
        for b in [10u64 << 30, 1536 << 20, 4096, 1000, 3 << 50] {
            assert_eq!(strata_types::parse_size(&size_text(b)).unwrap(), b);
        }
    }
}
