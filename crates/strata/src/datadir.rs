//! The data dir: created private, locked for one daemon, its modes enforced at every start.
//!
//! Invariants (whatever the process umask, which is never trusted):
//! - the data dir and every directory the daemon makes in it are mode [`DIR_MODE`] (0700);
//!   every file the daemon keeps there is [`FILE_MODE`] (0600), sockets included: device
//!   images hold tenants' data in plain text, `state.redb` every record and token hash;
//! - at start, anything under the dir with wider modes (left by an older version or by hand)
//!   is narrowed to these, and a warning says so;
//! - one daemon per dir: an exclusive `flock` on the directory itself (not on a file inside
//!   it, which someone could delete), held for the process's life.

use std::fs::{self, DirBuilder, File, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Mode of the data dir and its directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under the data dir.
pub const FILE_MODE: u32 = 0o600;

/// The data dir's lock: held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Creates `dir` (and `sub` directories inside it) with [`DIR_MODE`] if missing.
pub fn create(dir: &Path, subs: &[&Path]) -> Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(DIR_MODE);
    b.create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, DIR_MODE)?;
    for s in subs {
        let p = dir.join(s);
        b.create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        // The umask may have narrowed what the builder made below 0700; set each exactly.
        let mut q = p.as_path();
        while q != dir {
            set_mode(q, DIR_MODE)?;
            q = q.parent().unwrap_or(dir);
        }
    }
    Ok(())
}

/// Takes the exclusive lock on `dir` itself.
pub fn lock(dir: &Path) -> Result<DirLock> {
    let f = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    if f.try_lock().is_err() {
        bail!("{} is in use by another Strata process", dir.display());
    }
    Ok(DirLock { _dir: f })
}

/// Narrows the mode of everything under `dir` (itself included) to the invariants above.
/// Returns how many entries were changed.
pub fn enforce_modes(dir: &Path) -> Result<usize> {
    let mut changed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        changed += usize::from(narrow(&d, DIR_MODE)?);
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() || t.is_socket() {
                changed += usize::from(narrow(&p, FILE_MODE)?);
            }
            // Symlinks are left alone: their mode means nothing and the target may be a
            // block device the admin owns.
        }
    }
    Ok(changed)
}

/// Sets `path` to `mode` if it allows anything more; true if it changed.
fn narrow(path: &Path, mode: u32) -> Result<bool> {
    let have = fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if have & !mode == 0 {
        return Ok(false);
    }
    tracing::warn!(
        path = %path.display(),
        mode = format!("{have:o}"),
        "narrowing a mode that lets others in"
    );
    set_mode(path, have & mode)?;
    Ok(true)
}

/// Sets `path`'s mode exactly.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_narrowed_and_the_lock_is_exclusive() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d");
        create(&dir, &[Path::new("pools/default")]).unwrap();
        let f = dir.join("pools/default/dev0.img");
        fs::write(&f, b"x").unwrap();
        set_mode(&f, 0o666).unwrap();
        set_mode(&dir.join("pools"), 0o755).unwrap();
        assert_eq!(enforce_modes(&dir).unwrap(), 2);
        let m = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m(&f), 0o600);
        assert_eq!(m(&dir.join("pools")), 0o700);
        assert_eq!(m(&dir), 0o700);
        assert_eq!(enforce_modes(&dir).unwrap(), 0);
        let l = lock(&dir).unwrap();
        assert!(lock(&dir).is_err());
        drop(l);
        assert!(lock(&dir).is_ok());
    }
}
