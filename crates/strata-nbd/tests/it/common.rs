//! Test harness: a pool on a file in a temp dir, a server on a Unix socket in it, and helpers
//! to run external clients (which must be installed: a missing client fails the test).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use strata_block::{DeviceSpec, FileDevice, Pool, VolumeId};
use strata_nbd::proto::*;
use strata_nbd::{NbdServer, ServerConfig};
use strata_types::DeviceClass;
use tempfile::TempDir;

/// Field order matters: the server shuts down before the temp dir is removed.
pub struct Harness {
    pub server: NbdServer,
    pub pool: Pool,
    pub sock: PathBuf,
    pub dir: TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(ServerConfig::default())
    }

    pub fn with_config(cfg: ServerConfig) -> Self {
        let dir = tempfile::Builder::new().prefix("nbd-it").tempdir().unwrap();
        let dev = FileDevice::create_file(dir.path().join("pool.img"), 512 << 20).unwrap();
        let pool = Pool::create(vec![DeviceSpec {
            device: Arc::new(dev),
            class: DeviceClass::Ssd,
        }])
        .unwrap();
        let server = NbdServer::with_config(pool.clone(), cfg);
        let sock = dir.path().join("nbd.sock");
        server.serve_unix(&sock).unwrap();
        Harness {
            dir,
            pool,
            server,
            sock,
        }
    }

    pub fn volume(&self, name: &str, size: u64) -> VolumeId {
        self.pool.create_volume(name, size, None).unwrap()
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs an external tool; a tool that is not installed fails the test (CI installs them).
pub fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: apt-get install -y qemu-utils libnbd-bin nbdkit fio"
        ),
        Err(e) => panic!("running {program}: {e}"),
    }
}

/// Runs a tool that must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let o = run(program, args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {out}\nstderr: {err}",
        o.status
    );
    out
}

/// A hand-driven NBD client for what real clients never send.
pub struct Raw {
    pub s: UnixStream,
}

#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct Chunk {
    pub flags: u16,
    pub typ: u16,
    pub handle: u64,
    pub payload: Vec<u8>,
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
pub fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

pub fn name_data(name: &str) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name.as_bytes());
    d
}

pub fn info_data(name: &str, reqs: &[u16]) -> Vec<u8> {
    let mut d = name_data(name);
    d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

pub fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = name_data(export);
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&name_data(q));
    }
    d
}

impl Raw {
    /// Connects and checks the greeting.
    pub fn connect(h: &Harness) -> Raw {
        Self::connect_path(&h.sock)
    }

    /// Connects to the Unix socket at `path` and checks the greeting.
    pub fn connect_path(path: &std::path::Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw { s };
        let g = r.read_n(GREETING_LEN);
        assert_eq!(g, greeting());
        r
    }

    /// Connects and sends fixed-newstyle + no-zeroes client flags.
    pub fn open(h: &Harness) -> Raw {
        let mut r = Self::connect(h);
        r.send(&3u32.to_be_bytes());
        r
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }

