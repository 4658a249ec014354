//! The metadata state and its transitions: [`State::apply`] is the one code path that changes
//! it, live (the pool applies an op, then journals it) and in replay (open re-applies the
//! journaled ops). Validation comes before any change, so an op that fails leaves the state
//! untouched. The layer tree it keeps and its invariants are described in the parent module.

use std::collections::{BTreeMap, BTreeSet};

use strata_types::DeviceClass;
use uuid::Uuid;

use crate::crypt::BlockTag;
use crate::error::ApplyError;
use crate::map::{BlockMap, Entry, IdMap};

use super::ids::{split_paddr, KeyId, KeyRecord, LayerId, SnapshotId, VolumeId};
use super::op::Op;

/// Who holds a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Nobody: kept only because several children still stand on it.
    None,
    /// The writable top layer of a volume.
    Volume(VolumeId),
    /// The frozen layer of a snapshot.
    Snapshot(SnapshotId),
}

/// A mapping layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The layer below, if any.
    pub parent: Option<LayerId>,
    /// Layers whose parent this is (derived).
    pub children: Vec<LayerId>,
    /// Who holds it.
    pub owner: Owner,
    /// Virtual block -> entry.
    pub map: BlockMap,
    /// Number of non-tombstone entries (derived).
    pub mapped: u64,
    /// The data key of the layer's lineage (every layer of one tree has the same), if any.
    pub key: Option<KeyId>,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMeta {
    /// Id.
    pub id: VolumeId,
    /// Unique name within the pool.
    pub name: String,
    /// Size in bytes (a multiple of the block size).
    pub size: u64,
    /// Its writable layer.
    pub top: LayerId,
    /// Device class its new blocks must go to, if any.
    pub class: Option<DeviceClass>,
    /// Snapshot it was cloned from, if any (informational; may since be deleted).
    pub origin: Option<SnapshotId>,
    /// Seconds since the epoch.
    pub created: u64,
    /// Data key (an encrypted volume), shared with its snapshots and clones.
    pub key: Option<KeyId>,
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Id.
    pub id: SnapshotId,
    /// Name, unique among the volume's snapshots.
    pub name: String,
    /// The volume it was taken of.
    pub volume: VolumeId,
    /// Its frozen layer.
    pub layer: LayerId,
    /// Volume size when taken.
    pub size: u64,
    /// Seconds since the epoch.
    pub created: u64,
}

/// A device as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    /// Device id (matches its superblock).
    pub uuid: Uuid,
    /// Class.
    pub class: DeviceClass,
    /// Size in bytes at format time.
    pub size: u64,
    /// Offset of the data area.
    pub data_offset: u64,
    /// Number of data blocks.
    pub data_blocks: u64,
}

fn bad<T>(msg: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError(msg.into()))
}

/// The whole metadata of a pool.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Next id to hand out (volumes, snapshots and layers share the sequence).
    pub next_id: u64,
    /// Devices in index order.
    pub devices: Vec<DeviceMeta>,
    /// Volumes by id.
    pub volumes: BTreeMap<VolumeId, VolumeMeta>,
    /// Snapshots by id.
    pub snapshots: BTreeMap<SnapshotId, SnapshotMeta>,
    /// Layers by id.
    pub layers: IdMap<LayerId, Layer>,
    /// Entries in all layers (bounds the checkpoint size).
    pub entries: u64,
    /// Current commit epoch (in memory only).
    pub epoch: u32,
    /// Wrapped data keys by id. A key lives while a volume uses it: deleting the last
    /// volume of a lineage removes its record (crypto-erase).
    pub keys: BTreeMap<KeyId, KeyRecord>,
    /// Authentication tag of every mapped block of an encrypted layer, by physical address
    /// (each physical block is referenced once, so the address names the entry). Kept beside
    /// the maps so plain volumes pay nothing for it.
    pub tags: IdMap<u64, BlockTag>,
}

/// Block size as u64, local shorthand.
const BS: u64 = crate::format::BLOCK_SIZE;

impl State {
    /// An empty pool's state.
    pub fn new(devices: Vec<DeviceMeta>) -> Self {
        State {
            next_id: 1,
            devices,
            epoch: 1,
            ..Default::default()
        }
    }

