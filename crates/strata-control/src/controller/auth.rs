//! Tokens, authentication and roles.
//!
//! # Invariants
//! - Secrets are never stored: a token is kept under the SHA-256 of its secret.
//! - A role check ([`Controller::require`]) comes before anything else a call does.
//! - A tenant the caller may not see is not found ([`Controller::visible_tenant`]), the same
//!   answer as a tenant that does not exist.
//! - A tenant admin mints tokens of its own tenant only, with a role no higher than its own.

use sha2::{Digest, Sha256};
use strata_state::Txn;

use super::store::*;
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id (for the audit log).
    pub token_id: String,
    /// Tenant, None for admins.
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
}

fn hash_token(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Controller {
    pub fn bootstrap_admin(&self) -> Result<Option<String>, ControlError> {
        if self.store.get("/bootstrap")?.is_some() {
            return Ok(None);
        }
        let (secret, rec) = Self::mint(None, Role::Admin);
        let r = self.store.txn(
            Txn::new()
                .when("/bootstrap", 0)
                .put("/bootstrap", enc(&rec.id))
                .put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)),
        )?;
        Ok(r.succeeded.then_some(secret))
    }

    pub(super) fn mint(tenant: Option<String>, role: Role) -> (String, TokenRecord) {
        use rand::RngCore;
        let mut b = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut b);
        let secret = format!(
            "st_{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        let rec = TokenRecord {
            id: new_id()[..12].to_string(),
            tenant,
            role,
            created: now(),
        };
        (secret, rec)
    }

    /// Resolves a bearer token to its principal.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, ControlError> {
        let unauth = || ControlError::Unauthenticated;
        if secret.is_empty() || secret.len() > 256 {
            return Err(unauth());
        }
        let (rec, _) = self
            .get::<TokenRecord>(&format!("/tokens/{}", hash_token(secret)))?
            .ok_or_else(unauth)?;
        Ok(Principal {
            token_id: rec.id,
            tenant: rec.tenant,
            role: rec.role,
        })
    }

    /// Creates a token. Admins may create any; tenant admins tokens of their tenant with a
    /// role no higher than their own.
    pub fn create_token(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        role: Role,
    ) -> Result<(String, TokenRecord), ControlError> {
        let tenant = match (role, tenant) {
            (Role::Admin, None) => None,
            (Role::Admin, Some(_)) => {
                return Err(ControlError::invalid(
                    "tenant",
                    "admin tokens belong to no tenant",
                ))
            }
            (_, None) => return Err(ControlError::invalid("tenant", "a tenant is required")),
            (_, Some(t)) => Some(t.to_string()),
        };
        if let Some(t) = &tenant {
            self.visible_tenant(p, t)?;
        }
        match p.role {
            Role::Admin => {}
            Role::TenantAdmin if role >= Role::TenantAdmin => {}
            _ => {
                return Err(ControlError::forbidden(
                    "your role may not create this token",
                ))
            }
        }
        let (secret, rec) = Self::mint(tenant, role);
        self.store
            .txn(Txn::new().put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)))?;
        Ok((secret, rec))
    }

    pub(super) fn require(p: &Principal, at_least: Role) -> Result<(), ControlError> {
        if p.role <= at_least {
            Ok(())
        } else {
            Err(ControlError::forbidden(format!(
                "role {} may not do this (needs {})",
                p.role.as_str(),
                at_least.as_str()
            )))
        }
    }

    /// A tenant the caller may see, or 404.
    pub(super) fn visible_tenant(
        &self,
        p: &Principal,
        t: &str,
    ) -> Result<(Tenant, u64), ControlError> {
        let nf = || ControlError::not_found(Resource::Tenant, t);
        if p.role != Role::Admin && p.tenant.as_deref() != Some(t) {
            return Err(nf());
        }
        self.get::<Tenant>(&tenant_key(t))?.ok_or_else(nf)
    }

    /// The tenant a create acts in.
    pub(super) fn acting_tenant(
        &self,
        p: &Principal,
        requested: Option<&str>,
    ) -> Result<String, ControlError> {
        match (p.role, requested, &p.tenant) {
            (Role::Admin, Some(t), _) => Ok(t.to_string()),
            (Role::Admin, None, _) => Err(ControlError::invalid(
                "tenant",
                "admins must name the tenant to act in",
            )),
            (_, Some(t), Some(own)) if t != own => {
                Err(ControlError::not_found(Resource::Tenant, t))
            }
            (_, _, Some(own)) => Ok(own.clone()),
            (_, _, None) => Err(ControlError::internal("token without tenant")),
        }
    }
}
