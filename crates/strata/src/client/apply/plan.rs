//! The planner: from what the files name (desired) and what the daemon holds (current) to
//! the ordered steps of an apply. A pure function: no I/O, no clock.
//!
//! Invariants:
//! - a field left out of a desired object is never changed; a desired object equal to the
//!   current one on every field it names is `unchanged`, so applying what `get -o yaml`
//!   printed plans nothing;
//! - a change of a field the daemon cannot make in place is refused unless replacement is
//!   allowed (`--replace`), then the step is a `replace` that says what it loses; a field
//!   that may only grow (a volume's size) is refused when smaller, replacement or not;
//! - deletes come only from pruning, only of kinds the files name, only within the tenants
//!   they name (scoped kinds), never of a kind that is not prunable nor of a kept name;
//! - steps run creates and updates in rank order (an object after those it names), then
//!   deletes in reverse rank order.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use super::model::{size_text, FieldSpec, FieldType, Fields, Key, KindMeta, Object};

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Make the object.
    Create,
    /// Change fields in place.
    Update,
    /// Delete the object and make it again (its data with it).
    Replace,
    /// Delete the object (prune).
    Delete,
    /// Nothing to do.
    Unchanged,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Its path (`size`, `quota.iops`, `ports[vx0]`).
    pub field: String,
    /// The daemon's value (absent: `null`).
    pub from: Value,
    /// The file's value (absent: `null`).
    pub to: Value,
    /// Shown as a size.
    #[serde(skip)]
    pub size: bool,
}

/// One object's step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The object.
    pub key: Key,
    /// What happens to it.
    pub action: Action,
    /// The fields that differ (update, replace).
    pub changes: Vec<Change>,
    /// Why the step will not run (a shrink, a replacement not allowed); the object then
    /// counts as failed.
    pub refused: Option<String>,
    /// What a delete or replace loses, said loudly.
    pub warning: Option<String>,
    /// Objects of the same apply this one names: when one of them fails, this is skipped.
    pub depends: Vec<Key>,
}

/// What the user allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete objects the files no longer name (within the scope above).
    pub prune: bool,
    /// Replace objects whose fixed fields changed.
    pub replace: bool,
}

/// The ordered steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// In execution order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// The plan as stable JSON: `{"steps": [{kind, tenant, name, action, changes, refused,
    /// warning}]}`.
    pub fn json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "kind": s.key.kind,
                    "tenant": s.key.tenant,
                    "name": s.key.name,
                    "action": s.action,
                    "changes": s.changes,
                    "refused": s.refused,
                    "warning": s.warning,
                })
            })
            .collect();
        json!({ "steps": steps })
    }

    /// Whether running the plan would write anything.
    pub fn writes(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.action != Action::Unchanged && s.refused.is_none())
    }

    /// How many steps of each action.
    pub fn count(&self, a: Action) -> usize {
        self.steps.iter().filter(|s| s.action == a).count()
    }
}

