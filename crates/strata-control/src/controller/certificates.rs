//! TLS client certificates of tenants: issued by `attach --tcp` with a bounded lifetime,
//! recorded per tenant, revoked per tenant.
//!
//! # Invariants
//! - Every client certificate the CA issues is recorded at `/certs/{tenant}/{serial}` before
//!   it is handed out; the admit hook lets a TLS client go on only if the record of its serial
//!   exists under the tenant its certificate names, is not revoked and has not expired. A
//!   certificate this daemon did not record (issued by an older version, whose certificates
//!   were valid until 4096) is refused: re-attach to get a new one.
//! - Revoking a tenant's certificates marks every record revoked and closes the TLS sessions
//!   they opened at once. Detaching a volume revokes nothing (the certificate names the
//!   tenant, not the volume; the detached export simply stops being served). Deleting a
//!   tenant forgets its records, which refuses its certificates the same way.
//! - Records past their expiry are pruned when the tenant's certificates are listed or
//!   revoked.

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Revoked {
    /// Certificates newly revoked.
    pub revoked: usize,
    /// Open TLS sessions closed.
    pub sessions_closed: usize,
}

impl Controller {
    /// Records a certificate just issued for `tenant` on `volume`'s attachment.
    pub(super) fn record_certificate(
        &self,
        tenant: &str,
        volume: &str,
        creds: &crate::pki::Credentials,
    ) -> Result<(), ControlError> {
        let rec = CertRecord {
            serial: creds.serial.clone(),
            tenant: tenant.to_string(),
            volume: volume.to_string(),
            issued: now(),
            not_after: creds.not_after,
            revoked: None,
        };
        self.store
            .txn(Txn::new().put(cert_key(tenant, &rec.serial), enc(&rec)))?;
        Ok(())
    }

    /// Whether the TLS client `peer` may go on (see the module invariants).
    pub fn certificate_admitted(&self, peer: &strata_nbd::PeerInfo) -> bool {
        let (Some(t), Some(serial)) = (&peer.identity, &peer.cert_serial) else {
            return false;
        };
        if t.contains('/') || serial.contains('/') {
            return false;
        }
        match self.get::<CertRecord>(&cert_key(t, serial)) {
            Ok(Some((rec, _))) => rec.revoked.is_none() && now() < rec.not_after,
            _ => false,
        }
    }

    /// Tenant `t`'s recorded certificates (admins and its tenant admins), pruning expired ones.
    pub fn list_certificates(
        &self,
        p: &Principal,
        t: &str,
    ) -> Result<Vec<CertRecord>, ControlError> {
        self.visible_tenant(p, t)?;
        Self::require(p, Role::TenantAdmin)?;
        self.live_certificates(t)
    }

    fn live_certificates(&self, t: &str) -> Result<Vec<CertRecord>, ControlError> {
        let mut out = Vec::new();
        let now = now();
        for (key, rec) in self.list::<CertRecord>(&cert_key(t, ""), None, 0)? {
            if rec.not_after <= now {
                self.store.txn(Txn::new().delete(key))?;
            } else {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Revokes every certificate of tenant `t` (admins and its tenant admins) and closes the
    /// TLS sessions they opened.
    pub fn revoke_certificates(&self, p: &Principal, t: &str) -> Result<Revoked, ControlError> {
        self.visible_tenant(p, t)?;
        Self::require(p, Role::TenantAdmin)?;
        let now = now();
        let mut revoked = 0;
        for mut rec in self.live_certificates(t)? {
            if rec.revoked.is_none() {
                rec.revoked = Some(now);
                self.store
                    .txn(Txn::new().put(cert_key(t, &rec.serial), enc(&rec)))?;
                revoked += 1;
            }
        }
        // Every serial of the tenant is revoked or unknown now: close them all.
        let sessions_closed = self.close_certificate_sessions(t, |_| true);
        Ok(Revoked {
            revoked,
            sessions_closed,
        })
    }
}
