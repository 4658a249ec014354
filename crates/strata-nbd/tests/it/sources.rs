//! The server over export sources that are not one engine pool, to real clients: an in-memory
//! source (its allocation map and its failures are its own, so what the client sees can only
//! have come from it), and two engine pools behind one source (volume names routed to one of
//! them, the shape of a multi-device control plane).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_block::{DeviceSpec, IoError, MemDevice, Pool};
use strata_nbd::proto::*;
use strata_nbd::{ExportIo, ExportSource, NbdServer, PoolSource, Runs, ServerConfig, SinceToken};
use strata_types::DeviceClass;
use tempfile::TempDir;

use crate::common::*;

const MIB: u64 = 1 << 20;
/// The memory source's allocation unit.
const BLOCK: u64 = 4096;

/// Bytes and a per-block allocation map.
#[derive(Debug, Clone)]
struct Image {
    data: Vec<u8>,
    alloc: Vec<bool>,
}

impl Image {
    fn new(size: u64) -> Self {
        Image {
            data: vec![0; size as usize],
            alloc: vec![false; size.div_ceil(BLOCK) as usize],
        }
    }

    /// Marks the blocks `[off, off+len)` touches (`partial`), or only those it covers whole.
    fn mark(&mut self, off: u64, len: u64, alloc: bool, partial: bool) {
        let (first, last) = if partial {
            (off / BLOCK, (off + len).div_ceil(BLOCK))
        } else {
            (off.div_ceil(BLOCK), (off + len) / BLOCK)
        };
        for b in first..last {
            self.alloc[b as usize] = alloc;
        }
    }
}

/// Runs of (length, `f(block)`) over `[off, off+len)`, merged.
fn runs(off: u64, len: u64, f: impl Fn(usize) -> bool) -> Runs {
    let mut out: Runs = Vec::new();
    let mut at = off;
    while at < off + len {
        let end = ((at / BLOCK + 1) * BLOCK).min(off + len);
        let v = f((at / BLOCK) as usize);
        match out.last_mut() {
            Some((l, p)) if *p == v => *l += end - at,
            _ => out.push((end - at, v)),
        }
        at = end;
    }
    out
}

/// One volume of the memory source, with what it saw.
#[derive(Debug)]
struct MemVolume {
    live: Mutex<Image>,
    snapshots: Mutex<Vec<(String, Arc<Image>)>>,
    /// Writes reaching at or past this offset fail: the backend is out of space there.
    full_from: AtomicU64,
    /// Reads touching this block fail their verification (`u64::MAX`: none).
    bad_block: AtomicU64,
    /// Write, trim and zeroing calls received (refused ones too).
    writes: AtomicU64,
    flushes: AtomicU64,
}

impl MemVolume {
    fn snapshot(&self, name: &str) {
        let img = Arc::new(self.live.lock().clone());
        self.snapshots.lock().push((name.to_string(), img));
    }
}

#[derive(Debug, Default)]
struct MemSource {
    volumes: Mutex<BTreeMap<String, Arc<MemVolume>>>,
}

impl MemSource {
    fn add(&self, name: &str, size: u64) -> Arc<MemVolume> {
        let v = Arc::new(MemVolume {
            live: Mutex::new(Image::new(size)),
            snapshots: Mutex::new(Vec::new()),
            full_from: AtomicU64::new(u64::MAX),
            bad_block: AtomicU64::new(u64::MAX),
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        });
        self.volumes.lock().insert(name.to_string(), v.clone());
        v
    }
}

