//! Running an apply: read the files, read the daemon's state within the files' scope, plan,
//! then print the plan (`--dry-run`) or carry it out.
//!
//! Invariants:
//! - a file with any error stops the apply before any request that writes;
//! - every object named, and every object pruned, ends reported as unchanged, applied,
//!   failed (with the API's stable code and message, or `invalid_argument` for a step the
//!   plan refused) or skipped (naming the failed object it depends on); nothing is left out;
//! - an object whose dependency failed or was skipped is skipped, and the others go on;
//! - the exit status is non-zero when anything failed or was skipped;
//! - a plan with nothing to write makes no write request (only reads).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::super::{Client, Output};
use super::file::{self, FileError};
use super::kinds::{self, Ids, KINDS};
use super::model::{Key, Object};
use super::plan::{self, Action, Options, Plan, Step};

/// What `strata apply` was asked.
#[derive(Debug, Clone, Default)]
pub struct ApplyArgs {
    /// Files (`-` is standard input).
    pub files: Vec<String>,
    /// Print the plan only.
    pub dry_run: bool,
    /// Delete what the files no longer name (see `plan.rs` for the scope).
    pub prune: bool,
    /// Allow replacing objects whose fixed fields changed.
    pub replace: bool,
}

/// How one object ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Applied,
    Failed { code: String, message: String },
    Skipped { because: String },
}

