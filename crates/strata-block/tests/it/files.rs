//! Files the engine creates are private to their owner (mode 0600) whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use strata_block::FileDevice;

const CHILD: &str = "STRATA_BLOCK_UMASK_CHILD";

/// The process umask, read from /proc (no `unsafe` needed).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line[6..].trim(), 8).unwrap()
}

fn create_and_check(dir: &std::path::Path) {
    let p = dir.join("dev0");
    FileDevice::create_file(&p, 8 << 20).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new device file under umask {:03o}", umask());
    // Re-creating an existing file with another mode resets it too.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    FileDevice::create_file(&p, 8 << 20).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o600,
        "re-created device file under umask {:03o}",
        umask()
    );
}

/// The umask is per process, so each case runs this test again in a child process that a
/// shell started with that umask (changing it here would race the other tests' threads).
#[test]
fn created_device_files_are_0600_under_any_umask() {
    if let Ok(want) = std::env::var(CHILD) {
        assert_eq!(
            format!("{:03o}", umask()),
            want,
            "child runs under the umask asked for"
        );
        let dir = tempfile::tempdir().unwrap();
        create_and_check(dir.path());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for mask in ["000", "277", "022"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {mask} && exec \"$0\" --exact files::created_device_files_are_0600_under_any_umask --test-threads 1"
            ))
            .arg(&exe)
            .env(CHILD, mask)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "umask {mask}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
