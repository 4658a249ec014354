//! One client connection: connect (TCP, optionally TLS by `NBD_OPT_STARTTLS`, or a Unix
//! socket), `NBD_OPT_GO`, then requests one at a time with simple replies. Concurrency is
//! [`super::ClientPool`]'s: several connections, each used by one request at a time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use rustls::{ClientConnection, StreamOwned};

use super::haggle::{self, ExportInfo, GoReply, Partial, REPLY_HEADER_LEN};
use super::{ClientConfig, ClientError};
use crate::proto::*;

/// Where the server is.
#[derive(Debug, Clone)]
pub enum Target {
    /// TCP (`HOST:PORT`, resolved at each connect).
    Tcp(String),
    /// A Unix socket.
    Unix(PathBuf),
}

/// The socket under a connection, TLS or not.
enum Wire {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.read(buf),
            Wire::Unix(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.write(buf),
            Wire::Unix(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Wire::Tcp(s) => s.flush(),
            Wire::Unix(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
        }
    }
}

/// A write payload this large is sent from the caller's buffer by [`Connection::write_many`],
/// not copied into its batch first.
const DIRECT_PAYLOAD: usize = 64 << 10;

/// A connection in transmission to one export.
pub struct Connection {
    wire: Wire,
    info: ExportInfo,
    next_handle: u64,
    broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .field("broken", &self.broken)
            .finish()
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

fn read_exact(w: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), ClientError> {
    w.read_exact(buf).map_err(io(what))
}

fn send(w: &mut impl Write, bytes: &[u8], what: &'static str) -> Result<(), ClientError> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(io(what))
}

fn connect_tcp(addr: &str, cfg: &ClientConfig) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(io("resolve"))?.collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, cfg.io_timeout) {
            Ok(s) => {
                s.set_nodelay(true).map_err(io("set TCP_NODELAY"))?;
                s.set_read_timeout(Some(cfg.io_timeout))
                    .map_err(io("set read timeout"))?;
                s.set_write_timeout(Some(cfg.io_timeout))
                    .map_err(io("set write timeout"))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Io {
        what: "connect",
        source: last.unwrap_or_else(|| std::io::Error::other(format!("{addr}: no address"))),
    })
}

/// Reads one option reply (header and data) to `option`.
fn option_reply(
    w: &mut impl Read,
    option: u32,
) -> Result<(haggle::ReplyHeader, Vec<u8>), ClientError> {
    let mut h = [0u8; REPLY_HEADER_LEN];
    read_exact(w, &mut h, "read option reply")?;
    let h = haggle::reply_header(&h, option)?;
    let mut data = vec![0u8; h.len as usize];
    read_exact(w, &mut data, "read option reply data")?;
    Ok((h, data))
}

/// The greeting and the client's flags.
fn greet<S: Read + Write>(s: &mut S) -> Result<(), ClientError> {
    let mut g = [0u8; GREETING_LEN];
    read_exact(s, &mut g, "read greeting")?;
    let flags = haggle::greeting(&g)?;
    send(s, &flags.to_be_bytes(), "send client flags")
}

/// `NBD_OPT_GO` for `export` and its replies up to the acknowledgement.
fn go<S: Read + Write>(s: &mut S, export: &str) -> Result<ExportInfo, ClientError> {
    send(s, &haggle::go(export)?, "send NBD_OPT_GO")?;
    let mut partial = Partial::default();
    loop {
        let (h, data) = option_reply(s, OPT_GO)?;
        if haggle::go_reply(&h, &data, &mut partial)? == GoReply::Ack {
            return partial.finish();
        }
    }
}

/// The plain handshake fed the server's bytes from `server` (what the fuzz target and the
/// never-panic properties drive): greeting, flags, `NBD_OPT_GO`. What the client sends is
/// dropped.
pub fn replay_handshake(server: &[u8], export: &str) -> Result<ExportInfo, ClientError> {
    struct Fed<'a>(std::io::Cursor<&'a [u8]>);
    impl Read for Fed<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Fed<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut f = Fed(std::io::Cursor::new(server));
    greet(&mut f)?;
    go(&mut f, export)
}

