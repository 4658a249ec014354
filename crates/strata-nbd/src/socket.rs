//! A connected socket (Unix or TCP) with the server's two timing rules built in, so every
//! path that reads or writes a connection (handshake, TLS records, transmission, the flusher,
//! the large-I/O threads) obeys them without each remembering to.
//!
//! Invariants:
//! - Writes: the peer may leave the socket full for at most `write_timeout`, measured from
//!   the moment the socket stopped accepting bytes (the first `EAGAIN` since it last accepted
//!   any), not per system call and not per writer: every thread of a connection writes
//!   through one `Stream`, so one that waited for the lock does not start a new clock. Each
//!   write is a non-blocking `send`; only when the kernel's buffer is full does it `poll` for
//!   room, until that deadline. When it passes, the socket is shut down (every handle of it
//!   wakes and fails) and the write fails with `TimedOut`.
//! - Reads: with a deadline set ([`Stream::set_read_deadline`]) every read waits at most
//!   until that instant, however many reads there are (the handshake deadline covers option
//!   haggling and the TLS handshake as a whole). Without one, reads wait as the socket's
//!   `SO_RCVTIMEO` says (the transmission idle timeout), or forever.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::net::SendFlags;

/// The socket of either family.
#[derive(Debug)]
pub(crate) enum Sock {
    /// Unix domain socket.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

/// A connected socket and the timing rules of its connection.
#[derive(Debug)]
pub(crate) struct Stream {
    sock: Sock,
    write_timeout: Duration,
    read_deadline: Option<Instant>,
    /// Since when the socket has accepted no byte of a pending write.
    stalled: Option<Instant>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl Stream {
    pub(crate) fn new(sock: Sock, write_timeout: Duration) -> Stream {
        Stream {
            sock,
            write_timeout,
            read_deadline: None,
            stalled: None,
        }
    }

    /// A second handle to the same socket, with the same rules.
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        let sock = match &self.sock {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        };
        Ok(Stream {
            sock,
            write_timeout: self.write_timeout,
            read_deadline: self.read_deadline,
            stalled: None,
        })
    }

    /// Ends the connection for every handle: blocked reads return end of stream, blocked
    /// writes fail.
    pub(crate) fn shutdown(&self) {
        let _ = match &self.sock {
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self.sock, Sock::Tcp(_))
    }

    /// The TCP peer's address (`None` on a Unix socket).
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.sock {
            Sock::Tcp(s) => s.peer_addr().ok(),
            Sock::Unix(_) => None,
        }
    }

    pub(crate) fn set_nodelay(&self) -> io::Result<()> {
        match &self.sock {
            Sock::Tcp(s) => s.set_nodelay(true),
            Sock::Unix(_) => Ok(()),
        }
    }

    /// Every later read fails with `TimedOut` once `deadline` has passed (`None`: no deadline).
    pub(crate) fn set_read_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.read_deadline = deadline;
        if deadline.is_none() {
            self.set_read_timeout(None)?;
        }
        Ok(())
    }

    /// `SO_RCVTIMEO`: how long one read waits when no deadline is set (`None`: forever).
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.sock {
            Sock::Unix(s) => s.set_read_timeout(t),
            Sock::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn raw_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.sock {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.sock {
            Sock::Unix(s) => s.as_fd(),
            Sock::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(deadline) = self.read_deadline else {
            return self.raw_read(buf);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out("handshake deadline passed"));
        }
        self.set_read_timeout(Some(left))?;
        match self.raw_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(timed_out("handshake deadline passed"))
            }
            r => r,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match rustix::net::send(&*self, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => {
                    self.stalled = None;
                    return Ok(n);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    let since = *self.stalled.get_or_insert_with(Instant::now);
                    let left =
                        (since + self.write_timeout).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.shutdown();
                        return Err(timed_out("the peer stopped reading replies"));
                    }
                    let ts = Timespec {
                        tv_sec: left.as_secs() as _,
                        tv_nsec: left.subsec_nanos() as _,
                    };
                    let mut fds = [PollFd::new(&*self, PollFlags::OUT)];
                    match rustix::event::poll(&mut fds, Some(&ts)) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
