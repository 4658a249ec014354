//! Management operations. Each goes through [`Pool::admin`]: plan the ops against the state
//! (validating everything, so bad input changes nothing), apply them with [`State::apply`],
//! append them to the journal buffer, and commit before returning: a management operation is
//! durable when it returns, and so is every write before it.

use std::sync::atomic::Ordering;

use strata_types::DeviceClass;

use crate::error::{AdminError, PoolFailure};
use crate::format::MAX_VOLUME_SIZE;
use crate::meta::{Op, SnapshotId, VolumeId};
use crate::qos::QosLimits;

use super::commit::release;
use super::{now, validate_name, vol, MetaState, Pool, BS};

pub(super) fn validate_new_volume(name: &str, size: u64) -> Result<(), AdminError> {
    validate_name(name)?;
    validate_size(size)
}

fn validate_size(size: u64) -> Result<(), AdminError> {
    let why = if size == 0 {
        "must be greater than zero".to_string()
    } else if !size.is_multiple_of(BS) {
        format!("must be a multiple of {BS} bytes")
    } else if size > MAX_VOLUME_SIZE {
        format!("larger than the maximum of {MAX_VOLUME_SIZE} bytes")
    } else {
        return Ok(());
    };
    Err(AdminError::InvalidSize { size, why })
}