impl ExportSource for MemSource {
    fn open(&self, volume: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>> {
        let vol = self.volumes.lock().get(volume)?.clone();
        let snap = match snapshot {
            None => None,
            Some(s) => Some(vol.snapshots.lock().iter().find(|(n, _)| n == s)?.1.clone()),
        };
        let size = vol.live.lock().data.len() as u64;
        Some(Arc::new(MemIo {
            name: volume.to_string(),
            vol,
            snap,
            size,
        }))
    }

    fn list(&self) -> Vec<(String, Vec<String>)> {
        self.volumes
            .lock()
            .iter()
            .map(|(n, v)| {
                let snaps = v.snapshots.lock().iter().map(|(s, _)| s.clone()).collect();
                (n.clone(), snaps)
            })
            .collect()
    }
}

#[derive(Debug)]
struct MemIo {
    name: String,
    vol: Arc<MemVolume>,
    snap: Option<Arc<Image>>,
    size: u64,
}

impl MemIo {
    fn writable(&self) -> Result<(), IoError> {
        match self.snap {
            Some(_) => Err(IoError::ReadOnly(self.name.clone())),
            None => Ok(()),
        }
    }

    fn change(&self, off: u64, len: u64, f: impl FnOnce(&mut Image)) -> Result<(), IoError> {
        self.vol.writes.fetch_add(1, Ordering::Relaxed);
        self.writable()?;
        if off + len > self.vol.full_from.load(Ordering::Relaxed) {
            return Err(IoError::OutOfSpace {
                target: self.name.clone(),
            });
        }
        f(&mut self.vol.live.lock());
        Ok(())
    }
}

impl ExportIo for MemIo {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        let bad = self.vol.bad_block.load(Ordering::Relaxed);
        let n = dst.len() as u64;
        if (off / BLOCK..(off + n).div_ceil(BLOCK)).contains(&bad) {
            return Err(IoError::Checksum {
                target: self.name.clone(),
                offset: bad * BLOCK,
                device: "mem".into(),
                device_offset: bad * BLOCK,
            });
        }
        let r = off as usize..(off + n) as usize;
        match &self.snap {
            Some(img) => dst.copy_from_slice(&img.data[r]),
            None => dst.copy_from_slice(&self.vol.live.lock().data[r]),
        }
        Ok(())
    }

    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.read(off, dst)
    }

    fn qos(&self) -> Result<Option<Arc<strata_block::VolumeIo>>, IoError> {
        Ok(None)
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), IoError> {
        self.change(off, data.len() as u64, |img| {
            img.data[off as usize..off as usize + data.len()].copy_from_slice(data);
            img.mark(off, data.len() as u64, true, true);
        })
    }

    fn trim(&self, off: u64, len: u64) -> Result<(), IoError> {
        self.write_zeroes(off, len, true)
    }

    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), IoError> {
        self.change(off, len, |img| {
            img.data[off as usize..(off + len) as usize].fill(0);
            if unmap {
                img.mark(off, len, false, false);
            } else {
                img.mark(off, len, true, true);
            }
        })
    }

    fn flush(&self) -> Result<(), IoError> {
        self.vol.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError> {
        let alloc = match &self.snap {
            Some(img) => img.alloc.clone(),
            None => self.vol.live.lock().alloc.clone(),
        };
        Ok(runs(off, len, |b| alloc[b]))
    }

    fn since(&self, name: &str) -> Option<SinceToken> {
        self.writable().ok()?;
        let snaps = self.vol.snapshots.lock();
        let i = snaps.iter().position(|(n, _)| n == name)?;
        Some(SinceToken(i as u64))
    }

    fn since_all(&self) -> Vec<(String, SinceToken)> {
        if self.writable().is_err() {
            return Vec::new();
        }
        let snaps = self.vol.snapshots.lock();
        let named = snaps.iter().enumerate();
        named
            .map(|(i, (n, _))| (n.clone(), SinceToken(i as u64)))
            .collect()
    }

    fn changed(&self, since: SinceToken, off: u64, len: u64) -> Result<Runs, IoError> {
        self.writable()?;
        let base = self.vol.snapshots.lock()[since.0 as usize].1.clone();
        let live = self.vol.live.lock();
        Ok(runs(off, len, |b| {
            let r = b * BLOCK as usize..(b + 1) * BLOCK as usize;
            live.data[r.clone()] != base.data[r]
        }))
    }
}

