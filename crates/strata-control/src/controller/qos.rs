//! Per-volume QoS limits: desired state in the volume record, applied to the engine.
//!
//! # Invariants
//! - A limit is positive or absent (absent: unlimited).
//! - Under a tenant IOPS quota, every volume has an IOPS limit and their sum stays within it.
//! - The engine learns the limits again at every start (they are runtime state there).

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::tenants::{charge, require_iops_limit, Charge};
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

impl Controller {
    /// Changes a volume's limits; open connections see the change within 20 ms.
    /// Every limit not given is removed.
    pub fn set_qos(&self, p: &Principal, id: &str, qos: Qos) -> Result<Volume, ControlError> {
        validate_qos(&qos)?;
        self.update_qos(p, id, |_| qos)
    }

    /// Changes a volume's limits with `f`, applied to the fresh record inside the tenant's
    /// transaction (`PATCH`: only the limits named change, the others stay).
    pub fn update_qos(
        &self,
        p: &Principal,
        id: &str,
        f: impl Fn(Qos) -> Qos,
    ) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        let key = volume_key(&v.tenant, &v.id);
        let nv = self.with_tenant(&v.tenant, |t| {
            let (mut nv, rev) = self
                .get::<Volume>(&key)?
                .ok_or_else(|| ControlError::not_found(Resource::Volume, &v.id))?;
            let qos = f(nv.qos);
            validate_qos(&qos)?;
            require_iops_limit(t, &qos)?;
            let iops = |q: &Qos| Charge {
                iops: q.iops_limit.unwrap_or(0),
                ..Charge::default()
            };
            charge(t, iops(&nv.qos), iops(&qos))?;
            nv.qos = qos;
            Ok((Txn::new().when(&key, rev).put(&key, enc(&nv)), nv))
        })?;
        self.apply_io(&nv)?;
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
