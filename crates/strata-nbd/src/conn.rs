//! One connection's life on a socket: greeting, option haggling, then the transmission loop.
//!
//! # Concurrency model (why it is shaped like this: `docs/nbd.md`)
//! One thread per connection reads requests, runs them on the pool inline and appends their
//! replies to a batch buffer. The batch goes out in one `write` whenever the thread is about
//! to block on the socket (nothing complete left to parse) or the batch passes
//! [`OUT_HIGH_WATER`]. A client with 32 requests in flight thus costs one `read` and one
//! `write` per batch instead of per request, and no thread hand-off on the hot path.
//!
//! Flushes are the one slow operation (a pool commit syncs devices): FLUSH and the
//! durability half of FUA go to a per-connection flusher thread through a bounded queue, so
//! reads and writes behind a flush are answered before it (replies out of order). The
//! flusher coalesces every flush queued while it ran into one pool commit. Both threads write
//! through one mutex-guarded socket handle, each reply batch whole.
//!
//! READs and WRITEs of [`BIG_MIN`]..=[`BIG_MAX`] bytes are carried out leader/follower: the
//! thread that reads one (a WRITE with its payload) lets go of the socket to another thread of
//! the connection, then does the engine work and sends the reply, so the socket transfer of
//! one megabyte overlaps the engine's work on the next, and a WRITE's bytes are processed on
//! the core that received them. While such work runs, the socket's holder does not poll.
//!
//! Memory per connection is bounded: the input buffer holds at most one request and its
//! payload (<= [`MAX_PAYLOAD`]), the reply batch at most one READ past the high-water mark,
//! the flusher queue [`FLUSH_QUEUE`] handles, and each thread one [`BIG_MAX`] payload.
//!
//! # TLS
//! On TCP with TLS configured, `NBD_OPT_STARTTLS` switches the handshake to a rustls session
//! on the same socket ([`crate::tls`]). Inside TLS, transmission takes a simpler path: one
//! thread, blocking reads, every request (flushes included) run inline and answered in order,
//! replies batched the same way. A TLS session is one state machine for both directions, so
//! the reader, the flusher and the workers could not write to it without sharing a lock
//! with the reader's decryption; and polling the socket says nothing about whether a whole
//! TLS record, let alone a request, has arrived. The plain path is unchanged.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, BorrowedFd};
use rustix::net::RecvFlags;

use parking_lot::Mutex;
use strata_block::Pool;

use crate::negotiate::{HandshakeError, Negotiator, Session, Step, TlsMode};
use crate::proto::*;
use crate::server::Shared;
use crate::tls::{self, TlsStream};
use crate::transmit::{execute, piecewise, put_flush_reply, read_pieces, OutBuf, Outcome, Stats};

/// Reply batch size that forces a write before the input is drained.
pub const OUT_HIGH_WATER: usize = 256 << 10;
/// Input buffer kept between requests (grown for larger WRITE payloads, then shrunk back).
const IN_KEEP: usize = 2 << 20;
/// Reply buffer kept between batches.
const OUT_KEEP: usize = 2 << 20;
/// Flushes queued to the flusher before the reader blocks (backpressure).
pub const FLUSH_QUEUE: usize = 64;

/// A connected socket of either family.
#[derive(Debug)]
pub enum Stream {
    /// Unix domain socket.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a connection ended (for the log and the counters).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error or timeout.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Handshake violation.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Transmission violation.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The TLS handshake failed (no or a rejected client certificate, no common cipher, ...).
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
}

/// The handshake's byte channel: the socket, then TLS over it after `NBD_OPT_STARTTLS`.
enum Channel {
    Plain(Stream),
    Tls(Box<TlsStream>),
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(s) => s.read(buf),
            Channel::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(s) => s.write(buf),
            Channel::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Channel::Plain(_) => Ok(()),
            Channel::Tls(t) => t.flush(),
        }
    }
}

/// Serves one accepted connection to its end.
pub(crate) fn serve(stream: Stream, shared: &Shared) -> Result<(), ConnError> {
    let cfg = &shared.config;
    stream.set_read_timeout(Some(cfg.handshake_timeout))?;
    stream.set_write_timeout(Some(cfg.write_timeout))?;
    if let Stream::Tcp(t) = &stream {
        t.set_nodelay(true)?;
    }
    let (chan, session) = handshake(stream, shared)?;
    let Some(session) = session else {
        return Ok(());
    };
    match chan {
        Channel::Plain(stream) => {
            stream.set_read_timeout(None)?;
            transmission(stream, shared, &session)
        }
        Channel::Tls(t) => {
            t.sock.set_read_timeout(None)?;
            transmission_tls(*t, shared, &session)
        }
    }
}

