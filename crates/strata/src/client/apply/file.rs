//! Reading apply files: YAML documents separated by `---`, each one object (or a list of
//! objects), checked against the kind table and made canonical (see `model.rs`).
//!
//! Invariants: a file either parses whole or yields every error it holds, each with its
//! file and, where it can be found, its line; nothing of a file with an error is applied.
//! Unknown kinds, unknown fields, wrong types, a missing `tenant:` on a tenant-scoped kind
//! (or one on a cluster-wide kind) and two objects with the same identity are errors.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use super::model::{FieldSpec, FieldType, Fields, Key, KindMeta, Object};

/// One thing wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file (`-` for stdin).
    pub file: String,
    /// The line (1-based) when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// One YAML document: its text and the line it starts on.
struct Doc<'a> {
    lines: Vec<&'a str>,
    start: usize,
}

fn split_docs(text: &str) -> Vec<Doc<'_>> {
    let mut docs = vec![Doc {
        lines: Vec::new(),
        start: 1,
    }];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            docs.push(Doc {
                lines: Vec::new(),
                start: i + 2,
            });
        } else {
            docs.last_mut().expect("one doc").lines.push(line);
        }
    }
    docs
}

/// Parses `text` (the file `file`) into objects in file order.
pub fn parse(
    file: &str,
    text: &str,
    kinds: &[impl AsRef<KindMeta>],
) -> Result<Vec<Object>, Vec<FileError>> {
    let mut errors = Vec::new();
    let mut objects: Vec<Object> = Vec::new();
    let err = |line: Option<usize>, message: String| FileError {
        file: file.to_string(),
        line,
        message,
    };
    for doc in split_docs(text) {
        let body = doc.lines.join("\n");
        let yaml: serde_yaml::Value = match serde_yaml::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map(|l| doc.start + l.line() - 1);
                errors.push(err(line, format!("not YAML: {e}")));
                continue;
            }
        };
        let value = match serde_json::to_value(&yaml) {
            Ok(v) => v,
            Err(e) => {
                errors.push(err(Some(doc.start), format!("not an object: {e}")));
                continue;
            }
        };
        // Where each element starts: the document itself, or the `- ` lines of a list.
        let (items, starts): (Vec<Value>, Vec<usize>) = match value {
            Value::Null => continue,
            Value::Array(a) => {
                let mut starts: Vec<usize> = doc
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.starts_with("- ") || **l == "-")
                    .map(|(i, _)| doc.start + i)
                    .collect();
                starts.resize(a.len(), doc.start);
                (a, starts)
            }
            v => (vec![v], vec![first_text_line(&doc)]),
        };
        for (n, item) in items.into_iter().enumerate() {
            let start = starts[n];
            let end = starts
                .get(n + 1)
                .copied()
                .unwrap_or(doc.start + doc.lines.len());
            let lines = &doc.lines
                [(start - doc.start).min(doc.lines.len())..(end - doc.start).min(doc.lines.len())];
            let locate = |field: &str| -> usize {
                lines
                    .iter()
                    .position(|l| names_field(l, field))
                    .map_or(start, |i| start + i)
            };
            match object(item, kinds) {
                Ok(mut o) => {
                    o.line = start;
                    if let Some(prev) = objects.iter().find(|p| p.key == o.key) {
                        errors.push(err(
                            Some(start),
                            format!("{} is named twice (first on line {})", o.key, prev.line),
                        ));
                    } else {
                        objects.push(o);
                    }
                }
                Err((field, message)) => {
                    let line = field.as_deref().map_or(start, locate);
                    errors.push(err(Some(line), message));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// Whether `line` holds `field:` as a key (block or flow style).
fn names_field(line: &str, field: &str) -> bool {
    line.match_indices(field).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let key_start = before.is_none_or(|c| matches!(c, ' ' | '{' | ',' | '-' | '"'));
        let after = line[i + field.len()..].trim_start_matches('"');
        key_start && after.starts_with(':')
    })
}

fn first_text_line(doc: &Doc<'_>) -> usize {
    doc.lines
        .iter()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(doc.start, |i| doc.start + i)
}

/// An error and the field it is about (to find its line).
type Bad = (Option<String>, String);

fn object(v: Value, kinds: &[impl AsRef<KindMeta>]) -> Result<Object, Bad> {
    let Value::Object(mut m) = v else {
        return Err((
            None,
            "an object must be a mapping with kind: and name:".into(),
        ));
    };
    let kind = match m.remove("kind") {
        Some(Value::String(k)) => k,
        Some(_) => return Err((Some("kind".into()), "kind: must be text".into())),
        None => return Err((None, "missing kind:".into())),
    };
    let Some(meta) = kinds.iter().map(AsRef::as_ref).find(|k| k.name == kind) else {
        let known: Vec<&str> = kinds.iter().map(|k| k.as_ref().name).collect();
        return Err((
            Some("kind".into()),
            format!("unknown kind {kind:?} (known: {})", known.join(", ")),
        ));
    };
    let name = match m.remove("name") {
        Some(Value::String(n)) if !n.is_empty() => n,
        Some(_) => return Err((Some("name".into()), "name: must be text".into())),
        None => return Err((None, format!("missing name: for a {kind}"))),
    };
    let tenant = match (m.remove("tenant"), meta.scoped) {
        (Some(Value::String(t)), true) if !t.is_empty() => Some(t),
        (None, true) => {
            return Err((
                None,
                format!("missing tenant: for {kind} {name} (a {kind} belongs to a tenant)"),
            ))
        }
        (Some(_), true) => return Err((Some("tenant".into()), "tenant: must be text".into())),
        (Some(_), false) => {
            return Err((
                Some("tenant".into()),
                format!("a {kind} belongs to no tenant: remove tenant:"),
            ))
        }
        (None, false) => None,
    };
    let key = Key {
        kind: meta.name,
        tenant,
        name,
    };
    let fields = fields(m, meta.fields, &format!("{key}"))?;
    Ok(Object {
        key,
        fields,
        line: 0,
        note: None,
    })
}

/// Checks and canonicalizes a mapping against `specs`.
pub fn fields(m: Map<String, Value>, specs: &[FieldSpec], what: &str) -> Result<Fields, Bad> {
    let mut out = Fields::new();
    for (name, v) in m {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
            return Err((
                Some(name.clone()),
                format!(
                    "unknown field {name:?} in {what} (known: {})",
                    known.join(", ")
                ),
            ));
        };
        // The innermost field named is the one whose line is shown.
        let v = value(v, spec, what).map_err(|(inner, m)| (inner.or(Some(name.clone())), m))?;
        out.insert(name, v);
    }
    if let Some(missing) = specs
        .iter()
        .find(|s| s.required && !out.contains_key(s.name))
    {
        return Err((None, format!("missing field {} in {what}", missing.name)));
    }
    Ok(out)
}

