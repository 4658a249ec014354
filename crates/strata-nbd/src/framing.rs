//! The one request decoder and framing loop of the transmission phase, shared by every path
//! that reads requests: plain sockets and TLS sessions ([`crate::conn`]) and the socket-less
//! replay the fuzz target drives ([`replay_requests`]).
//!
//! [`serve_requests`] takes request headers and payloads off an input buffer, runs each on the
//! session's export ([`crate::transmit`]) and batches the replies; a [`Transport`] says how
//! bytes come in and go out, where flushes run, and whether a large request is handed to
//! another thread.
//!
//! Invariants:
//! - The input buffer holds at most one request and its payload beyond what one `recv`
//!   returned; the reply batch is sent before the loop blocks for input, and once it passes
//!   [`OUT_HIGH_WATER`]. So a small request's reply waits for nothing but its batch.
//! - Reply bytes held per request are bounded: a READ longer than
//!   [`crate::transmit::READ_PIECE`] is never held whole ([`crate::transmit::stream_read`]);
//!   the batch is sent (and, when the peer does not read, blocks the loop, which then reads no
//!   more requests) before it grows past [`OUT_HIGH_WATER`] plus one piece.
//! - A framing error (bad magic, a WRITE payload over the limit) ends the loop: after it
//!   nothing on the stream can be trusted to be a request.

use std::io;

use crate::negotiate::Session;
use crate::proto::*;
use crate::transmit::{execute, put_flush_reply, stream_read, streamed, OutBuf, Outcome, Stats};

/// Reply batch size that forces a write before the input is drained.
pub const OUT_HIGH_WATER: usize = 256 << 10;
/// Input buffer kept between requests (grown for larger WRITE payloads, then shrunk back).
pub(crate) const IN_KEEP: usize = 2 << 20;
/// Reply buffer kept between batches.
pub(crate) const OUT_KEEP: usize = 2 << 20;