    /// Starts a new commit epoch. Epochs are compared for equality only; when the counter
    /// wraps (after 2^32 commits) every entry is marked committed (epoch 0) first, so an old
    /// entry can never pass for one of the current epoch.
    pub fn next_epoch(&mut self) {
        if self.epoch == u32::MAX {
            for l in self.layers.values_mut() {
                l.map.for_each_mut(|e| e.epoch = 0);
            }
            self.epoch = 1;
        } else {
            self.epoch += 1;
        }
    }

    /// Hands out a fresh id.
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn bump_id(&mut self, id: u64) {
        self.next_id = self.next_id.max(id + 1);
    }

    /// Finds the entry for virtual block `vb` visible from layer `top`.
    #[inline]
    pub fn resolve(&self, top: LayerId, vb: u64) -> Option<Entry> {
        let mut l = Some(top);
        while let Some(id) = l {
            let layer = &self.layers[&id];
            if let Some(e) = layer.map.get(vb) {
                return Some(*e);
            }
            l = layer.parent;
        }
        None
    }

    /// Whether any block at or beyond `vb` is visible as data from `top`.
    pub fn has_data_from(&self, top: LayerId, vb: u64) -> bool {
        let mut decided = BTreeSet::new();
        let mut l = Some(top);
        while let Some(id) = l {
            let layer = &self.layers[&id];
            for (b, e) in layer.map.range(vb, u64::MAX) {
                if decided.insert(b) && !e.is_zero() {
                    return true;
                }
            }
            l = layer.parent;
        }
        false
    }

    /// Volume by name.
    pub fn volume_by_name(&self, name: &str) -> Option<&VolumeMeta> {
        self.volumes.values().find(|v| v.name == name)
    }

    /// Applies `op`; blocks it frees are pushed to `freed`. Validates before changing anything:
    /// on error the state is untouched.
    pub fn apply(&mut self, op: &Op, freed: &mut Vec<Entry>) -> Result<(), ApplyError> {
        let start = freed.len();
        self.apply_inner(op, freed)?;
        self.forget_tags(&freed[start..]);
        Ok(())
    }

    /// Freed blocks keep no tag: the block's next use writes its own.
    fn forget_tags(&mut self, freed: &[Entry]) {
        if self.tags.is_empty() {
            return;
        }
        for e in freed {
            self.tags.remove(&e.pblock);
        }
    }

    /// The key a volume's data is sealed with, if it is encrypted.
    pub fn key_of_layer(&self, layer: LayerId) -> Option<KeyId> {
        self.layers.get(&layer).and_then(|l| l.key)
    }