/// Reads and checks every file; all errors at once.
fn read_files(files: &[String]) -> Result<Vec<Object>> {
    let mut errors: Vec<FileError> = Vec::new();
    let mut objects: Vec<Object> = Vec::new();
    let mut origin: BTreeMap<Key, String> = BTreeMap::new();
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("invalid_argument: reading {f}"))?
        };
        match file::parse(f, &text, KINDS) {
            Ok(objs) => {
                for o in objs {
                    if let Some(first) = origin.get(&o.key) {
                        errors.push(FileError {
                            file: f.clone(),
                            line: Some(o.line),
                            message: format!("{} is also named in {first}", o.key),
                        });
                    } else {
                        origin.insert(o.key.clone(), f.clone());
                        objects.push(o);
                    }
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!(
            "invalid_argument: {} error(s) in the file(s); nothing was applied",
            errors.len()
        );
    }
    Ok(objects)
}

/// The code and message of an API error (`code: message (HTTP n)`).
fn split_error(e: &anyhow::Error) -> (String, String) {
    let text = format!("{e:#}");
    match text.split_once(": ") {
        Some((code, msg)) if !code.contains(' ') => (code.to_string(), msg.to_string()),
        _ => ("error".to_string(), text),
    }
}

impl Client {
    /// `strata apply -f FILE...`.
    pub fn apply(&self, args: &ApplyArgs) -> Result<()> {
        let desired = read_files(&args.files)?;
        let kinds_named: BTreeSet<&str> = desired.iter().map(|o| o.key.kind).collect();
        let tenants: BTreeSet<String> = desired
            .iter()
            .filter_map(|o| match o.key.kind {
                "tenant" => Some(o.key.name.clone()),
                _ => o.key.tenant.clone(),
            })
            .collect();

        // The state within the files' scope; a read that fails fails the objects it covers.
        let mut ids = Ids::default();
        let mut current: Vec<Object> = Vec::new();
        let mut unread: BTreeMap<(&'static str, Option<String>), (String, String)> =
            BTreeMap::new();
        let known_tenants: Option<BTreeSet<String>> = if kinds_named.contains("tenant") {
            let t = (kinds::kind("tenant").read)(self, &mut ids, None);
            match t {
                Ok(t) => {
                    let names = t.iter().map(|o| o.key.name.clone()).collect();
                    current.extend(t);
                    Some(names)
                }
                Err(e) => {
                    unread.insert(("tenant", None), split_error(&e));
                    None
                }
            }
        } else {
            None
        };
        for k in KINDS.iter().filter(|k| k.meta.name != "tenant") {
            if !k.meta.scoped {
                if kinds_named.contains(k.meta.name) {
                    match (k.read)(self, &mut ids, None) {
                        Ok(v) => current.extend(v),
                        Err(e) => {
                            unread.insert((k.meta.name, None), split_error(&e));
                        }
                    }
                }
                continue;
            }
            for t in &tenants {
                // A tenant this apply creates holds nothing yet.
                if known_tenants.as_ref().is_some_and(|n| !n.contains(t)) {
                    continue;
                }
                match (k.read)(self, &mut ids, Some(t)) {
                    Ok(v) => current.extend(v),
                    Err(e) => {
                        unread.insert((k.meta.name, Some(t.clone())), split_error(&e));
                    }
                }
            }
        }
        let (blocked, planned): (Vec<Object>, Vec<Object>) = desired
            .into_iter()
            .partition(|o| unread.contains_key(&(o.key.kind, o.key.tenant.clone())));
        let plan = plan::plan(
            KINDS,
            &planned,
            &current,
            Options {
                prune: args.prune,
                replace: args.replace,
            },
        );
        let mut results: Vec<(Step, Outcome)> = blocked
            .iter()
            .map(|o| {
                let (code, message) = unread[&(o.key.kind, o.key.tenant.clone())].clone();
                (
                    Step {
                        key: o.key.clone(),
                        action: Action::Unchanged,
                        changes: Vec::new(),
                        refused: None,
                        warning: None,
                        depends: Vec::new(),
                    },
                    Outcome::Failed {
                        code,
                        message: format!("reading the current state: {message}"),
                    },
                )
            })
            .collect();

        if !matches!(self.out, Output::Json | Output::Yaml) && !args.dry_run {
            for (s, o) in &results {
                outln!("{}", report_line(s, o));
            }
        }
        if args.dry_run {
            return self.print_apply_plan(&plan, &results);
        }
        let by_key: BTreeMap<&Key, &Object> = planned.iter().map(|o| (&o.key, o)).collect();
        let now: BTreeMap<&Key, &Object> = current.iter().map(|o| (&o.key, o)).collect();
        let mut bad: BTreeSet<Key> = results.iter().map(|(s, _)| s.key.clone()).collect();
        let bar = self.apply_bar(plan.steps.len() as u64);
        for step in &plan.steps {
            bar.set_message(step.key.to_string());
            let outcome = self.run_step(step, &by_key, &now, &mut ids, &bad);
            if matches!(outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }) {
                bad.insert(step.key.clone());
            }
            if !matches!(self.out, Output::Json | Output::Yaml) && outcome != Outcome::Unchanged {
                let line = report_line(step, &outcome);
                bar.suspend(|| outln!("{line}"));
            }
            results.push((step.clone(), outcome));
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.print_apply_results(&plan, &results)
    }

    fn apply_bar(&self, len: u64) -> indicatif::ProgressBar {
        if !std::io::stderr().is_terminal() || len == 0 {
            return indicatif::ProgressBar::hidden();
        }
        indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template("apply [{bar:30}] {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        )
    }

    fn run_step(
        &self,
        step: &Step,
        desired: &BTreeMap<&Key, &Object>,
        current: &BTreeMap<&Key, &Object>,
        ids: &mut Ids,
        bad: &BTreeSet<Key>,
    ) -> Outcome {
        if let Some(r) = &step.refused {
            return Outcome::Failed {
                code: strata_types::ErrorCode::InvalidArgument.as_str().into(),
                message: r.clone(),
            };
        }
        if let Some(d) = step.depends.iter().find(|d| bad.contains(d)) {
            return Outcome::Skipped {
                because: format!("it depends on {d}, which was not applied"),
            };
        }
        let kind = kinds::kind(step.key.kind);
        let want = desired.get(&step.key).copied();
        let have = current.get(&step.key).copied();
        let r = match (step.action, want) {
            (Action::Unchanged, _) => return Outcome::Unchanged,
            (Action::Delete, _) => (kind.delete)(self, ids, &step.key),
            (Action::Create, Some(w)) => (kind.write)(self, ids, w, None),
            (Action::Update, Some(w)) => (kind.write)(self, ids, w, have),
            (Action::Replace, Some(w)) => {
                (kind.delete)(self, ids, &step.key).and_then(|()| (kind.write)(self, ids, w, None))
            }
            (_, None) => return Outcome::Unchanged,
        };
        match r {
            Ok(()) => Outcome::Applied,
            Err(e) => {
                let (code, message) = split_error(&e);
                Outcome::Failed { code, message }
            }
        }
    }

    fn print_apply_plan(&self, plan: &Plan, failed: &[(Step, Outcome)]) -> Result<()> {
        match self.out {
            Output::Json | Output::Yaml => {
                let mut v = plan.json();
                v["failed"] = Value::from(
                    failed
                        .iter()
                        .map(|(s, o)| result_json(s, o))
                        .collect::<Vec<_>>(),
                );
                self.print_apply_doc(&v)?;
            }
            Output::Table => {
                for s in &plan.steps {
                    outln!("{}", s.text());
                }
                for (s, o) in failed {
                    outln!("{}", report_line(s, o));
                }
                outln!("{} (dry run: nothing changed)", summary_of_plan(plan));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{} object(s) cannot be planned", failed.len())
        }
    }

    fn print_apply_results(&self, plan: &Plan, results: &[(Step, Outcome)]) -> Result<()> {
        let count = |f: &dyn Fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
        let applied = |a: Action| {
            results
                .iter()
                .filter(|(s, o)| s.action == a && *o == Outcome::Applied)
                .count()
        };
        let failed = count(&|o| matches!(o, Outcome::Failed { .. }));
        let skipped = count(&|o| matches!(o, Outcome::Skipped { .. }));
        let summary = json!({
            "created": applied(Action::Create), "updated": applied(Action::Update),
            "replaced": applied(Action::Replace), "deleted": applied(Action::Delete),
            "unchanged": count(&|o| *o == Outcome::Unchanged), "failed": failed, "skipped": skipped,
        });
        match self.out {
            Output::Json | Output::Yaml => self.print_apply_doc(&json!({
                "plan": plan.json()["steps"],
                "results": results.iter().map(|(s, o)| result_json(s, o)).collect::<Vec<_>>(),
                "summary": summary,
            }))?,
            Output::Table => {
                if !plan.writes() && failed == 0 && skipped == 0 {
                    outln!("nothing to change: {} object(s) unchanged", results.len());
                } else {
                    let parts: Vec<String> = [
                        "created",
                        "updated",
                        "replaced",
                        "deleted",
                        "unchanged",
                        "failed",
                        "skipped",
                    ]
                    .iter()
                    .map(|k| format!("{} {k}", summary[k]))
                    .collect();
                    outln!("apply: {}", parts.join(", "));
                }
            }
        }
        if failed + skipped > 0 {
            bail!("{failed} object(s) failed and {skipped} skipped; the others were applied")
        }
        Ok(())
    }

    fn print_apply_doc(&self, v: &Value) -> Result<()> {
        match self.out {
            Output::Yaml => out!("{}", serde_yaml::to_string(v)?),
            _ => outln!("{}", serde_json::to_string_pretty(v)?),
        }
        Ok(())
    }
}

fn summary_of_plan(p: &Plan) -> String {
    let refused = p.steps.iter().filter(|s| s.refused.is_some()).count();
    format!(
        "plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged, {} refused",
        p.count(Action::Create),
        p.steps
            .iter()
            .filter(|s| s.action == Action::Update && s.refused.is_none())
            .count(),
        p.steps
            .iter()
            .filter(|s| s.action == Action::Replace && s.refused.is_none())
            .count(),
        p.count(Action::Delete),
        p.count(Action::Unchanged),
        refused
    )
}

fn report_line(step: &Step, o: &Outcome) -> String {
    let verb = match step.action {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Unchanged => "unchanged",
    };
    match o {
        Outcome::Unchanged => format!("unchanged {}", step.key),
        Outcome::Applied => {
            let mut s = format!("{verb} {}", step.text().split_once(' ').map_or("", |x| x.1));
            if s.ends_with(' ') {
                s.pop();
            }
            s
        }
        Outcome::Failed { code, message } => format!("FAILED {}: {code}: {message}", step.key),
        Outcome::Skipped { because } => format!("skipped {}: {because}", step.key),
    }
}

fn result_json(step: &Step, o: &Outcome) -> Value {
    let (outcome, code, message) = match o {
        Outcome::Unchanged => ("unchanged", None, None),
        Outcome::Applied => ("applied", None, None),
        Outcome::Failed { code, message } => ("failed", Some(code.clone()), Some(message.clone())),
        Outcome::Skipped { because } => ("skipped", None, Some(because.clone())),
    };
    json!({
        "kind": step.key.kind, "tenant": step.key.tenant, "name": step.key.name,
        "action": step.action, "outcome": outcome, "code": code, "message": message,
    })
}