impl Pool {
    /// Creates an empty thin volume. Durable on return.
    pub fn create_volume(
        &self,
        name: &str,
        size: u64,
        class: Option<DeviceClass>,
    ) -> Result<VolumeId, AdminError> {
        validate_name(name)?;
        validate_size(size)?;
        self.admin(|m| {
            if m.state.volume_by_name(name).is_some() {
                return Err(AdminError::AlreadyExists {
                    kind: "volume",
                    name: name.into(),
                });
            }
            self.check_class(class)?;
            let id = VolumeId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::CreateVolume {
                    id,
                    layer,
                    name: name.into(),
                    size,
                    class,
                    created: now(),
                    key: None,
                }],
                id,
            ))
        })
    }

    /// Grows or shrinks a volume. Shrinking is refused while data lies beyond the new end.
    pub fn resize_volume(&self, id: VolumeId, size: u64) -> Result<(), AdminError> {
        validate_size(size)?;
        self.admin(|m| {
            let v = vol(&m.state, id)?;
            if size < v.size && m.state.has_data_from(v.top, size / BS) {
                return Err(AdminError::ShrinkOverData {
                    volume: v.name.clone(),
                    size,
                });
            }
            Ok((vec![Op::ResizeVolume { id, size }], ()))
        })
    }

    /// Deletes a volume. With snapshots it is refused unless `force`, which deletes them too.
    pub fn delete_volume(&self, id: VolumeId, force: bool) -> Result<(), AdminError> {
        self.admin(|m| {
            let v = vol(&m.state, id)?;
            let snaps: Vec<SnapshotId> = m
                .state
                .snapshots
                .values()
                .filter(|s| s.volume == id)
                .map(|s| s.id)
                .collect();
            if !snaps.is_empty() && !force {
                return Err(AdminError::HasSnapshots {
                    volume: v.name.clone(),
                    count: snaps.len(),
                });
            }
            let mut ops: Vec<Op> = snaps
                .into_iter()
                .map(|id| Op::DeleteSnapshot { id })
                .collect();
            ops.push(Op::DeleteVolume { id });
            m.io.remove(&id.0);
            Ok((ops, ()))
        })
    }

    /// Takes a snapshot in O(1). Durable on return, and so is every write before it.
    pub fn create_snapshot(&self, volume: VolumeId, name: &str) -> Result<SnapshotId, AdminError> {
        let ids = self.create_snapshots(&[(volume, name)])?;
        Ok(ids[0])
    }

    /// Snapshots several volumes at one instant (a checkpoint group): one `(volume, name)`
    /// each, all or none. The snapshots are taken with all I/O excluded, so no write is in
    /// one snapshot and missing from another, and journaled in one commit record, so a crash
    /// keeps all of them or none. Durable on return, and so is every write before it.
    pub fn create_snapshots(
        &self,
        members: &[(VolumeId, &str)],
    ) -> Result<Vec<SnapshotId>, AdminError> {
        for (_, name) in members {
            validate_name(name)?;
        }
        self.admin(|m| {
            let mut seen = std::collections::HashSet::new();
            let mut ops = Vec::with_capacity(members.len());
            let mut ids = Vec::with_capacity(members.len());
            let created = now();
            for &(volume, name) in members {
                vol(&m.state, volume)?;
                if !seen.insert(volume) {
                    return Err(AdminError::DuplicateMember(volume.0.to_string()));
                }
                if m.state
                    .snapshots
                    .values()
                    .any(|s| s.volume == volume && s.name == name)
                {
                    return Err(AdminError::AlreadyExists {
                        kind: "snapshot",
                        name: name.into(),
                    });
                }
                let id = SnapshotId(m.state.alloc_id());
                let layer = m.state.alloc_id();
                ops.push(Op::CreateSnapshot {
                    id,
                    volume,
                    layer,
                    name: name.into(),
                    created,
                });
                ids.push(id);
            }
            Ok((ops, ids))
        })
    }

    /// Deletes a snapshot; frees exactly the blocks nothing else references.
    pub fn delete_snapshot(&self, id: SnapshotId) -> Result<(), AdminError> {
        self.admin(|m| {
            if !m.state.snapshots.contains_key(&id) {
                return Err(AdminError::SnapshotNotFound(id.0.to_string()));
            }
            Ok((vec![Op::DeleteSnapshot { id }], ()))
        })
    }

    /// Creates a writable volume from a snapshot in O(1).
    pub fn clone_snapshot(
        &self,
        snapshot: SnapshotId,
        name: &str,
        class: Option<DeviceClass>,
    ) -> Result<VolumeId, AdminError> {
        validate_name(name)?;
        self.admin(|m| {
            if !m.state.snapshots.contains_key(&snapshot) {
                return Err(AdminError::SnapshotNotFound(snapshot.0.to_string()));
            }
            if m.state.volume_by_name(name).is_some() {
                return Err(AdminError::AlreadyExists {
                    kind: "volume",
                    name: name.into(),
                });
            }
            self.check_class(class)?;
            let id = VolumeId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::Clone {
                    id,
                    snapshot,
                    layer,
                    name: name.into(),
                    class,
                    created: now(),
                }],
                id,
            ))
        })
    }

    /// Returns a volume to the contents and size of one of its snapshots.
    pub fn rollback(&self, volume: VolumeId, snapshot: SnapshotId) -> Result<(), AdminError> {
        self.admin(|m| {
            let v = vol(&m.state, volume)?;
            let Some(s) = m.state.snapshots.get(&snapshot) else {
                return Err(AdminError::SnapshotNotFound(snapshot.0.to_string()));
            };
            if s.volume != volume {
                return Err(AdminError::NotOfVolume {
                    snapshot: s.name.clone(),
                    volume: v.name.clone(),
                });
            }
            let layer = m.state.alloc_id();
            Ok((
                vec![Op::Rollback {
                    volume,
                    snapshot,
                    layer,
                }],
                (),
            ))
        })
    }

    pub(super) fn check_class(&self, class: Option<DeviceClass>) -> Result<(), AdminError> {
        match class {
            Some(c) if !self.inner.devs.iter().any(|d| d.sb.class == c) => {
                Err(AdminError::ClassUnavailable(c))
            }
            _ => Ok(()),
        }
    }

    /// Runs a management operation: `plan` validates against the state and returns the ops;
    /// they are applied and journaled with I/O excluded (gate), so a layer never changes shape
    /// under a read or write in flight, then committed before returning. The commit runs
    /// outside the gate: operations that arrive while one commit syncs are applied meanwhile
    /// and go out together in the next commit (group commit), and a caller whose ops another
    /// commit already made durable returns without syncing again.
    pub(super) fn admin<T, E: From<AdminError>>(
        &self,
        plan: impl FnOnce(&mut MetaState) -> Result<(Vec<Op>, T), E>,
    ) -> Result<T, E> {
        let (out, seq) = {
            let _g = self.inner.gate.write();
            if self.inner.failed.load(Ordering::SeqCst) {
                return Err(AdminError::Failed(PoolFailure::EarlierFailure).into());
            }
            let mut m = self.inner.meta.lock();
            let (ops, out) = plan(&mut m)?;
            for op in &ops {
                let mut freed = std::mem::take(&mut m.freed);
                m.state
                    .apply(op, &mut freed)
                    .map_err(|e| AdminError::Failed(PoolFailure::Apply(e)))?;
                op.encode(&mut m.buf);
                m.patchable.clear();
                release(&mut m, &mut freed);
                m.freed = freed;
            }
            // A key whose last volume went is erased from memory too.
            let m = &mut *m;
            m.ciphers.retain(|k, _| m.state.keys.contains_key(k));
            m.applied += 1;
            (out, m.applied)
        };
        self.commit_through(seq)
            .map_err(|e| AdminError::Failed(PoolFailure::Commit(e)))?;
        Ok(out)
    }

    /// Sets a volume's QoS limits; they apply to requests in flight within 20 ms.
    pub fn set_qos(&self, volume: VolumeId, limits: QosLimits) -> Result<(), AdminError> {
        self.io(volume)
            .map_err(|_| AdminError::VolumeNotFound(volume.0.to_string()))?
            .set_limits(limits);
        Ok(())
    }
}
