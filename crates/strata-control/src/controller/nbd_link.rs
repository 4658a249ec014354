//! The link to the running NBD server: each tenant's own Unix socket, the hooks the server
//! asks (who may open which export, which TLS client may go on), and closing sessions.
//!
//! # Invariants
//! - Every tenant has a listener at `SOCKETS/NAME.sock` (mode 0600, owned by the tenant's
//!   `socket_owner` or the daemon's user) while it exists and the daemon runs: opened at
//!   tenant create and at daemon start ([`Controller::connect_nbd`]), closed and removed at
//!   tenant delete. Its connections carry the identity `Some(NAME)`.
//! - The authorizer lets identity `Some(T)` (a tenant socket, or a TLS certificate naming T)
//!   see and open only T's attached volumes; `None` (the admin socket `DATA_DIR/nbd.sock`)
//!   all attached volumes. `NBD_OPT_LIST` is filtered the same way.
//! - Detaching or deleting a volume closes its sessions; deleting a tenant or revoking its
//!   certificates closes its sessions (all of them, or those over TLS), at once.
//! - The hooks hold the controller weakly: the server never keeps a stopped controller alive.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::{ControlError, Service};
use crate::model::*;

/// The NBD server and where tenant sockets live.
#[derive(Default)]
pub(super) struct NbdLink {
    server: RwLock<Option<(Arc<strata_nbd::NbdServer>, PathBuf)>>,
}

/// The volume an export name is of (`VOLUME` or `VOLUME@SNAPSHOT`).
pub(super) fn export_volume(export: &str) -> &str {
    export.split('@').next().unwrap_or_default()
}

impl Controller {
    /// Connects the running NBD server: tenant sockets go in `sockets` (a directory, created
    /// by the caller with mode 0700), one per existing tenant, opened now.
    pub fn connect_nbd(
        &self,
        server: Arc<strata_nbd::NbdServer>,
        sockets: PathBuf,
    ) -> Result<(), ControlError> {
        *self.nbd.server.write() = Some((server, sockets));
        for (_, t) in self.list::<Tenant>("/tenants/", None, 0)? {
            if let Err(e) = self.open_tenant_socket(&t) {
                tracing::warn!(tenant = %t.name, error = %e, "tenant NBD socket not opened");
            }
        }
        Ok(())
    }

    /// Where tenant `t`'s socket is (or would be).
    pub fn tenant_socket(&self, t: &str) -> Option<PathBuf> {
        let g = self.nbd.server.read();
        g.as_ref().map(|(_, dir)| dir.join(format!("{t}.sock")))
    }

    /// (Re)opens tenant `t`'s socket with its current owner; nothing without an NBD server.
    pub(super) fn open_tenant_socket(&self, t: &Tenant) -> Result<(), ControlError> {
        let Some((server, dir)) = self.nbd.server.read().clone() else {
            return Ok(());
        };
        let path = dir.join(format!("{}.sock", t.name));
        server.stop_unix(&path);
        let opts = strata_nbd::UnixListenerOptions {
            identity: Some(t.name.clone()),
            mode: 0o600,
            owner: t.socket_owner.map(|o| (o.uid, o.gid)),
            ..Default::default()
        };
        server
            .serve_unix_with(&path, opts)
            .map_err(|e| ControlError::Unavailable {
                service: Service::Nbd,
                message: format!("tenant socket {}: {e}", path.display()),
            })
    }

    /// Opens tenant `t`'s socket if this node has none yet (a tenant created through another
    /// node of the cluster: this node opened sockets only for the tenants of its start).
    pub(super) fn ensure_tenant_socket(&self, t: &str) -> Result<(), ControlError> {
        if self.tenant_socket(t).is_none_or(|p| p.exists()) {
            return Ok(());
        }
        match self.get::<Tenant>(&super::store::tenant_key(t))? {
            Some((rec, _)) => self.open_tenant_socket(&rec),
            None => Ok(()),
        }
    }

    /// A tenant was created: its socket opens (a failure is logged; attach reports it).
    pub(super) fn tenant_created(&self, t: &Tenant) {
        if let Err(e) = self.open_tenant_socket(t) {
            tracing::warn!(tenant = %t.name, error = %e, "tenant NBD socket not opened");
        }
    }