/// The handshake up to transmission over an established wire: greeting, flags, STARTTLS when
/// `tls` is given (the wire is then replaced by the TLS stream), `NBD_OPT_GO`.
fn handshake(
    mut wire: Wire,
    export: &str,
    cfg: &ClientConfig,
) -> Result<(Wire, ExportInfo), ClientError> {
    greet(&mut wire)?;
    if let Some(tls) = &cfg.tls {
        send(
            &mut wire,
            &haggle::option(OPT_STARTTLS, &[]),
            "send STARTTLS",
        )?;
        let (h, data) = option_reply(&mut wire, OPT_STARTTLS)?;
        if h.reply != REP_ACK {
            return Err(ClientError::Refused {
                option: OPT_STARTTLS,
                reply: h.reply,
                message: String::from_utf8_lossy(&data).into_owned(),
            });
        }
        let Wire::Tcp(tcp) = wire else {
            return Err(ClientError::Invalid("TLS over a Unix socket".into()));
        };
        let conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut s = StreamOwned::new(conn, tcp);
        // Drive the handshake to its end now, so a refused certificate is a TLS error here
        // and not a confusing failure of the first option.
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        wire = Wire::Tls(Box::new(s));
    }
    let info = go(&mut wire, export)?;
    Ok((wire, info))
}

impl Connection {
    /// Connects to `export` at `target`. With [`ClientConfig::tls`] the target must be TCP.
    pub fn connect(target: &Target, export: &str, cfg: &ClientConfig) -> Result<Self, ClientError> {
        let wire = match target {
            Target::Tcp(addr) => Wire::Tcp(connect_tcp(addr, cfg)?),
            Target::Unix(path) => {
                let s = UnixStream::connect(path).map_err(io("connect"))?;
                s.set_read_timeout(Some(cfg.io_timeout))
                    .map_err(io("set read timeout"))?;
                s.set_write_timeout(Some(cfg.io_timeout))
                    .map_err(io("set write timeout"))?;
                Wire::Unix(s)
            }
        };
        let (wire, info) = handshake(wire, export, cfg)?;
        Ok(Connection {
            wire,
            info,
            next_handle: 1,
            broken: false,
        })
    }