    /// True if the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    pub fn opt(&mut self, option: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b);
    }

    pub fn reply(&mut self) -> OptReply {
        let h = self.read_n(20);
        assert_eq!(be64(&h), OPTION_REPLY_MAGIC);
        let len = be32(&h[16..]) as usize;
        OptReply {
            option: be32(&h[8..]),
            typ: be32(&h[12..]),
            data: self.read_n(len),
        }
    }

    /// Replies up to and including the final one (ACK or an error).
    pub fn replies(&mut self) -> Vec<OptReply> {
        let mut v = Vec::new();
        loop {
            let r = self.reply();
            let last = r.typ == REP_ACK || r.typ & (1 << 31) != 0;
            v.push(r);
            if last {
                return v;
            }
        }
    }

    /// Full negotiation with NBD_OPT_GO; returns (size, transmission flags).
    pub fn go(h: &Harness, export: &str, structured: bool, contexts: &[&str]) -> (Raw, u64, u16) {
        Self::go_at(&h.sock, export, structured, contexts)
    }

    /// [`Raw::go`] on the Unix socket at `path`.
    pub fn go_at(
        path: &std::path::Path,
        export: &str,
        structured: bool,
        contexts: &[&str],
    ) -> (Raw, u64, u16) {
        let mut r = Self::connect_path(path);
        r.send(&3u32.to_be_bytes());
        if structured {
            r.opt(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(r.reply().typ, REP_ACK);
        }
        if !contexts.is_empty() {
            r.opt(OPT_SET_META_CONTEXT, &meta_data(export, contexts));
            let rs = r.replies();
            assert_eq!(rs.last().unwrap().typ, REP_ACK, "{rs:?}");
            assert_eq!(rs.len(), contexts.len() + 1, "{rs:?}");
        }
        r.opt(OPT_GO, &info_data(export, &[]));
        let rs = r.replies();
        assert_eq!(rs.last().unwrap().typ, REP_ACK, "{rs:?}");
        let info = rs
            .iter()
            .find(|x| x.typ == REP_INFO && x.data[..2] == [0, 0])
            .expect("NBD_INFO_EXPORT");
        let size = be64(&info.data[2..]);
        let flags = u16::from_be_bytes([info.data[10], info.data[11]]);
        (r, size, flags)
    }

    pub fn req(&mut self, cmd: u16, flags: u16, handle: u64, offset: u64, len: u32, data: &[u8]) {
        let mut b = Vec::new();
        put_request(
            &mut b,
            &Request {
                flags,
                cmd,
                handle,
                offset,
                len,
            },
        );
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// Reads a simple reply header: (error, handle).
    pub fn simple(&mut self) -> (u32, u64) {
        let h = self.read_n(SIMPLE_REPLY_LEN);
        assert_eq!(be32(&h), SIMPLE_REPLY_MAGIC, "{h:?}");
        (be32(&h[4..]), be64(&h[8..]))
    }

    /// Reads one structured chunk.
    pub fn chunk(&mut self) -> Chunk {
        let h = self.read_n(CHUNK_HEADER_LEN);
        assert_eq!(be32(&h), STRUCTURED_REPLY_MAGIC, "{h:?}");
        let len = be32(&h[16..]) as usize;
        Chunk {
            flags: u16::from_be_bytes([h[4], h[5]]),
            typ: u16::from_be_bytes([h[6], h[7]]),
            handle: be64(&h[8..]),
            payload: self.read_n(len),
        }
    }

    /// Reads either reply kind; returns (error, handle) with 0 for success.
    pub fn any_reply(&mut self) -> (u32, u64) {
        let h = self.read_n(4);
        if be32(&h) == SIMPLE_REPLY_MAGIC {
            let rest = self.read_n(12);
            return (be32(&rest), be64(&rest[4..]));
        }
        assert_eq!(be32(&h), STRUCTURED_REPLY_MAGIC);
        let rest = self.read_n(16);
        let typ = u16::from_be_bytes([rest[2], rest[3]]);
        let handle = be64(&rest[4..]);
        let p = self.read_n(be32(&rest[12..]) as usize);
        if typ & 0x8000 != 0 {
            (be32(&p), handle)
        } else {
            (0, handle)
        }
    }

    pub fn write(&mut self, handle: u64, offset: u64, data: &[u8]) -> u32 {
        self.req(CMD_WRITE, 0, handle, offset, data.len() as u32, data);
        let (e, h) = self.any_reply();
        assert_eq!(h, handle);
        e
    }

    /// Simple-reply READ: (error, data).
    pub fn read_simple(&mut self, handle: u64, offset: u64, len: u32) -> (u32, Vec<u8>) {
        self.req(CMD_READ, 0, handle, offset, len, &[]);
        let (e, h) = self.simple();
        assert_eq!(h, handle);
        if e != 0 {
            return (e, Vec::new());
        }
        (0, self.read_n(len as usize))
    }
}

/// A TCP connection from source address `src` (any 127.0.0.0/8 address is loopback), with
/// the receive buffer `rcvbuf` if given (set before connecting, so the window stays small).
pub fn tcp_from(src: &str, to: std::net::SocketAddr, rcvbuf: Option<usize>) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        rustix::net::sockopt::set_socket_recv_buffer_size(&fd, n).unwrap();
    }
    let src: std::net::SocketAddr = format!("{src}:0").parse().unwrap();
    rustix::net::bind(&fd, &src).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    let s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Plain newstyle negotiation on any stream up to transmission (`NBD_OPT_GO` of `export`,
/// structured replies first if asked). Panics unless it succeeds.
pub fn go_on<S: Read + Write>(s: &mut S, export: &str, structured: bool) {
    let mut g = vec![0; GREETING_LEN];
    s.read_exact(&mut g).unwrap();
    assert_eq!(g, greeting());
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let opt = |s: &mut S, option: u32, data: &[u8]| -> Vec<u32> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        s.write_all(&b).unwrap();
        let mut types = Vec::new();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            let typ = be32(&h[12..]);
            let mut d = vec![0; be32(&h[16..]) as usize];
            s.read_exact(&mut d).unwrap();
            types.push(typ);
            if typ == REP_ACK || typ & (1 << 31) != 0 {
                return types;
            }
        }
    };
    if structured {
        assert_eq!(opt(s, OPT_STRUCTURED_REPLY, &[]), [REP_ACK]);
    }
    let t = opt(s, OPT_GO, &info_data(export, &[]));
    assert_eq!(t.last(), Some(&REP_ACK), "{t:?}");
}

/// One simple-reply WRITE on any stream in transmission; its error.
pub fn write_on<S: Read + Write>(s: &mut S, handle: u64, offset: u64, data: &[u8]) -> u32 {
    let mut b = Vec::new();
    put_request(
        &mut b,
        &Request {
            flags: 0,
            cmd: CMD_WRITE,
            handle,
            offset,
            len: data.len() as u32,
        },
    );
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
    let mut h = [0u8; SIMPLE_REPLY_LEN];
    s.read_exact(&mut h).unwrap();
    assert_eq!(be32(&h), SIMPLE_REPLY_MAGIC);
    assert_eq!(be64(&h[8..]), handle);
    be32(&h[4..])
}

/// Whether the peer closed `s` (EOF or reset) within its read timeout.
pub fn peer_closed(s: &mut impl Read) -> bool {
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Waits up to `secs` for `f`.
pub fn wait_until(secs: u64, f: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