/// A server over `source` on a Unix socket in a temp dir (the server goes first on drop).
struct Served {
    server: NbdServer,
    sock: PathBuf,
    dir: TempDir,
}

impl Served {
    fn new(source: Arc<dyn ExportSource>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nbd-src")
            .tempdir()
            .unwrap();
        let server = NbdServer::with_source(source, ServerConfig::default());
        let sock = dir.path().join("nbd.sock");
        server.serve_unix(&sock).unwrap();
        Served { server, sock, dir }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }
}

fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn memory_source_takes_writes_and_flushes_and_serves_its_bytes() {
    let src = Arc::new(MemSource::default());
    let vol = src.add("mem", 4 * MIB);
    {
        let mut live = vol.live.lock();
        live.data[MIB as usize..2 * MIB as usize].fill(0x77);
        // Allocated, or it would not read as data (nbdcopy skips what the map calls holes).
        live.mark(MIB, MIB, true, true);
    }
    let s = Served::new(src.clone());
    let uri = s.uri("mem");

    let info = run_ok("nbdinfo", &[&uri]);
    assert!(info.contains("export-size: 4194304"), "{info}");
    assert!(info.contains("is_read_only: false"), "{info}");
    let out = run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 8192 12288",
            "-c",
            "flush",
            "-c",
            "read -P 0x5a 8192 12288",
            "-c",
            "read -P 0x77 1M 1M",
            &uri,
        ],
    );
    assert!(!out.contains("failed"), "{out}");
    // The bytes are in the backend, nowhere else.
    {
        let live = vol.live.lock();
        assert!(live.data[8192..20480].iter().all(|&b| b == 0x5a));
        assert!(live.data[..8192].iter().all(|&b| b == 0));
        assert!(live.data[20480..MIB as usize].iter().all(|&b| b == 0));
    }
    assert!(vol.writes.load(Ordering::Relaxed) >= 1);
    assert!(
        vol.flushes.load(Ordering::Relaxed) >= 1,
        "FLUSH reached the backend"
    );

    // A whole-export copy out through nbdcopy is the backend's image.
    let file = s.dir.path().join("out.raw");
    run_ok("nbdcopy", &[&uri, file.to_str().unwrap()]);
    assert!(std::fs::read(&file).unwrap() == vol.live.lock().data);

    let list = run_ok("nbdinfo", &["--list", &uri]);
    assert!(list.contains("export=\"mem\""), "{list}");
}

#[test]
fn memory_source_snapshot_export_is_read_only() {
    let src = Arc::new(MemSource::default());
    let vol = src.add("mem", MIB);
    vol.live.lock().data[..4096].fill(0x11);
    vol.snapshot("before");
    let s = Served::new(src.clone());
    run_ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x22 0 4096", &s.uri("mem")],
    );
    let writes = vol.writes.load(Ordering::Relaxed);

    let snap = s.uri("mem@before");
    let info = run_ok("nbdinfo", &[&snap]);
    assert!(info.contains("is_read_only: true"), "{info}");
    let o = run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x33 0 4096", &snap],
    );
    let text = output(&o);
    assert!(!text.contains("wrote 4096/4096"), "{text}");
    // qemu-io heeds the read-only flag; a client that does not is refused by the server, and
    // the backend never sees the write.
    let (mut raw, _, flags) = Raw::go_at(&s.sock, "mem@before", false, &[]);
    assert_ne!(flags & TF_READ_ONLY, 0);
    assert_eq!(raw.write(1, 0, &[0x33; 4096]), EPERM);
    raw.req(CMD_WRITE_ZEROES, 0, 2, 0, 4096, &[]);
    assert_eq!(raw.simple(), (EPERM, 2));
    assert_eq!(vol.writes.load(Ordering::Relaxed), writes);
    run_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0x11 0 4096", &snap],
    );
    run_ok(
        "qemu-io",
        &[
            "-r",
            "-f",
            "raw",
            "-c",
            "read -P 0x22 0 4096",
            &s.uri("mem"),
        ],
    );
    let list = run_ok("nbdinfo", &["--list", &snap]);
    assert!(list.contains("export=\"mem@before\""), "{list}");

    // changed-since comes from the backend's own comparison: block 0 only.
    let m = run_ok(
        "nbdinfo",
        &["--map=strata:changed-since:before", &s.uri("mem")],
    );
    let lines: Vec<Vec<&str>> = m.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 2, "{m}");
    assert_eq!(lines[0][..3], ["0", "4096", "1"], "{m}");
    assert_eq!(lines[1][..3], ["4096", "1044480", "0"], "{m}");
}

