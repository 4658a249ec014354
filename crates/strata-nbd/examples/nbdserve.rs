//! A small NBD server for benchmarks and manual testing: creates a pool on a sparse file
//! (twice the volume plus 64 MiB), creates one volume, and serves it on a Unix socket until
//! killed (or until stdin closes, with `--until-stdin-eof`).
//!
//! ```text
//! cargo run --release -p strata-nbd --example nbdserve -- \
//!     --dir /var/tmp/x --socket /tmp/s.sock --size-mib 1024 [--volume vol]
//! ```

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use strata_block::{DeviceSpec, FileDevice, Pool};
use strata_nbd::NbdServer;
use strata_types::DeviceClass;

fn main() -> anyhow::Result<()> {
    let mut dir = None;
    let mut socket = None;
    let mut size_mib: u64 = 1024;
    let mut volume = "vol".to_string();
    let mut until_eof = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--socket" => socket = args.next().map(PathBuf::from),
            "--size-mib" => size_mib = args.next().context("--size-mib N")?.parse()?,
            "--volume" => volume = args.next().context("--volume NAME")?,
            "--until-stdin-eof" => until_eof = true,
            other => bail!("unknown argument {other}"),
        }
    }
    let dir = dir.context("--dir DIR is required")?;
    let socket = socket.context("--socket PATH is required")?;
    std::fs::create_dir_all(&dir)?;
    let size = size_mib << 20;
    let dev = FileDevice::create_file(dir.join("pool.img"), 2 * size + (64 << 20))?;
    let pool = Pool::create(vec![DeviceSpec {
        device: std::sync::Arc::new(dev),
        class: DeviceClass::Ssd,
    }])?;
    pool.create_volume(&volume, size, None)?;
    let server = NbdServer::new(pool);
    server.serve_unix(&socket)?;
    eprintln!("serving {volume} ({size_mib} MiB) on {}", socket.display());
    if until_eof {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    } else {
        loop {
            std::thread::park();
        }
    }
    server.shutdown();
    Ok(())
}
