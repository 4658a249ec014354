//! The connection registry: which connections are open, in which budget each counts, what
//! session each carries, and a second handle to each socket so that the server can end it
//! (shutdown, [`crate::NbdServer::close_sessions`], a listener stopped).
//!
//! Invariants (all under one mutex, so admission is exact):
//! - A TCP connection counts in `tcp_unauth` from accept until it enters transmission, then
//!   in `tcp_auth`; it counts in `per_source` for its IP address its whole life. A Unix
//!   connection counts in its listener's entry of `per_listener` its whole life.
//! - A connection is admitted only if every budget it would count in has room; it moves into
//!   `tcp_auth` only if that has room. Every count is given back by [`Registry::remove`].
//! - An entry has a [`SessionInfo`] exactly while its connection is in transmission.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::socket::Stream;

/// An open session, as [`crate::NbdServer::close_sessions`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The export name the client opened (`VOLUME` or `VOLUME@SNAPSHOT`).
    pub export: String,
    /// The volume's name (of the snapshot's volume, for a snapshot export).
    pub volume: String,
    /// The identity the session was authorized as (certificate CN or listener identity).
    pub identity: Option<String>,
    /// The TLS client certificate's serial, lowercase hex (`None` without TLS).
    pub cert_serial: Option<String>,
    /// The TCP client's address (`None` on a Unix socket).
    pub source: Option<SocketAddr>,
    /// The Unix listener's path (`None` on TCP).
    pub listener: Option<PathBuf>,
}

/// Where a connection came from, for its budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// TCP, from this address.
    Tcp(IpAddr),
    /// The Unix listener with this id.
    Unix(u64),
}

struct Entry {
    stream: Stream,
    origin: Origin,
    session: Option<SessionInfo>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    next_id: u64,
    tcp_unauth: usize,
    tcp_auth: usize,
    per_source: HashMap<IpAddr, usize>,
    per_listener: HashMap<u64, usize>,
}

/// Budgets of TCP connections (see [`crate::ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub(crate) unauthenticated: usize,
    pub(crate) per_source: usize,
}

#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    live: Condvar,
}

impl Registry {
    /// Admits a TCP connection (before transmission) if its budgets allow; its id.
    pub(crate) fn admit_tcp(&self, stream: &Stream, ip: IpAddr, lim: TcpLimits) -> Option<u64> {
        let mut g = self.inner.lock();
        let from_ip = g.per_source.get(&ip).copied().unwrap_or(0);
        if g.tcp_unauth >= lim.unauthenticated || from_ip >= lim.per_source {
            return None;
        }
        let id = Self::insert(&mut g, stream, Origin::Tcp(ip))?;
        g.tcp_unauth += 1;
        *g.per_source.entry(ip).or_default() += 1;
        Some(id)
    }

    /// Admits a connection of Unix listener `listener` if it has fewer than `cap`.
    pub(crate) fn admit_unix(&self, stream: &Stream, listener: u64, cap: usize) -> Option<u64> {
        let mut g = self.inner.lock();
        if g.per_listener.get(&listener).copied().unwrap_or(0) >= cap {
            return None;
        }
        let id = Self::insert(&mut g, stream, Origin::Unix(listener))?;
        *g.per_listener.entry(listener).or_default() += 1;
        Some(id)
    }

    fn insert(g: &mut Inner, stream: &Stream, origin: Origin) -> Option<u64> {
        let stream = stream.try_clone().ok()?;
        g.next_id += 1;
        let id = g.next_id;
        g.conns.insert(
            id,
            Entry {
                stream,
                origin,
                session: None,
            },
        );
        Some(id)
    }

    /// Moves connection `id` into transmission with `info`; `false` (nothing changed) when it
    /// is a TCP connection and `max_auth` sessions are in transmission already.
    pub(crate) fn enter_transmission(&self, id: u64, info: SessionInfo, max_auth: usize) -> bool {
        let mut g = self.inner.lock();
        let g = &mut *g;
        let Some(e) = g.conns.get_mut(&id) else {
            return false;
        };
        if let Origin::Tcp(_) = e.origin {
            if g.tcp_auth >= max_auth {
                return false;
            }
            g.tcp_unauth -= 1;
            g.tcp_auth += 1;
        }
        e.session = Some(info);
        true
    }

    /// Forgets connection `id` and gives back its budgets.
    pub(crate) fn remove(&self, id: u64) {
        let mut g = self.inner.lock();
        let g = &mut *g;
        if let Some(e) = g.conns.remove(&id) {
            match e.origin {
                Origin::Tcp(ip) => {
                    if e.session.is_some() {
                        g.tcp_auth -= 1;
                    } else {
                        g.tcp_unauth -= 1;
                    }
                    if let Some(n) = g.per_source.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            g.per_source.remove(&ip);
                        }
                    }
                }
                Origin::Unix(l) => {
                    if let Some(n) = g.per_listener.get_mut(&l) {
                        *n -= 1;
                    }
                }
            }
        }
        self.live.notify_all();
    }

    /// Open connections.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Shuts down the sockets of the sessions `pred` picks; how many.
    pub(crate) fn close_sessions(&self, pred: &mut dyn FnMut(&SessionInfo) -> bool) -> usize {
        let g = self.inner.lock();
        let mut n = 0;
        for e in g.conns.values() {
            if e.session.as_ref().is_some_and(&mut *pred) {
                e.stream.shutdown();
                n += 1;
            }
        }
        n
    }

    /// Shuts down every connection of Unix listener `listener`; how many.
    pub(crate) fn close_listener(&self, listener: u64) -> usize {
        let g = self.inner.lock();
        let mut n = 0;
        for e in g.conns.values() {
            if e.origin == Origin::Unix(listener) {
                e.stream.shutdown();
                n += 1;
            }
        }
        n
    }

    /// Shuts down every connection and waits until all are gone or `deadline` passes.
    pub(crate) fn close_all(&self, deadline: Instant) {
        let mut g = self.inner.lock();
        for e in g.conns.values() {
            e.stream.shutdown();
        }
        while !g.conns.is_empty() {
            if self.live.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
    }
}
