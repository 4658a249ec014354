//! Tokens, authentication and roles.
//!
//! # Invariants
//! - Secrets are never stored: a token is kept under the SHA-256 of its secret.
//! - A role check ([`Controller::require`]) comes before anything else a call does.
//! - A tenant the caller may not see is not found ([`Controller::visible_tenant`]), the same
//!   answer as a tenant that does not exist.
//! - A tenant admin mints tokens of its own tenant only, with a role no higher than its own.
//! - Every token but the bootstrap admin token has an expiry unless an admin created it with
//!   `never`; new tokens default to [`DEFAULT_TOKEN_LIFETIME`]. A token past its expiry is
//!   refused with [`ControlError::TokenExpired`]; a revoked token is deleted, so it is unknown
//!   ([`ControlError::Unauthenticated`]) like a token that never existed.
//! - The bootstrap admin token (`DATA_DIR/admin.token`) never expires and is not revocable
//!   through the API: it is the recovery credential of whoever owns the data dir.
//! - `last_used` is written at most once per [`LAST_USED_GRANULARITY`] per token, with a
//!   comparison on the record's revision, so a concurrent revoke is never undone by it.
//! - Listing never shows a secret or its hash. Admins see every token; tenant admins their
//!   tenant's; members and readers only the token they call with. Revoking follows the same
//!   scopes; a token outside them is `token_not_found`.

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

/// Lifetime of a new token when the request names none.
pub const DEFAULT_TOKEN_LIFETIME: u64 = 90 * 86_400;

/// `last_used` is recorded to this many seconds (one store write per token per minute at most).
pub const LAST_USED_GRANULARITY: u64 = 60;

/// Longest lifetime a token may be given (`never` aside).
const MAX_TOKEN_LIFETIME: u64 = 10 * 365 * 86_400;

