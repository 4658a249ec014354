//! The read path. Reads take no gate and no stripe: they resolve entries under the metadata
//! lock, read runs of blocks consecutive on a device with one call, and verify every block's
//! checksum. A mismatch re-resolves the block: a moved mapping (a racing write freed and
//! reused the block) retries; an unchanged one retries once under the chunk's stripe (a writer
//! may have been rewriting it in place); only a mismatch there is reported, naming the place.
//! Also block status and changed blocks, which read only the maps.

use smallvec::SmallVec;

use crate::crypt::{BlockCipher, BlockTag};
use crate::error::IoError;
use crate::format::crc32c;
use crate::map::Entry;
use crate::meta::{split_paddr, LayerId, SnapshotId};

use super::{resolve_target, target_name, Pool, Target, BS, BSU, CHUNK_BLOCKS, CHUNK_BYTES};

impl Pool {
    /// checksum fails is an error naming the place, never wrong data.
    pub fn read(&self, t: impl Into<Target>, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let t = t.into();
        match t {
            Target::Volume(v) => {
                let io = self.io(v)?;
                let start = std::time::Instant::now();
                io.admit(buf.len() as u64);
                let r = self.read_inner(t, offset, buf);
                io.record(false, buf.len() as u64, start.elapsed());
                r
            }
            Target::Snapshot(_) => self.read_inner(t, offset, buf),
        }
    }

    /// [`Pool::read`] without QoS admission or figures, for a caller that reads one request in
    /// several pieces and meters the whole request itself (`io()`: `admit` before the first
    /// piece, `record` after the last), so a request counts once against IOPS limits.
    pub fn read_unmetered(
        &self,
        t: impl Into<Target>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), IoError> {
        self.read_inner(t.into(), offset, buf)
    }

    fn read_inner(&self, t: Target, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        // Reads take no gate and no stripe: they resolve under the metadata lock, read, and
        // verify. A block freed and reused under a racing read fails its checksum; the read
        // then re-resolves, and only a mismatch on an unchanged mapping is reported.
        let mut done = 0usize;
        loop {
            let off = offset + done as u64;
            let n = ((CHUNK_BYTES - off % CHUNK_BYTES) as usize).min(buf.len() - done);
            let mut attempts = 0;
            // Taken only after a mismatch on an unchanged mapping: a writer may be rewriting
            // a current-epoch block in place; under the stripe the read cannot overlap it.
            let mut stripe = None;
            loop {
                let mut ents: SmallVec<[Option<Entry>; 8]> = SmallVec::new();
                let mut tags: SmallVec<[BlockTag; 8]> = SmallVec::new();
                let cipher;
                {
                    let m = self.inner.meta.lock();
                    let (top, size) = resolve_target(&m.state, t)?;
                    if done == 0
                        && offset
                            .checked_add(buf.len() as u64)
                            .is_none_or(|e| e > size)
                    {
                        return Err(IoError::OutOfRange {
                            target: target_name(&m.state, t),
                            offset,
                            len: buf.len() as u64,
                            size,
                        });
                    }
                    // An encrypted target whose key is locked serves no byte.
                    cipher = m.cipher_of(top, t)?;
                    let b0 = off / BS;
                    let nb = (off + n as u64).div_ceil(BS) - b0;
                    ents.extend((b0..b0 + nb).map(|vb| m.state.resolve(top, vb)));
                    if cipher.is_some() {
                        // Taken with the entries, under the same lock: a tag always belongs
                        // to the checksum it is read with.
                        tags.extend(ents.iter().map(|e| {
                            e.filter(|e| !e.is_zero())
                                .and_then(|e| m.state.tags.get(&e.pblock).copied())
                                .unwrap_or_default()
                        }));
                    }
                }
                let seal = cipher.as_deref().map(|c| (c, &tags[..]));
                match self.read_chunk(off, &mut buf[done..done + n], &ents, seal) {
                    Ok(()) => break,
                    Err(ReadFail::Device(e)) => return Err(e),
                    Err(ReadFail::Auth(vb)) => return Err(self.auth_error(t, vb)),
                    Err(ReadFail::Mismatch(vb, e)) => {
                        let now = {
                            let m = self.inner.meta.lock();
                            let (top, _) = resolve_target(&m.state, t)?;
                            m.state.resolve(top, vb)
                        };
                        attempts += 1;
                        if now != Some(e) && attempts <= 3 {
                            continue;
                        }
                        if let (None, Target::Volume(v)) = (&stripe, t) {
                            stripe = Some(self.stripe(v.0, (off / BS) / CHUNK_BLOCKS).read());
                            continue;
                        }
                        return Err(self.checksum_error(t, vb, e.pblock));
                    }
                }
            }
            done += n;
            if done >= buf.len() {
                return Ok(());
            }
        }
    }

