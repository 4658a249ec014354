//! API tokens.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;
use crate::model;

fn tenant() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, true)
}

/// A role, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, across tenants (its tokens belong to no tenant).
    Admin,
    /// Everything within a tenant, including its tokens.
    TenantAdmin,
    /// A tenant's volumes, snapshots and QoS.
    Member,
    /// Read a tenant's resources.
    Reader,
}

impl From<Role> for model::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => model::Role::Admin,
            Role::TenantAdmin => model::Role::TenantAdmin,
            Role::Member => model::Role::Member,
            Role::Reader => model::Role::Reader,
        }
    }
}

impl From<model::Role> for Role {
    fn from(r: model::Role) -> Self {
        match r {
            model::Role::Admin => Role::Admin,
            model::Role::TenantAdmin => Role::TenantAdmin,
            model::Role::Member => Role::Member,
            model::Role::Reader => Role::Reader,
        }
    }
}

/// `POST /v1/tokens`: an admin token names no tenant; the others name theirs. The document
/// says so with a `oneOf` on the role (see the `PartialSchema` below).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// The tenant the token acts for.
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
    /// Lifetime: `30d`, `12h`, `90m`, `2w`, or `never` (admin callers only); default 90 days.
    #[serde(default)]
    pub expires: Option<String>,
}

fn expires() -> Object {
    text(EXPIRES_PATTERN, EXPIRES_MAX_LEN, true)
}

/// One branch of [`CreateToken`]'s schema: the roles it covers and its tenant field.
fn token_branch(roles: &[&str], tenant: Object, required: &[&str]) -> Object {
    let role = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(roles.iter().copied()))
        .build();
    let mut b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("role", role)
        .property("tenant", tenant)
        .property("expires", expires());
    for r in required {
        b = b.required(*r);
    }
    b.build()
}

impl utoipa::PartialSchema for CreateToken {
    fn schema() -> RefOr<Schema> {
        let no_tenant = ObjectBuilder::new().schema_type(Type::Null).build();
        let admin = token_branch(&["admin"], no_tenant, &["role"]);
        let scoped = token_branch(
            &["tenant-admin", "member", "reader"],
            text(NAME_PATTERN, NAME_MAX_LEN, false),
            &["role", "tenant"],
        );
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .description(Some(
                    "An admin token (no tenant) or a token of one tenant. `expires`: `30d`, \
                     `12h`, `90m`, `2w`, or `never` (admin callers only); default 90 days.",
                ))
                .item(admin)
                .item(scoped)
                .build(),
        ))
    }
}
impl ToSchema for CreateToken {
    fn name() -> std::borrow::Cow<'static, str> {
        "CreateToken".into()
    }
}

impl Check for CreateToken {
    fn check(&self) -> Result<(), ControlError> {
        if let Some(e) = &self.expires {
            check_text("expires", e, EXPIRES_PATTERN)?;
        }
        match &self.tenant {
            Some(t) => check_text("tenant", t, NAME_PATTERN),
            None => Ok(()),
        }
    }
}

/// `GET /v1/tokens?tenant=T`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenQuery {
    /// Only this tenant's tokens.
    #[schema(schema_with = tenant)]
    pub tenant: Option<String>,
}

impl Check for TokenQuery {
    fn check(&self) -> Result<(), ControlError> {
        match &self.tenant {
            Some(t) => check_text("tenant", t, NAME_PATTERN),
            None => Ok(()),
        }
    }
}

/// A token as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Tenant (none for admin tokens).
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Expiry time (null: never).
    pub expires: Option<u64>,
    /// Last use, to the minute.
    pub last_used: Option<u64>,
    /// Past its expiry (it answers `token_expired`).
    pub expired: bool,
    /// The bootstrap admin token (never expires, not revocable through the API).
    pub bootstrap: bool,
}

impl From<model::TokenView> for TokenInfo {
    fn from(t: model::TokenView) -> Self {
        TokenInfo {
            id: t.id,
            tenant: t.tenant,
            role: t.role.into(),
            created: t.created,
            expires: t.expires,
            last_used: t.last_used,
            expired: t.expired,
            bootstrap: t.bootstrap,
        }
    }
}

/// The tokens the caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// Tokens.
    pub items: Vec<TokenInfo>,
}

/// A new token: the secret is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    /// Public id.
    pub id: String,
    /// Tenant it acts for (none for admin tokens).
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
    /// The secret to send as `Authorization: Bearer`.
    pub token: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Expiry time (null: never).
    pub expires: Option<u64>,
}