    /// What the server said of the export.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// True once a failure left the stream unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Proto("connection already failed".into()));
        }
        if write && self.info.read_only() {
            return Err(ClientError::Invalid("write to a read-only export".into()));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.info.size => Ok(()),
            _ => Err(ClientError::Invalid(format!(
                "{len} bytes at {offset} beyond the export's {} bytes",
                self.info.size
            ))),
        }
    }

    /// One request: header (and payload), then the simple reply (and, for a read, its data
    /// into `into`). A failure that breaks framing marks the connection broken.
    fn exchange(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
        into: &mut [u8],
    ) -> Result<(), ClientError> {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        let r = (|| {
            let hdr = haggle::request(cmd, flags, handle, offset, len);
            if payload.is_empty() {
                send(&mut self.wire, &hdr, "send request")?;
            } else {
                self.wire.write_all(&hdr).map_err(io("send request"))?;
                send(&mut self.wire, payload, "send write payload")?;
            }
            let mut rep = [0u8; SIMPLE_REPLY_LEN];
            read_exact(&mut self.wire, &mut rep, "read reply")?;
            match haggle::simple_reply(&rep, handle)? {
                0 => {
                    if !into.is_empty() {
                        read_exact(&mut self.wire, into, "read data")?;
                    }
                    Ok(())
                }
                errno => Err(ClientError::Server(errno)),
            }
        })();
        if let Err(e) = &r {
            if e.breaks_connection() {
                self.broken = true;
            }
        }
        r
    }

    fn chunks(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u32)> {
        let max = u64::from(self.info.max_payload.max(1));
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let n = (end - at).min(max);
                let c = (at, n as u32);
                at += n;
                c
            })
        })
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ClientError> {
        self.check(offset, buf.len() as u64, false)?;
        let mut done = 0usize;
        for (at, n) in self.chunks(offset, buf.len() as u64).collect::<Vec<_>>() {
            let part = &mut buf[done..done + n as usize];
            self.exchange(CMD_READ, 0, at, n, &[], part)?;
            done += n as usize;
        }
        Ok(())
    }

    /// Writes `data` at `offset`; with `fua` each part is durable when answered.
    pub fn write_at(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), ClientError> {
        self.check(offset, data.len() as u64, true)?;
        let flags = if fua { CMDF_FUA } else { 0 };
        let mut done = 0usize;
        for (at, n) in self.chunks(offset, data.len() as u64).collect::<Vec<_>>() {
            let part = &data[done..done + n as usize];
            self.exchange(CMD_WRITE, flags, at, n, part, &mut [])?;
            done += n as usize;
        }
        Ok(())
    }

    /// Writes several ranges with every request in flight at once: the requests go out in
    /// one send, then the replies are read in whatever order the server answers. Returns one
    /// result per write (an error the server answered fails only its write); an error that
    /// breaks the stream fails the whole call and marks the connection broken. A write
    /// longer than the export's largest payload is sent alone after the others, in parts.
    pub fn write_many(
        &mut self,
        writes: &[(u64, &[u8])],
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        let max = self.info.max_payload.max(1) as usize;
        let mut results: Vec<Result<(), ClientError>> = Vec::with_capacity(writes.len());
        // Handles are consecutive from `first`: the k-th request sent, `sends[k]` = (handle,
        // offset, bytes, index in `writes`), has handle first + k, and `waiting[k]` says
        // whether its answer is still to come.
        let first = self.next_handle;
        let mut sends: Vec<(u64, u64, &[u8], usize)> = Vec::with_capacity(writes.len());
        for (i, &(offset, data)) in writes.iter().enumerate() {
            results.push(Ok(()));
            if let Err(e) = self.check(offset, data.len() as u64, true) {
                results[i] = Err(e);
                continue;
            }
            if data.is_empty() || data.len() > max {
                continue;
            }
            let handle = self.next_handle;
            self.next_handle = self.next_handle.wrapping_add(1);
            sends.push((handle, offset, data, i));
        }
        let mut waiting = vec![true; sends.len()];
        let r = (|| {
            // Small requests go out together in one buffer; a large payload is written from
            // the caller's bytes (no copy into the buffer first).
            let mut batch = Vec::new();
            for &(handle, offset, data, _) in &sends {
                let hdr = haggle::request(CMD_WRITE, 0, handle, offset, data.len() as u32);
                batch.extend_from_slice(&hdr);
                if data.len() < DIRECT_PAYLOAD {
                    batch.extend_from_slice(data);
                } else {
                    self.wire.write_all(&batch).map_err(io("send requests"))?;
                    batch.clear();
                    self.wire
                        .write_all(data)
                        .map_err(io("send write payload"))?;
                }
            }
            if !sends.is_empty() {
                send(&mut self.wire, &batch, "send requests")?;
            }
            for _ in 0..sends.len() {
                let mut rep = [0u8; SIMPLE_REPLY_LEN];
                read_exact(&mut self.wire, &mut rep, "read reply")?;
                let (handle, errno) = haggle::simple_reply_of_any(&rep)?;
                let k = handle.wrapping_sub(first) as usize;
                if !waiting.get(k).copied().unwrap_or(false) {
                    return Err(ClientError::Proto(format!(
                        "reply to handle {handle}, which is not in flight"
                    )));
                }
                waiting[k] = false;
                if errno != 0 {
                    results[sends[k].3] = Err(ClientError::Server(errno));
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.broken = true;
            return Err(e);
        }
        for (i, &(offset, data)) in writes.iter().enumerate() {
            if data.len() > max && results[i].is_ok() {
                results[i] = self.write_at(offset, data, false);
            }
        }
        Ok(results)
    }

    /// Makes `[offset, offset + len)` read as zeros (`NBD_CMD_WRITE_ZEROES`; without
    /// `unmap`, `NO_HOLE`), or frees it (`NBD_CMD_TRIM`) when `unmap` and the export cannot
    /// write zeros.
    pub fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> Result<(), ClientError> {
        self.check(offset, len, true)?;
        if self.info.flags & TF_SEND_WRITE_ZEROES == 0 {
            return Err(ClientError::Invalid(
                "the export does not take WRITE_ZEROES".into(),
            ));
        }
        let flags = if unmap { 0 } else { CMDF_NO_HOLE };
        // A zero request carries no payload, so its length is bounded by u32 only.
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(u64::from(u32::MAX) & !0xfff) as u32;
            self.exchange(CMD_WRITE_ZEROES, flags, at, n, &[], &mut [])?;
            at += u64::from(n);
        }
        Ok(())
    }

    /// `NBD_CMD_FLUSH`: every write answered before it is durable (on every connection of
    /// the export, when the server offers multi-conn).
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Proto("connection already failed".into()));
        }
        self.exchange(CMD_FLUSH, 0, 0, 0, &[], &mut [])
    }

    /// Ends the session cleanly (`NBD_CMD_DISC`; the server sends no reply).
    pub fn disconnect(mut self) {
        if !self.broken {
            let hdr = haggle::request(CMD_DISC, 0, self.next_handle, 0, 0);
            let _ = send(&mut self.wire, &hdr, "send disconnect");
            if let Wire::Tls(s) = &mut self.wire {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
    }
}