/// Plans the apply of `desired` over `current`.
pub fn plan(
    kinds: &[impl AsRef<KindMeta>],
    desired: &[Object],
    current: &[Object],
    opts: Options,
) -> Plan {
    let meta = |k: &str| {
        kinds
            .iter()
            .map(AsRef::as_ref)
            .find(|m: &&KindMeta| m.name == k)
            .expect("kind from the table")
    };
    let now: BTreeMap<&Key, &Object> = current.iter().map(|o| (&o.key, o)).collect();
    let named: BTreeSet<&Key> = desired.iter().map(|o| &o.key).collect();

    let mut steps: Vec<Step> = Vec::new();
    for d in desired {
        let m = meta(d.key.kind);
        let mut depends: Vec<Key> = references(m, d)
            .into_iter()
            .filter(|k| named.contains(k) && *k != d.key)
            .collect();
        depends.sort();
        depends.dedup();
        let step = match now.get(&d.key) {
            None => Step {
                key: d.key.clone(),
                action: Action::Create,
                changes: Vec::new(),
                refused: None,
                warning: None,
                depends,
            },
            Some(c) => {
                let (mut want, mut have) = (d.fields.clone(), c.fields.clone());
                (m.canon)(&mut want);
                (m.canon)(&mut have);
                let mut changes = Vec::new();
                let mut fixed = Vec::new();
                let mut shrunk = Vec::new();
                diff(m.fields, &want, &have, "", &mut |spec, ch| {
                    if spec.grow_only && ch.to.as_u64() < ch.from.as_u64() {
                        shrunk.push(ch.field.clone());
                    }
                    if spec.replace {
                        fixed.push(ch.field.clone());
                    }
                    changes.push(ch);
                });
                let (action, refused, warning) = if changes.is_empty() {
                    (Action::Unchanged, None, None)
                } else if !shrunk.is_empty() {
                    let what = shrunk.join(", ");
                    (
                        Action::Update,
                        Some(format!(
                            "{what} cannot shrink (data past the end would be lost)"
                        )),
                        None,
                    )
                } else if fixed.is_empty() {
                    (Action::Update, None, None)
                } else if opts.replace {
                    let loses = c
                        .note
                        .as_deref()
                        .map_or(String::new(), |n| format!(": {n}"));
                    (
                        Action::Replace,
                        None,
                        Some(format!("REPLACED: deleted and made again{loses}")),
                    )
                } else {
                    (
                        Action::Replace,
                        Some(format!(
                            "{} cannot change in place: the {} must be replaced (deleted and \
                             made again); pass --replace to allow it",
                            fixed.join(", "),
                            d.key.kind
                        )),
                        None,
                    )
                };
                Step {
                    key: d.key.clone(),
                    action,
                    changes,
                    refused,
                    warning,
                    depends,
                }
            }
        };
        steps.push(step);
    }
    let mut steps = order(steps, |k| meta(k.kind).rank);

    if opts.prune {
        let kinds_named: BTreeSet<&str> = desired.iter().map(|o| o.key.kind).collect();
        let tenants: BTreeSet<&str> = desired
            .iter()
            .filter_map(|o| match o.key.kind {
                "tenant" => Some(o.key.name.as_str()),
                _ => o.key.tenant.as_deref(),
            })
            .collect();
        let mut deletes: Vec<Step> = current
            .iter()
            .filter(|c| {
                let m = meta(c.key.kind);
                !named.contains(&c.key)
                    && kinds_named.contains(c.key.kind)
                    && m.prunable
                    && !m.keep.contains(&c.key.name.as_str())
                    && c.key.tenant.as_deref().is_none_or(|t| tenants.contains(t))
            })
            .map(|c| Step {
                key: c.key.clone(),
                action: Action::Delete,
                changes: Vec::new(),
                refused: None,
                warning: c.note.as_ref().map(|n| format!("DELETES DATA: {n}")),
                depends: Vec::new(),
            })
            .collect();
        deletes
            .sort_by(|a, b| (meta(b.key.kind).rank, &a.key).cmp(&(meta(a.key.kind).rank, &b.key)));
        steps.extend(deletes);
    }
    Plan { steps }
}

/// The objects `o` names: its tenant, and every field that refers to another object.
fn references(m: &KindMeta, o: &Object) -> Vec<Key> {
    let mut out = Vec::new();
    if let Some(t) = &o.key.tenant {
        out.push(Key {
            kind: "tenant",
            tenant: None,
            name: t.clone(),
        });
    }
    if let Some(kind) = m.name_refers {
        out.push(Key {
            kind,
            tenant: o.key.tenant.clone(),
            name: o.key.name.clone(),
        });
    }
    refs_in(m.fields, &o.fields, &o.key.tenant, &mut out);
    out
}

