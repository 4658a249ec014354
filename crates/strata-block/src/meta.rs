//! The pool's metadata as a pure state machine: volumes, snapshots, the tree of mapping layers,
//! and the operations that change them. No I/O happens here: the pool applies an [`Op`] to the
//! [`State`] and, separately, appends the same op to the journal, so replaying the journal after
//! a restart runs exactly the code that ran live.
//!
//! # The layer tree
//! A volume's data is a chain of *layers*. Each layer maps virtual block numbers to entries:
//! a physical block with its CRC-32C, or a zero tombstone that hides whatever lies beneath. A
//! read walks the chain from the volume's top layer towards the root and takes the first entry
//! it finds; none at all reads as zeros.
//! - Only a volume's top layer is ever written. A snapshot freezes the top layer and gives the
//!   volume a fresh empty one above it: O(1) whatever the volume's size.
//! - A clone is a new volume whose empty top layer sits on the snapshot's layer; layers form a
//!   tree, since one layer can carry both the volume's chain and clones.
//! - Every physical block is owned by exactly one layer (one entry anywhere references it). So
//!   no reference counts are needed, and freeing is exact: a block is freed when its entry is
//!   overwritten or trimmed in the top layer, when an unowned layer with no children is dropped,
//!   or when it is shadowed during a merge.
//! - A layer nobody owns (its snapshot was deleted, or its volume rolled back or deleted) is
//!   collected: with no children it is dropped, with one child it is merged into that child,
//!   with several (a snapshot with clones) it stays until only one remains.
//!
//! Invariants checked by the tests: every owned layer's owner points back to it; a layer's
//! `children` are exactly the layers whose parent it is; `mapped` and `entries` equal the counts
//! of entries; no physical block appears twice.

use std::collections::{BTreeMap, BTreeSet};

use crate::map::{BlockMap, IdMap};

use strata_types::DeviceClass;
use uuid::Uuid;

use crate::codec::{DecodeError, Reader, Writer};

/// Identifies a volume inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(pub u64);
/// Identifies a snapshot inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(pub u64);
/// Identifies a mapping layer.
pub type LayerId = u64;

/// Physical address sentinel meaning "this block reads as zeros" (a tombstone).
pub const ZERO: u64 = u64::MAX;
/// Physical addresses keep the device index in the top 16 bits and the block in the rest.
pub const PBLOCK_SHIFT: u32 = 48;

/// Builds a physical address.
pub fn paddr(device: usize, block: u64) -> u64 {
    ((device as u64) << PBLOCK_SHIFT) | block
}
/// Splits a physical address into (device index, block number).
pub fn split_paddr(p: u64) -> (usize, u64) {
    ((p >> PBLOCK_SHIFT) as usize, p & ((1 << PBLOCK_SHIFT) - 1))
}

/// One entry of a layer's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Physical address, or [`ZERO`].
    pub pblock: u64,
    /// CRC-32C of the block's 4 KiB.
    pub csum: u32,
    /// In-memory only: the commit epoch in which the block was written. A block written in the
    /// current (uncommitted) epoch is referenced by no durable metadata and can be reused at
    /// once when freed; any other must wait until the freeing op is durable.
    pub epoch: u32,
}

impl Entry {
    /// A zero tombstone.
    pub const fn zero() -> Self {
        Entry {
            pblock: ZERO,
            csum: 0,
            epoch: 0,
        }
    }
    /// Whether this is a tombstone.
    pub fn is_zero(&self) -> bool {
        self.pblock == ZERO
    }
}

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

