//! The write path, write-zeroes and trim (see `write_chunk` for the steps of one chunk).

use std::sync::atomic::Ordering;

use smallvec::SmallVec;
use strata_types::DeviceClass;

use parking_lot::RwLockReadGuard;

use crate::alloc::{Run, Take};
use crate::crypt::{BlockCipher, BlockTag, TAG_LEN};
use crate::device::{FILE_WRITE_PIECE, NEW_BLOCK_PIECE};
use crate::error::IoError;
use crate::meta::{encode_map_run, split_paddr, LayerId, Op, VolumeId};

use super::commit::release;
use super::read::checksum;
use super::{resolve_target, MetaState, Pool, Target, BS, BSU, CHUNK_BLOCKS, CHUNK_BYTES};

impl Pool {
    /// Writes `data` at `offset` of a volume. Acknowledged writes are durable after `flush`.
    pub fn write(&self, volume: VolumeId, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let io = self.io(volume)?;
        let start = std::time::Instant::now();
        io.admit(data.len() as u64);
        let r = self.write_inner(volume, offset, data);
        io.record(true, data.len() as u64, start.elapsed());
        r
    }

    fn write_inner(&self, volume: VolumeId, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let _g = self.inner.gate.read();
        let w = self.writable(volume, offset, data.len() as u64)?;
        let (top, class, cipher) = (w.top, w.class, w.cipher.as_deref());
        if data.is_empty() {
            return Ok(());
        }
        let (b0, b1) = (offset / BS, (offset + data.len() as u64).div_ceil(BS));
        // The epoch gate is held from the reservation to the last chunk's map update: no
        // commit cuts the epoch in between, so the blocks counted as rewritable in place stay
        // so, and the reservation covers every chunk (all or nothing on a full pool).
        let (eg, mut res) = self.reserve(volume, top, class, b0, b1)?;
        let mut done = 0usize;
        let mut r = Ok(());
        let mut need_commit = false;
        while done < data.len() {
            let off = offset + done as u64;
            let n = ((CHUNK_BYTES - off % CHUNK_BYTES) as usize).min(data.len() - done);
            let chunk = &data[done..done + n];
            match self.write_chunk(volume, top, class, cipher, off, chunk, &mut res) {
                Ok(c) => need_commit |= c,
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
            done += n;
        }
        drop(eg);
        self.unreserve(&mut res);
        if need_commit {
            // The journal buffer passed its size: commit now that the gate is released.
            let c = self.commit();
            if r.is_ok() {
                r = c;
            }
        }
        r
    }

    /// Reserves, before any map changes, every block the write of `[b0, b1)` will allocate:
    /// blocks the top layer does not hold (new data: only from above the reserve) and blocks
    /// it holds from an earlier epoch (redirects: the reserve may serve them, since the
    /// commit that makes the redirect durable frees the old copies). Blocks of the current
    /// epoch are rewritten in place and need nothing. If space is short only because frees
    /// are not yet durable, commits once and retries; otherwise fails with nothing changed.
    /// Returns the epoch gate, held shared, with the reservation: the caller keeps it until
    /// its last map update, so the count of in-place blocks stays true.
    fn reserve(
        &self,
        volume: VolumeId,
        top: LayerId,
        class: Option<DeviceClass>,
        b0: u64,
        b1: u64,
    ) -> Result<(RwLockReadGuard<'_, ()>, Reservation), IoError> {
        for attempt in 0..2 {
            let pending = {
                let eg = self.inner.epoch_gate.read();
                let mut m = self.inner.meta.lock();
                let epoch = m.state.epoch;
                let sealed = m.state.key_of_layer(top).is_some();
                let layer = &m.state.layers[&top];
                let (mut fresh, mut redirect) = (0u64, 0u64);
                for vb in b0..b1 {
                    match layer.map.get(vb) {
                        Some(e) if !e.is_zero() && e.epoch == epoch => {}
                        Some(e) if !e.is_zero() => redirect += 1,
                        _ => fresh += 1,
                    }
                }
                let need = fresh + redirect;
                let fits = m.entries_fit(need, sealed)
                    && m.alloc.available(class, Take::AboveReserve) >= fresh
                    && m.alloc.available(class, Take::IncludingReserve) >= need;
                if fits {
                    let mut runs = SmallVec::new();
                    let ok = m.alloc.alloc(fresh, class, Take::AboveReserve, &mut runs)
                        && m.alloc
                            .alloc(redirect, class, Take::IncludingReserve, &mut runs);
                    debug_assert!(ok, "space was counted");
                    drop(m);
                    return Ok((eg, Reservation { runs }));
                }
                !m.pending_free.is_empty()
            };
            if attempt == 1 || !pending {
                break;
            }
            // Only frees that are not yet durable stand in the way: commit them.
            self.commit()?;
        }
        Err(self.out_of_space(volume))
    }

    /// Returns what is left of a reservation to the free map: those blocks were never mapped.
    fn unreserve(&self, res: &mut Reservation) {
        if res.runs.is_empty() {
            return;
        }
        let mut m = self.inner.meta.lock();
        for r in res.runs.drain(..) {
            m.alloc.free_run(r);
        }
    }

    fn out_of_space(&self, volume: VolumeId) -> IoError {
        let m = self.inner.meta.lock();
        let name = m
            .state
            .volumes
            .get(&volume)
            .map_or_else(|| volume.0.to_string(), |v| v.name.clone());
        IoError::OutOfSpace { target: name }
    }

    /// Makes `[offset, offset+len)` read as zeros. Whole blocks are unmapped when `unmap` is
    /// true (space is freed) and written as zero blocks otherwise (space stays allocated).
    pub fn write_zeroes(
        &self,
        volume: VolumeId,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), IoError> {
        let io = self.io(volume)?;
        let start = std::time::Instant::now();
        io.admit(len);
        let r = self.write_zeroes_inner(volume, offset, len, unmap);
        io.record(true, len, start.elapsed());
        r
    }

    fn write_zeroes_inner(
        &self,
        volume: VolumeId,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), IoError> {
        static ZEROS: [u8; CHUNK_BYTES as usize] = [0; CHUNK_BYTES as usize];
        {
            let _g = self.inner.gate.read();
            self.writable(volume, offset, len)?;
        }
        let end = offset + len;
        let (first, last) = (offset.div_ceil(BS), end / BS);
        if unmap && first < last {
            // Head and tail partial blocks are written; the whole blocks between are unmapped.
            self.write_zeroes_inner(volume, offset, first * BS - offset, false)?;
            self.write_zeroes_inner(volume, last * BS, end - last * BS, false)?;
            return self.unmap(volume, first, last);
        }
        let mut off = offset;
        while off < end {
            let n = (CHUNK_BYTES - off % CHUNK_BYTES).min(end - off);
            self.write_inner(volume, off, &ZEROS[..n as usize])?;
            off += n;
        }
        Ok(())
    }

    /// Discards `[offset, offset+len)`: afterwards it reads as zeros and whole blocks are freed.
    pub fn trim(&self, volume: VolumeId, offset: u64, len: u64) -> Result<(), IoError> {
        self.write_zeroes(volume, offset, len, true)
    }

    fn unmap(&self, volume: VolumeId, first: u64, last: u64) -> Result<(), IoError> {
        {
            // Exclusive: the blocks freed here may be under a reader of another chunk's stripe.
            let _g = self.inner.gate.write();
            let mut m = self.inner.meta.lock();
            let top = resolve_target(&m.state, Target::Volume(volume))?.0;
            let op = Op::Trim {
                layer: top,
                start: first,
                end: last,
            };
            let mut freed = std::mem::take(&mut m.freed);
            m.state
                .apply(&op, &mut freed)
                .expect("trim range was validated");
            op.encode(&mut m.buf);
            m.patchable.clear();
            release(&mut m, &mut freed);
            m.freed = freed;
            if m.buf.buf.len() < self.inner.auto_commit {
                return Ok(());
            }
        }
        self.commit()
    }
    /// Writes one chunk (at most 1 MiB, inside one aligned chunk) under its stripe lock, in
    /// four steps: merge partial blocks, place, write runs, record the map. An encrypted
    /// volume's blocks are sealed once placed (the nonce is the physical block) and their
    /// checksums taken over the ciphertext. The caller holds the epoch gate shared (from its
    /// reservation). Returns whether the journal buffer is large enough to commit (the
    /// caller commits once it released the gate).
    #[allow(clippy::too_many_arguments)]
    fn write_chunk(
        &self,
        volume: VolumeId,
        top: LayerId,
        class: Option<DeviceClass>,
        cipher: Option<&BlockCipher>,
        off: u64,
        data: &[u8],
        res: &mut Reservation,
    ) -> Result<bool, IoError> {
        let b0 = off / BS;
        let _s = self.stripe(volume.0, b0 / CHUNK_BLOCKS).write();
        let mut scratch = SmallVec::new();
        let src = self.merge_partial(volume, top, cipher, off, data, &mut scratch)?;
        let n = src.len() / BSU;
        let placed = self.place(volume, top, class, cipher.is_some(), b0, n, res)?;
        let Some(c) = cipher else {
            let mut csums: SmallVec<[u32; 32]> = SmallVec::with_capacity(n);
            self.write_runs(&placed, src, Some(&mut csums))?;
            return Ok(self.record_map(top, b0, &placed, &csums, None));
        };
        SEAL_BUF.with(|buf| {
            let mut ct = buf.borrow_mut();
            ct.clear();
            ct.extend_from_slice(src);
            let mut tags: SmallVec<[BlockTag; 32]> = SmallVec::with_capacity(n);
            let mut csums: SmallVec<[u32; 32]> = SmallVec::with_capacity(n);
            for (i, blk) in ct.chunks_mut(BSU).enumerate() {
                tags.push(c.seal(placed.pbs[i], b0 + i as u64, blk));
                csums.push(checksum(blk));
            }
            self.write_runs(&placed, &ct, None)?;
            Ok(self.record_map(top, b0, &placed, &csums, Some(&tags)))
        })
    }

    /// Step 1: the chunk's bytes as whole blocks. An aligned write is used as it is; a partial
    /// first or last block is read (and verified) and merged with the new bytes in `scratch`.
    /// Invariant: the caller holds the chunk's stripe, so the old contents cannot change
    /// between this read and the map update.
    fn merge_partial<'a>(
        &self,
        volume: VolumeId,
        top: LayerId,
        cipher: Option<&BlockCipher>,
        off: u64,
        data: &'a [u8],
        scratch: &'a mut SmallVec<[u8; 2 * BSU]>,
    ) -> Result<&'a [u8], IoError> {
        if off.is_multiple_of(BS) && (data.len() as u64).is_multiple_of(BS) {
            return Ok(data);
        }
        let (b0, b1) = (off / BS, (off + data.len() as u64).div_ceil(BS));
        let n = (b1 - b0) as usize;
        scratch.clear();
        scratch.resize(n * BSU, 0);
        let t = Target::Volume(volume);
        let fill = |vb: u64, dst: &mut [u8]| -> Result<(), IoError> {
            let (e, tag) = {
                let m = self.inner.meta.lock();
                let e = m.state.resolve(top, vb);
                let tag = e.and_then(|e| m.state.tags.get(&e.pblock).copied());
                (e, tag)
            };
            match e {
                Some(e) if !e.is_zero() => {
                    let mut blk = [0u8; BSU];
                    let seal = cipher.map(|c| (c, tag.unwrap_or_default()));
                    self.read_verified(vb, e, seal, &mut blk)
                        .map_err(|f| self.read_fail(t, f))?;
                    dst.copy_from_slice(&blk);
                }
                _ => dst.fill(0),
            }
            Ok(())
        };
        if !off.is_multiple_of(BS) {
            fill(b0, &mut scratch[..BSU])?;
        }
        let end = off + data.len() as u64;
        if !end.is_multiple_of(BS) && (b1 - 1 != b0 || off.is_multiple_of(BS)) {
            fill(b1 - 1, &mut scratch[(n - 1) * BSU..])?;
        }
        let s = (off - b0 * BS) as usize;
        scratch[s..s + data.len()].copy_from_slice(data);
        Ok(&scratch[..])
    }

    /// Step 2: where each of the `n` blocks from `b0` goes. A block of the top layer written
    /// in the current epoch is referenced by no durable metadata, so it is rewritten in place;
    /// every other block takes one from the request's reservation (redirect-on-write: a block
    /// durable metadata references is never written). Invariant: the caller holds the epoch
    /// gate from its reservation on, so no commit cuts the epoch, an in-place block cannot
    /// become durable under the rewrite, and the reservation holds every block needed here.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        volume: VolumeId,
        top: LayerId,
        class: Option<DeviceClass>,
        sealed: bool,
        b0: u64,
        n: usize,
        res: &mut Reservation,
    ) -> Result<Placed, IoError> {
        {
            let mut m = self.inner.meta.lock();
            let epoch = m.state.epoch;
            let layer = &m.state.layers[&top];
            let mut pbs: SmallVec<[u64; 32]> = SmallVec::with_capacity(n);
            let mut need = 0u64;
            for vb in b0..b0 + n as u64 {
                match layer.map.get(vb) {
                    Some(e) if !e.is_zero() && e.epoch == epoch => pbs.push(e.pblock),
                    _ => {
                        pbs.push(u64::MAX);
                        need += 1;
                    }
                }
            }
            let mut runs: SmallVec<[Run; 4]> = SmallVec::new();
            // Blocks of this epoch scattered over the device (left by small random writes)
            // are not rewritten in place by a write that covers several of them: the whole
            // range moves to a fresh run, so it is one device write now and later sequential
            // reads of it are one read per run. The old blocks, referenced by no durable
            // metadata, are free at once. Only with space above the reserve; without it, they
            // are rewritten in place (what the reservation set aside goes back unused).
            let scattered = n > 1
                && (need as usize) < n
                && !pbs.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
            if scattered
                && m.entries_fit(n as u64, sealed)
                && m.alloc
                    .alloc(n as u64, class, Take::AboveReserve, &mut runs)
            {
                pbs.fill(u64::MAX);
            } else {
                let got = res.take(need, &mut runs);
                if got < need {
                    // The reservation counted these blocks under the same epoch: only a
                    // broken invariant gets here. Refuse the chunk rather than overwrite.
                    debug_assert!(false, "reservation short by {} blocks", need - got);
                    res.give_back(runs);
                    drop(m);
                    return Err(self.out_of_space(volume));
                }
            }
            let mut next = runs
                .iter()
                .flat_map(|r| (0..r.len).map(move |i| r.paddr() + i));
            for p in pbs.iter_mut().filter(|p| **p == u64::MAX) {
                *p = next.next().expect("allocated as many as needed");
            }
            drop(m);
            Ok(Placed { pbs, fresh: runs })
        }
    }

    /// Step 3: writes the blocks, one device call per piece of a run of blocks consecutive on a
    /// device: [`NEW_BLOCK_PIECE`] for newly placed blocks (their page-cache folios may not
    /// exist yet, and the write that creates one sizes it), [`FILE_WRITE_PIECE`] for blocks
    /// rewritten in place (their folios exist). With `csums`, the CRC of every block is appended
    /// to it just before its piece is written: the bytes are then in the CPU cache for the
    /// copy the write makes, instead of being read from memory twice (once for a CRC pass over
    /// the whole chunk, once for the write). On a device error the chunk's fresh blocks go
    /// back to the free map (nothing maps them) and no map has changed for this chunk.
    fn write_runs(
        &self,
        placed: &Placed,
        src: &[u8],
        mut csums: Option<&mut SmallVec<[u32; 32]>>,
    ) -> Result<(), IoError> {
        let pbs = &placed.pbs;
        let n = pbs.len();
        let mut k = 0usize;
        while k < n {
            let mut len = 1;
            while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                len += 1;
            }
            let (d, b) = split_paddr(pbs[k]);
            let dev = &self.inner.devs[d];
            let bytes = &src[k * BSU..(k + len) * BSU];
            let mut at = dev.sb.data_offset + b * BS;
            let mut res = Ok(());
            let fresh = placed
                .fresh
                .iter()
                .any(|r| (r.paddr()..r.paddr() + r.len).contains(&pbs[k]));
            let size = if fresh {
                NEW_BLOCK_PIECE
            } else {
                FILE_WRITE_PIECE
            };
            for piece in bytes.chunks(size) {
                if let Some(c) = csums.as_deref_mut() {
                    c.extend(piece.chunks(BSU).map(checksum));
                }
                res = dev.dev.write_at(piece, at);
                if res.is_err() {
                    break;
                }
                at += piece.len() as u64;
            }
            if let Err(source) = res {
                let mut m = self.inner.meta.lock();
                for r in &placed.fresh {
                    m.alloc.free_run(*r);
                }
                return Err(IoError::Device {
                    device: dev.dev.describe(),
                    source,
                });
            }
            dev.dirty.store(true, Ordering::SeqCst);
            k += len;
        }
        Ok(())
    }

    /// Step 4: points the top layer's map at the written blocks ([`State::map_run`], the code
    /// replay runs) and journals it: a chunk rewritten wholly in place patches the checksums
    /// of the buffered op that mapped it; otherwise one map-run op per run is appended. Blocks
    /// the update frees are released (at once if of this epoch, else after the commit).
    /// Returns whether the journal buffer is large enough to commit.
    ///
    /// [`State::map_run`]: crate::meta::State::map_run
    fn record_map(
        &self,
        top: LayerId,
        b0: u64,
        placed: &Placed,
        csums: &[u32],
        tags: Option<&[BlockTag]>,
    ) -> bool {
        let pbs = &placed.pbs;
        let n = pbs.len();
        let mut m = self.inner.meta.lock();
        let mut freed = std::mem::take(&mut m.freed);
        let patched = placed.fresh.is_empty() && patch_in_place(&mut m, top, b0, pbs, csums, tags);
        let mut k = 0usize;
        while k < n {
            let mut len = 1;
            while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                len += 1;
            }
            let cs = &csums[k..k + len];
            let ts = tags.map(|t| &t[k..k + len]);
            let vb = b0 + k as u64;
            m.state
                .map_run(top, vb, pbs[k], cs, ts, &mut freed)
                .expect("validated run");
            if !patched {
                let item = encode_map_run(&mut m.buf, top, vb, pbs[k], cs, ts);
                let at = m.buf.buf.len() - item * len;
                register_run(&mut m, top, vb, len, pbs[k], at, item);
            }
            k += len;
        }
        release(&mut m, &mut freed);
        m.freed = freed;
        m.buf.buf.len() >= self.inner.auto_commit
    }
}