fn refs_in(specs: &[FieldSpec], f: &Fields, tenant: &Option<String>, out: &mut Vec<Key>) {
    for spec in specs {
        let Some(v) = f.get(spec.name) else { continue };
        let key = |name: &str, kind| Key {
            kind,
            tenant: tenant.clone(),
            name: name.to_string(),
        };
        match (spec.ty, spec.refers, v) {
            (FieldType::Str, Some(kind), Value::String(s)) => out.push(key(s, kind)),
            (FieldType::Strs, Some(kind), Value::Array(a)) => {
                out.extend(a.iter().filter_map(Value::as_str).map(|s| key(s, kind)))
            }
            (FieldType::Map(sub), _, Value::Object(m)) => refs_in(sub, m, tenant, out),
            (FieldType::List(sub, _), _, Value::Array(a)) => {
                for x in a.iter().filter_map(Value::as_object) {
                    refs_in(sub, x, tenant, out);
                }
            }
            _ => {}
        }
    }
}

/// Calls `found` for every field `want` names whose value differs from `have`'s.
fn diff(
    specs: &[FieldSpec],
    want: &Fields,
    have: &Fields,
    prefix: &str,
    found: &mut dyn FnMut(&FieldSpec, Change),
) {
    for spec in specs {
        let Some(w) = want.get(spec.name) else {
            continue;
        };
        let h = have.get(spec.name).unwrap_or(&Value::Null);
        let path = format!("{prefix}{}", spec.name);
        match (spec.ty, w, h) {
            (FieldType::Map(sub), Value::Object(wm), Value::Object(hm)) => {
                diff(sub, wm, hm, &format!("{path}."), found)
            }
            (FieldType::List(_, Some(k)), Value::Array(wa), Value::Array(ha)) => {
                let by = |a: &'_ [Value]| -> BTreeMap<String, Value> {
                    a.iter()
                        .map(|x| (x[k].as_str().unwrap_or_default().to_string(), x.clone()))
                        .collect()
                };
                let (wm, hm) = (by(wa), by(ha));
                for id in wm.keys().chain(hm.keys()).collect::<BTreeSet<_>>() {
                    let (a, b) = (hm.get(id), wm.get(id));
                    if a != b {
                        found(
                            spec,
                            Change {
                                field: format!("{path}[{id}]"),
                                from: a.cloned().unwrap_or(Value::Null),
                                to: b.cloned().unwrap_or(Value::Null),
                                size: false,
                            },
                        );
                    }
                }
            }
            _ if w != h => found(
                spec,
                Change {
                    field: path,
                    from: h.clone(),
                    to: w.clone(),
                    size: spec.ty == FieldType::Size,
                },
            ),
            _ => {}
        }
    }
}

/// Rank order, file order within a rank, and never before an object it depends on (a
/// cycle keeps file order).
fn order(mut left: Vec<Step>, rank: impl Fn(&Key) -> u8) -> Vec<Step> {
    left.sort_by_key(|s| rank(&s.key));
    let mut out: Vec<Step> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let pending: BTreeSet<Key> = left.iter().map(|s| s.key.clone()).collect();
        let i = left
            .iter()
            .position(|s| s.depends.iter().all(|d| !pending.contains(d)))
            .unwrap_or(0);
        out.push(left.remove(i));
    }
    out
}