fn value(v: Value, spec: &FieldSpec, what: &str) -> Result<Value, Bad> {
    let plain = |r: Result<Value, String>| r.map_err(|m| (None, m));
    let name = spec.name;
    if v.is_null() {
        return plain(if spec.nullable {
            Ok(v)
        } else {
            Err(format!("{name} in {what} cannot be null"))
        });
    }
    let bad = |want: &str| format!("{name} in {what} must be {want}");
    match spec.ty {
        FieldType::Str => plain(v.is_string().then_some(v).ok_or_else(|| bad("text"))),
        FieldType::Int => plain(
            v.as_u64()
                .map(Value::from)
                .ok_or_else(|| bad("a whole number")),
        ),
        FieldType::Bool => plain(
            v.is_boolean()
                .then_some(v)
                .ok_or_else(|| bad("true or false")),
        ),
        FieldType::Size => plain(match &v {
            Value::Number(n) => n.as_u64().map(Value::from).ok_or_else(|| bad("a size")),
            Value::String(s) => strata_types::parse_size(s)
                .map(Value::from)
                .map_err(|e| format!("{} ({e})", bad("a size such as 10G"))),
            _ => Err(bad("a size such as 10G")),
        }),
        FieldType::Strs => {
            let Value::Array(a) = v else {
                return plain(Err(bad("a list of text")));
            };
            let set: BTreeSet<String> = a
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err((None, bad("a list of text"))),
                })
                .collect::<Result<_, _>>()?;
            Ok(Value::from(set.into_iter().collect::<Vec<_>>()))
        }
        FieldType::Map(specs) => match v {
            Value::Object(m) => fields(m, specs, &format!("{what} {name}")).map(Value::Object),
            _ => plain(Err(bad("a mapping"))),
        },
        FieldType::List(specs, key) => {
            let Value::Array(a) = v else {
                return plain(Err(bad("a list of mappings")));
            };
            let mut items = Vec::new();
            for x in a {
                let Value::Object(m) = x else {
                    return plain(Err(bad("a list of mappings")));
                };
                items.push(Value::Object(fields(m, specs, &format!("{what} {name}"))?));
            }
            canonical_list(&mut items, key)
                .map_err(|dup| (None, format!("{name} in {what}: {dup}")))?;
            Ok(Value::Array(items))
        }
    }
}