    fn apply_inner(&mut self, op: &Op, freed: &mut Vec<Entry>) -> Result<(), ApplyError> {
        match op {
            Op::CreateKey { id, record } => {
                if *id == 0 || self.keys.contains_key(id) {
                    return bad("key id in use");
                }
                self.bump_id(*id);
                self.keys.insert(*id, record.clone());
            }
            Op::Rewrap { keys } => {
                if keys.iter().any(|(id, _)| !self.keys.contains_key(id)) {
                    return bad("rewrap of a key that does not exist");
                }
                for (id, r) in keys {
                    self.keys.insert(*id, r.clone());
                }
            }
            Op::CreateVolume {
                id,
                layer,
                name,
                size,
                class,
                created,
                key,
            } => {
                if self.volumes.contains_key(id) || self.layers.contains_key(layer) {
                    return bad("volume or layer id in use");
                }
                if self.volume_by_name(name).is_some() {
                    return bad(format!("volume name {name:?} in use"));
                }
                if key.is_some_and(|k| !self.keys.contains_key(&k)) {
                    return bad("volume of a key that does not exist");
                }
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.new_layer(*layer, None, Owner::Volume(*id), *key);
                self.volumes.insert(
                    *id,
                    VolumeMeta {
                        id: *id,
                        name: name.clone(),
                        size: *size,
                        top: *layer,
                        class: *class,
                        origin: None,
                        created: *created,
                        key: *key,
                    },
                );
            }
            Op::DeleteVolume { id } => {
                let Some(v) = self.volumes.get(id) else {
                    return bad("no such volume");
                };
                if self.snapshots.values().any(|s| s.volume == *id) {
                    return bad("volume has snapshots");
                }
                let (top, key) = (v.top, v.key);
                self.volumes.remove(id);
                self.layers.get_mut(&top).expect("top layer").owner = Owner::None;
                self.collect(top, freed);
                // Crypto-erase: the last volume of a lineage takes its key with it (the
                // lineage's layers went with it: a snapshot never outlives its volume, and a
                // clone is a volume of the lineage).
                if let Some(k) = key {
                    if !self.volumes.values().any(|v| v.key == Some(k)) {
                        self.keys.remove(&k);
                    }
                }
            }
            Op::ResizeVolume { id, size } => {
                let Some(v) = self.volumes.get(id) else {
                    return bad("no such volume");
                };
                let (top, old) = (v.top, v.size);
                if *size < old && self.has_data_from(top, size / BS) {
                    return bad("shrink over data");
                }
                self.volumes.get_mut(id).expect("volume").size = *size;
                if *size > old {
                    // Blocks an ancestor holds beyond the old end must not reappear.
                    self.trim(top, old / BS, size / BS, freed);
                }
            }
            Op::MapRun {
                layer,
                vblock,
                pblock,
                csums,
                tags,
            } => {
                let tags = (!tags.is_empty()).then_some(&tags[..]);
                self.map_run(*layer, *vblock, *pblock, csums, tags, freed)?
            }
            Op::Trim { layer, start, end } => {
                let Some(Owner::Volume(vid)) = self.layers.get(layer).map(|l| l.owner) else {
                    return bad("trim of a layer that is not a volume's top");
                };
                if start > end || end * BS > self.volumes[&vid].size {
                    return bad("trim past the end of the volume");
                }
                self.trim(*layer, *start, *end, freed);
            }
            Op::CreateSnapshot {
                id,
                volume,
                layer,
                name,
                created,
            } => {
                let Some(v) = self.volumes.get(volume) else {
                    return bad("no such volume");
                };
                if self.snapshots.contains_key(id) || self.layers.contains_key(layer) {
                    return bad("snapshot or layer id in use");
                }
                if self
                    .snapshots
                    .values()
                    .any(|s| s.volume == *volume && s.name == *name)
                {
                    return bad("snapshot name in use");
                }
                let (old, size, key) = (v.top, v.size, v.key);
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.layers.get_mut(&old).expect("top").owner = Owner::Snapshot(*id);
                self.new_layer(*layer, Some(old), Owner::Volume(*volume), key);
                self.volumes.get_mut(volume).expect("volume").top = *layer;
                self.snapshots.insert(
                    *id,
                    SnapshotMeta {
                        id: *id,
                        name: name.clone(),
                        volume: *volume,
                        layer: old,
                        size,
                        created: *created,
                    },
                );
            }
            Op::DeleteSnapshot { id } => {
                let Some(s) = self.snapshots.remove(id) else {
                    return bad("no such snapshot");
                };
                self.layers.get_mut(&s.layer).expect("layer").owner = Owner::None;
                self.collect(s.layer, freed);
            }
            Op::Clone {
                id,
                snapshot,
                layer,
                name,
                class,
                created,
            } => {
                let Some(s) = self.snapshots.get(snapshot) else {
                    return bad("no such snapshot");
                };
                if self.volumes.contains_key(id) || self.layers.contains_key(layer) {
                    return bad("volume or layer id in use");
                }
                if self.volume_by_name(name).is_some() {
                    return bad("volume name in use");
                }
                let (base, size) = (s.layer, s.size);
                // A clone shares its origin's key: the blocks it reads are sealed with it.
                let key = self.layers[&base].key;
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.new_layer(*layer, Some(base), Owner::Volume(*id), key);
                self.volumes.insert(
                    *id,
                    VolumeMeta {
                        id: *id,
                        name: name.clone(),
                        size,
                        top: *layer,
                        class: *class,
                        origin: Some(*snapshot),
                        created: *created,
                        key,
                    },
                );
            }
            Op::Rollback {
                volume,
                snapshot,
                layer,
            } => {
                let (Some(v), Some(s)) = (self.volumes.get(volume), self.snapshots.get(snapshot))
                else {
                    return bad("no such volume or snapshot");
                };
                if s.volume != *volume {
                    return bad("snapshot is not of this volume");
                }
                if self.layers.contains_key(layer) {
                    return bad("layer id in use");
                }
                let (old, base, size, key) = (v.top, s.layer, s.size, v.key);
                self.bump_id(*layer);
                self.new_layer(*layer, Some(base), Owner::Volume(*volume), key);
                let v = self.volumes.get_mut(volume).expect("volume");
                v.top = *layer;
                v.size = size;
                self.layers.get_mut(&old).expect("old top").owner = Owner::None;
                self.collect(old, freed);
            }
        }
        Ok(())
    }

