//! What runs on a switch's dataplane thread for a change (inside `Dataplane::with_switch`, so
//! between two frames): install a flow and tell what it replaced, take a change back, find
//! which known rules are gone; and the clipping of the engine's errors, which echo the
//! caller's text.
//!
//! # Invariants
//! - [`install`] changes nothing when it fails: the flow is parsed and validated before the
//!   rule it would replace (same table, match and priority) is removed.
//! - A change's undo ([`uninstall`], [`reinstall`]) puts the table back to the rules it had;
//!   counters of a rule taken back and put again restart from zero.

use std::time::Duration;

use strata_dataplane::DataplaneError;
use strata_net::{format_flow, parse_flow, FlowParseError, FlowRule, RuleId, Switch};

use crate::error::clip;

/// A flow `install` added.
#[derive(Debug)]
pub(super) struct Installed {
    /// The engine's handle of the new rule.
    pub id: RuleId,
    /// The switch's own rendering of it (what the store keeps).
    pub text: String,
    /// The rule it replaced (same table, match and priority), with its old handle.
    pub replaced: Option<(RuleId, FlowRule)>,
    /// Rules in the table after the change (a count short of what the control plane knows
    /// means some rules expired).
    pub n_rules: usize,
}

/// Adds a flow in `ovs-ofctl` syntax, replacing the rule with the same table, match and
/// priority (OpenFlow's add semantics).
pub(super) fn install(
    sw: &mut Switch,
    now: Duration,
    text: &str,
) -> Result<Installed, FlowParseError> {
    let rule = parse_flow(text, Some(sw.port_names()))?;
    rule.validate()?;
    let text = format_flow(&rule, Some(sw.port_names()));
    let dup = sw
        .pipeline()
        .table(rule.table)
        .find_exact(&rule.matches, rule.priority);
    let replaced = dup.and_then(|d| sw.remove_rule(d).map(|r| (d, r)));
    match sw.add_rule(now, rule) {
        Ok(id) => Ok(Installed {
            id,
            text,
            replaced,
            n_rules: sw.pipeline().n_rules(),
        }),
        Err(e) => {
            if let Some((_, old)) = replaced {
                let _ = sw.add_rule(now, old);
            }
            Err(e.into())
        }
    }
}

/// Takes back an [`install`]: removes the new rule and puts back the one it replaced (under a
/// new handle, returned).
pub(super) fn uninstall(
    sw: &mut Switch,
    now: Duration,
    id: RuleId,
    replaced: Option<FlowRule>,
) -> Option<RuleId> {
    sw.remove_rule(id);
    replaced.and_then(|r| sw.add_rule(now, r).ok())
}

/// Puts back flows a `del-flows` removed, from their stored texts, in the given order; the
/// new handles, one per text (`None` for a text that no longer installs).
pub(super) fn reinstall(sw: &mut Switch, now: Duration, texts: &[String]) -> Vec<Option<RuleId>> {
    texts
        .iter()
        .map(|t| install(sw, now, t).ok().map(|i| i.id))
        .collect()
}

/// Of `known` handles, those whose rule is no longer in the table.
pub(super) fn gone(sw: &Switch, known: &[RuleId]) -> Vec<RuleId> {
    known
        .iter()
        .copied()
        .filter(|&id| sw.pipeline().rule(id).is_none())
        .collect()
}

/// The engine's flow error with every echoed piece of the caller's text clipped (the
/// variant, and so the stable code, is kept).
pub(super) fn clip_flow(e: FlowParseError) -> FlowParseError {
    use FlowParseError as F;
    match e {
        F::UnknownField { token } => F::UnknownField {
            token: clip(&token),
        },
        F::MissingValue { field } => F::MissingValue {
            field: clip(&field),
        },
        F::BadValue {
            field,
            value,
            reason,
        } => F::BadValue {
            field: clip(&field),
            value: clip(&value),
            reason,
        },
        F::DuplicateField { field } => F::DuplicateField {
            field: clip(&field),
        },
        F::UnknownAction { token } => F::UnknownAction {
            token: clip(&token),
        },
        F::BadActionArg {
            action,
            arg,
            reason,
        } => F::BadActionArg {
            action: clip(&action),
            arg: clip(&arg),
            reason,
        },
        F::UnknownPort { name } => F::UnknownPort { name: clip(&name) },
        other => other,
    }
}

/// A dataplane error as the control plane answers it (flow errors clipped).
pub(super) fn clip_dp(e: DataplaneError) -> DataplaneError {
    match e {
        DataplaneError::Flow(f) => DataplaneError::Flow(clip_flow(f)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_net::SwitchConfig;

    fn switch() -> Switch {
        Switch::new(SwitchConfig::default())
    }

    #[test]
    fn install_replaces_the_rule_with_the_same_match_and_priority() {
        let mut sw = switch();
        let now = Duration::ZERO;
        let a = install(&mut sw, now, "priority=5,ip,actions=drop").unwrap();
        assert!(a.replaced.is_none());
        assert_eq!(a.n_rules, 1);
        let b = install(&mut sw, now, "priority=5,ip,actions=normal").unwrap();
        assert_eq!(b.replaced.as_ref().map(|r| r.0), Some(a.id));
        assert_eq!(b.n_rules, 1);
        assert_eq!(gone(&sw, &[a.id, b.id]), vec![a.id]);
        // Undo: the replaced rule is back, the new one gone.
        let back = uninstall(&mut sw, now, b.id, b.replaced.map(|r| r.1)).unwrap();
        let dump = sw.dump_flows_text(now);
        assert!(
            dump.contains("actions=drop") && !dump.contains("normal"),
            "{dump}"
        );
        assert_eq!(gone(&sw, &[back, b.id]), vec![b.id]);
    }

    #[test]
    fn a_bad_flow_changes_nothing() {
        let mut sw = switch();
        let now = Duration::ZERO;
        install(&mut sw, now, "priority=5,ip,actions=drop").unwrap();
        let before = sw.dump_flows_text(now);
        assert!(install(&mut sw, now, "priority=5,ip,actions=bogus").is_err());
        // A rule that breaks a constraint after parsing (goto to a lower table).
        assert!(install(&mut sw, now, "table=3,priority=5,ip,actions=goto_table:1").is_err());
        assert_eq!(sw.dump_flows_text(now), before);
    }

    #[test]
    fn clipped_flow_errors_keep_their_code_and_stay_short() {
        let mut sw = switch();
        let huge = format!("{}=1,actions=drop", "x".repeat(100_000));
        let e = install(&mut sw, Duration::ZERO, &huge).unwrap_err();
        let code = e.code();
        let e = clip_flow(e);
        assert_eq!(e.code(), code);
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
    }
}