fn show(v: &Value, size: bool) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::Number(n) if size => n.as_u64().map_or(n.to_string(), size_text),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Step {
    /// The step as the plan prints it: `+ volume acme/db`, `~ volume acme/db: size 10G -> 20G`.
    pub fn text(&self) -> String {
        let sign = match self.action {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Unchanged => "=",
        };
        let mut s = format!("{sign} {}", self.key);
        if !self.changes.is_empty() {
            let fields: Vec<String> = self
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "{} {} -> {}",
                        c.field,
                        show(&c.from, c.size),
                        show(&c.to, c.size)
                    )
                })
                .collect();
            s.push_str(&format!(": {}", fields.join(", ")));
        }
        if let Some(w) = &self.warning {
            s.push_str(&format!("  !!! {w}"));
        }
        if let Some(r) = &self.refused {
            s.push_str(&format!("  (refused: {r})"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::kinds::KINDS;
    use super::*;

    fn obj(kind: &'static str, tenant: Option<&str>, name: &str, f: Value) -> Object {
        Object {
            key: Key {
                kind,
                tenant: tenant.map(str::to_string),
                name: name.into(),
            },
            fields: f.as_object().cloned().unwrap_or_default(),
            line: 0,
            note: None,
        }
    }

    fn texts(p: &Plan) -> Vec<String> {
        p.steps.iter().map(Step::text).collect()
    }

    #[test]
    fn equal_objects_plan_nothing_and_absent_fields_are_not_managed() {
        let cur = obj(
            "volume",
            Some("a"),
            "db",
            json!({"size": 1u64 << 30, "pool": "default"}),
        );
        let want = obj("volume", Some("a"), "db", json!({"size": 1u64 << 30}));
        let p = plan(KINDS, &[want], &[cur], Options::default());
        assert_eq!(p.steps[0].action, Action::Unchanged);
        assert!(!p.writes());
    }

    #[test]
    fn a_changed_field_is_an_update_with_its_diff() {
        let cur = obj(
            "volume",
            Some("acme"),
            "db",
            json!({"size": 10u64 << 30, "qos": {"iops_limit": 100, "burst_iops": null}}),
        );
        let want = obj(
            "volume",
            Some("acme"),
            "db",
            json!({"size": 20u64 << 30, "qos": {"iops_limit": 100}}),
        );
        let p = plan(KINDS, &[want], &[cur], Options::default());
        assert_eq!(texts(&p), ["~ volume acme/db: size 10G -> 20G"]);
        assert!(p.writes());
        let want = obj(
            "volume",
            Some("acme"),
            "db",
            json!({"qos": {"burst_iops": 5}}),
        );
        let cur = obj(
            "volume",
            Some("acme"),
            "db",
            json!({"qos": {"burst_iops": null}}),
        );
        let p = plan(KINDS, &[want], &[cur], Options::default());
        assert_eq!(texts(&p), ["~ volume acme/db: qos.burst_iops (none) -> 5"]);
    }

    #[test]
    fn shrinking_is_refused_even_with_replace() {
        let cur = obj("volume", Some("a"), "db", json!({"size": 20u64 << 30}));
        let want = obj("volume", Some("a"), "db", json!({"size": 10u64 << 30}));
        for replace in [false, true] {
            let p = plan(
                KINDS,
                std::slice::from_ref(&want),
                std::slice::from_ref(&cur),
                Options {
                    prune: false,
                    replace,
                },
            );
            assert!(p.steps[0]
                .refused
                .as_deref()
                .unwrap()
                .contains("cannot shrink"));
            assert!(!p.writes());
        }
    }

    #[test]
    fn fixed_fields_need_replace_and_say_what_is_lost() {
        let mut cur = obj("volume", Some("a"), "db", json!({"pool": "p1"}));
        cur.note = Some("holds 4K of data".into());
        let want = obj("volume", Some("a"), "db", json!({"pool": "p2"}));
        let p = plan(
            KINDS,
            std::slice::from_ref(&want),
            std::slice::from_ref(&cur),
            Options::default(),
        );
        assert_eq!(p.steps[0].action, Action::Replace);
        assert!(p.steps[0].refused.as_deref().unwrap().contains("--replace"));
        assert!(!p.writes());
        let p = plan(
            KINDS,
            &[want],
            &[cur],
            Options {
                prune: false,
                replace: true,
            },
        );
        assert_eq!(p.steps[0].refused, None);
        assert!(p.steps[0]
            .warning
            .as_deref()
            .unwrap()
            .contains("holds 4K of data"));
        assert!(p.writes());
    }

    #[test]
    fn order_follows_rank_and_references_then_deletes_in_reverse() {
        let desired = [
            obj(
                "port",
                Some("a"),
                "p",
                json!({"network": "n", "subnet": "s"}),
            ),
            obj(
                "subnet",
                Some("a"),
                "s",
                json!({"network": "n", "cidr": "10.0.0.0/24"}),
            ),
            obj("network", Some("a"), "n", json!({"cidr": "10.0.0.0/16"})),
            obj("tenant", None, "a", json!({})),
            obj(
                "security_group",
                Some("a"),
                "g2",
                json!({"rules": [{"direction": "ingress", "remote_group": "g1"}]}),
            ),
            obj("security_group", Some("a"), "g1", json!({})),
        ];
        let current = [
            obj("volume", Some("a"), "old", json!({})),
            obj("network", Some("a"), "gone", json!({})),
            obj("subnet", Some("a"), "gone", json!({})),
        ];
        let p = plan(
            KINDS,
            &desired,
            &current,
            Options {
                prune: true,
                replace: false,
            },
        );
        let keys: Vec<String> = p.steps.iter().map(|s| s.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "tenant a",
                "network a/n",
                "subnet a/s",
                "security_group a/g1",
                "security_group a/g2",
                "port a/p",
                "subnet a/gone",
                "network a/gone",
            ]
        );
        let port = &p.steps[5];
        let deps: Vec<String> = port.depends.iter().map(Key::to_string).collect();
        assert_eq!(deps, ["network a/n", "subnet a/s", "tenant a"]);
    }

    #[test]
    fn prune_is_scoped_to_named_kinds_and_tenants() {
        let desired = [obj("volume", Some("a"), "keep", json!({"size": 4096}))];
        let mut data = obj("volume", Some("a"), "old", json!({}));
        data.note = Some("holds 1G of data".into());
        let current = [
            obj("volume", Some("a"), "keep", json!({"size": 4096})),
            data,
            obj("volume", Some("b"), "other-tenant", json!({})),
            obj("network", Some("a"), "other-kind", json!({})),
            obj("tenant", None, "z", json!({})),
        ];
        let p = plan(
            KINDS,
            &desired,
            &current,
            Options {
                prune: true,
                replace: false,
            },
        );
        assert_eq!(
            texts(&p),
            [
                "= volume a/keep",
                "- volume a/old  !!! DELETES DATA: holds 1G of data"
            ]
        );
        let p = plan(KINDS, &desired, &current, Options::default());
        assert_eq!(p.count(Action::Delete), 0);
        // The daemon's own default group and tenants are never pruned.
        let desired = [
            obj("tenant", None, "a", json!({})),
            obj("security_group", Some("a"), "web", json!({})),
        ];
        let current = [
            obj("security_group", Some("a"), "default", json!({})),
            obj("tenant", None, "z", json!({})),
        ];
        let p = plan(
            KINDS,
            &desired,
            &current,
            Options {
                prune: true,
                replace: false,
            },
        );
        assert_eq!(p.count(Action::Delete), 0, "{:?}", texts(&p));
    }

    #[test]
    fn keyed_lists_diff_by_element() {
        let cur = obj(
            "switch",
            None,
            "br",
            json!({"ports": [{"name": "a", "kind": "internal"}, {"name": "b", "kind": "internal"}]}),
        );
        let want = obj(
            "switch",
            None,
            "br",
            json!({"ports": [{"name": "a", "kind": "internal"}, {"name": "c", "kind": "internal"}]}),
        );
        let p = plan(KINDS, &[want], &[cur], Options::default());
        let f: Vec<&str> = p.steps[0]
            .changes
            .iter()
            .map(|c| c.field.as_str())
            .collect();
        assert_eq!(f, ["ports[b]", "ports[c]"]);
        assert_eq!(p.steps[0].changes[0].to, Value::Null);
    }

    #[test]
    fn the_plan_json_is_stable() {
        let cur = obj("network", Some("a"), "n", json!({"cap_bps": 1000}));
        let want = obj("network", Some("a"), "n", json!({"cap_bps": 2000}));
        let p = plan(KINDS, &[want], &[cur], Options::default());
        assert_eq!(
            p.json(),
            json!({"steps": [{"kind": "network", "tenant": "a", "name": "n", "action": "update",
                "changes": [{"field": "cap_bps", "from": 1000, "to": 2000}],
                "refused": null, "warning": null}]})
        );
    }
}
