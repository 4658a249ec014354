//! Leases on etcd: grant, keep-alive (etcd has it only as a bidirectional stream: one request
//! and its answer per renewal, on a stream opened for it) and revoke, each with the store's
//! failover and time bound.
//!
//! A grant whose answer was lost (the member died after granting) and was retried on another
//! member leaves one lease nobody renews: it expires after its TTL with no key on it, so the
//! retry is harmless. A keep-alive answered with a TTL of 0 or less means the lease is gone
//! (expired or revoked): its keys have been deleted, and the caller must grant a new one and
//! put them again.

use std::time::Duration;

use super::{wire, EtcdStore};
use crate::{LeaseId, Leases, StoreError};

/// etcd's leases are whole seconds; a TTL below one second is rounded up to one.
fn ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).clamp(1, i64::MAX as u64) as i64
}

impl Leases for EtcdStore {
    fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let req = wire::LeaseGrantRequest {
            ttl: ttl_secs(ttl),
            id: 0,
        };
        let m = self.conn.members.clone();
        let r: wire::LeaseGrantResponse =
            self.conn.run(
                m.timeout,
                async move { m.unary(wire::LEASE_GRANT, req).await },
            )?;
        if !r.error.is_empty() || r.id == 0 {
            return Err(StoreError::Backend(format!(
                "etcd: lease not granted: {}",
                r.error
            )));
        }
        Ok(LeaseId(r.id))
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let req = wire::LeaseKeepAliveRequest { id: lease.0 };
        let m = self.conn.members.clone();
        let r: wire::LeaseKeepAliveResponse = self.conn.run(m.timeout, async move {
            m.stream_once(wire::LEASE_KEEP_ALIVE, req).await
        })?;
        Ok((r.ttl > 0).then(|| Duration::from_secs(r.ttl as u64)))
    }

    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let req = wire::LeaseRevokeRequest { id: lease.0 };
        let m = self.conn.members.clone();
        let r: Result<wire::LeaseRevokeResponse, StoreError> = self.conn.run(
            m.timeout,
            async move { m.unary(wire::LEASE_REVOKE, req).await },
        );
        match r {
            Ok(_) => Ok(()),
            // Already gone (expired, or revoked by an earlier attempt whose answer was lost).
            Err(StoreError::Backend(msg)) if msg.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ttl_secs;
    use std::time::Duration;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(ttl_secs(Duration::from_millis(300)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(6)), 6);
        assert_eq!(ttl_secs(Duration::from_millis(6001)), 7);
    }
}
