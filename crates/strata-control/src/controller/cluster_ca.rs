//! The cluster's certificate authority (docs/cluster.md, "A remote copy is an NBD export with
//! mutual TLS"): one CA for every node of a cluster, kept in the store at `/cluster/ca` with
//! its key sealed under the join secret, so only a node started with the secret can issue
//! itself a node certificate.
//!
//! # Invariants
//! - The record is created once, by the first node that finds none, with a transaction that
//!   compares the key's absence: two nodes starting together agree on one CA.
//! - The key is sealed with AES-256-GCM-SIV under SHA-256(`SEAL_LABEL` ‖ secret), with a
//!   random nonce and the CA certificate as associated data: a record whose certificate was
//!   swapped does not open, and a wrong secret is refused (`invalid_argument`) before the
//!   node serves anything.
//! - The join secret is at least [`MIN_SECRET_LEN`] bytes (after trimming whitespace); a
//!   hash is then a sound key derivation (the secret has the entropy, not a password).

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_state::Txn;
use zeroize::Zeroizing;

use super::store::enc;
use super::Controller;
use crate::error::ControlError;
use crate::pki::Pki;

/// The record's key.
pub(super) const CLUSTER_CA_KEY: &str = "/cluster/ca";
/// Shortest join secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Bound into the sealing key so the secret's hash is used for nothing else.
const SEAL_LABEL: &[u8] = b"strata cluster CA key v1\0";
/// The record's format version.
const VERSION: u32 = 1;

/// `/cluster/ca`: the CA certificate and its key, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClusterCaRecord {
    version: u32,
    /// The CA certificate, PEM.
    ca_cert: String,
    /// The 12-byte nonce, hex.
    nonce: String,
    /// The CA key (PEM) sealed, with its 16-byte tag, hex.
    sealed_key: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// The join secret from its file's bytes: whitespace around it is not part of it.
pub fn join_secret(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, ControlError> {
    let s = bytes.trim_ascii();
    if s.len() < MIN_SECRET_LEN {
        return Err(ControlError::invalid(
            "join_secret",
            format!(
                "the join secret has {} bytes; it needs at least {MIN_SECRET_LEN} (for example \
                 `head -c 32 /dev/urandom | base64`)",
                s.len()
            ),
        ));
    }
    Ok(Zeroizing::new(s.to_vec()))
}

fn cipher(secret: &[u8]) -> Aes256GcmSiv {
    let mut h = Sha256::new();
    h.update(SEAL_LABEL);
    h.update(secret);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&h.finalize());
    Aes256GcmSiv::new_from_slice(&key[..]).expect("a 32-byte key")
}

fn seal(secret: &[u8], ca_cert: &str, key_pem: &str) -> ClusterCaRecord {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(secret)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key_pem.as_bytes(),
                aad: ca_cert.as_bytes(),
            },
        )
        .expect("sealing in memory");
    ClusterCaRecord {
        version: VERSION,
        ca_cert: ca_cert.to_string(),
        nonce: hex(&nonce),
        sealed_key: hex(&sealed),
    }
}

fn open(secret: &[u8], r: &ClusterCaRecord) -> Result<Pki, ControlError> {
    if r.version != VERSION {
        return Err(ControlError::internal(format!(
            "{CLUSTER_CA_KEY} has format version {}; this build reads {VERSION}",
            r.version
        )));
    }
    let damaged = || ControlError::internal(format!("{CLUSTER_CA_KEY} is damaged"));
    let nonce = unhex(&r.nonce)
        .filter(|n| n.len() == 12)
        .ok_or_else(damaged)?;
    let sealed = unhex(&r.sealed_key).ok_or_else(damaged)?;
    let key = cipher(secret)
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: r.ca_cert.as_bytes(),
            },
        )
        .map_err(|_| {
            ControlError::invalid(
                "join_secret",
                "the join secret does not open the cluster's CA: every node of a cluster \
                 must be given the same --join-secret-file",
            )
        })?;
    let key = Zeroizing::new(String::from_utf8(key).map_err(|_| damaged())?);
    Pki::from_pem(&r.ca_cert, &key).map_err(|e| ControlError::internal(format!("cluster CA: {e}")))
}

impl Controller {
    /// The cluster's CA, opened with `secret`; made and recorded when the cluster has none.
    pub fn cluster_ca(&self, secret: &[u8]) -> Result<Pki, ControlError> {
        for _ in 0..3 {
            if let Some((r, _)) = self.get::<ClusterCaRecord>(CLUSTER_CA_KEY)? {
                return open(secret, &r);
            }
            let (pki, key_pem) = Pki::generate("Strata cluster CA")
                .map_err(|e| ControlError::internal(format!("cluster CA: {e}")))?;
            let key_pem = Zeroizing::new(key_pem);
            let r = seal(secret, pki.ca_pem(), &key_pem);
            let t = Txn::new()
                .when(CLUSTER_CA_KEY, 0)
                .put(CLUSTER_CA_KEY, enc(&r));
            if self.store.txn(t)?.succeeded {
                tracing::info!("made the cluster's certificate authority");
                return Ok(pki);
            }
            // Another node made it first: open theirs.
        }
        Err(ControlError::internal(
            "the cluster CA record kept changing",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_secret_only_and_with_its_certificate_only() {
        let (pki, key) = Pki::generate("t").unwrap();
        let secret = [7u8; 32];
        let r = seal(&secret, pki.ca_pem(), &key);
        let again = open(&secret, &r).unwrap();
        assert_eq!(again.ca_pem(), pki.ca_pem());
        let wrong = open(&[8u8; 32], &r).unwrap_err();
        assert_eq!(crate::api::code_of(&wrong).as_str(), "invalid_argument");
        let (other, _) = Pki::generate("t").unwrap();
        let mut swapped = r.clone();
        swapped.ca_cert = other.ca_pem().to_string();
        assert!(open(&secret, &swapped).is_err());
        let mut v2 = r;
        v2.version = 2;
        assert_eq!(
            crate::api::code_of(&open(&secret, &v2).unwrap_err()).as_str(),
            "internal"
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(join_secret(b"  short \n").is_err());
        let s = join_secret(b"  0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(s.len(), 32);
    }
}