fn handshake(stream: Stream, shared: &Shared) -> Result<(Channel, Option<Session>), ConnError> {
    // TLS is for TCP only: a Unix socket's peer is already known to the kernel.
    let tls_config = match (&stream, &shared.config.tls) {
        (Stream::Tcp(_), Some(c)) => Some(c.clone()),
        _ => None,
    };
    let mode = match &tls_config {
        None => TlsMode::Off,
        Some(_) if shared.config.tls_required => TlsMode::Required,
        Some(_) => TlsMode::Optional,
    };
    let mut neg = Negotiator::with_tls(mode);
    let mut chan = Channel::Plain(stream);
    chan.write_all(&greeting())?;
    let mut flags = [0u8; 4];
    chan.read_exact(&mut flags)?;
    neg.on_client_flags(&flags)?;
    let mut data = Vec::new();
    let mut out = Vec::new();
    loop {
        if shared.shutting_down.load(Ordering::Relaxed) {
            neg.set_shutting_down();
        }
        let mut h = [0u8; OPTION_HEADER_LEN];
        chan.read_exact(&mut h)?;
        let hdr = parse_option_header(&h)?;
        data.clear();
        data.resize(hdr.len as usize, 0);
        chan.read_exact(&mut data)?;
        out.clear();
        let step = neg.on_option(hdr, &data, &shared.catalog, &mut out);
        chan.write_all(&out)?;
        chan.flush()?;
        match step? {
            Step::Continue => {}
            Step::Close => {
                if let Channel::Tls(t) = &mut chan {
                    tls::close(t);
                }
                return Ok((chan, None));
            }
            Step::Transmission(s) => return Ok((chan, Some(*s))),
            Step::StartTls => {
                // The negotiator asks for this only on a plain TCP channel with TLS set up.
                let (Channel::Plain(Stream::Tcp(sock)), Some(config)) = (chan, &tls_config) else {
                    return Err(io::Error::other("STARTTLS on a channel without TLS").into());
                };
                match tls::accept(sock, config.clone()) {
                    Ok((t, identity)) => {
                        shared.stats.tls_sessions.fetch_add(1, Ordering::Relaxed);
                        neg.on_tls_established(identity)?;
                        chan = Channel::Tls(Box::new(t));
                    }
                    Err(e) => {
                        shared.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                        neg.on_tls_failed();
                        return Err(ConnError::Tls(e));
                    }
                }
            }
        }
    }
}

