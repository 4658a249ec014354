//! API tokens.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
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

/// `POST /v1/tokens`: an admin token names no tenant; the others name theirs (a tenant admin's
/// own by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// The tenant the token acts for.
    #[schema(schema_with = tenant)]
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
}

impl Check for CreateToken {
    fn check(&self) -> Result<(), ControlError> {
        match &self.tenant {
            Some(t) => check_text("tenant", t, NAME_PATTERN),
            None => Ok(()),
        }
    }
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
}
