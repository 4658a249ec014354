//! `strata get KIND [NAME] [--tenant T]`: objects in exactly the format `strata apply`
//! reads (`-o yaml`: one YAML document per object, `kind`, `name`, `tenant` first, then every
//! field of the kind, sizes as exact text such as `10G`). `get all` prints every kind.
//!
//! Invariant: applying what `get -o yaml` printed changes nothing — every field is printed,
//! in the canonical form the planner compares (tested for every kind in
//! `tests/it/apply.rs`).

use anyhow::{bail, Result};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

use super::apply::kinds::{Ids, Kind, KINDS};
use super::apply::model::{size_text, FieldSpec, FieldType, Fields, Object};
use super::{Client, Output};

/// The YAML of one field value, sizes as text.
fn yaml_of(v: &Value, spec: &FieldSpec) -> Yaml {
    match (spec.ty, v) {
        (FieldType::Size, Value::Number(n)) => match n.as_u64() {
            Some(b) => Yaml::String(size_text(b)),
            None => Yaml::Null,
        },
        (FieldType::Map(sub), Value::Object(m)) => Yaml::Mapping(mapping(sub, m)),
        (FieldType::List(sub, _), Value::Array(a)) => Yaml::Sequence(
            a.iter()
                .map(|x| match x {
                    Value::Object(m) => Yaml::Mapping(mapping(sub, m)),
                    other => serde_yaml::to_value(other).unwrap_or(Yaml::Null),
                })
                .collect(),
        ),
        (_, other) => serde_yaml::to_value(other).unwrap_or(Yaml::Null),
    }
}

/// The fields of `f` in the order of `specs`.
fn mapping(specs: &[FieldSpec], f: &Fields) -> Mapping {
    let mut m = Mapping::new();
    for spec in specs {
        if let Some(v) = f.get(spec.name) {
            m.insert(Yaml::String(spec.name.into()), yaml_of(v, spec));
        }
    }
    m
}

/// One object as an apply document.
pub fn document(kind: &Kind, o: &Object) -> Mapping {
    let mut m = Mapping::new();
    m.insert("kind".into(), kind.meta.name.into());
    m.insert("name".into(), o.key.name.clone().into());
    if let Some(t) = &o.key.tenant {
        m.insert("tenant".into(), t.clone().into());
    }
    m.extend(mapping(kind.meta.fields, &o.fields));
    m
}

impl Client {
    /// `strata get KIND [NAME] [--tenant T]`.
    pub fn get(&self, kind: &str, name: Option<&str>, tenant: Option<&str>) -> Result<()> {
        let all = kind == "all";
        let chosen: Vec<&Kind> = KINDS
            .iter()
            .filter(|k| {
                all || k.meta.name == kind
                    || format!("{}s", k.meta.name) == kind
                    || k.meta.name.replace('_', "-") == kind
            })
            .collect();
        if chosen.is_empty() {
            let known: Vec<&str> = KINDS.iter().map(|k| k.meta.name).collect();
            bail!(
                "invalid_argument: unknown kind {kind:?} (known: all, {})",
                known.join(", ")
            );
        }
        let mut ids = Ids::default();
        let mut docs: Vec<(&Kind, Object)> = Vec::new();
        for k in chosen {
            // `get all --tenant T` is T's objects: T itself, no switch.
            if all && tenant.is_some() && !k.meta.scoped && k.meta.name != "tenant" {
                continue;
            }
            let objs = match (k.read)(self, &mut ids, tenant) {
                Ok(o) => o,
                // `get all` shows what the caller may see: a kind it may not read is left out.
                Err(e) if all => {
                    eprintln!("note: {} left out: {e:#}", k.meta.name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            docs.extend(
                objs.into_iter()
                    .filter(|o| name.is_none_or(|n| o.key.name == n))
                    .filter(|o| {
                        tenant.is_none_or(|t| o.key.tenant.as_deref().is_none_or(|ot| ot == t))
                    })
                    .map(|o| (k, o)),
            );
        }
        if let (Some(n), true) = (name, docs.is_empty()) {
            bail!("not_found: no {kind} named {n}");
        }
        match self.out {
            Output::Yaml => {
                let text: Vec<String> = docs
                    .iter()
                    .map(|(k, o)| serde_yaml::to_string(&document(k, o)))
                    .collect::<Result<_, _>>()?;
                out!("{}", text.join("---\n"));
            }
            Output::Json => {
                let v: Vec<Mapping> = docs.iter().map(|(k, o)| document(k, o)).collect();
                outln!("{}", serde_json::to_string_pretty(&v)?);
            }
            Output::Table => {
                let rows: Vec<[String; 3]> = docs
                    .iter()
                    .map(|(k, o)| {
                        [
                            k.meta.name.to_string(),
                            o.key.tenant.clone().unwrap_or_else(|| "-".into()),
                            o.key.name.clone(),
                        ]
                    })
                    .collect();
                let w: Vec<usize> = (0..3)
                    .map(|i| {
                        rows.iter()
                            .map(|r| r[i].len())
                            .chain([[4, 6, 4][i]])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                outln!("{:<a$}  {:<b$}  NAME", "KIND", "TENANT", a = w[0], b = w[1]);
                for r in rows {
                    outln!("{:<a$}  {:<b$}  {}", r[0], r[1], r[2], a = w[0], b = w[1]);
                }
            }
        }
        Ok(())
    }
}
