//! Master keys: the KMS-shaped [`KeyWrapper`] interface that wraps and unwraps data keys, and
//! its two implementations, a key file ([`KeyFile`]) and an environment variable
//! ([`EnvKey`]). Both hold a [`MasterKey`]: 32 bytes that are never written beside the data.
//!
//! A wrapped key is `version:u8 (1) | nonce[12] | ciphertext[32] | tag[16]` (61 bytes):
//! AES-256-GCM-SIV under the master key with a random nonce, the caller's context (pool id
//! and key id) as associated data, so a wrapped key copied into another pool or record does
//! not unwrap. A master key is named by its key check value (`kcv-` and 16 hex digits: the
//! first 8 bytes of the tag of an empty message under a fixed nonce), which identifies the
//! key without revealing it.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use thiserror::Error;
use zeroize::Zeroizing;

use super::siv::Siv;
use super::{DataKey, KEY_LEN};

const WRAP_VERSION: u8 = 1;
/// Bytes of a wrapped data key.
pub const WRAPPED_LEN: usize = 1 + 12 + KEY_LEN + 16;

/// Why a master key could not be loaded or a data key not (un)wrapped.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key file could not be read or created.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file does not hold exactly 32 bytes.
    #[error("master key file {path} holds {len} bytes, not {KEY_LEN}")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The key file lies inside the pool's data directory (the key would sit beside the data).
    #[error("master key file {path} is inside the data directory {data_dir}: keep it elsewhere")]
    InsideDataDir {
        /// The file.
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The environment variable is not 64 hexadecimal digits.
    #[error("environment variable {0} must hold 64 hexadecimal digits (32 bytes)")]
    EnvNotHex(String),
    /// A wrapped key did not unwrap under this master key (another key, or damaged).
    #[error("data key does not unwrap under master key {0}")]
    Unwrap(String),
}

/// A key-management interface, shaped like a KMS: wrap a data key, unwrap it, and name the
/// key that did it. A remote KMS implements it the same way.
pub trait KeyWrapper: Send + Sync + std::fmt::Debug {
    /// A stable, non-secret name of the master key (recorded with every key it wraps).
    fn key_id(&self) -> String;
    /// Wraps `key`; `context` is bound to the result (it must be given again to unwrap).
    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Unwraps what [`KeyWrapper::wrap`] returned for the same `context`.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, KeyError>;
}

/// 32 bytes of master key in memory (zeroed on drop).
pub struct MasterKey {
    aead: Siv,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// A master key from its bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        let aead = Siv::new(bytes);
        let tag = aead.seal([0xff; 12], b"strata master key check value", &mut []);
        let id = format!("kcv-{}", hex(&tag[..8]));
        MasterKey { aead, id }
    }

    /// A new random master key and its bytes (for a caller that stores them).
    pub fn generate() -> (MasterKey, Zeroizing<[u8; KEY_LEN]>) {
        let mut b = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut b[..]);
        (MasterKey::from_bytes(&b), b)
    }
}

impl KeyWrapper for MasterKey {
    fn key_id(&self) -> String {
        self.id.clone()
    }

    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key.bytes());
        let tag = self.aead.seal(nonce, context, &mut out[13..]);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, KeyError> {
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
            return Err(KeyError::Unwrap(self.id.clone()));
        }
        let nonce: [u8; 12] = wrapped[1..13].try_into().expect("12 bytes");
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&wrapped[13..13 + KEY_LEN]);
        let tag: [u8; 16] = wrapped[13 + KEY_LEN..].try_into().expect("16 bytes");
        self.aead
            .open(nonce, context, &mut k[..], &tag)
            .map_err(|_| KeyError::Unwrap(self.id.clone()))?;
        Ok(DataKey::from_bytes(*k))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let s = s.trim();
    if s.len() != 2 * KEY_LEN || !s.is_ascii() {
        return None;
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A master key read from a file of exactly 32 bytes.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    key: MasterKey,
}

