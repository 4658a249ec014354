//! The kernel programs' object: compiled from `bpf/fastpath.c` by `scripts/build-bpf`,
//! committed, and embedded here, so building the crate never needs clang. The test below
//! rebuilds it and checks that the committed bytes are what the source gives.
//!
//! `DataplaneConfig::bpf_object` (default: `STRATA_BPF_OBJECT=PATH`) makes the dataplane
//! load that file instead (a rebuilt object while developing; a bogus one to see the
//! fallback to the slow path).

use std::borrow::Cow;
use std::path::Path;

/// The committed object.
pub(crate) static EMBEDDED: &[u8] = include_bytes!("../../bpf/fastpath.o");

/// Environment variable naming an object file to load instead of [`EMBEDDED`].
pub const OBJECT_ENV: &str = "STRATA_BPF_OBJECT";

/// The object to load (`path`, else the embedded one), and its name for messages.
pub(crate) fn object(path: Option<&Path>) -> std::io::Result<(Cow<'static, [u8]>, String)> {
    match path {
        Some(p) => Ok((Cow::Owned(std::fs::read(p)?), p.display().to_string())),
        None => Ok((Cow::Borrowed(EMBEDDED), "the embedded object".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The committed `bpf/fastpath.o` is exactly what `scripts/build-bpf` makes from
    /// `bpf/fastpath.c` with this machine's clang. CI installs clang (scripts/test), so there
    /// the comparison always runs; a machine without clang fails with how to get it.
    #[test]
    fn committed_object_matches_its_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::env::temp_dir().join(format!("strata-fastpath-{}.o", std::process::id()));
        let run = Command::new("bash")
            .arg(root.join("scripts/build-bpf"))
            .arg(&out)
            .output()
            .expect("running scripts/build-bpf");
        assert!(
            run.status.success(),
            "scripts/build-bpf failed (needs clang: apt-get install clang):\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let built = std::fs::read(&out).expect("reading the rebuilt object");
        let _ = std::fs::remove_file(&out);
        assert!(
            built == EMBEDDED,
            "crates/strata-dataplane/bpf/fastpath.o is not what fastpath.c compiles to \
             ({} bytes committed, {} rebuilt): run `bash scripts/build-bpf` and commit both \
             files",
            EMBEDDED.len(),
            built.len()
        );
    }

    #[test]
    fn the_embedded_object_is_an_ebpf_elf() {
        assert_eq!(&EMBEDDED[..4], b"\x7fELF");
        assert_eq!(EMBEDDED[4], 2, "64-bit");
        // e_machine EM_BPF (247), little-endian.
        assert_eq!(u16::from_le_bytes([EMBEDDED[18], EMBEDDED[19]]), 247);
    }
}