/// Input buffer: `buf[start..end]` is received and not yet consumed.
pub(crate) struct InBuf {
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl InBuf {
    pub(crate) fn with_capacity(cap: usize) -> InBuf {
        InBuf {
            buf: vec![0; cap],
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn avail(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
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

    /// Makes room for `need` bytes from `start`.
    pub(crate) fn make_room(&mut self, need: usize) {
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
        }
    }

    /// The free tail, after [`InBuf::make_room`].
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Plain blocking reads from `r` until `need` bytes are available; `false` at end of
    /// stream (a TLS peer that closes TCP without close_notify ends it like one that sends it).
    pub(crate) fn fill_from(&mut self, r: &mut impl io::Read, need: usize) -> io::Result<bool> {
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

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// Reading or sending failed (including the timeouts of [`crate::ServerConfig`]).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The request stream is not well framed.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
}

/// How a request is dealt with, as the transport decides.
pub(crate) enum Take<W> {
    /// Run it here, in the loop.
    Inline,
    /// Taken off the input (payload included) to be carried out by the caller.
    HandOff(W),
    /// The peer went away in the middle of it.
    End,
}

/// Why [`serve_requests`] returned.
pub(crate) enum Exit<W> {
    /// End of input.
    End,
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// A request handed off ([`Take::HandOff`]).
    HandOff(W),
}

/// The byte channel and the policies of one path.
pub(crate) trait Transport {
    /// What a hand-off carries.
    type Work;
    /// Reads until `inb` holds `need` bytes; `false` at end of input.
    fn fill(&mut self, inb: &mut InBuf, need: usize) -> io::Result<bool>;
    /// Sends the batch and empties it.
    fn send(&mut self, out: &mut OutBuf) -> io::Result<()>;
    /// Sends the reply of a [`streamed`] READ (the batch was sent first).
    fn stream_read(&mut self, req: &Request) -> io::Result<()>;
    /// The request's reply must wait for an export flush: run it, or queue it; `false` if the
    /// connection is over.
    fn flush(&mut self, handle: u64, out: &mut OutBuf) -> io::Result<bool>;
    /// Whether to hand `req` (header still at the head of `inb`) to the caller.
    fn take(&mut self, _req: &Request, _inb: &mut InBuf) -> io::Result<Take<Self::Work>> {
        Ok(Take::Inline)
    }
}

/// Serves requests from `inb` (filled through `t`) until the input ends, the client
/// disconnects, or the transport takes a request.
pub(crate) fn serve_requests<T: Transport>(
    t: &mut T,
    inb: &mut InBuf,
    out: &mut OutBuf,
    session: &Session,
    stats: &Stats,
) -> Result<Exit<T::Work>, FramingError> {
    loop {
        if inb.avail() < REQUEST_LEN {
            t.send(out)?;
            if !t.fill(inb, REQUEST_LEN)? {
                return Ok(Exit::End);
            }
        }
        let req = parse_request(&inb.data()[..REQUEST_LEN])?;
        match t.take(&req, inb)? {
            Take::Inline => {}
            Take::HandOff(w) => return Ok(Exit::HandOff(w)),
            Take::End => return Ok(Exit::End),
        }
        let total = REQUEST_LEN + req.payload_len() as usize;
        if inb.avail() < total {
            t.send(out)?;
            if !t.fill(inb, total)? {
                // The client went away in the middle of a request.
                return Ok(Exit::End);
            }
        }
        if streamed(&req) {
            t.send(out)?;
            t.stream_read(&req)?;
            inb.consume(total);
            continue;
        }
        let data = &inb.data()[REQUEST_LEN..total];
        match execute(session, &req, data, out, stats) {
            Outcome::Done => {}
            Outcome::NeedsFlush => {
                if !t.flush(req.handle, out)? {
                    return Ok(Exit::End);
                }
            }
            Outcome::Disconnect => {
                inb.consume(total);
                return Ok(Exit::Disconnect);
            }
        }
        inb.consume(total);
        if out.len() >= OUT_HIGH_WATER {
            t.send(out)?;
        }
    }
}

/// A transport over a byte slice, replies into a vector, flushes inline.
struct Replay<'a> {
    input: &'a [u8],
    at: usize,
    reply: Vec<u8>,
    session: &'a Session,
    stats: &'a Stats,
}

impl Transport for Replay<'_> {
    type Work = ();

    fn fill(&mut self, inb: &mut InBuf, need: usize) -> io::Result<bool> {
        inb.make_room(need);
        while inb.avail() < need {
            let left = &self.input[self.at..];
            if left.is_empty() {
                return Ok(false);
            }
            let spare = inb.spare();
            let n = spare.len().min(left.len());
            spare[..n].copy_from_slice(&left[..n]);
            inb.end += n;
            self.at += n;
        }
        Ok(true)
    }

    fn send(&mut self, out: &mut OutBuf) -> io::Result<()> {
        self.reply.extend_from_slice(out.as_slice());
        out.clear(OUT_KEEP);
        Ok(())
    }

    fn stream_read(&mut self, req: &Request) -> io::Result<()> {
        let mut out = OutBuf::with_capacity(0);
        let reply = &mut self.reply;
        stream_read(self.session, req, &mut out, self.stats, &mut |o| {
            reply.extend_from_slice(o.as_slice());
            o.clear(OUT_KEEP);
            Ok(())
        })
    }

    fn flush(&mut self, handle: u64, out: &mut OutBuf) -> io::Result<bool> {
        let r = self.session.export.io.flush();
        put_flush_reply(out, self.session, handle, &r, self.stats);
        Ok(true)
    }
}

/// Runs a client's transmission byte stream (request headers and WRITE payloads) through
/// [`serve_requests`] the way a connection does, running flushes inline; returns the reply
/// bytes. Stops at a framing error, at `NBD_CMD_DISC`, or at the end of input. For the fuzz
/// target and the never-panic tests: the session's export does the I/O (open one with
/// [`crate::Catalog::lookup`]).
pub fn replay_requests(s: &Session, input: &[u8]) -> Vec<u8> {
    let stats = Stats::default();
    let mut t = Replay {
        input,
        at: 0,
        reply: Vec::new(),
        session: s,
        stats: &stats,
    };
    let mut inb = InBuf::with_capacity(4096);
    let mut out = OutBuf::with_capacity(4096);
    let r = serve_requests(&mut t, &mut inb, &mut out, s, &stats);
    // What was answered before the stream ended or broke.
    let _ = t.send(&mut out);
    let _ = r;
    t.reply
}
