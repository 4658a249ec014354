//! The write path, write-zeroes and trim (see `write_chunk` for the steps of one chunk).

use std::sync::atomic::Ordering;

use smallvec::SmallVec;
use strata_types::DeviceClass;

use crate::alloc::Run;
use crate::error::IoError;
use crate::meta::{encode_map_run, split_paddr, LayerId, Op, VolumeId};

use super::commit::release;
use super::read::{checksum, ReadFail};
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
        let (top, class) = self.writable(volume, offset, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let off = offset + done as u64;
            let n = ((CHUNK_BYTES - off % CHUNK_BYTES) as usize).min(data.len() - done);
            self.write_chunk(volume, top, class, off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
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
    fn write_chunk(
        &self,
        volume: VolumeId,
        top: LayerId,
        class: Option<DeviceClass>,
        off: u64,
        data: &[u8],
    ) -> Result<(), IoError> {
        let (b0, b1) = (off / BS, (off + data.len() as u64).div_ceil(BS));
        let n = (b1 - b0) as usize;
        let _s = self.stripe(volume.0, b0 / CHUNK_BLOCKS).write();
        // Partial blocks are merged with their old contents in a scratch buffer.
        let mut scratch: SmallVec<[u8; 2 * BSU]>;
        let src: &[u8] = if off.is_multiple_of(BS) && (data.len() as u64).is_multiple_of(BS) {
            data
        } else {
            scratch = smallvec::smallvec![0u8; n * BSU];
            let t = Target::Volume(volume);
            let fill = |vb: u64, dst: &mut [u8]| -> Result<(), IoError> {
                let e = self.inner.meta.lock().state.resolve(top, vb);
                match e {
                    Some(e) if !e.is_zero() => {
                        let mut blk = [0u8; BSU];
                        // Writers hold the stripe: the mapping cannot change under this read.
                        self.read_verified(vb, e, &mut blk).map_err(|f| match f {
                            ReadFail::Device(e) => e,
                            ReadFail::Mismatch(vb, e) => self.checksum_error(t, vb, e.pblock),
                        })?;
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
            &scratch
        };
        let csums: SmallVec<[u32; 32]> = src.chunks(BSU).map(checksum).collect();
        // Where each block goes. A block of the top layer written in the current epoch is
        // referenced by no durable metadata, so it is overwritten in place; every other block
        // goes to a newly allocated one (redirect-on-write). The epoch gate, held from this
        // decision until the map update, keeps a commit from making such a block durable
        // while it is being rewritten.
        let mut attempt = 0;
        let (_eg, pbs, fresh_runs) = loop {
            let eg = self.inner.epoch_gate.read();
            let mut m = self.inner.meta.lock();
            let epoch = m.state.epoch;
            let layer = &m.state.layers[&top];
            let mut pbs: SmallVec<[u64; 32]> = SmallVec::with_capacity(n);
            let mut need = 0u64;
            for vb in b0..b1 {
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
            // metadata, are free at once. Without the space, they are rewritten in place.
            let scattered = n > 1
                && (need as usize) < n
                && !pbs.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
            if scattered
                && m.state.entries + n as u64 <= m.max_entries
                && m.alloc.alloc(n as u64, class, &mut runs)
            {
                pbs.fill(u64::MAX);
                need = n as u64;
            }
            let room = m.state.entries + need <= m.max_entries;
            if need == 0 || !runs.is_empty() || (room && m.alloc.alloc(need, class, &mut runs)) {
                let mut next = runs
                    .iter()
                    .flat_map(|r| (0..r.len).map(move |i| r.paddr() + i));
                for p in pbs.iter_mut().filter(|p| **p == u64::MAX) {
                    *p = next.next().expect("allocated as many as needed");
                }
                break (eg, pbs, runs);
            }
            let pending = !m.pending_free.is_empty();
            drop(m);
            drop(eg);
            if attempt == 1 || !pending {
                let m = self.inner.meta.lock();
                let name = m
                    .state
                    .volumes
                    .get(&volume)
                    .map_or_else(|| volume.0.to_string(), |v| v.name.clone());
                return Err(IoError::OutOfSpace { target: name });
            }
            attempt += 1;
            // Only frees that are not yet durable stand in the way: commit them.
            self.commit()?;
        };
        // Write runs of blocks that are consecutive on a device, one call each.
        let mut k = 0usize;
        while k < n {
            let mut len = 1;
            while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                len += 1;
            }
            let (d, b) = split_paddr(pbs[k]);
            let dev = &self.inner.devs[d];
            let bytes = &src[k * BSU..(k + len) * BSU];
            if let Err(source) = dev.dev.write_at(bytes, dev.sb.data_offset + b * BS) {
                let mut m = self.inner.meta.lock();
                for r in &fresh_runs {
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
        // Point the map at it.
        let need_commit = {
            let mut m = self.inner.meta.lock();
            let mut freed = std::mem::take(&mut m.freed);
            let patched = fresh_runs.is_empty() && patch_in_place(&mut m, top, b0, &pbs, &csums);
            let mut k = 0usize;
            while k < n {
                let mut len = 1;
                while k + len < n && pbs[k + len] == pbs[k] + len as u64 {
                    len += 1;
                }
                let cs = &csums[k..k + len];
                let vb = b0 + k as u64;
                m.state
                    .map_run(top, vb, pbs[k], cs, &mut freed)
                    .expect("validated run");
                if !patched {
                    encode_map_run(&mut m.buf, top, vb, pbs[k], cs);
                    let at = m.buf.buf.len() - 4 * len;
                    register_run(&mut m, top, vb, len, pbs[k], at);
                }
                k += len;
            }
            release(&mut m, &mut freed);
            m.freed = freed;
            m.buf.buf.len() >= self.inner.auto_commit
        };
        drop(_eg);
        if need_commit {
            self.commit()?;
        }
        Ok(())
    }
}

/// Rewrites the checksums of blocks `b0..` (rewritten in place at `pbs`) in the map-run ops
/// of the uncommitted journal buffer that mapped them, if every block has one; `false` (and
/// nothing changed) otherwise. Equivalent to appending a map-run op with the new checksums:
/// the patched op is the newest for those blocks and maps them to the same physical blocks.
fn patch_in_place(m: &mut MetaState, layer: LayerId, b0: u64, pbs: &[u64], csums: &[u32]) -> bool {
    let mut at: SmallVec<[usize; 32]> = SmallVec::with_capacity(pbs.len());
    for (k, &pb) in pbs.iter().enumerate() {
        let vb = b0 + k as u64;
        let hit = m.patchable.range(..=(layer, vb)).next_back().and_then(
            |(&(l, start), &(pos, len, p0))| {
                // An entry of a lower layer may sort last: it is no hit.
                let i = vb.checked_sub(start).filter(|_| l == layer)?;
                (i < u64::from(len) && p0 + i == pb).then_some(pos + 4 * i as usize)
            },
        );
        match hit {
            Some(pos) => at.push(pos),
            None => return false,
        }
    }
    for (pos, c) in at.into_iter().zip(csums) {
        m.buf.buf[pos..pos + 4].copy_from_slice(&c.to_le_bytes());
    }
    true
}

/// Records a map-run op just appended to the journal buffer (its checksums at `at`) as the
/// newest for its blocks, dropping the older ones it overlaps.
fn register_run(m: &mut MetaState, layer: LayerId, vb: u64, len: usize, pblock: u64, at: usize) {
    let end = vb + len as u64;
    let lo = (layer, vb.saturating_sub(CHUNK_BLOCKS));
    let stale: SmallVec<[(LayerId, u64); 4]> = m
        .patchable
        .range(lo..(layer, end))
        .filter(|(&(_, start), &(_, n, _))| start + u64::from(n) > vb)
        .map(|(&k, _)| k)
        .collect();
    for k in stale {
        m.patchable.remove(&k);
    }
    m.patchable.insert((layer, vb), (at, len as u32, pblock));
}
