//! Attachments: a volume exported to NBD clients, and who may open it.
//!
//! # Invariants
//! - The export set the NBD server serves is exactly the attached volumes (reloaded at start).
//! - A TLS client opens an export only when its certificate names the volume's tenant; a
//!   client of a tenant's socket only when the socket is that tenant's; a client of the admin
//!   socket any attached export ([`Controller::may_open`]).
//! - Attaching is idempotent: a second attach returns the first attachment. Its `uri` is on
//!   the tenant's socket (`DATA_DIR/sockets/TENANT.sock`) once the NBD server is connected
//!   ([`Controller::connect_nbd`]), else on the admin socket; it is computed when returned, so
//!   records written by older versions show the current socket.
//! - Each `attach --tcp` issues a fresh certificate (bounded lifetime, recorded per tenant
//!   before it is returned: `certificates.rs`).
//! - Detaching stops new opens at once and closes the volume's open sessions.

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::{ControlError, Resource, Service};
use crate::model::*;

/// The set of export names the NBD server may serve (attached volumes).
pub type Exports = std::sync::Arc<parking_lot::RwLock<std::collections::HashSet<String>>>;

impl Controller {
    /// Whether a client with `identity` may see and open `export`: it must be attached, and
    /// `identity` (the tenant its TLS certificate or its Unix socket names) must be the
    /// volume's tenant; `None` is the admin socket, which opens every attached export.
    pub fn may_open(&self, export: &str, identity: Option<&str>) -> bool {
        let vol = export.split('@').next().unwrap_or_default();
        if !self.exports.read().contains(vol) {
            return false;
        }
        match identity {
            None => true,
            Some(id) => matches!(
                self.get::<String>(&volume_index(vol)),
                Ok(Some((tenant, _))) if tenant == id
            ),
        }
    }

    /// Credentials for the TCP listener: a client certificate naming the volume's tenant.
    pub fn attach_tcp(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<(Attachment, crate::pki::Credentials), ControlError> {
        let a = self.attach(p, id)?;
        let Some((_, pki)) = self.nbd_tcp.read().clone() else {
            return Err(ControlError::Unavailable {
                service: Service::NbdTcp,
                message: "the daemon has no NBD TCP listener (strata serve --nbd-listen)".into(),
            });
        };
        let creds = pki
            .client(&a.tenant)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        self.record_certificate(&a.tenant, &a.volume, &creds)?;
        Ok((a, creds))
    }

    /// Exports a volume to NBD clients; returns the attachment (idempotent).
    pub fn attach(&self, p: &Principal, id: &str) -> Result<Attachment, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        // Only the serving node's sockets serve the volume (after a takeover, the new one).
        self.require_local(&v)?;
        self.ensure_tenant_socket(&v.tenant)?;
        if let Some((a, _)) = self.get::<Attachment>(&attachment_key(&v.id))? {
            return Ok(self.present(a));
        }
        let socket = self
            .nbd_socket
            .read()
            .clone()
            .ok_or_else(|| ControlError::Unavailable {
                service: Service::Nbd,
                message: "the NBD server is not running".into(),
            })?;
        let a = Attachment {
            volume: v.id.clone(),
            tenant: v.tenant.clone(),
            export: v.id.clone(),
            uri: format!("nbd+unix:///{}?socket={}", v.id, socket.display()),
            tcp_uri: self
                .nbd_tcp
                .read()
                .as_ref()
                .map(|(addr, _)| format!("nbds://{addr}/{}", v.id)),
            created: now(),
        };
        let r = self.store.txn(
            Txn::new()
                .when(attachment_key(&v.id), 0)
                .put(attachment_key(&v.id), enc(&a)),
        )?;
        if !r.succeeded {
            return self.attachment(p, id);
        }
        self.exports.write().insert(a.export.clone());
        Ok(self.present(a))
    }

    /// An attachment with the URIs of the sockets and listener running now.
    fn present(&self, mut a: Attachment) -> Attachment {
        let socket = self
            .tenant_socket(&a.tenant)
            .or_else(|| self.nbd_socket.read().clone());
        if let Some(s) = socket {
            a.uri = format!("nbd+unix:///{}?socket={}", a.export, s.display());
        }
        a.tcp_uri = self
            .nbd_tcp
            .read()
            .as_ref()
            .map(|(addr, _)| format!("nbds://{addr}/{}", a.export));
        a
    }

    /// A volume's attachment.
    pub fn attachment(&self, p: &Principal, id: &str) -> Result<Attachment, ControlError> {
        let v = self.get_volume(p, id)?;
        self.get::<Attachment>(&attachment_key(&v.id))?
            .map(|(a, _)| self.present(a))
            .ok_or_else(|| ControlError::not_found(Resource::Attachment, &v.name))
    }

    /// The attachments the caller may see (an admin: all, or one tenant's; others: their
    /// tenant's), in volume id order.
    pub fn list_attachments(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<Attachment>, ControlError> {
        Self::require(p, Role::Reader)?;
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        let only = tenant.map(str::to_string).or_else(|| match p.role {
            Role::Admin => None,
            _ => p.tenant.clone(),
        });
        Ok(self
            .list::<Attachment>("/attachments/", None, 0)?
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| only.as_ref().is_none_or(|t| *t == a.tenant))
            .map(|a| self.present(a))
            .collect())
    }

    /// Stops exporting a volume: new opens fail at once, open sessions are closed.
    pub fn detach(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let a = self.attachment(p, id)?;
        self.store
            .txn(Txn::new().delete(attachment_key(&a.volume)))?;
        self.exports.write().remove(&a.export);
        let closed = self.close_volume_sessions(&a.volume);
        tracing::debug!(volume = %a.volume, closed, "detached");
        Ok(())
    }
}
