//! Encryption at rest, the pool's side: encrypted volumes, the master key, rotation.
//!
//! A data key is made when an encrypted volume is created, and journaled wrapped (by the
//! pool's [`KeyWrapper`]) in the same record as the volume, so a crash keeps both or
//! neither. Its snapshots and clones use it too (the metadata derives this: a lineage's
//! layers share one key), and deleting the lineage's last volume drops the wrapped key from
//! the metadata. The unwrapped keys live only in memory (`MetaState::ciphers`); a key that
//! did not unwrap (no master key, another one) leaves its volumes refusing I/O with
//! [`IoError::KeyUnavailable`], while every other volume is served.
//!
//! [`IoError::KeyUnavailable`]: crate::error::IoError::KeyUnavailable

use std::sync::Arc;

use strata_types::DeviceClass;
use uuid::Uuid;

use crate::crypt::{BlockCipher, DataKey, KeyWrapper};
use crate::device::BlockDevice;
use crate::error::{AdminError, KeyAdminError, OpenError};
use crate::meta::{KeyId, KeyRecord, Op, VolumeId};

use super::admin::validate_new_volume;
use super::{now, KeyUnlock, Pool};

/// What a wrapped key is bound to: this pool and this key id (a wrapped key copied into
/// another pool or another record does not unwrap).
fn context(pool: Uuid, key: KeyId) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[..16].copy_from_slice(pool.as_bytes());
    c[16..].copy_from_slice(&key.to_le_bytes());
    c
}

impl Pool {
    /// Opens a pool and gives it a master key (see [`Pool::set_key_wrapper`]). Without one,
    /// or with the wrong one, the pool still opens: its encrypted volumes refuse I/O.
    pub fn open_with_keys(
        devices: Vec<Arc<dyn BlockDevice>>,
        wrapper: Option<Arc<dyn KeyWrapper>>,
    ) -> Result<Pool, OpenError> {
        let pool = Pool::open(devices)?;
        if let Some(w) = wrapper {
            pool.set_key_wrapper(w);
        }
        Ok(pool)
    }

    /// Sets the pool's master key and unwraps every data key it can; the others stay locked
    /// (their volumes refuse I/O). Keys unwrapped under an earlier master key are replaced by
    /// what this one unwraps.
    pub fn set_key_wrapper(&self, wrapper: Arc<dyn KeyWrapper>) -> KeyUnlock {
        let id = wrapper.key_id();
        let mut m = self.inner.meta.lock();
        let mut out = KeyUnlock::default();
        let mut ciphers = crate::map::IdMap::default();
        for (&k, rec) in &m.state.keys {
            let key = (rec.master == id)
                .then(|| {
                    wrapper
                        .unwrap(&rec.wrapped, &context(self.inner.id, k))
                        .ok()
                })
                .flatten();
            match key {
                Some(key) => {
                    ciphers.insert(k, Arc::new(BlockCipher::new(key)));
                    out.unlocked.push(k);
                }
                None => out.locked.push((k, rec.master.clone())),
            }
        }
        m.ciphers = ciphers;
        m.wrapper = Some(wrapper);
        out
    }

    /// The data keys the live metadata holds, wrapped (never in plain text), by id.
    pub fn data_keys(&self) -> Vec<(KeyId, KeyRecord)> {
        let m = self.inner.meta.lock();
        m.state.keys.iter().map(|(k, r)| (*k, r.clone())).collect()
    }

    /// The id of the pool's master key, if it was given one.
    pub fn master_key_id(&self) -> Option<String> {
        self.inner.meta.lock().wrapper.as_ref().map(|w| w.key_id())
    }

    /// Creates an empty thin volume encrypted at rest under a new data key (random, wrapped
    /// by the pool's master key). Durable on return.
    pub fn create_encrypted_volume(
        &self,
        name: &str,
        size: u64,
        class: Option<DeviceClass>,
    ) -> Result<VolumeId, KeyAdminError> {
        validate_new_volume(name, size)?;
        let wrapper = self
            .inner
            .meta
            .lock()
            .wrapper
            .clone()
            .ok_or(KeyAdminError::NoMasterKey)?;
        let dk = DataKey::generate();
        self.admin(|m| {
            if m.state.volume_by_name(name).is_some() {
                return Err(AdminError::AlreadyExists {
                    kind: "volume",
                    name: name.into(),
                }
                .into());
            }
            self.check_class(class)?;
            let key = m.state.alloc_id();
            let wrapped = wrapper
                .wrap(&dk, &context(self.inner.id, key))
                .map_err(KeyAdminError::Key)?;
            let id = VolumeId(m.state.alloc_id());
            let layer = m.state.alloc_id();
            m.ciphers
                .insert(key, Arc::new(BlockCipher::new(dk.clone())));
            Ok((
                vec![
                    Op::CreateKey {
                        id: key,
                        record: KeyRecord {
                            master: wrapper.key_id(),
                            wrapped,
                        },
                    },
                    Op::CreateVolume {
                        id,
                        layer,
                        name: name.into(),
                        size,
                        class,
                        created: now(),
                        key: Some(key),
                    },
                ],
                id,
            ))
        })
    }

    /// Re-wraps every data key with `new` in one commit (no data is rewritten) and makes it
    /// the pool's master key. Refused, with nothing changed, while any key is locked. The
    /// old master key no longer opens anything written from then on; the old wrapped forms
    /// remain in the older checkpoint slot and journal records until they are overwritten
    /// (`docs/encryption.md`).
    pub fn rotate_master_key(&self, new: Arc<dyn KeyWrapper>) -> Result<(), KeyAdminError> {
        if self.inner.meta.lock().wrapper.is_none() {
            return Err(KeyAdminError::NoMasterKey);
        }
        let master = new.key_id();
        self.admin(|m| {
            let mut keys = Vec::with_capacity(m.state.keys.len());
            for (&k, rec) in &m.state.keys {
                let c = m
                    .ciphers
                    .get(&k)
                    .ok_or_else(|| KeyAdminError::KeyUnavailable {
                        key: k,
                        master_key_id: rec.master.clone(),
                    })?;
                let wrapped = new
                    .wrap(c.key(), &context(self.inner.id, k))
                    .map_err(KeyAdminError::Key)?;
                keys.push((
                    k,
                    KeyRecord {
                        master: master.clone(),
                        wrapped,
                    },
                ));
            }
            let ops = if keys.is_empty() {
                Vec::new()
            } else {
                vec![Op::Rewrap { keys }]
            };
            m.wrapper = Some(new.clone());
            Ok((ops, ()))
        })
    }
}
