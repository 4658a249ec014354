//! The audit log: one entry per change, with who, what and the outcome.
//!
//! # Invariants
//! - Keys sort by time (nanoseconds, then a random suffix against collisions).
//! - A failure to write an entry is logged, never turned into a failure of the change.

use std::time::{SystemTime, UNIX_EPOCH};

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

impl Controller {
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

    /// Audit entries, oldest first (admin).
    pub fn list_audit(&self, p: &Principal, limit: usize) -> Result<Vec<AuditEntry>, ControlError> {
        Self::require(p, Role::Admin)?;
        Ok(self
            .list::<AuditEntry>("/audit/", None, limit)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }
}