/// Sorts a list of mappings by identity and refuses two with one identity.
pub fn canonical_list(items: &mut [Value], key: Option<&str>) -> Result<(), String> {
    let id = |v: &Value| match key {
        Some(k) => v[k].to_string(),
        None => v.to_string(),
    };
    for v in items.iter_mut() {
        if let Value::Object(m) = v {
            m.retain(|_, x| !x.is_null());
        }
    }
    items.sort_by_key(id);
    let before = items.len();
    let mut seen = BTreeSet::new();
    for v in items.iter() {
        if !seen.insert(id(v)) {
            return Err(format!("{} is given twice", id(v)));
        }
    }
    debug_assert_eq!(seen.len(), before);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::kinds::KINDS;
    use super::*;

    #[test]
    fn documents_parse_in_order_with_canonical_fields() {
        let text = "kind: tenant\nname: acme\nquota:\n  capacity: 1G\n---\n\
                    kind: volume\nname: db\ntenant: acme\nsize: 10G\n---\n\
                    - kind: network\n  name: n1\n  tenant: acme\n  cidr: 10.0.0.0/24\n\
                    - kind: security_group\n  name: web\n  tenant: acme\n  rules: []\n";
        let objs = parse("f.yaml", text, KINDS).unwrap();
        let keys: Vec<String> = objs.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "tenant acme",
                "volume acme/db",
                "network acme/n1",
                "security_group acme/web"
            ]
        );
        assert_eq!(objs[0].fields["quota"]["capacity"], 1u64 << 30);
        assert_eq!(objs[1].fields["size"], 10u64 << 30);
        assert_eq!(objs[1].line, 6);
        assert_eq!(objs[2].line, 11);
        assert_eq!(objs[3].line, 15);
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused_with_their_line() {
        let text =
            "kind: volume\nname: db\ntenant: acme\nsize: 10G\nsizee: 3\n---\nkind: nope\nname: x\n";
        let errs = parse("f.yaml", text, KINDS).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].line, Some(5));
        assert!(
            errs[0].message.contains("unknown field \"sizee\""),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].line, Some(7));
        assert!(
            errs[1].message.contains("unknown kind \"nope\""),
            "{}",
            errs[1]
        );
        assert_eq!(errs[0].to_string().split(':').next(), Some("f.yaml"));
    }

    #[test]
    fn nested_unknown_fields_types_and_tenancy_are_refused() {
        let cases = [
            ("kind: tenant\nname: a\nquota:\n  iopz: 3\n", 4, "unknown field \"iopz\""),
            ("kind: volume\nname: v\ntenant: a\nsize: big\n", 4, "must be a size"),
            ("kind: volume\nname: v\nsize: 1G\n", 1, "missing tenant"),
            ("kind: switch\nname: s\ntenant: a\n", 3, "belongs to no tenant"),
            ("kind: volume\nname: v\ntenant: a\n", 1, "missing field size"),
            (
                "kind: volume\nname: v\ntenant: a\nsize: 1G\n---\nkind: volume\nname: v\ntenant: a\nsize: 2G\n",
                6,
                "named twice",
            ),
        ];
        for (text, line, what) in cases {
            let errs = parse("f", text, KINDS).unwrap_err();
            assert_eq!(errs[0].line, Some(line), "{text}: {errs:?}");
            assert!(errs[0].message.contains(what), "{text}: {errs:?}");
        }
    }

    #[test]
    fn a_field_is_found_in_flow_style_too() {
        let text =
            "kind: volume\nname: v\ntenant: a\nsize: 1G\nqos: {iops_limit: 5, burst_iopz: 2}\n";
        let errs = parse("f", text, KINDS).unwrap_err();
        assert_eq!(errs[0].line, Some(5), "{errs:?}");
        assert!(names_field("  - {name: a, kind: b}", "kind"));
        assert!(!names_field("  mykind: b", "kind"));
    }

    #[test]
    fn lists_of_names_are_sets() {
        let text = "kind: router\nname: r\ntenant: a\nnetwork: n\nsubnets: [b, a, b]\n";
        let objs = parse("f", text, KINDS).unwrap();
        assert_eq!(objs[0].fields["subnets"], serde_json::json!(["a", "b"]));
    }
}