#[test]
fn memory_source_allocation_map_is_the_backends() {
    let src = Arc::new(MemSource::default());
    let vol = src.add("mem", MIB);
    // Allocated but zero: a server that looked at the bytes would call these holes.
    {
        let mut live = vol.live.lock();
        live.alloc[1] = true;
        live.alloc[3] = true;
    }
    let s = Served::new(src.clone());
    let m = run_ok("nbdinfo", &["--map", &s.uri("mem")]);
    let lines: Vec<Vec<&str>> = m.lines().map(|l| l.split_whitespace().collect()).collect();
    let want = [
        ["0", "4096", "3"],
        ["4096", "4096", "0"],
        ["8192", "4096", "3"],
        ["12288", "4096", "0"],
        ["16384", "1032192", "3"],
    ];
    assert_eq!(lines.len(), want.len(), "{m}");
    for (l, w) in lines.iter().zip(want) {
        assert_eq!(l[..3], w, "{m}");
    }
    // A trim through the server changes the backend's map.
    run_ok(
        "qemu-io",
        &["-f", "raw", "-c", "discard 0 8192", &s.uri("mem")],
    );
    assert_eq!(&vol.live.lock().alloc[..4], [false, false, false, true]);
}

#[test]
fn backend_errors_reach_clients_with_the_registrys_errno_and_end_nothing() {
    let src = Arc::new(MemSource::default());
    let vol = src.add("mem", 4 * MIB);
    let s = Served::new(src.clone());
    // Two sessions open before anything fails.
    let (mut a, size, _) = Raw::go_at(&s.sock, "mem", false, &[]);
    let (mut b, _, _) = Raw::go_at(&s.sock, "mem", true, &[]);
    assert_eq!(size, 4 * MIB);
    vol.full_from.store(2 * MIB, Ordering::Relaxed);
    vol.bad_block.store(MIB / BLOCK, Ordering::Relaxed);

    let full = IoError::OutOfSpace {
        target: "mem".into(),
    };
    let bad = IoError::Checksum {
        target: "mem".into(),
        offset: 0,
        device: "mem".into(),
        device_offset: 0,
    };
    let (enospc, eio) = (full.code().nbd_errno(), bad.code().nbd_errno());
    assert_eq!((enospc, eio), (Some(ENOSPC), Some(EIO)));
    let errors = s.server.stats().errors.load(Ordering::Relaxed);
    assert_eq!(Some(a.write(1, 3 * MIB, &[1; 4096])), enospc);
    assert_eq!(a.read_simple(2, MIB, 4096).0, EIO);
    assert_eq!(s.server.stats().errors.load(Ordering::Relaxed) - errors, 2);
    // The failing session goes on, and so does the other one.
    assert_eq!(a.write(3, 0, &[2; 4096]), 0);
    assert_eq!(a.read_simple(4, 0, 4096), (0, vec![2; 4096]));
    assert_eq!(Some(b.write(5, 2 * MIB + 4096, &[3; 4096])), enospc);
    assert_eq!(b.write(6, 8192, &[3; 4096]), 0);

    // A real client sees the same errno, as its own message for it.
    let o = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x44 3M 4096",
            "-c",
            "read -P 0 1M 4096",
            &s.uri("mem"),
        ],
    );
    let text = output(&o);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("Input/output error"), "{text}");
    // Every session is still open. qemu-io's own connection leaves the registry when its
    // handler thread sees the close, which may be a moment after qemu-io exits.
    assert_eq!(a.write(7, 4096, &[4; 4096]), 0);
    assert_eq!(b.write(8, 4096, &[4; 4096]), 0);
    assert!(
        wait_until(5, || s.server.connections() == 2),
        "{} connections",
        s.server.connections()
    );
}