    /// Allocation status of `[offset, offset+len)`: runs of (length, allocated). Unallocated
    /// runs read as zeros; allocated runs hold data (or are zero tombstones over a snapshot:
    /// reported as not allocated, since they read as zeros and own no space).
    pub fn block_status(
        &self,
        t: impl Into<Target>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, bool)>, IoError> {
        let t = t.into();
        let m = self.inner.meta.lock();
        let (top, size) = resolve_target(&m.state, t)?;
        // Checked under the lock already held (`check_range` would take it again).
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(IoError::OutOfRange {
                target: target_name(&m.state, t),
                offset,
                len,
                size,
            });
        }
        let (first, last) = (offset / BS, (offset + len).div_ceil(BS));
        // Which blocks in range show data: walk the chain, first entry per block wins.
        let mut seen = std::collections::BTreeMap::new();
        let mut l = Some(top);
        while let Some(id) = l {
            let layer = &m.state.layers[&id];
            for (b, e) in layer.map.range(first, last) {
                seen.entry(b).or_insert(!e.is_zero());
            }
            l = layer.parent;
        }
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut push = |from: u64, to: u64, alloc: bool| {
            let (s, e) = (from.max(offset), to.min(offset + len));
            if s >= e {
                return;
            }
            match out.last_mut() {
                Some((l, a)) if *a == alloc => *l += e - s,
                _ => out.push((e - s, alloc)),
            }
        };
        let mut cur = first;
        for (&b, &data) in &seen {
            if !data {
                continue;
            }
            push(cur * BS, b * BS, false);
            push(b * BS, (b + 1) * BS, true);
            cur = b + 1;
        }
        push(cur * BS, last * BS, false);
        Ok(out)
    }

    /// Which blocks of `t` (a volume, or a later snapshot) in `[offset, offset+len)` differ
    /// from snapshot `since` (any snapshot of the pool): runs of (length, changed). For
    /// incremental backup, and for giving a new copy a volume's snapshots one difference at a
    /// time: a block is changed when the two resolve it to different physical blocks or one
    /// maps it and the other does not. Layers both chains share are skipped, so the cost is
    /// the number of entries written since the snapshot, not the volume size.
    pub fn changed_blocks(
        &self,
        t: impl Into<Target>,
        since: SnapshotId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, bool)>, IoError> {
        let t = t.into();
        let m = self.inner.meta.lock();
        let (top, size) = resolve_target(&m.state, t)?;
        let (base, _) = resolve_target(&m.state, Target::Snapshot(since))?;
        // Checked under the lock already held (`check_range` would take it again).
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(IoError::OutOfRange {
                target: target_name(&m.state, t),
                offset,
                len,
                size,
            });
        }
        let (first, last) = (offset / BS, (offset + len).div_ceil(BS));
        let chain = |mut l: Option<LayerId>| {
            let mut v = Vec::new();
            while let Some(id) = l {
                v.push(id);
                l = m.state.layers[&id].parent;
            }
            v
        };
        let (a, b) = (chain(Some(top)), chain(Some(base)));
        let shared: std::collections::HashSet<LayerId> =
            a.iter().filter(|x| b.contains(x)).copied().collect();
        let mut keys = std::collections::BTreeSet::new();
        for id in a.iter().chain(b.iter()).filter(|x| !shared.contains(x)) {
            keys.extend(m.state.layers[id].map.range(first, last).map(|(k, _)| k));
        }
        let pb = |e: Option<Entry>| e.filter(|e| !e.is_zero()).map(|e| e.pblock);
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut push = |from: u64, to: u64, changed: bool| {
            let (s, e) = (from.max(offset), to.min(offset + len));
            if s >= e {
                return;
            }
            match out.last_mut() {
                Some((l, c)) if *c == changed => *l += e - s,
                _ => out.push((e - s, changed)),
            }
        };
        let mut cur = first;
        for k in keys {
            if pb(m.state.resolve(top, k)) != pb(m.state.resolve(base, k)) {
                push(cur * BS, k * BS, false);
                push(k * BS, (k + 1) * BS, true);
                cur = k + 1;
            }
        }
        push(cur * BS, last * BS, false);
        Ok(out)
    }

    /// Reads one chunk given its resolved entries (and, for an encrypted target, its cipher
    /// and the entries' tags): each block's checksum is checked, then its tag.
    fn read_chunk(
        &self,
        off: u64,
        buf: &mut [u8],
        ents: &[Option<Entry>],
        seal: Option<(&BlockCipher, &[BlockTag])>,
    ) -> Result<(), ReadFail> {
        let b0 = off / BS;
        let end = off + buf.len() as u64;
        let n = (end.div_ceil(BS) - b0) as usize;
        let mut i = 0;
        while i < n {
            let vb = b0 + i as u64;
            let bstart = (vb * BS).max(off);
            let bend = ((vb + 1) * BS).min(end);
            let dst = (bstart - off) as usize..(bend - off) as usize;
            let e = match ents[i] {
                Some(e) if !e.is_zero() => e,
                _ => {
                    buf[dst].fill(0);
                    i += 1;
                    continue;
                }
            };
            if bend - bstart < BS {
                let mut blk = [0u8; BSU];
                self.read_verified(vb, e, seal.map(|(c, t)| (c, t[i])), &mut blk)?;
                let s = (bstart - vb * BS) as usize;
                buf[dst.clone()].copy_from_slice(&blk[s..s + dst.len()]);
                i += 1;
                continue;
            }
            // A run of whole blocks that are also consecutive on one device: one read.
            let mut k = 1;
            while i + k < n && (vb + k as u64 + 1) * BS <= end {
                match ents[i + k] {
                    Some(ek) if !ek.is_zero() && ek.pblock == e.pblock + k as u64 => k += 1,
                    _ => break,
                }
            }
            let region = &mut buf[dst.start..dst.start + k * BSU];
            self.read_run(e.pblock, region).map_err(ReadFail::Device)?;
            for j in 0..k {
                let ej = ents[i + j].expect("mapped");
                let blk = &mut region[j * BSU..(j + 1) * BSU];
                if checksum(blk) != ej.csum {
                    return Err(ReadFail::Mismatch(vb + j as u64, ej));
                }
                if let Some((c, tags)) = seal {
                    c.open(ej.pblock, vb + j as u64, blk, &tags[i + j])
                        .map_err(|_| ReadFail::Auth(vb + j as u64))?;
                }
            }
            i += k;
        }
        Ok(())
    }

    fn read_run(&self, pblock: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let (d, b) = split_paddr(pblock);
        let dev = &self.inner.devs[d];
        dev.dev
            .read_at(buf, dev.sb.data_offset + b * BS)
            .map_err(|source| IoError::Device {
                device: dev.dev.describe(),
                source,
            })
    }

    /// Reads one block and checks it against its entry; an encrypted block (`seal`: its
    /// cipher and tag) is then opened in place.
    pub(super) fn read_verified(
        &self,
        vb: u64,
        e: Entry,
        seal: Option<(&BlockCipher, BlockTag)>,
        blk: &mut [u8; BSU],
    ) -> Result<(), ReadFail> {
        self.read_run(e.pblock, blk).map_err(ReadFail::Device)?;
        if checksum(blk) != e.csum {
            return Err(ReadFail::Mismatch(vb, e));
        }
        if let Some((c, tag)) = seal {
            c.open(e.pblock, vb, blk, &tag)
                .map_err(|_| ReadFail::Auth(vb))?;
        }
        Ok(())
    }

    /// The error a failed single-block read reports.
    pub(super) fn read_fail(&self, t: Target, f: ReadFail) -> IoError {
        match f {
            ReadFail::Device(e) => e,
            ReadFail::Mismatch(vb, e) => self.checksum_error(t, vb, e.pblock),
            ReadFail::Auth(vb) => self.auth_error(t, vb),
        }
    }

    fn auth_error(&self, t: Target, vb: u64) -> IoError {
        let m = self.inner.meta.lock();
        IoError::Authentication {
            target: target_name(&m.state, t),
            offset: vb * BS,
        }
    }

    pub(super) fn checksum_error(&self, t: Target, vb: u64, pblock: u64) -> IoError {
        let (d, b) = split_paddr(pblock);
        let dev = &self.inner.devs[d];
        let m = self.inner.meta.lock();
        IoError::Checksum {
            target: target_name(&m.state, t),
            offset: vb * BS,
            device: dev.dev.describe(),
            device_offset: dev.sb.data_offset + b * BS,
        }
    }
}

/// Why a chunk read failed.
pub(super) enum ReadFail {
    /// The device failed.
    Device(IoError),
    /// Block `.0`, mapped by entry `.1`, failed its checksum.
    Mismatch(u64, Entry),
    /// Block `.0` matched its checksum but not its tag.
    Auth(u64),
}

/// CRC-32C of a data block.
#[inline]
pub(super) fn checksum(block: &[u8]) -> u32 {
    crc32c(block)
}