impl KeyFile {
    /// Reads the key at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<KeyFile, KeyError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(io)?);
        let arr: [u8; KEY_LEN] = bytes[..].try_into().map_err(|_| KeyError::BadLength {
            path: path.clone(),
            len: bytes.len() as u64,
        })?;
        let key = MasterKey::from_bytes(&arr);
        Ok(KeyFile { path, key })
    }

    /// Like [`KeyFile::open`], but refuses a file inside `data_dir` (the key must not be
    /// stored beside the data it protects). Both paths are resolved first.
    pub fn open_outside(
        path: impl AsRef<Path>,
        data_dir: impl AsRef<Path>,
    ) -> Result<KeyFile, KeyError> {
        let path = path.as_ref();
        let canon = |p: &Path| {
            std::fs::canonicalize(p).map_err(|source| KeyError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let (file, dir) = (canon(path)?, canon(data_dir.as_ref())?);
        if file.starts_with(&dir) {
            return Err(KeyError::InsideDataDir {
                path: file,
                data_dir: dir,
            });
        }
        KeyFile::open(file)
    }

    /// Creates a new key file at `path` (refusing an existing one) with 32 random bytes,
    /// mode 0600 from creation on (never readable by others, whatever the umask).
    pub fn generate(path: impl AsRef<Path>) -> Result<KeyFile, KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path.as_ref().to_path_buf();
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let (key, bytes) = MasterKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // The mode is set, not left to the umask (which may only narrow it at create).
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        f.write_all(&bytes[..]).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(KeyFile { path, key })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A master key given as 64 hexadecimal digits in an environment variable.
#[derive(Debug)]
pub struct EnvKey {
    var: String,
    key: MasterKey,
}

impl EnvKey {
    /// Reads the key from the environment variable `var`.
    pub fn from_var(var: &str) -> Result<EnvKey, KeyError> {
        let v =
            Zeroizing::new(std::env::var(var).map_err(|_| KeyError::EnvMissing(var.to_string()))?);
        EnvKey::parse(var, &v)
    }

    /// Parses `value` as the variable `var` would hold it (64 hex digits, surrounding
    /// whitespace ignored).
    pub fn parse(var: &str, value: &str) -> Result<EnvKey, KeyError> {
        let b = unhex(value).ok_or_else(|| KeyError::EnvNotHex(var.to_string()))?;
        Ok(EnvKey {
            var: var.to_string(),
            key: MasterKey::from_bytes(&b),
        })
    }

    /// The variable's name.
    pub fn var(&self) -> &str {
        &self.var
    }
}

/// A key source that holds one [`MasterKey`] wraps and unwraps with it.
macro_rules! wraps_with_its_master_key {
    ($($t:ty),*) => {$(
        impl KeyWrapper for $t {
            fn key_id(&self) -> String {
                self.key.key_id()
            }
            fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, KeyError> {
                self.key.wrap(key, context)
            }
            fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, KeyError> {
                self.key.unwrap(wrapped, context)
            }
        }
    )*};
}
wraps_with_its_master_key!(KeyFile, EnvKey);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn wrap_unwrap_binds_key_and_context() {
        let (m, _) = MasterKey::generate();
        let dk = DataKey::generate();
        let w = m.wrap(&dk, b"ctx").unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(m.unwrap(&w, b"ctx").unwrap().bytes(), dk.bytes());
        assert!(m.unwrap(&w, b"other").is_err());
        let (m2, _) = MasterKey::generate();
        assert!(m2.unwrap(&w, b"ctx").is_err());
        assert_ne!(m.key_id(), m2.key_id());
        for i in 0..w.len() {
            let mut x = w.clone();
            x[i] ^= 0x40;
            assert!(m.unwrap(&x, b"ctx").is_err(), "byte {i}");
        }
        assert!(m.unwrap(&w[..60], b"ctx").is_err());
    }

    #[test]
    fn key_file_is_created_0600_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        let k = KeyFile::generate(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&p).unwrap().len(), 32);
        assert!(
            KeyFile::generate(&p).is_err(),
            "an existing file is not replaced"
        );
        let again = KeyFile::open(&p).unwrap();
        assert_eq!(again.key_id(), k.key_id());
        let dk = DataKey::generate();
        let w = k.wrap(&dk, b"c").unwrap();
        assert_eq!(again.unwrap(&w, b"c").unwrap().bytes(), dk.bytes());
        std::fs::write(dir.path().join("short"), [1u8; 31]).unwrap();
        assert!(matches!(
            KeyFile::open(dir.path().join("short")),
            Err(KeyError::BadLength { len: 31, .. })
        ));
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::copy(&p, data.join("k")).unwrap();
        assert!(matches!(
            KeyFile::open_outside(data.join("k"), &data),
            Err(KeyError::InsideDataDir { .. })
        ));
        assert!(KeyFile::open_outside(&p, &data).is_ok());
    }

    #[test]
    fn env_key_parses_hex_only() {
        let hexkey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = EnvKey::parse("K", hexkey).unwrap();
        let b = EnvKey::parse("K", &format!("  {}\n", hexkey.to_uppercase())).unwrap();
        assert_eq!(a.key_id(), b.key_id());
        assert!(EnvKey::parse("K", &hexkey[..62]).is_err());
        assert!(EnvKey::parse("K", &hexkey.replace('0', "g")).is_err());
        assert!(matches!(
            EnvKey::from_var("STRATA_TEST_SURELY_UNSET_VAR"),
            Err(KeyError::EnvMissing(_))
        ));
    }
}