/// An operation on the metadata: what the journal records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new empty volume.
    CreateVolume {
        /// New volume id.
        id: VolumeId,
        /// Its top layer id.
        layer: LayerId,
        /// Name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Class restriction.
        class: Option<DeviceClass>,
        /// Creation time.
        created: u64,
    },
    /// Removes a volume that has no snapshots.
    DeleteVolume {
        /// Volume.
        id: VolumeId,
    },
    /// Changes a volume's size.
    ResizeVolume {
        /// Volume.
        id: VolumeId,
        /// New size in bytes.
        size: u64,
    },
    /// Maps `csums.len()` consecutive virtual blocks to consecutive physical blocks.
    MapRun {
        /// The (top) layer written.
        layer: LayerId,
        /// First virtual block.
        vblock: u64,
        /// First physical address.
        pblock: u64,
        /// CRC of each block.
        csums: Vec<u32>,
    },
    /// Makes virtual blocks `[start, end)` of a top layer read as zeros, freeing what it owned.
    Trim {
        /// The (top) layer.
        layer: LayerId,
        /// First block.
        start: u64,
        /// End block (exclusive).
        end: u64,
    },
    /// Freezes a volume's top layer as a snapshot and gives the volume a new one.
    CreateSnapshot {
        /// New snapshot id.
        id: SnapshotId,
        /// The volume.
        volume: VolumeId,
        /// The volume's new top layer.
        layer: LayerId,
        /// Name.
        name: String,
        /// Creation time.
        created: u64,
    },
    /// Removes a snapshot.
    DeleteSnapshot {
        /// Snapshot.
        id: SnapshotId,
    },
    /// A new volume on top of a snapshot.
    Clone {
        /// New volume id.
        id: VolumeId,
        /// Source snapshot.
        snapshot: SnapshotId,
        /// New top layer.
        layer: LayerId,
        /// Name.
        name: String,
        /// Class restriction.
        class: Option<DeviceClass>,
        /// Creation time.
        created: u64,
    },
    /// Returns a volume to a snapshot's contents and size.
    Rollback {
        /// Volume.
        volume: VolumeId,
        /// One of its snapshots.
        snapshot: SnapshotId,
        /// The volume's new top layer.
        layer: LayerId,
    },
}

