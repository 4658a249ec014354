//! The transmission phase without sockets: one request in, its reply bytes out.
//!
//! [`execute`] validates a request against the negotiated [`Session`] (command, flags, range,
//! read-only), runs it on the session's export ([`crate::backend::ExportIo`]) and appends the
//! reply to an [`OutBuf`]. It never blocks on the network, so the connection loop can batch
//! replies, and the fuzz target can drive it over a memory pool. The export was opened once at
//! negotiation: a request borrows it from the session (no clone, no lookup). Flushes (FLUSH,
//! and the durability half of FUA) are returned to the caller as [`Outcome::NeedsFlush`] so
//! the loop can run them off the request path.

use std::sync::atomic::{AtomicU64, Ordering};

use strata_block::IoError;

use crate::export::{MetaContext, STATE_CHANGED};
use crate::negotiate::Session;
use crate::proto::*;

/// Largest range one BLOCK_STATUS looks at: it bounds the backend's map walk (the engine's is
/// done under its metadata lock) and the reply to 65,536 descriptors. The spec lets a reply
/// cover less than asked; clients ask again from where it ended.
pub const MAX_STATUS_SPAN: u64 = 256 << 20;

/// A reusable reply buffer. Unlike a `Vec`, growing it for a READ does not zero the bytes the
/// engine is about to overwrite: `len` marks the valid prefix of an always-initialized `buf`.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    len: usize,
}

impl Put for OutBuf {
    fn put(&mut self, b: &[u8]) {
        self.tail(b.len()).copy_from_slice(b);
    }
}

impl OutBuf {
    /// An empty buffer with `cap` bytes ready.
    pub fn with_capacity(cap: usize) -> Self {
        OutBuf {
            buf: vec![0; cap],
            len: 0,
        }
    }

    /// Appends `n` bytes (contents unspecified) and returns them for the caller to fill.
    pub fn tail(&mut self, n: usize) -> &mut [u8] {
        let end = self.len + n;
        if end > self.buf.len() {
            self.buf.resize(end.max(self.buf.len() * 2), 0);
        }
        let s = self.len;
        self.len = end;
        &mut self.buf[s..end]
    }

    /// Bytes appended so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything after the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }

    /// The buffered bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Empties the buffer, keeping its memory (up to `keep` bytes: one huge READ must not pin
    /// its buffer for the life of the connection).
    pub fn clear(&mut self, keep: usize) {
        self.len = 0;
        if self.buf.len() > keep {
            self.buf.truncate(keep);
            self.buf.shrink_to_fit();
        }
    }
}

