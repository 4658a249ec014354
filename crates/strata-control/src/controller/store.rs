//! Store keys and record helpers: where each record lives in the state store (the table in
//! `docs/control-plane.md`), how records are encoded (JSON), ids and time.
//!
//! # Invariants
//! - Every key the controller writes is built by a function here, so the layout has one owner.
//! - A record that does not decode is reported as internal (damaged), never skipped silently.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Controller;
use crate::error::ControlError;

/// The key whose mod revision is the placement revision (nodes and jobs both move it).
pub(super) const PLACEMENT_REVISION_KEY: &str = "/placement/revision";

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn attachment_key(vol: &str) -> String {
    format!("/attachments/{vol}")
}
pub(super) fn cert_key(t: &str, serial: &str) -> String {
    format!("/certs/{t}/{serial}")
}
pub(super) fn tenant_key(t: &str) -> String {
    format!("/tenants/{t}")
}
pub(super) fn volume_key(t: &str, id: &str) -> String {
    format!("/volumes/{t}/{id}")
}
pub(super) fn volume_index(id: &str) -> String {
    format!("/volume-ids/{id}")
}
pub(super) fn volume_name_key(t: &str, name: &str) -> String {
    format!("/volume-names/{t}/{name}")
}
pub(super) fn snapshot_key(t: &str, id: &str) -> String {
    format!("/snapshots/{t}/{id}")
}
pub(super) fn snapshot_index(id: &str) -> String {
    format!("/snapshot-ids/{id}")
}
pub(super) fn snapshot_name_key(vol: &str, name: &str) -> String {
    format!("/snapshot-names/{vol}/{name}")
}
pub(super) fn group_key(t: &str, id: &str) -> String {
    format!("/snapshot-groups/{t}/{id}")
}
pub(super) fn group_index(id: &str) -> String {
    format!("/snapshot-group-ids/{id}")
}
pub(super) fn group_name_key(t: &str, name: &str) -> String {
    format!("/snapshot-group-names/{t}/{name}")
}
pub(super) fn request_key(t: &str, rid: &str) -> String {
    format!("/requests/{t}/{rid}")
}

pub(super) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

pub(super) fn validate_name(field: &'static str, name: &str) -> Result<(), ControlError> {
    strata_block::pool::validate_name(name).map_err(|e| match e {
        strata_block::AdminError::InvalidName { why, .. } => ControlError::invalid(
            field,
            format!("invalid name {:?}: {why}", crate::error::clip(name)),
        ),
        other => ControlError::invalid(field, other.to_string()),
    })
}

impl Controller {
    pub(super) fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, ControlError> {
        match self.store.get(key)? {
            Some(kv) => {
                let v = serde_json::from_slice(&kv.value)
                    .map_err(|e| ControlError::internal(format!("record {key} is damaged: {e}")))?;
                Ok(Some((v, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    pub(super) fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, ControlError> {
        let (kvs, _) = self.store.range(prefix, after, limit)?;
        kvs.into_iter()
            .map(|kv| {
                let v = serde_json::from_slice(&kv.value).map_err(|e| {
                    ControlError::internal(format!("record {} is damaged: {e}", kv.key))
                })?;
                Ok((kv.key, v))
            })
            .collect()
    }
}