/// Why an op cannot apply. Live, the pool checks first so this does not happen; in replay it
/// means the metadata is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata op cannot apply: {0}")]
pub struct ApplyError(pub String);

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
        match op {
            Op::CreateVolume {
                id,
                layer,
                name,
                size,
                class,
                created,
            } => {
                if self.volumes.contains_key(id) || self.layers.contains_key(layer) {
                    return bad("volume or layer id in use");
                }
                if self.volume_by_name(name).is_some() {
                    return bad(format!("volume name {name:?} in use"));
                }
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.new_layer(*layer, None, Owner::Volume(*id));
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
                let top = v.top;
                self.volumes.remove(id);
                self.layers.get_mut(&top).expect("top layer").owner = Owner::None;
                self.collect(top, freed);
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
            } => self.map_run(*layer, *vblock, *pblock, csums, freed)?,
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
                let (old, size) = (v.top, v.size);
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.layers.get_mut(&old).expect("top").owner = Owner::Snapshot(*id);
                self.new_layer(*layer, Some(old), Owner::Volume(*volume));
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
                self.bump_id(id.0);
                self.bump_id(*layer);
                self.new_layer(*layer, Some(base), Owner::Volume(*id));
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
                let (old, base, size) = (v.top, s.layer, s.size);
                self.bump_id(*layer);
                self.new_layer(*layer, Some(base), Owner::Volume(*volume));
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
    /// physical blocks (the write path's op, taken by slice so it allocates nothing).
    pub fn map_run(
        &mut self,
        layer: LayerId,
        vblock: u64,
        pblock: u64,
        csums: &[u32],
        freed: &mut Vec<Entry>,
    ) -> Result<(), ApplyError> {
        let n = csums.len() as u64;
        let Some(Owner::Volume(vid)) = self.layers.get(&layer).map(|l| l.owner) else {
            return bad("map into a layer that is not a volume's top");
        };
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
        Ok(())
    }

    fn new_layer(&mut self, id: LayerId, parent: Option<LayerId>, owner: Owner) {
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
        for v in self.volumes.values() {
            if self.layers.get(&v.top).map(|l| l.owner) != Some(Owner::Volume(v.id)) {
                return Err(format!("volume {}: top layer not owned by it", v.id.0));
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

    /// Encodes the whole state (checkpoint payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(STATE_VERSION);
        w.u64(self.next_id);
        w.u64(self.devices.len() as u64);
        for d in &self.devices {
            w.bytes(d.uuid.as_bytes());
            w.u8(d.class.to_u8());
            w.u64(d.size);
            w.u64(d.data_offset);
            w.u64(d.data_blocks);
        }
        w.u64(self.volumes.len() as u64);
        for v in self.volumes.values() {
            w.u64(v.id.0);
            w.str(&v.name);
            w.u64(v.size);
            w.u64(v.top);
            w.u8(class_code(v.class));
            w.u64(v.origin.map_or(0, |s| s.0));
            w.u64(v.created);
            // Reserved for replicas and encryption (later format features): count, scheme.
            w.u8(1);
            w.u8(0);
        }
        w.u64(self.snapshots.len() as u64);
        for s in self.snapshots.values() {
            w.u64(s.id.0);
            w.str(&s.name);
            w.u64(s.volume.0);
            w.u64(s.layer);
            w.u64(s.size);
            w.u64(s.created);
        }
        let mut ids: Vec<&LayerId> = self.layers.keys().collect();
        ids.sort();
        w.u64(ids.len() as u64);
        for id in ids {
            let l = &self.layers[id];
            w.u64(*id);
            w.u64(l.parent.unwrap_or(0));
            match l.owner {
                Owner::None => {
                    w.u8(0);
                    w.u64(0)
                }
                Owner::Volume(v) => {
                    w.u8(1);
                    w.u64(v.0)
                }
                Owner::Snapshot(s) => {
                    w.u8(2);
                    w.u64(s.0)
                }
            }
            w.u64(l.map.len() as u64);
            for (b, e) in l.map.iter() {
                w.u64(b);
                w.u64(e.pblock);
                w.u32(e.csum);
            }
        }
        w.buf
    }

    /// Decodes a checkpoint payload and checks its invariants.
    pub fn decode(buf: &[u8]) -> Result<State, DecodeError> {
        let mut r = Reader::new(buf);
        let at = r.pos();
        if r.u32()? != STATE_VERSION {
            return Err(DecodeError::Invalid {
                what: "state version",
                at,
            });
        }
        let mut st = State::new(Vec::new());
        st.next_id = r.u64()?;
        let n = r.count(41)?;
        for _ in 0..n {
            let uuid = Uuid::from_bytes(r.array()?);
            let at = r.pos();
            let class = DeviceClass::from_u8(r.u8()?).ok_or(DecodeError::Invalid {
                what: "device class",
                at,
            })?;
            st.devices.push(DeviceMeta {
                uuid,
                class,
                size: r.u64()?,
                data_offset: r.u64()?,
                data_blocks: r.u64()?,
            });
        }
        let n = r.count(46)?;
        for _ in 0..n {
            let id = VolumeId(r.u64()?);
            let name = r.str(MAX_NAME)?;
            let size = r.u64()?;
            let top = r.u64()?;
            let at = r.pos();
            let class = class_from_code(r.u8()?).ok_or(DecodeError::Invalid {
                what: "volume class",
                at,
            })?;
            let origin = match r.u64()? {
                0 => None,
                s => Some(SnapshotId(s)),
            };
            let created = r.u64()?;
            let _replicas = r.u8()?;
            let _encryption = r.u8()?;
            st.volumes.insert(
                id,
                VolumeMeta {
                    id,
                    name,
                    size,
                    top,
                    class,
                    origin,
                    created,
                },
            );
        }
        let n = r.count(44)?;
        for _ in 0..n {
            let id = SnapshotId(r.u64()?);
            let name = r.str(MAX_NAME)?;
            st.snapshots.insert(
                id,
                SnapshotMeta {
                    id,
                    name,
                    volume: VolumeId(r.u64()?),
                    layer: r.u64()?,
                    size: r.u64()?,
                    created: r.u64()?,
                },
            );
        }
        let n = r.count(33)?;
        for _ in 0..n {
            let id = r.u64()?;
            let parent = match r.u64()? {
                0 => None,
                p => Some(p),
            };
            let at = r.pos();
            let kind = r.u8()?;
            let oid = r.u64()?;
            let owner = match kind {
                0 => Owner::None,
                1 => Owner::Volume(VolumeId(oid)),
                2 => Owner::Snapshot(SnapshotId(oid)),
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "layer owner",
                        at,
                    })
                }
            };
            let m = r.count(20)?;
            let mut map = BlockMap::new();
            let mut mapped = 0;
            for _ in 0..m {
                let b = r.u64()?;
                let at = r.pos();
                let pblock = r.u64()?;
                let csum = r.u32()?;
                if pblock != ZERO {
                    let (d, blk) = split_paddr(pblock);
                    if st.devices.get(d).is_none_or(|dm| blk >= dm.data_blocks) {
                        return Err(DecodeError::Invalid {
                            what: "physical block",
                            at,
                        });
                    }
                    mapped += 1;
                }
                map.insert(
                    b,
                    Entry {
                        pblock,
                        csum,
                        epoch: 0,
                    },
                );
            }
            st.entries += map.len() as u64;
            if st
                .layers
                .insert(
                    id,
                    Layer {
                        parent,
                        children: Vec::new(),
                        owner,
                        map,
                        mapped,
                    },
                )
                .is_some()
            {
                return Err(DecodeError::Invalid {
                    what: "duplicate layer",
                    at,
                });
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::Invalid {
                what: "trailing bytes",
                at: r.pos(),
            });
        }
        let links: Vec<(LayerId, LayerId)> = st
            .layers
            .iter()
            .filter_map(|(&id, l)| l.parent.map(|p| (p, id)))
            .collect();
        for (p, c) in links {
            match st.layers.get_mut(&p) {
                Some(pl) => pl.children.push(c),
                None => {
                    return Err(DecodeError::Invalid {
                        what: "missing parent layer",
                        at: 0,
                    })
                }
            }
        }
        for l in st.layers.values_mut() {
            l.children.sort();
        }
        if st.check().is_err() {
            return Err(DecodeError::Invalid {
                what: "state invariants",
                at: 0,
            });
        }
        Ok(st)
    }
}