/// Input buffer: `buf[start..end]` is received and not yet consumed.
struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    fn avail(&self) -> usize {
        self.end - self.start
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > IN_KEEP {
                self.buf.truncate(IN_KEEP);
                self.buf.shrink_to_fit();
            }
        }
    }

    /// Reads until at least `need` bytes are available; `false` on end of stream. Before
    /// blocking, polls the socket without blocking for up to `spin`: a thread that sleeps
    /// costs a wake-up (and, in a VM, an interrupt to a halted CPU) on the client's next
    /// send, which is most of a 4 KiB request's cost at high queue depth.
    fn fill(&mut self, s: &mut Stream, need: usize, spin: Duration) -> io::Result<bool> {
        self.make_room(need);
        let mut spin_until: Option<Instant> = None;
        while self.avail() < need {
            if !spin.is_zero() {
                let buf = &mut self.buf[self.end..];
                match rustix::net::recv(s.as_fd(), buf, RecvFlags::DONTWAIT).map(|(n, _)| n) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        self.end += n;
                        continue;
                    }
                    Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {
                        let now = Instant::now();
                        let until = *spin_until.get_or_insert(now + spin);
                        if now < until {
                            std::hint::spin_loop();
                            continue;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match s.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Makes room for `need` bytes from `start`.
    fn make_room(&mut self, need: usize) {
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
        }
    }

    /// [`InBuf::fill`] for the TLS path: plain blocking reads of decrypted bytes. A peer that
    /// closes TCP without a TLS close_notify ends the stream like one that sends it.
    fn fill_blocking(&mut self, r: &mut impl Read, need: usize) -> io::Result<bool> {
        self.make_room(need);
        while self.avail() < need {
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

struct Flusher {
    tx: SyncSender<u64>,
    thread: JoinHandle<()>,
}

fn send_batch(writer: &Mutex<Stream>, out: &mut OutBuf) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = writer.lock().write_all(out.as_slice());
    out.clear(OUT_KEEP);
    r
}

fn flusher(
    rx: Receiver<u64>,
    pool: Pool,
    session: Session,
    writer: Arc<Mutex<Stream>>,
    stats: Arc<Stats>,
) {
    let mut handles = Vec::with_capacity(FLUSH_QUEUE);
    let mut out = OutBuf::with_capacity(16 * FLUSH_QUEUE);
    while let Ok(h) = rx.recv() {
        handles.push(h);
        // Every flush queued now was sent after the writes it covers completed: one commit
        // answers them all.
        while let Ok(h) = rx.try_recv() {
            handles.push(h);
        }
        let r = pool.flush();
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        for h in handles.drain(..) {
            put_flush_reply(&mut out, &session, h, &r, &stats);
        }
        if send_batch(&writer, &mut out).is_err() {
            writer.lock().shutdown();
            return;
        }
    }
}

/// A READ or WRITE this large (and at most [`BIG_MAX`]) is carried out after the thread that
/// read it hands the socket to another thread of the connection (see [`transmission`]).
pub const BIG_MIN: u32 = 256 << 10;
/// Larger requests run without handing the socket on: it bounds each thread's payload
/// buffer to 4 MiB.
pub const BIG_MAX: u32 = 4 << 20;
/// Threads per connection beside its first, started at its first large request.
const BIG_WORKERS: usize = 2;

fn is_big(r: &Request) -> bool {
    matches!(r.cmd, CMD_READ | CMD_WRITE) && (BIG_MIN..=BIG_MAX).contains(&r.len)
}

/// The right to read the connection's socket, and what goes with it: the input buffer, the
/// batch of replies to small requests, the flusher. One thread holds it at a time.
struct Role {
    stream: Stream,
    inb: InBuf,
    out: OutBuf,
    flush: Option<Flusher>,
    /// Set by the thread that saw the connection end; every thread then returns.
    end: Option<Result<(), ConnError>>,
}

/// What the threads of one connection share.
struct Conn<'a> {
    shared: &'a Shared,
    session: &'a Session,
    writer: Arc<Mutex<Stream>>,
    role: Mutex<Role>,
    /// Large requests being carried out without the role. While any is, the role holder
    /// does not spin on the socket: those threads need the CPU more than a request needs a
    /// fast pick-up.
    busy: AtomicUsize,
}

/// A large request taken off the socket, to carry out without the role.
struct BigWork {
    req: Request,
}

/// Transmission on a plain socket: leader/follower. Whichever thread holds the [`Role`]
/// reads requests and runs small ones inline, batching their replies. A large READ or WRITE
/// (a WRITE's payload read first, into the thread's own buffer) is carried out after the
/// thread lets go of the role, so another thread reads on while this one checksums, copies
/// into the page cache or sends a megabyte. The bytes of a WRITE thus land in the cache of
/// the core that processes them (a payload received on one core and written out on another
/// costs about twice the page-cache copy), and the socket never waits on the engine.
fn transmission(stream: Stream, shared: &Shared, session: &Session) -> Result<(), ConnError> {
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let conn = Conn {
        shared,
        session,
        writer,
        role: Mutex::new(Role {
            stream,
            inb: InBuf {
                buf: vec![0; 256 << 10],
                start: 0,
                end: 0,
            },
            out: OutBuf::with_capacity(256 << 10),
            flush: None,
            end: None,
        }),
        busy: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        let mut payload = Vec::new();
        let mut out = OutBuf::with_capacity(0);
        while let Some(work) = lead(&conn, &mut payload) {
            if workers.is_empty() {
                for _ in 0..BIG_WORKERS {
                    let conn = &conn;
                    let w = std::thread::Builder::new()
                        .name("nbd-bigio".into())
                        .spawn_scoped(scope, move || follow(conn));
                    match w {
                        Ok(w) => workers.push(w),
                        Err(e) => {
                            conn.role.lock().end.get_or_insert(Err(e.into()));
                            break;
                        }
                    }
                }
            }
            if !carry_out(&conn, work, &payload, &mut out) {
                // The reply could not be sent: end the others' reads and writes too.
                conn.writer.lock().shutdown();
                break;
            }
        }
    });
    // Draining: answer what is buffered, let the flusher finish, then close.
    let mut role = conn.role.into_inner();
    let _ = send_batch(&conn.writer, &mut role.out);
    if let Some(f) = role.flush.take() {
        drop(f.tx);
        let _ = f.thread.join();
    }
    role.stream.shutdown();
    role.end.unwrap_or(Ok(()))
}

/// A worker thread of the connection: takes the role in turn and carries out large requests.
fn follow(conn: &Conn<'_>) {
    let mut payload = Vec::new();
    let mut out = OutBuf::with_capacity(0);
    while let Some(work) = lead(conn, &mut payload) {
        if !carry_out(conn, work, &payload, &mut out) {
            conn.writer.lock().shutdown();
            return;
        }
    }
}

/// Carries out a large request and sends its reply; `false` if the reply could not be sent.
fn carry_out(conn: &Conn<'_>, work: BigWork, payload: &[u8], out: &mut OutBuf) -> bool {
    let (pool, session, stats) = (
        conn.shared.catalog.pool(),
        conn.session,
        &*conn.shared.stats,
    );
    let req = &work.req;
    if piecewise(session, req) {
        let mut send = |o: &mut OutBuf| {
            let r = conn.writer.lock().write_all(o.as_slice());
            o.clear(BIG_MAX as usize + 64);
            r
        };
        let sent = read_pieces(pool, session, req, out, stats, &mut send);
        out.clear(BIG_MAX as usize + 64);
        conn.busy.fetch_sub(1, Ordering::Relaxed);
        return sent.is_ok();
    }
    let data = if req.cmd == CMD_WRITE {
        &payload[..req.len as usize]
    } else {
        &[][..]
    };
    if execute(pool, session, req, data, out, stats) == Outcome::NeedsFlush {
        let r = pool.flush();
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        put_flush_reply(out, session, req.handle, &r, stats);
    }
    let sent = conn.writer.lock().write_all(out.as_slice());
    out.clear(BIG_MAX as usize + 64);
    conn.busy.fetch_sub(1, Ordering::Relaxed);
    sent.is_ok()
}

/// Holds the role until a large request comes (returned, its WRITE payload in `payload`) or
/// the connection ends (`None`).
fn lead(conn: &Conn<'_>, payload: &mut Vec<u8>) -> Option<BigWork> {
    let mut guard = conn.role.lock();
    if guard.end.is_some() {
        return None;
    }
    match lead_inner(conn, &mut guard, payload) {
        Ok(Some(w)) => {
            conn.busy.fetch_add(1, Ordering::Relaxed);
            // Small replies batched so far go now: nobody may take the role for a while.
            let Role { out, .. } = &mut *guard;
            if send_batch(&conn.writer, out).is_err() {
                conn.busy.fetch_sub(1, Ordering::Relaxed);
                guard.end = Some(Ok(()));
                guard.stream.shutdown();
                return None;
            }
            Some(w)
        }
        Ok(None) => {
            guard.end = Some(Ok(()));
            None
        }
        Err(e) => {
            guard.end = Some(Err(e));
            // Wake the others out of their reads and writes.
            guard.stream.shutdown();
            None
        }
    }
}

fn lead_inner(
    conn: &Conn<'_>,
    role: &mut Role,
    payload: &mut Vec<u8>,
) -> Result<Option<BigWork>, ConnError> {
    let shared = conn.shared;
    let pool = shared.catalog.pool();
    let Role {
        stream,
        inb,
        out,
        flush,
        ..
    } = role;
    loop {
        let spin = if conn.busy.load(Ordering::Relaxed) > 0 {
            Duration::ZERO
        } else {
            shared.config.poll_spin
        };
        if inb.avail() < REQUEST_LEN {
            send_batch(&conn.writer, out)?;
            if !inb.fill(stream, REQUEST_LEN, spin)? {
                return Ok(None);
            }
        }
        let req = parse_request(&inb.data()[..REQUEST_LEN])?;
        if is_big(&req) {
            if req.cmd == CMD_WRITE {
                let len = req.len as usize;
                if payload.len() < len {
                    payload.resize(len, 0);
                }
                // The part already received, then the rest straight from the socket.
                let have = (inb.avail() - REQUEST_LEN).min(len);
                payload[..have].copy_from_slice(&inb.data()[REQUEST_LEN..REQUEST_LEN + have]);
                inb.consume(REQUEST_LEN + have);
                if have < len {
                    send_batch(&conn.writer, out)?;
                    match stream.read_exact(&mut payload[have..len]) {
                        Ok(()) => {}
                        // The client went away in the middle of a request.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            } else {
                inb.consume(REQUEST_LEN);
            }
            return Ok(Some(BigWork { req }));
        }
        let total = REQUEST_LEN + req.payload_len() as usize;
        if inb.avail() < total {
            send_batch(&conn.writer, out)?;
            if !inb.fill(stream, total, spin)? {
                // The client went away in the middle of a request.
                return Ok(None);
            }
        }
        let data = &inb.data()[REQUEST_LEN..total];
        match execute(pool, conn.session, &req, data, out, &shared.stats) {
            Outcome::Done => {}
            Outcome::NeedsFlush => {
                let f = match flush {
                    Some(f) => f,
                    None => flush.insert(spawn_flusher(shared, conn.session, &conn.writer)?),
                };
                if f.tx.send(req.handle).is_err() {
                    // The flusher could not write: the connection is gone.
                    return Ok(None);
                }
            }
            Outcome::Disconnect => {
                inb.consume(total);
                return Ok(None);
            }
        }
        inb.consume(total);
        if out.len() >= OUT_HIGH_WATER {
            send_batch(&conn.writer, out)?;
        }
    }
}

fn spawn_flusher(
    shared: &Shared,
    session: &Session,
    writer: &Arc<Mutex<Stream>>,
) -> io::Result<Flusher> {
    let (tx, rx) = sync_channel(FLUSH_QUEUE);
    let pool = shared.catalog.pool().clone();
    let session = session.clone();
    let writer = writer.clone();
    let stats = shared.stats.clone();
    let thread = std::thread::Builder::new()
        .name("nbd-flush".into())
        .spawn(move || flusher(rx, pool, session, writer, stats))?;
    Ok(Flusher { tx, thread })
}

/// Sends a reply batch through TLS (encrypts, writes every record).
fn send_tls(s: &mut TlsStream, out: &mut OutBuf) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = s.write_all(out.as_slice()).and_then(|()| s.flush());
    out.clear(OUT_KEEP);
    r
}

/// Transmission inside TLS (see the module doc): the plain loop's batching and memory bounds,
/// without its threads and polling. Flushes run inline, so replies go out in request order.
fn transmission_tls(mut s: TlsStream, shared: &Shared, session: &Session) -> Result<(), ConnError> {
    let pool = shared.catalog.pool();
    let mut inb = InBuf {
        buf: vec![0; 256 << 10],
        start: 0,
        end: 0,
    };
    let mut out = OutBuf::with_capacity(256 << 10);
    let result: Result<(), ConnError> = loop {
        if inb.avail() < REQUEST_LEN {
            if let Err(e) = send_tls(&mut s, &mut out) {
                break Err(e.into());
            }
            match inb.fill_blocking(&mut s, REQUEST_LEN) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        }
        let req = match parse_request(&inb.data()[..REQUEST_LEN]) {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        let total = REQUEST_LEN + req.payload_len() as usize;
        if inb.avail() < total {
            if let Err(e) = send_tls(&mut s, &mut out) {
                break Err(e.into());
            }
            match inb.fill_blocking(&mut s, total) {
                Ok(true) => {}
                // The client went away in the middle of a request.
                Ok(false) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        }
        let payload = &inb.data()[REQUEST_LEN..total];
        match execute(pool, session, &req, payload, &mut out, &shared.stats) {
            Outcome::Done => {}
            Outcome::NeedsFlush => {
                let r = pool.flush();
                shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
                put_flush_reply(&mut out, session, req.handle, &r, &shared.stats);
            }
            Outcome::Disconnect => {
                inb.consume(total);
                break Ok(());
            }
        }
        inb.consume(total);
        if out.len() >= OUT_HIGH_WATER {
            if let Err(e) = send_tls(&mut s, &mut out) {
                break Err(e.into());
            }
        }
    };
    // Draining: answer what is buffered, shut TLS down, close.
    let _ = send_tls(&mut s, &mut out);
    tls::close(&mut s);
    let _ = s.sock.shutdown(Shutdown::Both);
    result
}
