//! What the server serves: an [`ExportSource`] resolves export names to opened exports, and an
//! [`ExportIo`] is the I/O of one of them. The server knows nothing else about where the bytes
//! live: one engine pool ([`crate::PoolSource`]), a replicated volume over copies on several
//! devices, later a remote node's export, all look the same from here.
//!
//! Contract (the server relies on it; `docs/nbd.md` gives the reasons):
//! - An export is opened once per connection ([`ExportSource::open`], at the end of the
//!   handshake); every request of that connection calls the one `Arc<dyn ExportIo>` it got, so
//!   the data path costs a virtual call and no allocation or name lookup per request.
//! - [`ExportIo::size`] does not change for the life of the opened export (a session sees the
//!   size it negotiated).
//! - [`ExportIo::flush`] returns once every write, trim and zeroing acknowledged before the
//!   call on any opened export of the same volume is durable — other connections' too: the
//!   server offers `NBD_FLAG_CAN_MULTI_CONN`, which promises that a flush on one connection
//!   covers writes completed on the others. One call may answer several FLUSH and FUA requests
//!   (the connection coalesces them), so it covers the whole volume, not one range.
//! - Every error is a [`strata_block::IoError`]: it carries the registry's stable code, which
//!   gives the errno the client sees. A backend that is not an engine pool maps its own
//!   failures into it (a lost copy that another copy covers is not an error at all). An error
//!   fails that one request; the connection, and every other connection, goes on.
//! - [`ExportIo::read`] counts the request against the volume's QoS once. The streamed read
//!   path admits once through [`ExportIo::qos`], then reads pieces with
//!   [`ExportIo::read_unmetered`], then records once: a request is metered once, however it is
//!   cut.
//! - A snapshot export is opened read-only: the server refuses every write to it before the
//!   backend sees one (`EPERM`), and the backend refuses them too.

use std::fmt::Debug;
use std::sync::Arc;

use strata_block::{IoError, VolumeIo};

/// A snapshot of an export's volume, resolved once at negotiation for a
/// `strata:changed-since:NAME` context: opaque to the server, meaningful to the backend that
/// issued it (the engine's snapshot id, for [`crate::PoolSource`]). It must stay valid for
/// every export of the same volume the source opens later: a client selects contexts
/// (`NBD_OPT_SET_META_CONTEXT`, which opens the export to resolve them) before the `GO` that
/// opens the export its session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinceToken(pub u64);

/// Runs of `(length, flag)` covering a range in order (allocated, or changed).
pub type Runs = Vec<(u64, bool)>;

/// The I/O of one opened export: a volume (read-write) or a snapshot (read-only).
pub trait ExportIo: Send + Sync + Debug {
    /// Size in bytes, fixed for the life of this opened export.
    fn size(&self) -> u64;

    /// Reads `dst.len()` bytes at `off`, admitted by and counted in the volume's QoS (a
    /// snapshot has none). Unwritten space reads as zeros; data that fails verification is an
    /// error, never returned.
    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError>;

    /// [`ExportIo::read`] without QoS admission or figures, for a caller that meters the
    /// request itself through [`ExportIo::qos`].
    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError>;

    /// The volume's QoS state (admit before, record after), `None` if the export is not
    /// metered (a snapshot). An error: the export's volume is gone.
    fn qos(&self) -> Result<Option<Arc<VolumeIo>>, IoError>;

    /// Writes `data` at `off`; durable after the next [`ExportIo::flush`].
    fn write(&self, off: u64, data: &[u8]) -> Result<(), IoError>;

    /// Discards `[off, off+len)`: it reads as zeros afterwards.
    fn trim(&self, off: u64, len: u64) -> Result<(), IoError>;

    /// Makes `[off, off+len)` read as zeros; `unmap` lets the backend free the space instead
    /// of writing zero blocks.
    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), IoError>;

    /// Makes durable every write acknowledged before the call on any opened export of this
    /// volume (every connection's: multi-conn), not only this one's.
    fn flush(&self) -> Result<(), IoError>;

    /// Allocation of `[off, off+len)` for `base:allocation`: runs of (length, allocated).
    /// Unallocated runs read as zeros.
    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError>;

    /// The snapshot `name` (the backend's own name) of this export's volume, for
    /// `strata:changed-since:NAME`; `None` if there is none (or this export is a snapshot).
    fn since(&self, name: &str) -> Option<SinceToken>;

    /// The snapshots [`ExportIo::since`] knows, by name (what a namespace query lists).
    fn since_all(&self) -> Vec<(String, SinceToken)>;

    /// Which blocks of `[off, off+len)` may differ from the snapshot `since`: runs of
    /// (length, changed).
    fn changed(&self, since: SinceToken, off: u64, len: u64) -> Result<Runs, IoError>;
}

/// Where exports come from: resolves a volume (or one of its snapshots) by name, and lists
/// what there is. Names are the backend's own; the [`crate::Catalog`] layers filters,
/// authorization and user snapshot names on top.
pub trait ExportSource: Send + Sync + Debug {
    /// Opens volume `volume`, or its snapshot `snapshot` (then read-only); `None` if there is
    /// no such thing.
    fn open(&self, volume: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>>;

    /// Every volume with its snapshots' names, for `NBD_OPT_LIST`.
    fn list(&self) -> Vec<(String, Vec<String>)>;
}