/// Version of the checkpoint payload encoding.
pub const STATE_VERSION: u32 = 1;
/// Longest volume or snapshot name.
pub const MAX_NAME: usize = 128;

fn class_code(c: Option<DeviceClass>) -> u8 {
    c.map_or(0, |c| c.to_u8())
}
fn class_from_code(v: u8) -> Option<Option<DeviceClass>> {
    match v {
        0 => Some(None),
        v => DeviceClass::from_u8(v).map(Some),
    }
}

/// Encodes an [`Op::MapRun`] from borrowed parts (the write path's allocation-free form).
pub fn encode_map_run(w: &mut Writer, layer: LayerId, vblock: u64, pblock: u64, csums: &[u32]) {
    w.u8(OP_MAP_RUN);
    w.u64(layer);
    w.u64(vblock);
    w.u64(pblock);
    w.u32(csums.len() as u32);
    for c in csums {
        w.u32(*c);
    }
}

const OP_CREATE_VOLUME: u8 = 1;
const OP_DELETE_VOLUME: u8 = 2;
const OP_RESIZE_VOLUME: u8 = 3;
const OP_MAP_RUN: u8 = 4;
const OP_TRIM: u8 = 5;
const OP_CREATE_SNAPSHOT: u8 = 6;
const OP_DELETE_SNAPSHOT: u8 = 7;
const OP_CLONE: u8 = 8;
const OP_ROLLBACK: u8 = 9;

