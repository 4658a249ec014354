//! Per-volume QoS limits: desired state in the volume record, applied to the engine.
//!
//! # Invariants
//! - A limit is positive or absent (absent: unlimited).
//! - Under a tenant IOPS quota, every volume has an IOPS limit and their sum stays within it.
//! - The engine learns the limits again at every start (they are runtime state there).

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::tenants::check_iops;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

impl Controller {
    /// Changes a volume's limits; open connections see the change within 20 ms.
    pub fn set_qos(&self, p: &Principal, id: &str, qos: Qos) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        validate_qos(&qos)?;
        let v = self.get_volume(p, id)?;
        let mut nv = v.clone();
        nv.qos = qos;
        self.with_tenant(&v.tenant, |t| {
            let old = v.qos.iops_limit.unwrap_or(0);
            check_iops(t, old, &qos)?;
            t.usage.iops = t.usage.iops - old.min(t.usage.iops) + qos.iops_limit.unwrap_or(0);
            Ok((Txn::new().put(volume_key(&v.tenant, &v.id), enc(&nv)), ()))
        })?;
        self.pool.set_qos(self.engine_volume(&v)?, qos.limits())?;
        Ok(nv)
    }
}

pub(super) fn validate_qos(q: &Qos) -> Result<(), ControlError> {
    for (f, v) in [
        ("iops_limit", q.iops_limit),
        ("bandwidth_limit", q.bandwidth_limit),
        ("burst_iops", q.burst_iops),
        ("burst_bandwidth", q.burst_bandwidth),
    ] {
        if v == Some(0) {
            return Err(ControlError::invalid(
                f,
                "a limit must be positive (omit it for none)",
            ));
        }
    }
    Ok(())
}