/// Counters of the data path, shared by every connection of a server. Relaxed atomics: they
/// are statistics, not synchronization.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (limit reached or server shutting down).
    pub refused: AtomicU64,
    /// Connections ended by a protocol violation.
    pub violations: AtomicU64,
    /// TLS handshakes completed (`NBD_OPT_STARTTLS`).
    pub tls_sessions: AtomicU64,
    /// TLS handshakes failed (no or a rejected client certificate, ...).
    pub tls_failures: AtomicU64,
    /// READ requests answered successfully.
    pub reads: AtomicU64,
    /// Bytes returned by READ.
    pub bytes_read: AtomicU64,
    /// WRITE requests answered successfully.
    pub writes: AtomicU64,
    /// Bytes written by WRITE.
    pub bytes_written: AtomicU64,
    /// Export flushes run (one may answer several FLUSH/FUA requests).
    pub flushes: AtomicU64,
    /// TRIM and WRITE_ZEROES requests answered successfully.
    pub zeroes: AtomicU64,
    /// BLOCK_STATUS requests answered successfully.
    pub block_status: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// TLS clients refused by [`crate::ServerConfig::admit`] after their handshake.
    pub admissions_refused: AtomicU64,
    /// Connections closed by a deadline: the handshake's, the idle timeout, or a peer that
    /// left replies unread for `write_timeout`.
    pub timeouts: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the caller must do after [`execute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply (success or error) is in the buffer.
    Done,
    /// The operation succeeded but its reply must wait for an export flush: call
    /// [`put_flush_reply`] with the flush's result.
    NeedsFlush,
    /// `NBD_CMD_DISC`: no reply; finish requests in flight and close.
    Disconnect,
}

/// The NBD error for a backend's error: the registry's errno for the error's stable code
/// ([`IoError::errno`]), so the engine, the server and the API share one vocabulary.
pub fn errno_of(e: &IoError) -> u32 {
    e.errno() as u32
}

fn reply_error(out: &mut OutBuf, s: &Session, handle: u64, errno: u32, msg: &str) {
    if s.structured {
        put_error_chunk(out, handle, errno, msg);
    } else {
        put_simple_reply(out, errno, handle);
    }
}

/// Appends the reply of a request that returned [`Outcome::NeedsFlush`].
pub fn put_flush_reply(
    out: &mut OutBuf,
    s: &Session,
    handle: u64,
    result: &Result<(), IoError>,
    stats: &Stats,
) {
    match result {
        Ok(()) => put_simple_reply(out, 0, handle),
        Err(e) => {
            bump(&stats.errors, 1);
            reply_error(out, s, handle, errno_of(e), &e.to_string());
        }
    }
}

/// Checks a request against the session; `Err((errno, message))` on rejection.
fn check(s: &Session, r: &Request) -> Result<(), (u32, &'static str)> {
    let known = matches!(
        r.cmd,
        CMD_READ
            | CMD_WRITE
            | CMD_FLUSH
            | CMD_TRIM
            | CMD_CACHE
            | CMD_WRITE_ZEROES
            | CMD_BLOCK_STATUS
    );
    if !known {
        return Err((EINVAL, "unknown command"));
    }
    if r.flags & !allowed_flags(r.cmd, s.structured) != 0 {
        return Err((EINVAL, "command flag not valid for this command"));
    }
    let writes = matches!(r.cmd, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && s.export.read_only {
        return Err((EPERM, "export is read-only"));
    }
    match r.cmd {
        CMD_FLUSH => {
            if r.offset != 0 || r.len != 0 {
                return Err((EINVAL, "flush offset and length must be zero"));
            }
            return Ok(());
        }
        CMD_BLOCK_STATUS if s.contexts.is_empty() => {
            return Err((EINVAL, "no metadata context was negotiated"));
        }
        CMD_READ if r.len > MAX_PAYLOAD => {
            return Err((EINVAL, "read longer than the maximum block size"));
        }
        CMD_CACHE => {}
        _ if r.len == 0 => return Err((EINVAL, "zero-length request")),
        _ => {}
    }
    let end = r.offset.checked_add(r.len as u64);
    if end.is_none_or(|e| e > s.export.size) {
        // The spec asks for ENOSPC on writes past the end, EINVAL otherwise.
        let e = if matches!(r.cmd, CMD_WRITE | CMD_WRITE_ZEROES) {
            ENOSPC
        } else {
            EINVAL
        };
        return Err((e, "request extends past the end of the export"));
    }
    Ok(())
}

/// Runs one request. `payload` is the WRITE data (empty otherwise).
pub fn execute(
    s: &Session,
    r: &Request,
    payload: &[u8],
    out: &mut OutBuf,
    stats: &Stats,
) -> Outcome {
    if r.cmd == CMD_DISC {
        return Outcome::Disconnect;
    }
    if let Err((errno, msg)) = check(s, r) {
        bump(&stats.errors, 1);
        reply_error(out, s, r.handle, errno, msg);
        return Outcome::Done;
    }
    let fua = r.flags & CMDF_FUA != 0;
    let io = &*s.export.io;
    let result = match r.cmd {
        CMD_READ => return read(s, r, out, stats),
        CMD_BLOCK_STATUS => return block_status(s, r, out, stats),
        CMD_FLUSH => return Outcome::NeedsFlush,
        CMD_CACHE => {
            put_simple_reply(out, 0, r.handle);
            return Outcome::Done;
        }
        // check() refused writes to read-only exports (and the backend refuses them too).
        CMD_WRITE => io.write(r.offset, payload).inspect(|()| {
            bump(&stats.writes, 1);
            bump(&stats.bytes_written, payload.len() as u64);
        }),
        CMD_TRIM => io.trim(r.offset, r.len as u64),
        CMD_WRITE_ZEROES => {
            let no_hole = r.flags & CMDF_NO_HOLE != 0;
            if no_hole && r.flags & CMDF_FAST_ZERO != 0 {
                // Writing zero blocks is as slow as writing data: FAST_ZERO must fail fast.
                bump(&stats.errors, 1);
                reply_error(
                    out,
                    s,
                    r.handle,
                    ENOTSUP,
                    "zeroing without holes is not fast",
                );
                return Outcome::Done;
            }
            io.write_zeroes(r.offset, r.len as u64, !no_hole)
        }
        _ => {
            // check() lets only the commands above through.
            bump(&stats.errors, 1);
            reply_error(out, s, r.handle, EINVAL, "unknown command");
            return Outcome::Done;
        }
    };
    match result {
        Ok(()) => {
            if matches!(r.cmd, CMD_TRIM | CMD_WRITE_ZEROES) {
                bump(&stats.zeroes, 1);
            }
            if fua {
                return Outcome::NeedsFlush;
            }
            put_simple_reply(out, 0, r.handle);
        }
        Err(e) => {
            bump(&stats.errors, 1);
            reply_error(out, s, r.handle, errno_of(&e), &e.to_string());
        }
    }
    Outcome::Done
}

fn read(s: &Session, r: &Request, out: &mut OutBuf, stats: &Stats) -> Outcome {
    let start = out.len();
    if s.structured {
        // One data chunk, so DF is always honoured.
        put_offset_data_header(out, r.handle, r.offset, r.len);
    } else {
        put_simple_reply(out, 0, r.handle);
    }
    let dst = out.tail(r.len as usize);
    match s.export.io.read(r.offset, dst) {
        Ok(()) => {
            bump(&stats.reads, 1);
            bump(&stats.bytes_read, r.len as u64);
        }
        Err(e) => {
            out.truncate(start);
            bump(&stats.errors, 1);
            reply_error(out, s, r.handle, errno_of(&e), &e.to_string());
        }
    }
    Outcome::Done
}

/// Bytes per data chunk of a READ answered piecewise: small enough that a piece read from the
/// page cache, checksummed and sent stays in the core's L2 cache throughout.
pub const READ_PIECE: u32 = 128 << 10;

/// Whether a READ is answered by [`stream_read`]: longer than one piece, so its reply is
/// never held whole in memory (a client that stops reading then pins at most one piece).
pub fn streamed(r: &Request) -> bool {
    r.cmd == CMD_READ && r.len > READ_PIECE
}

/// Whether [`stream_read`] answers `r` as a series of data chunks (structured replies without
/// `NBD_CMD_FLAG_DF`), each complete in itself, rather than as one frame — a simple reply, or
/// a single chunk — whose pieces the caller must send without another reply between them.
pub fn chunked(s: &Session, r: &Request) -> bool {
    s.structured && r.flags & CMDF_DF == 0
}

/// Answers a READ (one that is [`streamed`]) piece by piece, [`READ_PIECE`] bytes at a time,
/// handing each to `send` as soon as it is read and verified instead of reading the whole
/// request first: a megabyte read whole is out of the L2 cache by the time it is sent, and a
/// client that stops reading would pin all of it. `send` writes `out` whole and empties it.
///
/// [`chunked`] replies are data chunks at their offsets, the last one DONE; a failing piece
/// ends the reply with an error chunk. Otherwise the reply is one frame (simple reply header
/// or one data chunk, then the data): a failure on the first piece is still an ordinary error
/// reply, but once bytes of the frame have been sent it cannot be reported, and the result is
/// an error that must end the connection (the spec's way out). The request counts once for
/// QoS.
pub fn stream_read(
    s: &Session,
    r: &Request,
    out: &mut OutBuf,
    stats: &Stats,
    send: &mut dyn FnMut(&mut OutBuf) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Err((errno, msg)) = check(s, r) {
        bump(&stats.errors, 1);
        reply_error(out, s, r.handle, errno, msg);
        return send(out);
    }
    let export = &*s.export.io;
    let io = match export.qos() {
        Ok(io) => io,
        Err(e) => {
            bump(&stats.errors, 1);
            reply_error(out, s, r.handle, errno_of(&e), &e.to_string());
            return send(out);
        }
    };
    let began = std::time::Instant::now();
    if let Some(io) = &io {
        io.admit(u64::from(r.len));
    }
    let chunks = chunked(s, r);
    let frame_start = out.len();
    if !chunks {
        if s.structured {
            put_offset_data_header(out, r.handle, r.offset, r.len);
        } else {
            put_simple_reply(out, 0, r.handle);
        }
    }
    let mut done = 0u32;
    while done < r.len {
        let n = READ_PIECE.min(r.len - done);
        let off = r.offset + u64::from(done);
        let start = out.len();
        if chunks {
            let flags = if done + n == r.len {
                REPLY_FLAG_DONE
            } else {
                0
            };
            put_chunk_header(out, flags, REPLY_TYPE_OFFSET_DATA, r.handle, n + 8);
            out.put(&off.to_be_bytes());
        }
        let dst = out.tail(n as usize);
        if let Err(e) = export.read_unmetered(off, dst) {
            bump(&stats.errors, 1);
            if !chunks && done > 0 {
                out.truncate(frame_start);
                return Err(std::io::Error::other(format!(
                    "read failed after its reply began: {e}"
                )));
            }
            out.truncate(if chunks { start } else { frame_start });
            reply_error(out, s, r.handle, errno_of(&e), &e.to_string());
            return send(out);
        }
        done += n;
        if done == r.len {
            // Counted before the last piece goes out: a client that has its whole reply
            // finds the read in the volume's figures (and so does the next IOPS check).
            if let Some(io) = &io {
                io.record(false, u64::from(r.len), began.elapsed());
            }
            bump(&stats.reads, 1);
            bump(&stats.bytes_read, u64::from(r.len));
        }
        send(out)?;
    }
    Ok(())
}

fn block_status(s: &Session, r: &Request, out: &mut OutBuf, stats: &Stats) -> Outcome {
    let start = out.len();
    let len = (r.len as u64).min(MAX_STATUS_SPAN);
    let one = r.flags & CMDF_REQ_ONE != 0;
    let mut descs: Vec<(u32, u32)> = Vec::new();
    for (i, ctx) in s.contexts.iter().enumerate() {
        let runs = match ctx {
            MetaContext::BaseAllocation => s.export.io.allocation(r.offset, len).map(|v| {
                v.into_iter()
                    .map(|(l, a)| (l, if a { 0 } else { STATE_HOLE | STATE_ZERO }))
                    .collect::<Vec<_>>()
            }),
            MetaContext::ChangedSince { since, .. } => {
                s.export.io.changed(*since, r.offset, len).map(|v| {
                    v.into_iter()
                        .map(|(l, c)| (l, if c { STATE_CHANGED } else { 0 }))
                        .collect()
                })
            }
        };
        match runs {
            Ok(runs) => {
                descs.clear();
                // The backend's runs, cut to `len` <= MAX_STATUS_SPAN (so each fits 32 bits)
                // whatever it returned: a descriptor never reaches past the request.
                let mut left = len;
                for (l, f) in runs {
                    let l = l.min(left);
                    if l > 0 {
                        descs.push((l as u32, f));
                        left -= l;
                    }
                }
                if descs.is_empty() {
                    descs.push((len as u32, 0));
                }
                if one {
                    descs.truncate(1);
                }
                let done = i + 1 == s.contexts.len();
                put_block_status_chunk(out, r.handle, done, i as u32 + 1, &descs);
            }
            Err(e) => {
                out.truncate(start);
                bump(&stats.errors, 1);
                reply_error(out, s, r.handle, errno_of(&e), &e.to_string());
                return Outcome::Done;
            }
        }
    }
    bump(&stats.block_status, 1);
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ExportIo, Runs, SinceToken};
    use crate::export::Export;
    use std::sync::Arc;

    /// A backend whose allocation map overshoots every request (a bug the server must not
    /// pass on to the client).
    #[derive(Debug)]
    struct Overshoot;

    impl ExportIo for Overshoot {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read(&self, _: u64, dst: &mut [u8]) -> Result<(), IoError> {
            dst.fill(0);
            Ok(())
        }
        fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
            self.read(off, dst)
        }
        fn qos(&self) -> Result<Option<Arc<strata_block::VolumeIo>>, IoError> {
            Ok(None)
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<(), IoError> {
            Ok(())
        }
        fn trim(&self, _: u64, _: u64) -> Result<(), IoError> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), IoError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), IoError> {
            Ok(())
        }
        fn allocation(&self, _: u64, len: u64) -> Result<Runs, IoError> {
            Ok(vec![
                (len / 2, true),
                (u64::from(u32::MAX) + 5, false),
                (7, true),
            ])
        }
        fn since(&self, _: &str) -> Option<SinceToken> {
            None
        }
        fn since_all(&self) -> Vec<(String, SinceToken)> {
            Vec::new()
        }
        fn changed(&self, _: SinceToken, _: u64, _: u64) -> Result<Runs, IoError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn block_status_descriptors_never_reach_past_the_request() {
        let export = Export {
            name: "v".into(),
            io: Arc::new(Overshoot),
            size: 1 << 20,
            read_only: false,
        };
        let s = Session {
            flags: export.flags(true),
            export,
            structured: true,
            contexts: vec![MetaContext::BaseAllocation],
        };
        let r = Request {
            flags: 0,
            cmd: CMD_BLOCK_STATUS,
            handle: 9,
            offset: 4096,
            len: 8192,
        };
        let mut out = OutBuf::default();
        let stats = Stats::default();
        assert_eq!(execute(&s, &r, &[], &mut out, &stats), Outcome::Done);
        // One chunk: header, context id, then (length, flags) pairs.
        let b = out.as_slice();
        let payload = &b[CHUNK_HEADER_LEN + 4..];
        let descs: Vec<(u32, u32)> = payload
            .chunks_exact(8)
            .map(|d| {
                let l = u32::from_be_bytes(d[..4].try_into().unwrap());
                (l, u32::from_be_bytes(d[4..].try_into().unwrap()))
            })
            .collect();
        assert_eq!(descs, [(4096, 0), (4096, STATE_HOLE | STATE_ZERO)]);
    }

    #[test]
    fn engine_errors_get_the_registrys_errno() {
        // One vocabulary: the errno on the wire is the registry's for the error's code, and a
        // volume deleted under a connection is EIO (it was EINVAL in the engine's own map).
        let cases = [
            (IoError::NotFound("v".into()), EIO),
            (IoError::ReadOnly("s".into()), EPERM),
            (IoError::PoolFailed, EIO),
        ];
        for (e, want) in cases {
            assert_eq!(errno_of(&e), want, "{e}");
            assert_eq!(Some(errno_of(&e)), e.code().nbd_errno(), "{e}");
        }
    }
}