/// Parses a duration such as `30d`, `12h`, `90m`, `45s` or `2w` into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
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
        let (secret, rec) = Self::mint(None, Role::Admin, None);
        let r = self.store.txn(
            Txn::new()
                .when("/bootstrap", 0)
                .put("/bootstrap", enc(&rec.id))
                .put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)),
        )?;
        Ok(r.succeeded.then_some(secret))
    }

    pub(super) fn mint(
        tenant: Option<String>,
        role: Role,
        expires: Option<u64>,
    ) -> (String, TokenRecord) {
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
            expires,
            last_used: None,
        };
        (secret, rec)
    }

    /// Resolves a bearer token to its principal: unknown (or revoked) is
    /// [`ControlError::Unauthenticated`], past its expiry [`ControlError::TokenExpired`].
    pub fn authenticate(&self, secret: &str) -> Result<Principal, ControlError> {
        let unauth = || ControlError::Unauthenticated;
        if secret.is_empty() || secret.len() > 256 {
            return Err(unauth());
        }
        let key = format!("/tokens/{}", hash_token(secret));
        let (rec, rev) = self.get::<TokenRecord>(&key)?.ok_or_else(unauth)?;
        let t = now();
        if rec.expires.is_some_and(|e| t >= e) {
            return Err(ControlError::TokenExpired);
        }
        if rec
            .last_used
            .is_none_or(|u| t >= u.saturating_add(LAST_USED_GRANULARITY))
        {
            let mut upd = rec.clone();
            upd.last_used = Some(t);
            // Lost races (another request, a revoke) are fine: the record stays as it is.
            let _ = self
                .store
                .txn(Txn::new().when(&key, rev).put(&key, enc(&upd)));
        }
        Ok(Principal {
            token_id: rec.id,
            tenant: rec.tenant,
            role: rec.role,
        })
    }

    /// Creates a token. Admins may create any; tenant admins tokens of their tenant with a
    /// role no higher than their own. `expires` is a duration (`30d`, `12h`; default
    /// [`DEFAULT_TOKEN_LIFETIME`]) or `never` (admins only).
    pub fn create_token_expiring(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        role: Role,
        expires: Option<&str>,
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
        let lifetime = match expires.map(str::trim) {
            None => Some(DEFAULT_TOKEN_LIFETIME),
            Some("never") if p.role == Role::Admin => None,
            Some("never") => {
                return Err(ControlError::forbidden(
                    "only admins may create tokens that never expire",
                ))
            }
            Some(d) => match parse_duration(d) {
                Some(s) if s <= MAX_TOKEN_LIFETIME => Some(s),
                Some(_) => {
                    return Err(ControlError::invalid(
                        "expires",
                        "a token lives at most 3650 days (admins may ask for never)",
                    ))
                }
                None => {
                    return Err(ControlError::invalid(
                        "expires",
                        format!("{d:?} is not a duration such as 30d, 12h, 90m, or never"),
                    ))
                }
            },
        };
        let (secret, rec) = Self::mint(tenant, role, lifetime.map(|l| now() + l));
        self.store
            .txn(Txn::new().put(format!("/tokens/{}", hash_token(&secret)), enc(&rec)))?;
        Ok((secret, rec))
    }

    /// [`Controller::create_token_expiring`] with the default lifetime.
    pub fn create_token(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        role: Role,
    ) -> Result<(String, TokenRecord), ControlError> {
        self.create_token_expiring(p, tenant, role, None)
    }

    fn bootstrap_id(&self) -> Result<Option<String>, ControlError> {
        Ok(self.get::<String>("/bootstrap")?.map(|(id, _)| id))
    }

    /// Whether `p` may see (and revoke) token `rec`.
    fn sees_token(p: &Principal, rec: &TokenRecord) -> bool {
        match p.role {
            Role::Admin => true,
            Role::TenantAdmin => rec.tenant.is_some() && rec.tenant == p.tenant,
            Role::Member | Role::Reader => rec.id == p.token_id,
        }
    }

    /// The tokens the caller may see (never their secrets), optionally of one tenant.
    pub fn list_tokens(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<TokenView>, ControlError> {
        if let Some(t) = tenant {
            if p.role != Role::Admin && p.tenant.as_deref() != Some(t) {
                return Err(ControlError::not_found(Resource::Tenant, t));
            }
        }
        let boot = self.bootstrap_id()?;
        let t = now();
        let mut out: Vec<TokenView> = self
            .list::<TokenRecord>("/tokens/", None, 0)?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| Self::sees_token(p, r))
            .filter(|r| tenant.is_none() || r.tenant.as_deref() == tenant)
            .map(|r| TokenView {
                expired: r.expires.is_some_and(|e| t >= e),
                bootstrap: boot.as_deref() == Some(r.id.as_str()),
                id: r.id,
                tenant: r.tenant,
                role: r.role,
                created: r.created,
                expires: r.expires,
                last_used: r.last_used,
            })
            .collect();
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    /// Revokes (deletes) a token by its public id: it answers `unauthenticated` from then on.
    pub fn revoke_token(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        let nf = || ControlError::not_found(Resource::Token, id);
        let (key, rec) = self
            .list::<TokenRecord>("/tokens/", None, 0)?
            .into_iter()
            .find(|(_, r)| r.id == id)
            .ok_or_else(nf)?;
        if !Self::sees_token(p, &rec) {
            return Err(nf());
        }
        if self.bootstrap_id()?.as_deref() == Some(id) {
            return Err(ControlError::forbidden(
                "the bootstrap admin token (DATA_DIR/admin.token) cannot be revoked",
            ));
        }
        self.store.txn(Txn::new().delete(key))?;
        Ok(())
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
            // An admin belongs to no tenant, so "my own tenant" is not something its role
            // can act in: a role refusal, not malformed input (the same body is valid for
            // every other role).
            (Role::Admin, None, _) => Err(ControlError::forbidden(
                "admins belong to no tenant: name the tenant to act in",
            )),
            (_, Some(t), Some(own)) if t != own => {
                Err(ControlError::not_found(Resource::Tenant, t))
            }
            (_, _, Some(own)) => Ok(own.clone()),
            (_, _, None) => Err(ControlError::internal("token without tenant")),
        }
    }
}
