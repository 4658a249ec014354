//! Several connections to one export (NBD multi-conn): each request takes a free connection,
//! so up to `size` requests run at once, each on its own socket (and TLS stream). A
//! connection whose stream broke is dropped and a new one is made for the next request, so a
//! restarted server is reached again without the caller doing anything.
//!
//! # Invariants
//! - A connection is used by one request at a time (it is out of the free list while used).
//! - At most `size` connections exist; a request waits for a free one.
//! - Flush is only correct across connections when the server offers
//!   `NBD_FLAG_CAN_MULTI_CONN`; [`ClientPool::connect`] refuses a pool of more than one
//!   connection to a server that does not.

use parking_lot::{Condvar, Mutex};

use super::conn::{Connection, Target};
use super::haggle::ExportInfo;
use super::{ClientConfig, ClientError};

/// A pool of connections to one export.
#[derive(Debug)]
pub struct ClientPool {
    target: Target,
    export: String,
    cfg: ClientConfig,
    size: usize,
    info: ExportInfo,
    state: Mutex<Slots>,
    freed: Condvar,
}

#[derive(Debug)]
struct Slots {
    free: Vec<Connection>,
    /// Connections in existence (free, in use, or being made).
    live: usize,
}

impl ClientPool {
    /// Connects once (to learn the export and fail early), keeping that connection; the others
    /// are made as requests need them, up to `size` (at least 1).
    pub fn connect(
        target: Target,
        export: &str,
        cfg: ClientConfig,
        size: usize,
    ) -> Result<Self, ClientError> {
        let first = Connection::connect(&target, export, &cfg)?;
        let info = *first.info();
        let size = size.max(1);
        if size > 1 && !info.multi_conn() {
            return Err(ClientError::Invalid(
                "the server does not offer multi-conn: flushes would not cover other connections"
                    .into(),
            ));
        }
        Ok(ClientPool {
            target,
            export: export.to_string(),
            cfg,
            size,
            info,
            state: Mutex::new(Slots {
                free: vec![first],
                live: 1,
            }),
            freed: Condvar::new(),
        })
    }

    /// What the server said of the export when the pool connected.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// The export's name.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// Connections in existence now.
    pub fn live(&self) -> usize {
        self.state.lock().live
    }

    /// Runs `f` on a free connection (making one when none is free and fewer than `size`
    /// exist). A connection `f` left broken is dropped.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut conn = {
            let mut s = self.state.lock();
            loop {
                if let Some(c) = s.free.pop() {
                    break Some(c);
                }
                if s.live < self.size {
                    s.live += 1;
                    break None;
                }
                self.freed.wait(&mut s);
            }
        };
        if conn.is_none() {
            match Connection::connect(&self.target, &self.export, &self.cfg) {
                Ok(c) if c.info().size != self.info.size => {
                    self.release(None);
                    return Err(ClientError::Proto(format!(
                        "the export's size changed from {} to {}",
                        self.info.size,
                        c.info().size
                    )));
                }
                Ok(c) => conn = Some(c),
                Err(e) => {
                    self.release(None);
                    return Err(e);
                }
            }
        }
        let mut c = conn.expect("a connection");
        let r = f(&mut c);
        self.release((!c.is_broken()).then_some(c));
        r
    }

    fn release(&self, c: Option<Connection>) {
        let mut s = self.state.lock();
        match c {
            Some(c) => s.free.push(c),
            None => s.live -= 1,
        }
        drop(s);
        self.freed.notify_one();
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ClientError> {
        self.with(|c| c.read_at(offset, buf))
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), ClientError> {
        self.with(|c| c.write_at(offset, data, fua))
    }

    /// Writes several ranges on one connection, every request in flight at once
    /// ([`Connection::write_many`]): one result per write.
    pub fn write_many(
        &self,
        writes: &[(u64, &[u8])],
    ) -> Result<Vec<Result<(), ClientError>>, ClientError> {
        self.with(|c| c.write_many(writes))
    }

    /// Zeros (or frees, with `unmap`) a range.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), ClientError> {
        self.with(|c| c.write_zeroes(offset, len, unmap))
    }

    /// Makes every write answered before it durable (multi-conn: on every connection).
    pub fn flush(&self) -> Result<(), ClientError> {
        self.with(|c| c.flush())
    }

    /// Disconnects every free connection cleanly.
    pub fn close(&self) {
        let mut s = self.state.lock();
        let free = std::mem::take(&mut s.free);
        s.live -= free.len();
        drop(s);
        for c in free {
            c.disconnect();
        }
    }
}

impl Drop for ClientPool {
    fn drop(&mut self) {
        self.close();
    }
}
