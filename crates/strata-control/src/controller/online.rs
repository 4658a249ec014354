//! Bringing a faulted or missing device back without a restart (`strata pool online-device`),
//! as `zpool online` does: the operator says the device is back (a cable reseated, a path
//! restored), the daemon opens it again and its copies catch up.
//!
//! # Invariants
//! - The engine pool the device had is retired first (it refuses every write from then on), so
//!   two engine pools never write one device.
//! - The device is opened from its recorded path and must be the same engine pool it was (same
//!   pool id) when one was open before; otherwise nothing changes and `device_unusable` says
//!   why.
//! - A replicated volume's copy there rejoins its set as a copy that was away: it resyncs only
//!   the regions written meanwhile (the set's dirty tracking), never served before it is in
//!   step. A one-copy volume there is served by the new engine pool at once.
//! - A copy already rebuilt elsewhere is not touched (the volume's record no longer names the
//!   device); the stale engine volume is an orphan, swept at the next start.
//! - Bringing a healthy device online changes nothing.

use super::auth::Principal;
use super::devices::PoolView;
use super::events::EventKind;
use super::Controller;
use crate::error::{ControlError, DeviceProblem, Resource};
use crate::model::*;
use crate::storage::open_device;

impl Controller {
    /// Opens a faulted or missing device of `pool` again and lets its copies catch up (admin).
    pub fn online_device(
        &self,
        p: &Principal,
        pool: &str,
        device: &str,
    ) -> Result<PoolView, ControlError> {
        Self::require(p, Role::Admin)?;
        let _g = self.pool_lock.lock();
        let rec = self.pool_record(pool)?;
        let Some(dr) = rec.devices.iter().find(|d| d.id == device) else {
            return Err(ControlError::not_found(Resource::Device, device));
        };
        let old = self.storage.get(device);
        if old.as_ref().is_some_and(|d| d.health() == "healthy") {
            return self.pool_view(&rec);
        }
        let old_engine = old.and_then(|d| d.engine);
        let new = open_device(std::path::Path::new(&dr.path)).map_err(|e| {
            ControlError::device(
                DeviceProblem::Unusable,
                format!("device {device} ({}) did not open: {e}", dr.path),
            )
        })?;
        if let Some(o) = &old_engine {
            if o.id() != new.id() {
                return Err(ControlError::device(
                    DeviceProblem::Unusable,
                    format!(
                        "{} holds another Strata device than {device} had: not taken back",
                        dr.path
                    ),
                ));
            }
            o.retire();
        }
        if old_engine.is_none() {
            // Never opened by this daemon: not claimed yet (a claim held goes on holding).
            self.storage.claim(device, std::path::Path::new(&dr.path));
        }
        // Given the master key as it goes in.
        self.storage.insert(device, Ok(new));
        self.reapply_tenant_shares()?;
        let mut rejoined = 0;
        for (_, v) in self.local_volumes()? {
            let devs = v.copy_devices();
            let Some(i) = devs.iter().position(|d| d == device) else {
                continue;
            };
            if v.state != VolumeState::Available {
                continue;
            }
            if devs.len() > 1 {
                let set = self.replica_set(&v)?;
                let faulted = set
                    .copies()
                    .get(i)
                    .is_some_and(|c| c.state == strata_replica::CopyState::Faulted);
                if faulted {
                    let target = self.targets(&v).swap_remove(i);
                    set.reattach(i, target)
                        .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
                    rejoined += 1;
                }
            }
            if let Err(e) = self.refresh_handle(&v) {
                tracing::warn!(volume = %v.id, error = %e, "exports not pointed at the device again");
            }
        }
        // The resync workers start on the rejoined copies now, not at their idle fallback.
        self.sets.signals.raise_work();
        tracing::info!(pool, device, rejoined, "device back online");
        self.audit_event(
            None,
            "device.online",
            device,
            &format!("{rejoined} replicated copies resync what they missed"),
        );
        self.event(
            EventKind::DeviceOnline,
            device,
            None,
            format!("device {device} back online: {rejoined} replicated copies catch up"),
        );
        self.pool_view(&rec)
    }
}
