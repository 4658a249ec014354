//! The backend trait every device sits behind, and the two real backends (files and block
//! devices, which Linux serves through the same positional read/write calls).
//!
//! The engine never touches a file descriptor itself: it calls [`BlockDevice`]. That is what lets
//! the tests plug in memory, fault-injecting and power-cut backends (see [`crate::testing`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

/// A device the pool stores data on.
///
/// Contract: `write_at` may sit in a volatile cache until `sync` returns Ok; after a power cut,
/// any write not covered by a successful `sync` may be present, absent, or present in part
/// (at sector granularity). Reads see every completed write.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Size of the device in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the device is empty (zero bytes).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `off`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync(&self) -> io::Result<()>;
    /// A human label for error messages (a path, or `mem:3`).
    fn describe(&self) -> String;
}

/// Largest single `pwrite` a [`FileDevice`] issues (see its `write_at`): it bounds the size of
/// the page-cache folios any write creates.
pub const FILE_WRITE_PIECE: usize = 256 << 10;

/// The piece the engine writes newly placed blocks in (`pool/write.rs`): their folios may not
/// be in the page cache, and the write that creates a folio sets its size; at 64 KiB a later
/// 4 KiB write into it walks 16 buffers, not 64 (see [`FileDevice`]'s `write_at`). Blocks
/// rewritten in place were written in the current epoch, so their folios exist and they go in
/// pieces of [`FILE_WRITE_PIECE`] (a quarter of the system calls).
pub const NEW_BLOCK_PIECE: usize = 64 << 10;

/// Mode of every file the engine creates: owner read and write, nothing for others.
pub const CREATE_MODE: u32 = 0o600;

/// A regular file or a block device, accessed with `pread`/`pwrite` and made durable with
/// `fdatasync`.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
}

impl FileDevice {
    /// Opens an existing file or block device for reading and writing.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok(FileDevice { file, path })
    }

    /// Creates (or truncates) a sparse regular file of `size` bytes and opens it. The file is
    /// mode [`CREATE_MODE`] (owner read/write only: it holds tenants' data) whatever the umask:
    /// created with that mode, then set on the open descriptor, since the umask can only
    /// narrow the first and an existing file keeps its old mode.
    pub fn create_file(path: impl AsRef<Path>, size: u64) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(CREATE_MODE)
            .open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(CREATE_MODE))?;
        file.set_len(size)?;
        Ok(FileDevice { file, path })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockDevice for FileDevice {
    fn len(&self) -> io::Result<u64> {
        // Seeking to the end works for regular files and block devices alike, where
        // metadata().len() is 0 for a block device.
        let mut f = &self.file;
        f.seek(SeekFrom::End(0))
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }

    /// Issues the write in pieces of at most [`FILE_WRITE_PIECE`] bytes. The kernel sizes the
    /// page-cache folios a buffered write creates by the write's length; a 1 MiB `pwrite`
    /// leaves 1 MiB folios, and on ext4 every later 4 KiB write into such a folio walks all of
    /// its buffers (`block_write_begin`: 72% of the server's CPU in 4 KiB random writes after
    /// a sequential fill, 75 K IOPS). In 64 KiB pieces the same workload ran at 157-187 K IOPS
    /// (NBD bench, same runs). The engine writes newly placed blocks in [`NEW_BLOCK_PIECE`]s of
    /// 64 KiB for that reason; this bound (256 KiB) is for rewrites of blocks whose folios
    /// exist, where one call per 256 KiB instead of four took sequential rewrites of a plain
    /// file from 11 to 15-16 GB/s (`docs/block-format.md`, "Device writes").
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut at = off;
        for piece in buf.chunks(FILE_WRITE_PIECE) {
            self.file.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A device held in memory: for tests and for the engine's own unit tests. `sync` is a no-op.
#[derive(Debug)]
pub struct MemDevice {
    data: RwLock<Vec<u8>>,
    label: String,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64, label: impl Into<String>) -> Arc<Self> {
        Arc::new(MemDevice {
            data: RwLock::new(vec![0; size as usize]),
            label: label.into(),
        })
    }

    /// A device holding a copy of `image`.
    pub fn from_image(image: Vec<u8>, label: impl Into<String>) -> Arc<Self> {
        Arc::new(MemDevice {
            data: RwLock::new(image),
            label: label.into(),
        })
    }

    /// A copy of the device's bytes.
    pub fn image(&self) -> Vec<u8> {
        self.data.read().clone()
    }

    /// Changes bytes behind the engine's back (corruption tests).
    pub fn poke(&self, off: u64, bytes: &[u8]) {
        let mut d = self.data.write();
        d[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    }
}

pub(crate) fn range_check(len: u64, buf_len: usize, off: u64) -> io::Result<(usize, usize)> {
    let end = off
        .checked_add(buf_len as u64)
        .filter(|&e| e <= len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "access past end of device"))?;
    Ok((off as usize, end as usize))
}

impl BlockDevice for MemDevice {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let d = self.data.read();
        let (s, e) = range_check(d.len() as u64, buf.len(), off)?;
        buf.copy_from_slice(&d[s..e]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut d = self.data.write();
        let (s, e) = range_check(d.len() as u64, buf.len(), off)?;
        d[s..e].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_device_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d0");
        let d = FileDevice::create_file(&p, 1 << 20).unwrap();
        assert_eq!(d.len().unwrap(), 1 << 20);
        d.write_at(b"hello", 4096).unwrap();
        d.sync().unwrap();
        let d = FileDevice::open(&p).unwrap();
        let mut b = [0u8; 5];
        d.read_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"hello");
        assert!(d.read_at(&mut b, (1 << 20) - 2).is_err());
    }

    #[test]
    fn file_device_writes_longer_than_a_piece_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::create_file(dir.path().join("d0"), 1 << 20).unwrap();
        let len = 3 * FILE_WRITE_PIECE + 123;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        d.write_at(&data, 4096 + 7).unwrap();
        let mut back = vec![0u8; len + 2];
        d.read_at(&mut back, 4096 + 6).unwrap();
        assert_eq!(back[0], 0);
        assert!(back[1..=len] == data[..]);
        assert_eq!(back[len + 1], 0);
    }

    #[test]
    fn mem_device_bounds() {
        let d = MemDevice::new(8192, "m");
        assert!(d.write_at(&[1; 10], 8190).is_err());
        assert!(d.read_at(&mut [0; 1], u64::MAX).is_err());
        d.write_at(&[7; 10], 100).unwrap();
        let mut b = [0u8; 10];
        d.read_at(&mut b, 100).unwrap();
        assert_eq!(b, [7; 10]);
    }
}
