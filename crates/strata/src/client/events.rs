//! `strata events` (the event journal, newest first, and `--follow`) and `strata alerts` (the
//! Prometheus rules file embedded in the binary).
//!
//! Following is a long poll: `GET /v1/events?after=CURSOR&wait=S` answers as soon as an event
//! after the cursor exists (or after S seconds with none), with the next cursor. The wait is
//! kept below the request timeout, so a quiet daemon is never mistaken for a dead one.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use strata_control::wire;

use super::{enc, Client, Output};

/// The Prometheus alerting rules `strata alerts` prints (every expression names metrics the
/// daemon's `/metrics` exports; `tests/it/events.rs` checks them with promtool).
pub const ALERT_RULES: &str = include_str!("../alerts.yaml");

/// What `strata events` shows.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// After the newest events, keep printing new ones as they happen, until Ctrl-C (JSON
    /// output: one event per line).
    #[arg(short, long)]
    pub follow: bool,
    /// Most events to show (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Only events from this time on: RFC 3339 (2026-12-01T09:30:00Z) or a span before now
    /// (10m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events of this type (device.faulted) or kind (device, volume, pool, tenant, node).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only this tenant's events (admins; a tenant sees only its own anyway).
    #[arg(long)]
    pub tenant: Option<String>,
}

const COLUMNS: [(&str, &str); 6] = [
    ("TIME (UTC)", "time:seconds"),
    ("SEVERITY", "severity"),
    ("TYPE", "type"),
    ("OBJECT", "object"),
    ("TENANT", "tenant"),
    ("MESSAGE", "message"),
];

impl Client {
    /// `strata events`.
    pub fn events(&self, a: &EventsArgs) -> Result<()> {
        let mut q = format!("/v1/events?limit={}", a.limit);
        if let Some(s) = &a.since {
            let now = crate::times::now();
            let t = crate::times::not_future(crate::times::parse_since(s, now)?, now)?;
            q.push_str(&format!("&since={t}"));
        }
        if let Some(k) = &a.kind {
            q.push_str(&format!("&type={}", enc(k)));
        }
        if let Some(t) = &a.tenant {
            q.push_str(&format!("&tenant={}", enc(t)));
        }
        let v = self.req("GET", &q, None)?;
        if !a.follow {
            return self.print(&v, &COLUMNS);
        }
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let mut cursor = v["cursor"].as_u64().unwrap_or(0);
        if matches!(self.out, Output::Table) {
            outln!("{}", follow_line(&COLUMNS.map(|(h, _)| h.to_string())));
        }
        for e in &items {
            self.print_followed(e)?;
        }
        // The daemon answers within `wait`; the request may take the timeout.
        let wait = (self.timeout.as_secs() / 2).clamp(1, wire::EVENT_WAIT_MAX);
        // Only the filters: `since` and `limit` were for the first page.
        let filters = q
            .split('&')
            .filter(|p| p.starts_with("type=") || p.starts_with("tenant="))
            .map(|p| format!("&{p}"))
            .collect::<String>();
        loop {
            let v = match self.req(
                "GET",
                &format!("/v1/events?after={cursor}&wait={wait}{filters}"),
                None,
            ) {
                Ok(v) => v,
                // The daemon restarting: try again shortly, the cursor stays valid.
                Err(e) if e.to_string().starts_with("unreachable") => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in v["items"].as_array().into_iter().flatten() {
                self.print_followed(e)?;
            }
            cursor = v["cursor"].as_u64().unwrap_or(cursor).max(cursor);
        }
    }

    /// One event of a followed journal: a fixed-width table row, or a JSON/YAML document.
    fn print_followed(&self, e: &Value) -> Result<()> {
        match self.out {
            Output::Table => outln!("{}", follow_line(&COLUMNS.map(|(_, k)| super::cell(e, k)))),
            Output::Json => outln!("{}", serde_json::to_string(e)?),
            Output::Yaml => out!("---\n{}", serde_yaml::to_string(e)?),
        }
        Ok(())
    }
}

/// A row of the followed table: fixed widths (rows to come are not known yet).
fn follow_line(cells: &[String; 6]) -> String {
    let widths = [20, 8, 26, 34, 12];
    let mut s = String::new();
    for (c, w) in cells.iter().zip(widths) {
        s.push_str(&format!("{c:<w$}  "));
    }
    s.push_str(&cells[5]);
    s.trim_end().to_string()
}

/// `strata alerts`: the rules file, as YAML or (with `-o json`) the same document as JSON.
pub fn print_alerts(out: Output) -> Result<()> {
    match out {
        Output::Json => {
            let v: Value = serde_yaml::from_str(ALERT_RULES)?;
            outln!("{}", serde_json::to_string_pretty(&json!(v))?);
        }
        _ => crate::out::write_bytes(ALERT_RULES.as_bytes()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded rules are a Prometheus rules document: groups of named rules, each with
    /// an expression, a severity and a summary (promtool checks the rest in the suite).
    #[test]
    fn the_embedded_rules_are_groups_of_alerts_with_severity_and_summary() {
        let v: Value = serde_yaml::from_str(ALERT_RULES).expect("YAML");
        let groups = v["groups"].as_array().expect("groups");
        let rules: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
            .collect();
        assert!(rules.len() >= 8, "{} rules", rules.len());
        for r in rules {
            let name = r["alert"].as_str().expect("alert name");
            assert!(
                r["expr"].as_str().is_some_and(|e| e.contains("strata_")),
                "{name}"
            );
            assert!(
                matches!(
                    r["labels"]["severity"].as_str(),
                    Some("warning" | "critical")
                ),
                "{name}"
            );
            assert!(r["annotations"]["summary"].is_string(), "{name}");
        }
    }

    #[test]
    fn followed_rows_keep_their_columns() {
        let l = follow_line(&[
            "2026-12-02 03:00:00".into(),
            "error".into(),
            "device.faulted".into(),
            "d1".into(),
            "".into(),
            "device d1 faulted".into(),
        ]);
        assert_eq!(l.find("error"), Some(22));
        assert_eq!(l.find("device.faulted"), Some(32));
        assert!(l.ends_with("device d1 faulted"));
    }
}
