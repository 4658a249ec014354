//! One connection's life on a socket: greeting, option haggling (TLS included), then the
//! transmission loop, and its way out through the state table ([`crate::state`]).
//!
//! # Concurrency model (why it is shaped like this: `docs/nbd.md`)
//! One thread per connection reads requests, runs them inline on the session's export (opened
//! once, [`crate::backend`]) and appends their replies to a batch buffer, through the framing
//! loop every path shares ([`crate::framing::serve_requests`]). The batch goes out in one
//! `write` whenever the thread is about to block on the socket (nothing complete left to
//! parse) or the batch passes [`OUT_HIGH_WATER`]. A client with 32 requests in flight thus
//! costs one `read` and one `write` per batch instead of per request, and no thread hand-off
//! on the hot path.
//!
//! Flushes are the one slow operation (an engine pool's commit syncs devices): FLUSH and the
//! durability half of FUA go to a per-connection flusher thread through a bounded queue, so
//! reads and writes behind a flush are answered before it (replies out of order). The
//! flusher coalesces every flush queued while it ran into one call of the export's `flush`.
//! Both threads write through one mutex-guarded socket handle, each reply batch whole.
//!
//! READs and WRITEs of [`BIG_MIN`]..=[`BIG_MAX`] bytes are carried out leader/follower: the
//! thread that reads one (a WRITE with its payload) lets go of the socket to another thread of
//! the connection, then does the engine work and sends the reply, so the socket transfer of
//! one megabyte overlaps the engine's work on the next, and a WRITE's bytes are processed on
//! the core that received them. While such work runs, the socket's holder does not poll.
//!
//! Memory per connection is bounded: the input buffer holds at most one request and its
//! payload (<= [`MAX_PAYLOAD`]), the reply batch at most [`OUT_HIGH_WATER`] plus one small
//! reply, a READ longer than [`crate::transmit::READ_PIECE`] at most one piece per thread (it
//! is read and sent piece by piece), the flusher queue [`FLUSH_QUEUE`] handles, and each
//! thread one [`BIG_MAX`] WRITE payload. A peer that stops reading blocks the sends, which
//! stops the reading of its requests; after `write_timeout` without a byte drained the socket
//! write fails ([`crate::socket`]) and the connection ends.
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
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fd::AsFd;
use rustix::net::RecvFlags;

use parking_lot::Mutex;

use crate::config::PeerInfo;
use crate::context::Shared;
pub use crate::framing::OUT_HIGH_WATER;
use crate::framing::{serve_requests, Exit, FramingError, InBuf, Take, Transport, OUT_KEEP};
use crate::negotiate::{HandshakeError, Negotiator, Session, Step, TlsMode};
use crate::proto::*;
use crate::registry::SessionInfo;
use crate::socket::Stream;
use crate::state::{ConnState, Event};
use crate::tls::{self, TlsStream};
use crate::transmit::{chunked, execute, put_flush_reply, stream_read, OutBuf, Outcome, Stats};

/// Flushes queued to the flusher before the reader blocks (backpressure).
pub const FLUSH_QUEUE: usize = 64;
/// Reply buffer a thread keeps for streamed READ pieces.
const PIECE_KEEP: usize = 256 << 10;

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
    /// A move the state table does not allow (a bug: the loops make only legal ones).
    #[error(transparent)]
    Illegal(#[from] crate::state::IllegalTransition),
}

impl From<FramingError> for ConnError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::Io(e) => ConnError::Io(e),
            FramingError::Proto(e) => ConnError::Proto(e),
        }
    }
}