impl Op {
    /// Appends the op's encoding (journal payload).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::CreateVolume {
                id,
                layer,
                name,
                size,
                class,
                created,
            } => {
                w.u8(OP_CREATE_VOLUME);
                w.u64(id.0);
                w.u64(*layer);
                w.str(name);
                w.u64(*size);
                w.u8(class_code(*class));
                w.u64(*created);
            }
            Op::DeleteVolume { id } => {
                w.u8(OP_DELETE_VOLUME);
                w.u64(id.0);
            }
            Op::ResizeVolume { id, size } => {
                w.u8(OP_RESIZE_VOLUME);
                w.u64(id.0);
                w.u64(*size);
            }
            Op::MapRun {
                layer,
                vblock,
                pblock,
                csums,
            } => encode_map_run(w, *layer, *vblock, *pblock, csums),
            Op::Trim { layer, start, end } => {
                w.u8(OP_TRIM);
                w.u64(*layer);
                w.u64(*start);
                w.u64(*end);
            }
            Op::CreateSnapshot {
                id,
                volume,
                layer,
                name,
                created,
            } => {
                w.u8(OP_CREATE_SNAPSHOT);
                w.u64(id.0);
                w.u64(volume.0);
                w.u64(*layer);
                w.str(name);
                w.u64(*created);
            }
            Op::DeleteSnapshot { id } => {
                w.u8(OP_DELETE_SNAPSHOT);
                w.u64(id.0);
            }
            Op::Clone {
                id,
                snapshot,
                layer,
                name,
                class,
                created,
            } => {
                w.u8(OP_CLONE);
                w.u64(id.0);
                w.u64(snapshot.0);
                w.u64(*layer);
                w.str(name);
                w.u8(class_code(*class));
                w.u64(*created);
            }
            Op::Rollback {
                volume,
                snapshot,
                layer,
            } => {
                w.u8(OP_ROLLBACK);
                w.u64(volume.0);
                w.u64(snapshot.0);
                w.u64(*layer);
            }
        }
    }

    /// Decodes every op of a journal record payload.
    pub fn decode_all(buf: &[u8]) -> Result<Vec<Op>, DecodeError> {
        let mut r = Reader::new(buf);
        let mut ops = Vec::new();
        while r.remaining() > 0 {
            ops.push(Op::decode(&mut r)?);
        }
        Ok(ops)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
        let at = r.pos();
        let class = |r: &mut Reader<'_>| {
            let at = r.pos();
            class_from_code(r.u8()?).ok_or(DecodeError::Invalid { what: "class", at })
        };
        Ok(match r.u8()? {
            OP_CREATE_VOLUME => Op::CreateVolume {
                id: VolumeId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                size: r.u64()?,
                class: class(r)?,
                created: r.u64()?,
            },
            OP_DELETE_VOLUME => Op::DeleteVolume {
                id: VolumeId(r.u64()?),
            },
            OP_RESIZE_VOLUME => Op::ResizeVolume {
                id: VolumeId(r.u64()?),
                size: r.u64()?,
            },
            OP_MAP_RUN => {
                let layer = r.u64()?;
                let vblock = r.u64()?;
                let pblock = r.u64()?;
                let at = r.pos();
                let n = r.u32()? as usize;
                if n == 0 || n * 4 > r.remaining() {
                    return Err(DecodeError::Invalid {
                        what: "run length",
                        at,
                    });
                }
                let mut csums = Vec::with_capacity(n);
                for _ in 0..n {
                    csums.push(r.u32()?);
                }
                Op::MapRun {
                    layer,
                    vblock,
                    pblock,
                    csums,
                }
            }
            OP_TRIM => Op::Trim {
                layer: r.u64()?,
                start: r.u64()?,
                end: r.u64()?,
            },
            OP_CREATE_SNAPSHOT => Op::CreateSnapshot {
                id: SnapshotId(r.u64()?),
                volume: VolumeId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                created: r.u64()?,
            },
            OP_DELETE_SNAPSHOT => Op::DeleteSnapshot {
                id: SnapshotId(r.u64()?),
            },
            OP_CLONE => Op::Clone {
                id: VolumeId(r.u64()?),
                snapshot: SnapshotId(r.u64()?),
                layer: r.u64()?,
                name: r.str(MAX_NAME)?,
                class: class(r)?,
                created: r.u64()?,
            },
            OP_ROLLBACK => Op::Rollback {
                volume: VolumeId(r.u64()?),
                snapshot: SnapshotId(r.u64()?),
                layer: r.u64()?,
            },
            _ => return Err(DecodeError::Invalid { what: "op tag", at }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> State {
        State::new(vec![DeviceMeta {
            uuid: Uuid::from_u128(1),
            class: DeviceClass::Ssd,
            size: 64 << 20,
            data_offset: 1 << 20,
            data_blocks: 1000,
        }])
    }

    fn apply(s: &mut State, op: Op) -> Vec<Entry> {
        let mut f = Vec::new();
        s.apply(&op, &mut f).unwrap();
        s.check().unwrap();
        f
    }

    fn create(s: &mut State, name: &str, blocks: u64) -> (VolumeId, LayerId) {
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
            },
        );
        (id, layer)
    }

    fn map(s: &mut State, layer: LayerId, vb: u64, pb: u64, n: usize) -> Vec<Entry> {
        apply(
            s,
            Op::MapRun {
                layer,
                vblock: vb,
                pblock: pb,
                csums: vec![7; n],
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

    #[test]
    fn state_and_ops_round_trip() {
        let mut s = st();
        let (v, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 3);
        let ops = vec![
            Op::ResizeVolume { id: v, size: 4096 },
            Op::Trim {
                layer: l0,
                start: 1,
                end: 2,
            },
            Op::MapRun {
                layer: l0,
                vblock: 3,
                pblock: 9,
                csums: vec![1, 2],
            },
            Op::Rollback {
                volume: v,
                snapshot: SnapshotId(4),
                layer: 5,
            },
        ];
        let mut w = Writer::new();
        for o in &ops {
            o.encode(&mut w);
        }
        assert_eq!(Op::decode_all(&w.buf).unwrap(), ops);
        let d = State::decode(&s.encode()).unwrap();
        assert_eq!(d.volumes, s.volumes);
        assert_eq!(d.layers[&l0].map.len(), 3);
        d.check().unwrap();
    }

    /// Fuzz finding: a checkpoint entry whose address was the map's empty-slot sentinel.
    #[test]
    fn fuzz_regressions_decode_without_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
        let mut n = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(f.unwrap().path()).unwrap();
            if let Ok(st) = State::decode(&data) {
                st.check().unwrap();
                State::decode(&st.encode()).unwrap();
            }
            let _ = Op::decode_all(&data);
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = st();
        let (_, l0) = create(&mut s, "a", 10);
        map(&mut s, l0, 0, 100, 3);
        let good = s.encode();
        for _ in 0..2000 {
            let mut b = good.clone();
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
            let _ = State::decode(&b);
            let _ = Op::decode_all(&b);
            let cut = rng.gen_range(0..b.len());
            let _ = State::decode(&b[..cut]);
        }
    }
}