    /// A tenant was deleted: its socket goes, every session it has is closed, and its
    /// certificate records are forgotten (so the admit hook refuses them).
    pub(super) fn tenant_deleted(&self, name: &str) -> Result<(), ControlError> {
        if let Some((server, dir)) = self.nbd.server.read().clone() {
            server.stop_unix(dir.join(format!("{name}.sock")));
            server.close_sessions(|s| s.identity.as_deref() == Some(name));
        }
        for (key, _) in self.list::<CertRecord>(&cert_key(name, ""), None, 0)? {
            self.store.txn(Txn::new().delete(key))?;
        }
        Ok(())
    }

    /// Closes every NBD session of volume `id` (its snapshots' too); how many.
    pub(super) fn close_volume_sessions(&self, id: &str) -> usize {
        let Some((server, _)) = self.nbd.server.read().clone() else {
            return 0;
        };
        server.close_sessions(|s| export_volume(&s.export) == id)
    }

    /// Whether an NBD session has snapshot `s` open (`VOLUME@NAME` or `VOLUME@ID`): closes
    /// nothing, only looks.
    pub(super) fn snapshot_open(&self, s: &Snapshot) -> bool {
        let Some((server, _)) = self.nbd.server.read().clone() else {
            return false;
        };
        let mut open = false;
        server.close_sessions(|x| {
            if let Some((vol, snap)) = x.export.split_once('@') {
                open |= vol == s.volume && (snap == s.name || snap == s.id);
            }
            false
        });
        open
    }

    /// Closes the TLS sessions of tenant `t` whose certificate serial `pick` selects.
    pub(super) fn close_certificate_sessions(&self, t: &str, pick: impl Fn(&str) -> bool) -> usize {
        let Some((server, _)) = self.nbd.server.read().clone() else {
            return 0;
        };
        server.close_sessions(|s| {
            s.identity.as_deref() == Some(t) && s.cert_serial.as_deref().is_some_and(&pick)
        })
    }

    /// Sets who owns tenant `name`'s socket (admin); the socket is opened again with it, which
    /// ends the connections made through the old one.
    pub fn set_socket_owner(
        &self,
        p: &Principal,
        name: &str,
        owner: Option<SocketOwner>,
    ) -> Result<Tenant, ControlError> {
        Self::require(p, Role::Admin)?;
        self.visible_tenant(p, name)?;
        // Under the tenant's lock, like every other change of the tenant record.
        let t = self.with_tenant(name, |t| {
            t.socket_owner = owner;
            Ok((Txn::new(), t.clone()))
        })?;
        self.open_tenant_socket(&t)?;
        Ok(t)
    }

    /// Resolves the snapshot names users gave to the engine's (the snapshot's id), so NBD
    /// clients may open `VOLUME@NAME` and ask for `strata:changed-since:NAME`; ids keep
    /// working (the engine's own names).
    pub fn nbd_snapshot_names(self: &Arc<Self>) -> strata_nbd::SnapshotNames {
        let c: Weak<Controller> = Arc::downgrade(self);
        strata_nbd::SnapshotNames::new(move |volume, name| {
            let c = c.upgrade()?;
            if name.is_empty() || name.contains('/') {
                return None;
            }
            c.get::<String>(&snapshot_name_key(volume, name))
                .ok()
                .flatten()
                .map(|(id, _)| id)
        })
    }

    /// The authorizer the NBD server asks on every export lookup and list (see the module
    /// invariants).
    pub fn nbd_authorizer(self: &Arc<Self>) -> strata_nbd::Authorizer {
        let c: Weak<Controller> = Arc::downgrade(self);
        strata_nbd::Authorizer::new(move |export, who| {
            c.upgrade().is_some_and(|c| c.may_open(export, who))
        })
    }

    /// The admit hook the NBD server asks after each TLS handshake: only certificates this
    /// daemon issued, recorded, unrevoked and unexpired go on.
    pub fn nbd_admit(self: &Arc<Self>) -> strata_nbd::Admit {
        let c: Weak<Controller> = Arc::downgrade(self);
        strata_nbd::Admit::new(move |peer| {
            c.upgrade().is_some_and(|c| {
                let ok = c.certificate_admitted(peer);
                if !ok {
                    tracing::debug!(serial = ?peer.cert_serial, "NBD TLS client refused");
                }
                ok
            })
        })
    }
}
