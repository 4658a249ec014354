//! The intent log in a file, replaced atomically: the new record is written to `<path>.tmp`
//! (created with mode 0600: it names which copies are stale, nobody else's business),
//! synced, renamed over `<path>`, and the directory synced. A crash leaves the old record or
//! the new one, never a torn one; a stray `.tmp` is overwritten by the next store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::IntentError;
use super::{decode, encode, IntentLog, IntentRecord};

/// An intent log kept in one file.
#[derive(Debug)]
pub struct FileIntentLog {
    path: PathBuf,
}

impl FileIntentLog {
    /// The log at `path` (created by the first store).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileIntentLog { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> IntentError {
        IntentError::Io {
            log: self.path.display().to_string(),
            source,
        }
    }
}

impl IntentLog for FileIntentLog {
    fn load(&mut self) -> Result<Option<IntentRecord>, IntentError> {
        match fs::read(&self.path) {
            Ok(b) => decode(&b).map(Some).map_err(|e| IntentError::Corrupt {
                log: self.path.display().to_string(),
                source: e,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn store(&mut self, record: &IntentRecord) -> Result<(), IntentError> {
        let bytes = encode(record);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            let dir = match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::intent::CopyFlag;

    fn record(gen: u64) -> IntentRecord {
        IntentRecord {
            generation: gen,
            region_size: 1 << 20,
            regions: 100,
            copies: vec![CopyFlag::InSync, CopyFlag::Stale],
            dirty: [1, 50, 99].into_iter().collect(),
        }
    }

    #[test]
    fn stores_replace_the_record_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol.intent");
        let mut log = FileIntentLog::new(&path);
        assert_eq!(log.load().unwrap(), None);
        log.store(&record(1)).unwrap();
        log.store(&record(2)).unwrap();
        assert_eq!(log.load().unwrap(), Some(record(2)));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("vol.intent.tmp").exists());
        // A reopened handle reads the same record.
        assert_eq!(FileIntentLog::new(&path).load().unwrap(), Some(record(2)));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_clean_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol.intent");
        let mut log = FileIntentLog::new(&path);
        log.store(&record(1)).unwrap();
        let mut b = fs::read(&path).unwrap();
        b[70] ^= 0xff;
        fs::write(&path, &b).unwrap();
        assert!(matches!(log.load(), Err(IntentError::Corrupt { .. })));
    }
}
