//! The audit log: one entry per change, with who, what and the outcome.
//!
//! # Invariants
//! - Keys sort by time (nanoseconds, then a random suffix against collisions); lists answer
//!   newest first.
//! - An entry names the tenant acted on (the caller's, or for an admin the one the resource
//!   belongs to, `audit_tenant`), null only for what belongs to no tenant (switches, pools).
//! - A failure to write an entry is logged, never turned into a failure of the change.

use std::time::{SystemTime, UNIX_EPOCH};

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// The daemon itself, as the actor of what it does on its own (a device faulted, a copy
/// rebuilt, a scrub done).
pub fn daemon_principal() -> Principal {
    Principal {
        token_id: "daemon".into(),
        tenant: None,
        role: Role::Admin,
    }
}

impl Controller {
    /// Records what the daemon did on its own in the audit log.
    pub(super) fn audit_event(
        &self,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        outcome: &str,
    ) {
        self.audit(&daemon_principal(), tenant, action, resource, outcome);
    }

    /// Appends an audit entry.
    pub fn audit(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        action: &str,
        resource: &str,
        outcome: &str,
    ) {
        use rand::Rng;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("/audit/{nanos:024}{:04x}", rand::thread_rng().gen::<u16>());
        let e = AuditEntry {
            time: now(),
            actor: p.token_id.clone(),
            tenant: tenant.map(str::to_string),
            action: action.to_string(),
            resource: resource.to_string(),
            outcome: outcome.to_string(),
        };
        if let Err(err) = self.store.txn(Txn::new().put(key, enc(&e))) {
            tracing::error!(%err, "audit entry not written");
        }
    }

    /// The newest `limit` audit entries, newest first (admin).
    pub fn list_audit(&self, p: &Principal, limit: usize) -> Result<Vec<AuditEntry>, ControlError> {
        self.list_audit_since(p, limit, None)
    }

    /// The newest `limit` audit entries at or after `since` (seconds since the epoch), newest
    /// first (admin). The store reads forward only: the entries from `since` on are read in
    /// pages and only the last `limit` kept, so memory stays bounded by `limit`.
    pub fn list_audit_since(
        &self,
        p: &Principal,
        limit: usize,
        since: Option<u64>,
    ) -> Result<Vec<AuditEntry>, ControlError> {
        Self::require(p, Role::Admin)?;
        let limit = limit.max(1);
        let mut after = since
            .filter(|s| *s > 0)
            .map(|s| format!("/audit/{:024}ffff", u128::from(s) * 1_000_000_000 - 1));
        let mut kept = std::collections::VecDeque::with_capacity(limit);
        loop {
            let page = self.list::<AuditEntry>("/audit/", after.as_deref(), AUDIT_PAGE)?;
            let full = page.len() == AUDIT_PAGE;
            for (key, e) in page {
                if kept.len() == limit {
                    kept.pop_front();
                }
                kept.push_back(e);
                after = Some(key);
            }
            if !full {
                break;
            }
        }
        Ok(kept.into_iter().rev().collect())
    }

    /// The tenant an audited change acted on, for a caller that belongs to none (an admin):
    /// named by the resource (a tenant's name, a volume's or snapshot's id), looked up before
    /// the change (a delete removes what names it) and, for a create, after it.
    pub fn audit_tenant(&self, action: &str, resource: &str) -> Option<String> {
        let (kind, verb) = action.split_once('.')?;
        match (kind, verb) {
            ("tenant", _) | ("token", "create") if !resource.is_empty() => {
                Some(resource.to_string())
            }
            ("volume", "create") => None,
            ("volume", _) | ("snapshot", "create") => self
                .get::<String>(&volume_index(resource))
                .ok()
                .flatten()
                .map(|(t, _)| t),
            ("snapshot", _) => self
                .get::<String>(&snapshot_index(resource))
                .ok()
                .flatten()
                .map(|(t, _)| t),
            _ => None,
        }
    }
}

/// Entries read per store call while listing the audit log.
const AUDIT_PAGE: usize = 1000;
