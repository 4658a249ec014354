//! Opening and formatting one device: a regular file or a block device that becomes an engine
//! pool of its own.
//!
//! # Invariants
//! - Formatting never erases what it did not check: a device that begins with a Strata
//!   superblock is refused (it is another pool's), and one whose first MiB holds anything but
//!   zeros is refused unless the caller said `force`.
//! - A regular file is a device only under a device directory the daemon was given (`strata
//!   serve --device-dir`, and the data dir's `devices/`), resolved through symlinks: an API
//!   call can never format `/etc/passwd` or another file of the host.
//! - A block device is a device only when the kernel grants an exclusive open (`O_EXCL`):
//!   a mounted file system, a swap area or another exclusive user refuses it (`EBUSY`).
//! - A regular file the daemon formats is left mode 0600 (it holds tenants' data), whatever
//!   the umask and whatever mode it had.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_block::format::{SB_MAGIC, SUPERBLOCK_REGION};
use strata_block::{BlockDevice, DeviceSpec, FileDevice, Pool};
use strata_types::DeviceClass;

/// Why a device could not be formatted or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceOpenError {
    /// Missing, not a file or block device, too small, or failing I/O.
    #[error("{path}: {reason}")]
    Unusable {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// Holds a Strata pool already.
    #[error("{path} already holds a Strata pool")]
    InUse {
        /// The path.
        path: String,
    },
    /// Holds data that is not Strata's.
    #[error("{path} is not empty (its first MiB holds data): ask with force to format it")]
    NotEmpty {
        /// The path.
        path: String,
    },
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> DeviceOpenError {
    DeviceOpenError::Unusable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Opens the device at `path`, checking that it is a regular file or a block device.
fn open_file(path: &Path) -> Result<FileDevice, DeviceOpenError> {
    let meta = std::fs::metadata(path).map_err(|e| unusable(path, e))?;
    let t = meta.file_type();
    if !t.is_file() && !t.is_block_device() {
        return Err(unusable(path, "not a regular file or a block device"));
    }
    FileDevice::open(path).map_err(|e| unusable(path, e))
}

/// Checks that `path` may become a device: a regular file under one of `dirs`, or a block
/// device nobody holds.
fn check_new(path: &Path, dirs: &[PathBuf]) -> Result<(), DeviceOpenError> {
    let real = std::fs::canonicalize(path).map_err(|e| unusable(path, e))?;
    let meta = std::fs::metadata(&real).map_err(|e| unusable(path, e))?;
    if meta.file_type().is_file() {
        let under = dirs
            .iter()
            .any(|d| std::fs::canonicalize(d).is_ok_and(|d| real.starts_with(&d) && real != d));
        if !under {
            return Err(unusable(
                path,
                "a regular file is a device only under a device directory (strata serve \
                 --device-dir DIR, or the data dir's devices/)",
            ));
        }
        return Ok(());
    }
    if meta.file_type().is_block_device() {
        // The kernel's own answer to "is anyone using it": an exclusive open fails with
        // EBUSY on a mounted, swapped-on or otherwise claimed block device.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(&real)
            .map_err(|e| unusable(path, format!("in use by the host or another program: {e}")))?;
        return Ok(());
    }
    Err(unusable(path, "not a regular file or a block device"))
}

/// Formats the device at `path` as a new engine pool of one device of `class`. Regular files
/// must lie under one of `dirs`.
pub fn format_device(
    path: &Path,
    class: DeviceClass,
    force: bool,
    dirs: &[PathBuf],
) -> Result<Pool, DeviceOpenError> {
    check_new(path, dirs)?;
    let dev = open_file(path)?;
    let len = dev.len().map_err(|e| unusable(path, e))?;
    let head = (SUPERBLOCK_REGION.min(len)) as usize;
    let mut buf = vec![0u8; head];
    dev.read_at(&mut buf, 0).map_err(|e| unusable(path, e))?;
    if buf.len() >= SB_MAGIC.len() && buf[..SB_MAGIC.len()] == SB_MAGIC {
        return Err(DeviceOpenError::InUse {
            path: path.display().to_string(),
        });
    }
    if !force && buf.iter().any(|&b| b != 0) {
        return Err(DeviceOpenError::NotEmpty {
            path: path.display().to_string(),
        });
    }
    if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file()) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| unusable(path, e))?;
    }
    Pool::create(vec![DeviceSpec {
        device: Arc::new(dev),
        class,
    }])
    .map_err(|e| unusable(path, e))
}

/// An exclusive claim on a block device, held while the daemon uses it: the kernel then
/// refuses other exclusive opens (`mount`, `mkfs`, another daemon's `pool add-device`) with
/// `EBUSY`. `None` for a regular file (nothing to claim) or when the claim is refused (the
/// device opened anyway: it is ours by its superblock).
pub fn claim(path: &Path) -> Option<std::fs::File> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "block device not claimed exclusively: something else holds it");
            None
        }
    }
}

/// Opens the engine pool on the device at `path`.
pub fn open_device(path: &Path) -> Result<Pool, DeviceOpenError> {
    let dev = open_file(path)?;
    Pool::open(vec![Arc::new(dev) as Arc<dyn BlockDevice>]).map_err(|e| unusable(path, e))
}