/// Rewrites the checksums of blocks `b0..` (rewritten in place at `pbs`) in the map-run ops
/// of the uncommitted journal buffer that mapped them, if every block has one; `false` (and
/// nothing changed) otherwise. Equivalent to appending a map-run op with the new checksums:
/// the patched op is the newest for those blocks and maps them to the same physical blocks.
fn patch_in_place(
    m: &mut MetaState,
    layer: LayerId,
    b0: u64,
    pbs: &[u64],
    csums: &[u32],
    tags: Option<&[BlockTag]>,
) -> bool {
    let item = if tags.is_some() { 4 + TAG_LEN } else { 4 };
    let mut at: SmallVec<[usize; 32]> = SmallVec::with_capacity(pbs.len());
    // The op found for the previous block usually covers the next ones too (a chunk is mostly
    // one run): look it up again only when the block falls outside it.
    let mut last: Option<(u64, usize, u32, u64, usize)> = None;
    for (k, &pb) in pbs.iter().enumerate() {
        let vb = b0 + k as u64;
        let covers = |&(start, _, len, _, _): &(u64, usize, u32, u64, usize)| {
            vb >= start && vb - start < u64::from(len)
        };
        if !last.as_ref().is_some_and(covers) {
            last = m
                .patchable
                .range(..=(layer, vb))
                .next_back()
                // An entry of a lower layer may sort last: it is no hit.
                .filter(|(&(l, _), _)| l == layer)
                .map(|(&(_, start), &(pos, len, p0, size))| (start, pos, len, p0, size));
        }
        let hit = last.filter(covers).and_then(|(start, pos, _, p0, size)| {
            let i = vb - start;
            (size == item && p0 + i == pb).then_some(pos + item * i as usize)
        });
        match hit {
            Some(pos) => at.push(pos),
            None => return false,
        }
    }
    for (k, (pos, c)) in at.into_iter().zip(csums).enumerate() {
        m.buf.buf[pos..pos + 4].copy_from_slice(&c.to_le_bytes());
        if let Some(t) = tags {
            m.buf.buf[pos + 4..pos + item].copy_from_slice(&t[k]);
        }
    }
    true
}

