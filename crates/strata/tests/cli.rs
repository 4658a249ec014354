//! The binary as a user runs it: `strata serve` creates the data dir and default pool, stops
//! cleanly on SIGTERM, keeps its pool across restarts, and refuses a second daemon on the same
//! data dir; `strata pool show` reads the pool while no daemon runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Starts `strata serve` and waits until it logs that it is serving.
fn serve(dir: &std::path::Path) -> Child {
    let mut child = strata()
        .args(["serve", "--default-pool-size", "256M", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited early");
        if line.contains("strata serving") {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not start");
    }
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

fn stop(mut child: Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn serve_creates_pool_stops_cleanly_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("strata-data");
    let child = serve(&data);
    assert!(data.join("pools/default/dev0.img").exists());
    // A second daemon on the same data dir is refused with a clear message.
    let out = strata()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another Strata process"));
    stop(child);

    let out = strata()
        .args(["pool", "show", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("capacity"), "{text}");
    assert!(text.contains("(metadata)"), "{text}");
    let id = text.lines().next().unwrap().to_string();

    // Restart: the same pool comes back.
    stop(serve(&data));
    let out = strata()
        .args(["pool", "show", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap(),
        id
    );
}

#[test]
fn pool_show_without_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = strata()
        .args(["pool", "show", "--data-dir"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Strata data"));
}
