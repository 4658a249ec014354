//! The error body every failing call answers with: `{"error": {"code", "message", "field"}}`,
//! whose `code` is one of the registry's codes (`strata-types/src/codes.rs`).

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    // (No doc comment: one would wrap the inlined schema in a `oneOf`.)
    #[allow(missing_docs)]
    #[schema(inline)]
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code from the registry in strata-types (crates/strata-types/src/codes.rs).
    #[schema(schema_with = code_schema)]
    pub code: String,
    /// Human message.
    pub message: String,
    /// The request field at fault, if any.
    pub field: Option<String>,
}

fn code_schema() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A stable code from the registry in strata-types (crates/strata-types/src/codes.rs).",
        ))
        .enum_values(Some(
            strata_types::ErrorCode::ALL.iter().map(|c| c.as_str()),
        ))
        .build()
}
