//! Attachments: a volume exported over NBD.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model;

/// How a client reaches the export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The daemon's Unix socket.
    #[default]
    Unix,
    /// TCP with TLS and a client certificate (returned once); needs `--nbd-listen`.
    Tcp,
}

/// `POST /v1/volumes/{id}/attachments` (an empty body is `unix`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attach {
    /// Transport (default `unix`).
    pub transport: Option<Transport>,
}

/// A client certificate and its key, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    /// The CA certificate to trust.
    pub ca_cert: String,
    /// The client certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The certificate's serial, lowercase hex (what revocation and the NBD server name).
    pub serial: String,
    /// End of the certificate's validity, seconds since the epoch.
    pub not_after: u64,
}

/// A volume exported to NBD clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    /// Volume id.
    pub volume: String,
    /// Owning tenant.
    pub tenant: String,
    /// NBD export name.
    pub export: String,
    /// The URI a client opens.
    #[schema(example = "nbd+unix:///0123abcd?socket=/var/lib/strata/nbd.sock")]
    pub uri: String,
    /// The URI over TCP with TLS, when the daemon listens on TCP.
    #[schema(example = "nbds://10.0.0.5:10809/0123abcd")]
    pub tcp_uri: Option<String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The client certificate (transport `tcp` only, returned once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

impl From<model::Attachment> for Attachment {
    fn from(a: model::Attachment) -> Self {
        Attachment {
            volume: a.volume,
            tenant: a.tenant,
            export: a.export,
            uri: a.uri,
            tcp_uri: a.tcp_uri,
            created: a.created,
            credentials: None,
        }
    }
}

impl From<crate::pki::Credentials> for Credentials {
    fn from(c: crate::pki::Credentials) -> Self {
        Credentials {
            ca_cert: c.ca_cert,
            cert: c.cert,
            key: c.key,
            serial: c.serial,
            not_after: c.not_after,
        }
    }
}

impl super::Check for Attach {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        Ok(())
    }
}

/// The attachments the caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttachmentList {
    /// Attachments.
    pub items: Vec<Attachment>,
}

/// The query of `GET /v1/attachments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAttachments {
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl super::Check for ListAttachments {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        use super::bounds::{check_text, NAME_PATTERN};
        self.tenant
            .as_deref()
            .map_or(Ok(()), |t| check_text("tenant", t, NAME_PATTERN))
    }
}