    /// Maps `csums.len()` consecutive virtual blocks of a volume's top layer to consecutive
    /// physical blocks (the write path's op, taken by slice so it allocates nothing). An
    /// encrypted layer's run carries one tag per block; a plain one's none.
    pub fn map_run(
        &mut self,
        layer: LayerId,
        vblock: u64,
        pblock: u64,
        csums: &[u32],
        tags: Option<&[BlockTag]>,
        freed: &mut Vec<Entry>,
    ) -> Result<(), ApplyError> {
        let n = csums.len() as u64;
        let Some((Owner::Volume(vid), key)) = self.layers.get(&layer).map(|l| (l.owner, l.key))
        else {
            return bad("map into a layer that is not a volume's top");
        };
        match (key, tags) {
            (None, None) => {}
            (Some(_), Some(t)) if t.len() == csums.len() => {}
            (None, Some(_)) => return bad("tags for a layer that is not encrypted"),
            _ => return bad("an encrypted layer's run without a tag per block"),
        }
        let vsize = self.volumes[&vid].size;
        if n == 0
            || vblock
                .checked_add(n)
                .is_none_or(|e| e.saturating_mul(BS) > vsize)
        {
            return bad("map past the end of the volume");
        }
        let (dev, b) = split_paddr(pblock);
        if dev >= self.devices.len() || b.saturating_add(n) > self.devices[dev].data_blocks {
            return bad("physical block out of range");
        }
        let epoch = self.epoch;
        let first_freed = freed.len();
        let l = self.layers.get_mut(&layer).expect("layer");
        let mut added = 0;
        for (i, &csum) in csums.iter().enumerate() {
            let e = Entry {
                pblock: pblock + i as u64,
                csum,
                epoch,
            };
            match l.map.insert(vblock + i as u64, e) {
                // Rewritten in place: the block stays; nothing is freed.
                Some(old) if old.pblock == e.pblock => {}
                Some(old) if !old.is_zero() => freed.push(old),
                Some(_) => l.mapped += 1,
                None => {
                    l.mapped += 1;
                    added += 1;
                }
            }
        }
        self.entries += added;
        // Blocks this run replaced lose their tags before the run's own are recorded (the
        // run's blocks were free or rewritten in place, never among those it replaced).
        self.forget_tags(&freed[first_freed..]);
        if let Some(tags) = tags {
            for (i, t) in tags.iter().enumerate() {
                self.tags.insert(pblock + i as u64, *t);
            }
        }
        Ok(())
    }

    fn new_layer(
        &mut self,
        id: LayerId,
        parent: Option<LayerId>,
        owner: Owner,
        key: Option<KeyId>,
    ) {
        if let Some(p) = parent {
            self.layers.get_mut(&p).expect("parent").children.push(id);
        }
        self.layers.insert(
            id,
            Layer {
                parent,
                children: Vec::new(),
                owner,
                map: BlockMap::new(),
                mapped: 0,
                key,
            },
        );
    }