impl ConnError {
    /// Whether a deadline ended the connection.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnError::Io(e) | ConnError::Tls(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

/// What the server knows of an accepted connection.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    /// Its id in the registry.
    pub(crate) id: u64,
    /// The identity its listener vouches for.
    pub(crate) identity: Option<String>,
    /// Its Unix listener's path.
    pub(crate) listener: Option<PathBuf>,
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
pub(crate) fn serve(mut stream: Stream, shared: &Shared, acc: &Accepted) -> Result<(), ConnError> {
    let cfg = &shared.config;
    // One deadline for the whole handshake: options, the TLS handshake, options inside TLS.
    stream.set_read_deadline(Some(Instant::now() + cfg.handshake_timeout))?;
    stream.set_nodelay()?;
    let (chan, session) = handshake(stream, shared, acc)?;
    let Some(session) = session else {
        return Ok(());
    };
    let idle = (!cfg.idle_timeout.is_zero()).then_some(cfg.idle_timeout);
    match chan {
        Channel::Plain(mut stream) => {
            stream.set_read_deadline(None)?;
            stream.set_read_timeout(idle)?;
            transmission(stream, shared, &session)
        }
        Channel::Tls(mut t) => {
            t.sock.set_read_deadline(None)?;
            t.sock.set_read_timeout(idle)?;
            transmission_tls(*t, shared, &session)
        }
    }
}

fn handshake(
    stream: Stream,
    shared: &Shared,
    acc: &Accepted,
) -> Result<(Channel, Option<Session>), ConnError> {
    // TLS is for TCP only: a Unix socket's peer is already known to the kernel.
    let tls_config = match &shared.config.tls {
        Some(c) if stream.is_tcp() => Some(c.clone()),
        _ => None,
    };
    let mode = match &tls_config {
        None => TlsMode::Off,
        Some(_) if shared.config.tls_required => TlsMode::Required,
        Some(_) => TlsMode::Optional,
    };
    let source = stream.peer_addr();
    let mut neg = Negotiator::with_tls(mode);
    neg.set_identity(acc.identity.clone());
    let mut cert_serial = None;
    let chan = Channel::Plain(stream);
    let r = handshake_loop(chan, &mut neg, &mut cert_serial, shared, tls_config, source);
    let (mut chan, step) = match r {
        Ok(r) => r,
        Err(e) => {
            if e.is_timeout() {
                let _ = neg.state().on(Event::Timeout);
            }
            return Err(e);
        }
    };
    match step {
        None => {
            if let Channel::Tls(t) = &mut chan {
                tls::close(t);
            }
            Ok((chan, None))
        }
        Some((session, out)) => {
            let export = &session.export.name;
            let info = SessionInfo {
                export: export.clone(),
                volume: export.split('@').next().unwrap_or(export).to_string(),
                identity: neg.identity().map(str::to_string),
                cert_serial,
                source,
                listener: acc.listener.clone(),
            };
            let cfg = &shared.config;
            if !shared
                .registry
                .enter_transmission(acc.id, info, cfg.max_connections)
            {
                // No session slot: close instead of answering GO (EXPORT_NAME cannot carry
                // an error, and a client told "go" would take the close for a crash).
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                neg.state().on(Event::Refused)?;
                if let Channel::Tls(t) = &mut chan {
                    tls::close(t);
                }
                return Ok((chan, None));
            }
            chan.write_all(&out)?;
            chan.flush()?;
            Ok((chan, Some(session)))
        }
    }
}

/// The option loop, over the channel it returns. `None`: the connection closes; `Some`: the
/// session and the reply to its `GO`/`EXPORT_NAME`, not yet sent (the caller first takes a
/// session slot).
type Negotiated = (Channel, Option<(Session, Vec<u8>)>);

fn handshake_loop(
    mut chan: Channel,
    neg: &mut Negotiator,
    cert_serial: &mut Option<String>,
    shared: &Shared,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    source: Option<std::net::SocketAddr>,
) -> Result<Negotiated, ConnError> {
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
        if let Ok(Step::Transmission(s)) = step {
            return Ok((chan, Some((*s, out))));
        }
        chan.write_all(&out)?;
        chan.flush()?;
        match step? {
            Step::Continue => {}
            Step::Transmission(_) => unreachable!("returned above"),
            Step::Close => return Ok((chan, None)),
            Step::StartTls => {
                // The negotiator asks for this only on a plain TCP channel with TLS set up.
                let (Channel::Plain(sock), Some(config)) = (chan, &tls_config) else {
                    return Err(io::Error::other("STARTTLS on a channel without TLS").into());
                };
                match tls::accept(sock, config.clone()) {
                    Ok((t, cert)) => {
                        shared.stats.tls_sessions.fetch_add(1, Ordering::Relaxed);
                        chan = Channel::Tls(Box::new(t));
                        let peer = PeerInfo {
                            identity: cert.identity.clone(),
                            cert_serial: cert.serial.clone(),
                            not_after: cert.not_after,
                            source,
                        };
                        if let Some(admit) = &shared.config.admit {
                            if !admit.allows(&peer) {
                                shared
                                    .stats
                                    .admissions_refused
                                    .fetch_add(1, Ordering::Relaxed);
                                neg.on_tls_refused();
                                return Ok((chan, None));
                            }
                        }
                        *cert_serial = cert.serial;
                        neg.on_tls_established(cert.identity)?;
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

/// The way out of transmission for how the framing loop ended.
fn exit_event(r: &Result<Event, ConnError>, shared: &Shared) -> Event {
    if shared.shutting_down.load(Ordering::Relaxed) {
        return Event::Shutdown;
    }
    match r {
        Ok(ev) => *ev,
        Err(e) if e.is_timeout() => Event::Timeout,
        Err(ConnError::Proto(_)) => Event::Violation,
        Err(_) => Event::PeerGone,
    }
}

/// Reads until at least `need` bytes are available; `false` on end of stream. Before
/// blocking, polls the socket without blocking for up to `spin`: a thread that sleeps costs a
/// wake-up (and, in a VM, an interrupt to a halted CPU) on the client's next send, which is
/// most of a 4 KiB request's cost at high queue depth. A blocking read that times out (the
/// idle timeout) ends the connection only if no large request of it is being carried out.
fn fill_socket(
    inb: &mut InBuf,
    s: &mut Stream,
    need: usize,
    spin: Duration,
    busy: &AtomicUsize,
) -> io::Result<bool> {
    inb.make_room(need);
    let mut spin_until: Option<Instant> = None;
    while inb.avail() < need {
        if !spin.is_zero() {
            match rustix::net::recv(s.as_fd(), inb.spare(), RecvFlags::DONTWAIT).map(|(n, _)| n) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    inb.end += n;
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
        match s.read(inb.spare()) {
            Ok(0) => return Ok(false),
            Ok(n) => inb.end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if busy.load(Ordering::Relaxed) == 0 {
                    return Err(idle());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn idle() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no request within the idle timeout",
    )
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

fn flusher(rx: Receiver<u64>, session: Session, writer: Arc<Mutex<Stream>>, stats: Arc<Stats>) {
    let mut handles = Vec::with_capacity(FLUSH_QUEUE);
    let mut out = OutBuf::with_capacity(16 * FLUSH_QUEUE);
    while let Ok(h) = rx.recv() {
        handles.push(h);
        // Every flush queued now was sent after the writes it covers completed: one commit
        // answers them all.
        while let Ok(h) = rx.try_recv() {
            handles.push(h);
        }
        let r = session.export.io.flush();
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
    /// Set by the thread that saw the connection end (with the table's event for it); every
    /// thread then returns.
    end: Option<Result<Event, ConnError>>,
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

/// Sends the reply of a streamed READ through the connection's writer: each data chunk
/// whole, or the single frame under one hold of the writer so no other reply cuts into it.
fn send_streamed(conn: &Conn<'_>, req: &Request, out: &mut OutBuf) -> io::Result<()> {
    let (session, stats) = (conn.session, &*conn.shared.stats);
    let r = if chunked(session, req) {
        stream_read(session, req, out, stats, &mut |o| {
            let r = conn.writer.lock().write_all(o.as_slice());
            o.clear(PIECE_KEEP);
            r
        })
    } else {
        let mut w = conn.writer.lock();
        stream_read(session, req, out, stats, &mut |o| {
            let r = w.write_all(o.as_slice());
            o.clear(PIECE_KEEP);
            r
        })
    };
    out.clear(PIECE_KEEP);
    r
}

/// The plain path's transport: the role holder's socket, the flusher, the hand-off of large
/// requests.
struct Plain<'r, 'c, 'a> {
    conn: &'c Conn<'a>,
    stream: &'r mut Stream,
    flush: &'r mut Option<Flusher>,
    payload: &'r mut Vec<u8>,
    scratch: &'r mut OutBuf,
}

impl Transport for Plain<'_, '_, '_> {
    type Work = BigWork;

    fn fill(&mut self, inb: &mut InBuf, need: usize) -> io::Result<bool> {
        let busy = &self.conn.busy;
        let spin = if busy.load(Ordering::Relaxed) > 0 {
            Duration::ZERO
        } else {
            self.conn.shared.config.poll_spin
        };
        fill_socket(inb, self.stream, need, spin, busy)
    }

    fn send(&mut self, out: &mut OutBuf) -> io::Result<()> {
        send_batch(&self.conn.writer, out)
    }

    fn stream_read(&mut self, req: &Request) -> io::Result<()> {
        send_streamed(self.conn, req, self.scratch)
    }

    fn flush(&mut self, handle: u64, _out: &mut OutBuf) -> io::Result<bool> {
        let conn = self.conn;
        let f = match self.flush {
            Some(f) => f,
            None => self
                .flush
                .insert(spawn_flusher(conn.shared, conn.session, &conn.writer)?),
        };
        // An error: the flusher could not write, the connection is gone.
        Ok(f.tx.send(handle).is_ok())
    }

    fn take(&mut self, req: &Request, inb: &mut InBuf) -> io::Result<Take<BigWork>> {
        if !is_big(req) {
            return Ok(Take::Inline);
        }
        if req.cmd == CMD_WRITE {
            let len = req.len as usize;
            if self.payload.len() < len {
                self.payload.resize(len, 0);
            }
            // The part already received, then the rest straight from the socket.
            let have = (inb.avail() - REQUEST_LEN).min(len);
            self.payload[..have].copy_from_slice(&inb.data()[REQUEST_LEN..REQUEST_LEN + have]);
            inb.consume(REQUEST_LEN + have);
            if have < len {
                match self.stream.read_exact(&mut self.payload[have..len]) {
                    Ok(()) => {}
                    // The client went away in the middle of a request.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Take::End),
                    Err(e) => return Err(e),
                }
            }
        } else {
            inb.consume(REQUEST_LEN);
        }
        Ok(Take::HandOff(BigWork { req: *req }))
    }
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
            inb: InBuf::with_capacity(256 << 10),
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
        while let Some(work) = lead(&conn, &mut payload, &mut out) {
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
            if let Err(e) = carry_out(&conn, work, &payload, &mut out) {
                fail(&conn, e);
                break;
            }
        }
    });
    // Draining: answer what is buffered, let the flusher finish, then close.
    let mut role = conn.role.into_inner();
    let end = role.end.take().unwrap_or(Ok(Event::PeerGone));
    let state = ConnState::Transmission.on(exit_event(&end, shared))?;
    let _ = send_batch(&conn.writer, &mut role.out);
    if let Some(f) = role.flush.take() {
        drop(f.tx);
        let _ = f.thread.join();
    }
    role.stream.shutdown();
    state.on(Event::Drained)?;
    end.map(|_| ())
}

/// A reply could not be sent: end the others' reads and writes too. The socket goes first:
/// the role's holder may be blocked reading it, and only then lets go of the role.
fn fail(conn: &Conn<'_>, e: io::Error) {
    conn.writer.lock().shutdown();
    conn.role.lock().end.get_or_insert(Err(e.into()));
}

/// A worker thread of the connection: takes the role in turn and carries out large requests.
fn follow(conn: &Conn<'_>) {
    let mut payload = Vec::new();
    let mut out = OutBuf::with_capacity(0);
    while let Some(work) = lead(conn, &mut payload, &mut out) {
        if let Err(e) = carry_out(conn, work, &payload, &mut out) {
            fail(conn, e);
            return;
        }
    }
}

/// Carries out a large request and sends its reply.
fn carry_out(conn: &Conn<'_>, work: BigWork, payload: &[u8], out: &mut OutBuf) -> io::Result<()> {
    let (session, stats) = (conn.session, &*conn.shared.stats);
    let req = &work.req;
    let sent = if req.cmd == CMD_READ {
        send_streamed(conn, req, out)
    } else {
        if execute(session, req, &payload[..req.len as usize], out, stats) == Outcome::NeedsFlush {
            let r = session.export.io.flush();
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            put_flush_reply(out, session, req.handle, &r, stats);
        }
        let sent = conn.writer.lock().write_all(out.as_slice());
        out.clear(PIECE_KEEP);
        sent
    };
    conn.busy.fetch_sub(1, Ordering::Relaxed);
    sent
}

/// Holds the role until a large request comes (returned, its WRITE payload in `payload`) or
/// the connection ends (`None`).
fn lead(conn: &Conn<'_>, payload: &mut Vec<u8>, scratch: &mut OutBuf) -> Option<BigWork> {
    let mut guard = conn.role.lock();
    if guard.end.is_some() {
        return None;
    }
    let Role {
        stream,
        inb,
        out,
        flush,
        ..
    } = &mut *guard;
    let mut t = Plain {
        conn,
        stream,
        flush,
        payload,
        scratch,
    };
    let r = serve_requests(&mut t, inb, out, conn.session, &conn.shared.stats);
    match r {
        Ok(Exit::HandOff(w)) => {
            conn.busy.fetch_add(1, Ordering::Relaxed);
            // Small replies batched so far go now: nobody may take the role for a while.
            if let Err(e) = send_batch(&conn.writer, out) {
                conn.busy.fetch_sub(1, Ordering::Relaxed);
                guard.end = Some(Err(e.into()));
                guard.stream.shutdown();
                return None;
            }
            Some(w)
        }
        Ok(Exit::End) => {
            guard.end = Some(Ok(Event::PeerGone));
            None
        }
        Ok(Exit::Disconnect) => {
            guard.end = Some(Ok(Event::Disconnect));
            None
        }
        Err(e) => {
            guard.end = Some(Err(e.into()));
            // Wake the others out of their reads and writes.
            guard.stream.shutdown();
            None
        }
    }
}

fn spawn_flusher(
    shared: &Shared,
    session: &Session,
    writer: &Arc<Mutex<Stream>>,
) -> io::Result<Flusher> {
    let (tx, rx) = sync_channel(FLUSH_QUEUE);
    let session = session.clone();
    let writer = writer.clone();
    let stats = shared.stats.clone();
    let thread = std::thread::Builder::new()
        .name("nbd-flush".into())
        .spawn(move || flusher(rx, session, writer, stats))?;
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

/// The TLS path's transport: blocking reads of decrypted bytes, flushes inline.
struct OverTls<'a> {
    s: &'a mut TlsStream,
    shared: &'a Shared,
    session: &'a Session,
    scratch: OutBuf,
}

impl Transport for OverTls<'_> {
    type Work = ();

    fn fill(&mut self, inb: &mut InBuf, need: usize) -> io::Result<bool> {
        match inb.fill_from(self.s, need) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(idle()),
            r => r,
        }
    }

    fn send(&mut self, out: &mut OutBuf) -> io::Result<()> {
        send_tls(self.s, out)
    }

    fn stream_read(&mut self, req: &Request) -> io::Result<()> {
        let s = &mut *self.s;
        let stats = &*self.shared.stats;
        stream_read(self.session, req, &mut self.scratch, stats, &mut |o| {
            let r = s.write_all(o.as_slice());
            o.clear(PIECE_KEEP);
            r
        })?;
        self.scratch.clear(PIECE_KEEP);
        self.s.flush()
    }

    fn flush(&mut self, handle: u64, out: &mut OutBuf) -> io::Result<bool> {
        let r = self.session.export.io.flush();
        self.shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
        put_flush_reply(out, self.session, handle, &r, &self.shared.stats);
        Ok(true)
    }
}

/// Transmission inside TLS (see the module doc): the plain loop's batching and memory bounds,
/// without its threads and polling. Flushes run inline, so replies go out in request order.
fn transmission_tls(mut s: TlsStream, shared: &Shared, session: &Session) -> Result<(), ConnError> {
    let mut inb = InBuf::with_capacity(256 << 10);
    let mut out = OutBuf::with_capacity(256 << 10);
    let mut t = OverTls {
        s: &mut s,
        shared,
        session,
        scratch: OutBuf::with_capacity(0),
    };
    let end: Result<Event, ConnError> =
        match serve_requests(&mut t, &mut inb, &mut out, session, &shared.stats) {
            Ok(Exit::Disconnect) => Ok(Event::Disconnect),
            Ok(Exit::End) | Ok(Exit::HandOff(())) => Ok(Event::PeerGone),
            Err(e) => Err(e.into()),
        };
    let state = ConnState::Transmission.on(exit_event(&end, shared))?;
    // Draining: answer what is buffered, shut TLS down, close.
    let _ = send_tls(&mut s, &mut out);
    tls::close(&mut s);
    s.sock.shutdown();
    state.on(Event::Drained)?;
    end.map(|_| ())
}
