//! `strata volume export NAME[@SNAPSHOT] FILE` (and `strata snapshot export VOL@SNAP FILE`):
//! a volume's or a snapshot's bytes copied into a local raw image over NBD, the way `volume
//! import` copies one in.
//!
//! The export attaches the volume only for its own copy: a volume it found detached is left
//! detached whatever happens (the same `Detach` guard as the import). A snapshot is read
//! through the volume's attachment under the export name `ID@SNAP` (read-only; the daemon
//! resolves snapshot names). All-zero pieces are not written, so the file stays sparse.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use strata_control::wire;
use strata_types::format_size;

use super::{body, Client, Detach, BYTES_BAR};

/// Bytes per READ.
const PIECE: u32 = 1 << 20;
/// READs in flight.
const DEPTH: usize = 8;

impl Client {
    /// Copies `name` (`VOL` or `VOL@SNAP`) into `file`, with a progress bar unless `quiet`.
    pub(super) fn export(
        &self,
        name: &str,
        file: &Path,
        tenant: Option<&str>,
        quiet: bool,
    ) -> Result<()> {
        let (vol, snap) = match name.split_once('@') {
            Some((v, s)) => (v, Some(s)),
            None => (name, None),
        };
        let id = self.volume_id(vol, tenant)?;
        if let Some(s) = snap {
            // A name the volume does not have is refused here, with its code, not by NBD.
            self.snapshot_id(&id, s)?;
        }
        let was_attached = match self.req("GET", &format!("/v1/volumes/{id}/attachments"), None) {
            Ok(_) => true,
            Err(e) if e.to_string().starts_with("attachment_not_found") => false,
            Err(e) => return Err(e),
        };
        let _detach = (!was_attached).then(|| Detach { c: self, id: &id });
        let a = self.req(
            "POST",
            &format!("/v1/volumes/{id}/attachments"),
            body(&wire::Attach {
                transport: Some(wire::Transport::Unix),
            }),
        )?;
        let uri = a["uri"].as_str().unwrap_or_default();
        let (export, socket) = uri
            .strip_prefix("nbd+unix:///")
            .and_then(|r| r.split_once("?socket="))
            .ok_or_else(|| anyhow!("unexpected attachment URI {uri}"))?;
        let export = match snap {
            Some(s) => format!("{export}@{s}"),
            None => export.to_string(),
        };
        let mut nbd = crate::nbdclient::Client::connect(socket, &export)?;
        let len = nbd.size;
        if file.exists() && !file.is_file() {
            bail!("invalid_argument: {} is not a regular file", file.display());
        }
        // A volume's bytes are the tenant's data: the file is private (0600) whatever the
        // umask, as the data dir's files are. An existing file keeps its own mode.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(file)
                .with_context(|| format!("creating {}", file.display()))?
        };
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            self.progress(len, BYTES_BAR)
        };
        bar.set_message(format!("exporting {name}"));
        let mut written = 0u64;
        let mut read = 0u64;
        nbd.read_all(0, len, PIECE, DEPTH, |off, bytes| {
            read += bytes.len() as u64;
            bar.set_position(read);
            if bytes.iter().any(|&b| b != 0) {
                f.seek(SeekFrom::Start(off))?;
                f.write_all(bytes)?;
                written += bytes.len() as u64;
            }
            Ok(())
        })?;
        nbd.close()?;
        // The zeros at the end are holes too.
        f.set_len(len)?;
        f.sync_all()?;
        bar.finish_and_clear();
        self.done(&format!(
            "exported {name} ({}) to {} ({} written, {} of zeros left sparse)",
            format_size(len),
            file.display(),
            format_size(written),
            format_size(len - written)
        ))
    }
}
