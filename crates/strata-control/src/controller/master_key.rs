//! Rotating the master key of a running daemon: every device's engine pool re-wraps its data
//! keys with the new master key in one commit each (no data is rewritten), and devices opened
//! later are given the new key.
//!
//! # Invariants
//! - The new key file lies outside the data dir (`KeyFile::open_outside`): a key beside the
//!   data it protects protects nothing.
//! - A device whose rotation fails keeps its data keys under the old master key and keeps
//!   serving (its keys stay unwrapped in memory); the answer names it, and the daemon must be
//!   given the old key again (or the rotation retried) before a restart unlocks it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_block::{KeyFile, KeyWrapper};

use super::auth::Principal;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// How a rotation went, per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new master key's id.
    pub master_key: String,
    /// Per device: its id and the error, if its rotation failed.
    pub devices: Vec<(String, Option<String>)>,
}

impl Controller {
    /// Where the daemon keeps its data (master key files must lie outside it).
    pub fn set_data_dir(&self, dir: PathBuf) {
        *self.data_dir.write() = Some(dir);
    }

    /// Re-wraps every device's data keys under the master key in `key_file` (admin).
    pub fn rotate_master_key(
        &self,
        p: &Principal,
        key_file: &str,
    ) -> Result<Rotation, ControlError> {
        Self::require(p, Role::Admin)?;
        if self.storage.key_wrapper().is_none() {
            return Err(ControlError::Key(strata_block::KeyAdminError::NoMasterKey));
        }
        let dir = self
            .data_dir
            .read()
            .clone()
            .ok_or_else(|| ControlError::internal("the daemon's data dir is not known"))?;
        let new: Arc<dyn KeyWrapper> = Arc::new(
            KeyFile::open_outside(Path::new(key_file), &dir)
                .map_err(|e| ControlError::invalid("key_file", e.to_string()))?,
        );
        let mut devices = vec![];
        for (id, d) in self.storage.all() {
            let Some(pool) = d.usable() else {
                devices.push((id, Some("the device is not usable".to_string())));
                continue;
            };
            let r = pool
                .rotate_master_key(new.clone())
                .map_err(|e| e.to_string());
            devices.push((id, r.err()));
        }
        self.storage.replace_key_wrapper(new.clone());
        let failed = devices.iter().filter(|(_, e)| e.is_some()).count();
        tracing::info!(master_key = %new.key_id(), devices = devices.len(), failed, "master key rotated");
        Ok(Rotation {
            master_key: new.key_id(),
            devices,
        })
    }
}