    /// Makes `[start, end)` of layer `id` read as zeros: drops the layer's own entries there and
    /// adds tombstones only where an ancestor would otherwise show data.
    fn trim(&mut self, id: LayerId, start: u64, end: u64, freed: &mut Vec<Entry>) {
        if start >= end {
            return;
        }
        let mut hide = Vec::new();
        let mut decided = BTreeSet::new();
        let mut p = self.layers[&id].parent;
        while let Some(pid) = p {
            let pl = &self.layers[&pid];
            for (b, e) in pl.map.range(start, end) {
                if decided.insert(b) && !e.is_zero() {
                    hide.push(b);
                }
            }
            p = pl.parent;
        }
        let l = self.layers.get_mut(&id).expect("layer");
        let keys: Vec<u64> = l.map.range(start, end).map(|(b, _)| b).collect();
        let removed = keys.len() as u64;
        for b in keys {
            let e = l.map.remove(b).expect("key");
            if !e.is_zero() {
                l.mapped -= 1;
                freed.push(e);
            }
        }
        let added = hide.len() as u64;
        for b in hide {
            l.map.insert(b, Entry::zero());
        }
        self.entries = self.entries - removed + added;
    }

    /// Collects unowned layers starting at `id` (see the module docs).
    fn collect(&mut self, mut id: LayerId, freed: &mut Vec<Entry>) {
        loop {
            let l = &self.layers[&id];
            if l.owner != Owner::None {
                return;
            }
            match l.children.len() {
                0 => {
                    let l = self.layers.remove(&id).expect("layer");
                    self.entries -= l.map.len() as u64;
                    freed.extend(l.map.values().filter(|e| !e.is_zero()));
                    let Some(p) = l.parent else { return };
                    self.layers
                        .get_mut(&p)
                        .expect("parent")
                        .children
                        .retain(|&c| c != id);
                    id = p;
                }
                1 => {
                    let child = l.children[0];
                    self.merge_into_child(id, child, freed);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Folds layer `id` into its only child; entries the child shadows are freed. Iterates the
    /// smaller map into the larger, so the cost is the smaller of the two.
    fn merge_into_child(&mut self, id: LayerId, child: LayerId, freed: &mut Vec<Entry>) {
        let l = self.layers.remove(&id).expect("layer");
        let c = self.layers.get_mut(&child).expect("child");
        let before = (l.map.len() + c.map.len()) as u64;
        let cmap = std::mem::take(&mut c.map);
        let mut merged = if cmap.len() <= l.map.len() {
            let mut base = l.map;
            for (b, &e) in cmap.iter() {
                if let Some(old) = base.insert(b, e) {
                    if !old.is_zero() {
                        freed.push(old);
                    }
                }
            }
            base
        } else {
            let mut base = cmap;
            for (b, &e) in l.map.iter() {
                if base.get(b).is_some() {
                    if !e.is_zero() {
                        freed.push(e);
                    }
                } else {
                    base.insert(b, e);
                }
            }
            base
        };
        if l.parent.is_none() {
            // Nothing lies beneath any more: tombstones hide nothing.
            merged.retain(|_, e| !e.is_zero());
        }
        c.mapped = merged.values().filter(|e| !e.is_zero()).count() as u64;
        c.parent = l.parent;
        let after = merged.len() as u64;
        c.map = merged;
        if let Some(p) = l.parent {
            for ch in &mut self.layers.get_mut(&p).expect("parent").children {
                if *ch == id {
                    *ch = child;
                }
            }
        }
        self.entries = self.entries - before + after;
    }

    /// Checks the structural invariants listed in the module docs (tests and open).
    pub fn check(&self) -> Result<(), String> {
        let mut entries = 0;
        let mut seen = std::collections::HashSet::new();
        for (&id, l) in &self.layers {
            entries += l.map.len() as u64;
            let mapped = l.map.values().filter(|e| !e.is_zero()).count() as u64;
            if mapped != l.mapped {
                return Err(format!("layer {id}: mapped {} != {mapped}", l.mapped));
            }
            for e in l.map.values().filter(|e| !e.is_zero()) {
                if !seen.insert(e.pblock) {
                    return Err(format!("physical block {:#x} referenced twice", e.pblock));
                }
                let (d, b) = split_paddr(e.pblock);
                if d >= self.devices.len() || b >= self.devices[d].data_blocks {
                    return Err(format!("physical block {:#x} out of range", e.pblock));
                }
            }
            match l.owner {
                Owner::Volume(v) => {
                    if self.volumes.get(&v).map(|v| v.top) != Some(id) {
                        return Err(format!("layer {id}: owner volume does not point back"));
                    }
                }
                Owner::Snapshot(s) => {
                    if self.snapshots.get(&s).map(|s| s.layer) != Some(id) {
                        return Err(format!("layer {id}: owner snapshot does not point back"));
                    }
                }
                Owner::None => {
                    if l.children.len() < 2 {
                        return Err(format!("layer {id}: unowned with < 2 children"));
                    }
                }
            }
            if let Some(p) = l.parent {
                let Some(pl) = self.layers.get(&p) else {
                    return Err(format!("layer {id}: missing parent {p}"));
                };
                if pl.children.iter().filter(|&&c| c == id).count() != 1 {
                    return Err(format!("layer {id}: parent does not list it once"));
                }
            }
            for c in &l.children {
                if self.layers.get(c).and_then(|cl| cl.parent) != Some(id) {
                    return Err(format!("layer {id}: child {c} does not point back"));
                }
            }
        }
        if entries != self.entries {
            return Err(format!("entries {} != {entries}", self.entries));
        }
        // Keys: a lineage shares one key; every key a layer names exists and is used by a
        // volume; exactly the mapped blocks of encrypted layers have tags.
        let mut sealed = 0usize;
        for (&id, l) in &self.layers {
            if let Some(p) = l.parent {
                if self.layers[&p].key != l.key {
                    return Err(format!("layer {id}: key differs from its parent's"));
                }
            }
            if let Some(k) = l.key {
                if !self.keys.contains_key(&k) {
                    return Err(format!("layer {id}: key {k} does not exist"));
                }
                for e in l.map.values().filter(|e| !e.is_zero()) {
                    if !self.tags.contains_key(&e.pblock) {
                        return Err(format!("layer {id}: block {:#x} has no tag", e.pblock));
                    }
                    sealed += 1;
                }
            }
        }
        if sealed != self.tags.len() {
            return Err(format!(
                "{} tags for {sealed} encrypted blocks",
                self.tags.len()
            ));
        }
        for &k in self.keys.keys() {
            if !self.volumes.values().any(|v| v.key == Some(k)) {
                return Err(format!("key {k} is used by no volume"));
            }
        }
        for v in self.volumes.values() {
            if self.layers.get(&v.top).map(|l| l.owner) != Some(Owner::Volume(v.id)) {
                return Err(format!("volume {}: top layer not owned by it", v.id.0));
            }
            if self.layers[&v.top].key != v.key {
                return Err(format!("volume {}: key differs from its layer's", v.id.0));
            }
        }
        for s in self.snapshots.values() {
            if !self.volumes.contains_key(&s.volume) {
                return Err(format!("snapshot {}: volume missing", s.id.0));
            }
        }
        // Acyclic: every chain reaches a root within the number of layers.
        for &id in self.layers.keys() {
            let mut l = Some(id);
            let mut steps = 0;
            while let Some(x) = l {
                steps += 1;
                if steps > self.layers.len() {
                    return Err(format!("layer {id}: cycle"));
                }
                l = self.layers[&x].parent;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::meta) fn st() -> State {
        State::new(vec![DeviceMeta {
            uuid: Uuid::from_u128(1),
            class: DeviceClass::Ssd,
            size: 64 << 20,
            data_offset: 1 << 20,
            data_blocks: 1000,
        }])
    }

    pub(in crate::meta) fn apply(s: &mut State, op: Op) -> Vec<Entry> {
        let mut f = Vec::new();
        s.apply(&op, &mut f).unwrap();
        s.check().unwrap();
        f
    }

    pub(in crate::meta) fn create(s: &mut State, name: &str, blocks: u64) -> (VolumeId, LayerId) {
        let id = VolumeId(s.alloc_id());
        let layer = s.alloc_id();
        apply(
            s,
            Op::CreateVolume {
                id,
                layer,
                name: name.into(),
                size: blocks * BS,
                class: None,
                created: 0,
                key: None,
            },
        );
        (id, layer)
    }

    pub(in crate::meta) fn map(
        s: &mut State,
        layer: LayerId,
        vb: u64,
        pb: u64,
        n: usize,
    ) -> Vec<Entry> {
        apply(
            s,
            Op::MapRun {
                layer,
                vblock: vb,
                pblock: pb,
                csums: vec![7; n],
                tags: vec![],
            },
        )
    }

    #[test]
    fn snapshot_then_delete_merges_exactly() {
        let mut s = st();
        let (v, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 4);
        let sid = SnapshotId(s.alloc_id());
        let l1 = s.alloc_id();
        apply(
            &mut s,
            Op::CreateSnapshot {
                id: sid,
                volume: v,
                layer: l1,
                name: "s".into(),
                created: 0,
            },
        );
        // Overwrite two blocks: copy-on-write, nothing freed yet.
        assert!(map(&mut s, l1, 1, 200, 2).is_empty());
        assert_eq!(s.resolve(l1, 0).unwrap().pblock, 100);
        assert_eq!(s.resolve(l1, 1).unwrap().pblock, 200);
        // Deleting the snapshot frees exactly the two shadowed blocks.
        let freed = apply(&mut s, Op::DeleteSnapshot { id: sid });
        let mut f: Vec<u64> = freed.iter().map(|e| e.pblock).collect();
        f.sort();
        assert_eq!(f, vec![101, 102]);
        assert_eq!(s.layers.len(), 1);
        assert_eq!(s.layers[&l1].mapped, 4);
    }

    #[test]
    fn clone_keeps_shared_layer_until_last_user() {
        let mut s = st();
        let (v, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 3);
        let sid = SnapshotId(s.alloc_id());
        let l1 = s.alloc_id();
        apply(
            &mut s,
            Op::CreateSnapshot {
                id: sid,
                volume: v,
                layer: l1,
                name: "s".into(),
                created: 0,
            },
        );
        let c = VolumeId(s.alloc_id());
        let lc = s.alloc_id();
        apply(
            &mut s,
            Op::Clone {
                id: c,
                snapshot: sid,
                layer: lc,
                name: "c".into(),
                class: None,
                created: 0,
            },
        );
        assert!(apply(&mut s, Op::DeleteSnapshot { id: sid }).is_empty());
        assert_eq!(s.layers[&l0].owner, Owner::None);
        // Trimming the origin hides the shared blocks with tombstones, frees nothing.
        assert!(apply(
            &mut s,
            Op::Trim {
                layer: l1,
                start: 0,
                end: 10
            }
        )
        .is_empty());
        assert!(s.resolve(l1, 0).unwrap().is_zero());
        assert_eq!(s.resolve(lc, 0).unwrap().pblock, 100);
        // Deleting the origin leaves the clone sole owner of the data.
        assert!(apply(&mut s, Op::DeleteVolume { id: v }).is_empty());
        assert_eq!(s.layers.len(), 1);
        assert_eq!(s.layers[&lc].mapped, 3);
        let freed = apply(&mut s, Op::DeleteVolume { id: c });
        assert_eq!(freed.len(), 3);
        assert_eq!(s.entries, 0);
    }

    #[test]
    fn grow_hides_ancestor_blocks() {
        let mut s = st();
        let (v, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 8, 100, 2);
        let sid = SnapshotId(s.alloc_id());
        let l1 = s.alloc_id();
        apply(
            &mut s,
            Op::CreateSnapshot {
                id: sid,
                volume: v,
                layer: l1,
                name: "s".into(),
                created: 0,
            },
        );
        let mut f = Vec::new();
        assert!(s
            .apply(
                &Op::ResizeVolume {
                    id: v,
                    size: 5 * BS
                },
                &mut f
            )
            .is_err());
        apply(
            &mut s,
            Op::Trim {
                layer: l1,
                start: 5,
                end: 10,
            },
        );
        apply(
            &mut s,
            Op::ResizeVolume {
                id: v,
                size: 5 * BS,
            },
        );
        apply(
            &mut s,
            Op::ResizeVolume {
                id: v,
                size: 20 * BS,
            },
        );
        assert!(s.resolve(l1, 8).unwrap().is_zero());
    }
}