/// Volumes named `b-*` live in pool B, every other in pool A: one source, two engine pools
/// (as the control plane will route volumes to the devices that hold them).
#[derive(Debug)]
struct Routed {
    a: PoolSource,
    b: PoolSource,
}

impl Routed {
    fn route(&self, volume: &str) -> &PoolSource {
        if volume.starts_with("b-") {
            &self.b
        } else {
            &self.a
        }
    }
}

impl ExportSource for Routed {
    fn open(&self, volume: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>> {
        self.route(volume).open(volume, snapshot)
    }

    fn list(&self) -> Vec<(String, Vec<String>)> {
        let mut l = self.a.list();
        l.retain(|(v, _)| !v.starts_with("b-"));
        l.extend(
            self.b
                .list()
                .into_iter()
                .filter(|(v, _)| v.starts_with("b-")),
        );
        l
    }
}

fn mem_pool() -> Pool {
    Pool::create(vec![DeviceSpec {
        device: MemDevice::new(64 << 20, "p"),
        class: DeviceClass::Ssd,
    }])
    .unwrap()
}

#[test]
fn two_pools_behind_one_source_get_their_own_volumes_bytes() {
    let (pa, pb) = (mem_pool(), mem_pool());
    let va = pa.create_volume("a-disk", 4 * MIB, None).unwrap();
    let vb = pb.create_volume("b-disk", 4 * MIB, None).unwrap();
    // A decoy: the same name in the wrong pool must never be served.
    pa.create_volume("b-disk", 4 * MIB, None).unwrap();
    pb.write(vb, 0, &[0xbb; 4096]).unwrap();
    pb.create_snapshot(vb, "snap").unwrap();
    let src = Routed {
        a: PoolSource::new(pa.clone()),
        b: PoolSource::new(pb.clone()),
    };
    let s = Served::new(Arc::new(src));
    let files: Vec<_> = [0x1au8, 0x2b]
        .iter()
        .map(|&fill| {
            let f = s.dir.path().join(format!("in-{fill:x}.raw"));
            let mut d = vec![fill; 4 * MIB as usize];
            d[..7].copy_from_slice(b"header!");
            std::fs::write(&f, d).unwrap();
            f
        })
        .collect();
    run_ok("nbdcopy", &[files[0].to_str().unwrap(), &s.uri("a-disk")]);
    run_ok("nbdcopy", &[files[1].to_str().unwrap(), &s.uri("b-disk")]);

    let read = |p: &Pool, v| {
        let mut buf = vec![0u8; 4 * MIB as usize];
        p.read(strata_block::Target::Volume(v), 0, &mut buf)
            .unwrap();
        buf
    };
    assert!(read(&pa, va) == std::fs::read(&files[0]).unwrap());
    assert!(read(&pb, vb) == std::fs::read(&files[1]).unwrap());
    let decoy = pa.volume_id("b-disk").unwrap();
    assert!(
        read(&pa, decoy).iter().all(|&b| b == 0),
        "pool A's b-disk was written"
    );

    // The snapshot of pool B's volume, read-only, with the bytes from before the copy.
    let snap = s.uri("b-disk@snap");
    let info = run_ok("nbdinfo", &[&snap]);
    assert!(info.contains("is_read_only: true"), "{info}");
    run_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0xbb 0 4096", &snap],
    );
    let list = run_ok("nbdinfo", &["--list", &s.uri("a-disk")]);
    for e in ["a-disk", "b-disk", "b-disk@snap"] {
        assert!(list.contains(&format!("export=\"{e}\"")), "{list}");
    }
    assert_eq!(list.matches("export=\"b-disk\"").count(), 1, "{list}");
}
