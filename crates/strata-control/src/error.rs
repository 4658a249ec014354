//! The one error type the API returns: an HTTP status, a stable code, a message and the field
//! at fault. Every library error is mapped here once.

use serde::Serialize;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// The request field at fault, if any.
    pub field: Option<&'static str>,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorInner<'a>,
}

/// Inner part of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorInner<'a> {
    /// Code.
    pub code: &'a str,
    /// Message.
    pub message: &'a str,
    /// Field.
    pub field: Option<&'a str>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    /// Names the field at fault.
    pub fn field(mut self, f: &'static str) -> Self {
        self.field = Some(f);
        self
    }
    /// 400 invalid_argument.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_argument", message).field(field)
    }
    /// 404 with a resource-specific code.
    pub fn not_found(code: &'static str, what: impl std::fmt::Display) -> Self {
        Self::new(404, code, format!("{what} not found"))
    }
    /// 403 forbidden: authenticated, but the role does not allow it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    /// 409 conflict with a specific code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }
    /// 500 internal.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
                field: self.field,
            },
        })
        .expect("serializable")
    }
}

impl From<strata_state::StoreError> for ApiError {
    fn from(e: strata_state::StoreError) -> Self {
        match e {
            strata_state::StoreError::Invalid(m) => ApiError::new(400, "invalid_argument", m),
            other => ApiError::new(503, "store_unavailable", other.to_string()),
        }
    }
}

impl From<strata_block::AdminError> for ApiError {
    fn from(e: strata_block::AdminError) -> Self {
        use strata_block::AdminError as E;
        let msg = e.to_string();
        match e {
            E::VolumeNotFound(_) => ApiError::new(404, "volume_not_found", msg),
            E::SnapshotNotFound(_) => ApiError::new(404, "snapshot_not_found", msg),
            E::AlreadyExists { .. } => ApiError::new(409, "already_exists", msg),
            E::InvalidName { .. } => ApiError::invalid("name", msg),
            E::InvalidSize { .. } => ApiError::invalid("size", msg),
            E::ShrinkOverData { .. } => ApiError::new(409, "shrink_over_data", msg).field("size"),
            E::HasSnapshots { .. } => ApiError::new(409, "volume_has_snapshots", msg),
            E::ClassUnavailable(_) => ApiError::invalid("class", msg),
            E::NotOfVolume { .. } => ApiError::invalid("snapshot", msg),
            E::MetadataFull => ApiError::new(507, "out_of_space", msg),
            E::Failed(_) => ApiError::new(503, "pool_failed", msg),
        }
    }
}
