//! Orphan copies: an engine volume on a device that no volume record names there. A rebuild or a
//! move interrupted by a crash leaves one (the new copy exists, the record does not name it yet;
//! or the record names the new copy and the old one was not deleted yet); nothing else makes
//! one, since a volume's record is written before its engine volumes are made and deleted after
//! them. Swept once at start, before any rebuild, move or client I/O begins.
//!
//! # Invariants
//! - Only engine volumes on devices open and usable in this daemon are looked at; a faulted or
//!   missing device is left as it is (its copies may resync when it comes back).
//! - An engine volume is removed only when the whole list of volume records was read and no
//!   record (of any state, `creating` and `deleting` included) names it on that device.
//! - An engine the engine refuses to delete (say, the origin of a clone) is kept and logged.

use std::collections::HashSet;

use super::Controller;
use crate::error::ControlError;
use crate::model::*;

impl Controller {
    /// Deletes every orphan copy on this daemon's devices, each recorded in the audit log
    /// (`volume.orphan_removed`, actor `daemon`). Returns how many it deleted.
    pub(super) fn sweep_orphans(&self) -> Result<usize, ControlError> {
        let mut named: HashSet<(String, String)> = HashSet::new();
        for (_, v) in self.list::<Volume>("/volumes/", None, 0)? {
            // Only the copies on this node: an unqualified device is the serving node's, a
            // `NODE:DEVICE` one that node's (the same device ids exist on every node).
            let serving = self.volume_node(&v);
            for d in v.copy_devices() {
                let (n, dev) = super::cluster_copies::split_copy(&d)
                    .map_or((serving.as_str(), d.as_str()), |(n, dev)| (n, dev));
                if n == self.node {
                    named.insert((dev.to_string(), v.id.clone()));
                }
            }
        }
        let mut removed = 0;
        for (dev, d) in self.storage.all() {
            let Some(engine) = d.usable().cloned() else {
                continue;
            };
            for info in engine.volumes() {
                if named.contains(&(dev.clone(), info.name.clone())) {
                    continue;
                }
                match engine.delete_volume(info.id, true) {
                    Ok(()) => {
                        removed += 1;
                        tracing::warn!(device = %dev, volume = %info.name, bytes = info.allocated,
                            "an orphan copy (no volume record names it here) was deleted");
                        self.audit_event(
                            None,
                            "volume.orphan_removed",
                            &info.name,
                            &format!("on device {dev}: {} bytes freed", info.allocated),
                        );
                    }
                    Err(e) => tracing::warn!(device = %dev, volume = %info.name, error = %e,
                        "an orphan copy is kept: the engine refused to delete it"),
                }
            }
        }
        Ok(removed)
    }
}