/// Records a map-run op just appended to the journal buffer (its checksums at `at`) as the
/// newest for its blocks, dropping the older ones it overlaps.
fn register_run(
    m: &mut MetaState,
    layer: LayerId,
    vb: u64,
    len: usize,
    pblock: u64,
    at: usize,
    item: usize,
) {
    let end = vb + len as u64;
    let lo = (layer, vb.saturating_sub(CHUNK_BLOCKS));
    let stale: SmallVec<[(LayerId, u64); 4]> = m
        .patchable
        .range(lo..(layer, end))
        .filter(|(&(_, start), &(_, n, _, _))| start + u64::from(n) > vb)
        .map(|(&k, _)| k)
        .collect();
    for k in stale {
        m.patchable.remove(&k);
    }
    m.patchable
        .insert((layer, vb), (at, len as u32, pblock, item));
}

thread_local! {
    /// Ciphertext of the chunk being written (one per writer thread, reused: no allocation
    /// per write).
    static SEAL_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where one chunk's blocks go: a physical address per block, and the runs newly allocated for
/// it (empty when every block is rewritten in place).
struct Placed {
    pbs: SmallVec<[u64; 32]>,
    fresh: SmallVec<[Run; 4]>,
}

/// Blocks allocated for one write request before any of its maps changed. Chunks take from
/// the front, so a sequential request stays sequential on the device; what is left when the
/// request ends (blocks rewritten in place after all, or a failure) is freed: nothing maps it.
struct Reservation {
    runs: SmallVec<[Run; 4]>,
}

impl Reservation {
    /// Moves up to `n` blocks from the front into `out`; returns how many.
    fn take(&mut self, n: u64, out: &mut SmallVec<[Run; 4]>) -> u64 {
        let mut got = 0;
        while got < n && !self.runs.is_empty() {
            let r = &mut self.runs[0];
            let k = r.len.min(n - got);
            out.push(Run {
                device: r.device,
                start: r.start,
                len: k,
            });
            r.start += k;
            r.len -= k;
            got += k;
            if r.len == 0 {
                self.runs.remove(0);
            }
        }
        got
    }

    /// Puts runs taken by [`Reservation::take`] back at the front.
    fn give_back(&mut self, runs: SmallVec<[Run; 4]>) {
        for (i, r) in runs.into_iter().enumerate() {
            self.runs.insert(i, r);
        }
    }
}
