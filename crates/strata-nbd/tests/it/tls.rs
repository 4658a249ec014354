//! TLS on TCP with client certificates: FORCEDTLS refusals, STARTTLS, per-tenant export
//! authorization from the certificate's Common Name, over our own raw client (rustls) and
//! over real clients (nbdinfo, qemu-io with GnuTLS).
//!
//! The PKI is made per test with rcgen, in the layout qemu's `tls-creds-x509` and libnbd's
//! `tls-certificates=DIR` read: one directory per client with `ca-cert.pem`,
//! `client-cert.pem`, `client-key.pem`, and the server's `server-cert.pem`,
//! `server-key.pem` beside its `ca-cert.pem`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strata_nbd::proto::*;
use strata_nbd::{Authorizer, ServerConfig};

use crate::common::*;

const MIB: u64 = 1 << 20;

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf certificate and its key, PEM. qemu refuses its own certificate if a (critical)
    /// KeyUsage lacks keyEncipherment, even for ECDSA keys: "usage does not permit key
    /// encipherment". So both usages, as a CA for qemu clients must issue them.
    fn issue(&self, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> (String, String) {
        self.issue_with(cn, sans, eku, |_| {})
    }

    /// [`Ca::issue`] with the parameters adjusted by `f` (validity, serial).
    fn issue_with(
        &self,
        cn: &str,
        sans: &[&str],
        eku: ExtendedKeyUsagePurpose,
        f: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        f(&mut p);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The test PKI: `server/`, `acme/`, `other/` (client dirs), `nocert/` (CA only) and
/// `rogue/` (a client cert for CN `acme` from a CA the server does not trust).
pub(crate) struct Pki {
    root: PathBuf,
    ca: Ca,
}

impl Pki {
    fn create(root: &Path) -> Pki {
        let ca = Ca::new("strata test CA");
        let ca_pem = ca.cert.pem();
        let write = |dir: &str, files: &[(&str, &str)]| {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            for (name, body) in files {
                std::fs::write(d.join(name), body).unwrap();
            }
        };
        let (cert, key) = ca.issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write(
            "server",
            &[
                ("ca-cert.pem", &ca_pem),
                ("server-cert.pem", &cert),
                ("server-key.pem", &key),
            ],
        );
        for tenant in ["acme", "other"] {
            let (cert, key) = ca.issue(tenant, &[], ExtendedKeyUsagePurpose::ClientAuth);
            write(
                tenant,
                &[
                    ("ca-cert.pem", &ca_pem),
                    ("client-cert.pem", &cert),
                    ("client-key.pem", &key),
                ],
            );
        }
        write("nocert", &[("ca-cert.pem", &ca_pem)]);
        let rogue = Ca::new("strata test CA");
        let (cert, key) = rogue.issue("acme", &[], ExtendedKeyUsagePurpose::ClientAuth);
        write(
            "rogue",
            &[
                ("ca-cert.pem", &ca_pem),
                ("client-cert.pem", &cert),
                ("client-key.pem", &key),
            ],
        );
        Pki {
            root: root.to_path_buf(),
            ca,
        }
    }

    /// A client dir `dir` with a certificate for `cn` whose parameters `f` adjusts.
    fn add_client(&self, dir: &str, cn: &str, f: impl FnOnce(&mut CertificateParams)) {
        let (cert, key) = self
            .ca
            .issue_with(cn, &[], ExtendedKeyUsagePurpose::ClientAuth, f);
        let d = self.root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca-cert.pem"), self.ca.cert.pem()).unwrap();
        std::fs::write(d.join("client-cert.pem"), cert).unwrap();
        std::fs::write(d.join("client-key.pem"), key).unwrap();
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub(crate) fn read(&self, dir: &str, file: &str) -> Vec<u8> {
        std::fs::read(self.dir(dir).join(file)).unwrap()
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        strata_nbd::tls_server_config(
            &self.read("server", "ca-cert.pem"),
            &self.read("server", "server-cert.pem"),
            &self.read("server", "server-key.pem"),
        )
        .unwrap()
    }

    /// A rustls client trusting the test CA, with `dir`'s client certificate if it has one.
    fn client_config(&self, dir: &str) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&self.read(dir, "ca-cert.pem")) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cert = self.dir(dir).join("client-cert.pem");
        let cfg = if cert.exists() {
            let chain = CertificateDer::pem_slice_iter(&std::fs::read(cert).unwrap())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&self.read(dir, "client-key.pem")).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        } else {
            b.with_no_client_auth()
        };
        Arc::new(cfg)
    }
}

/// Volumes `acme-disk` and `other-disk`; a tenant may open the volumes named `TENANT-*` and
/// their snapshots, and nothing without a certificate.
pub(crate) fn tenant_authorizer() -> Authorizer {
    Authorizer::new(|export: &str, client: Option<&str>| {
        let volume = export.split('@').next().unwrap_or(export);
        client.is_some_and(|c| volume.strip_prefix(c).is_some_and(|r| r.starts_with('-')))
    })
}

/// Field order: the server goes before the PKI's temp dir.
pub(crate) struct TlsServer {
    pub(crate) h: Harness,
    pub(crate) pki: Pki,
    pub(crate) addr: SocketAddr,
    _pki_dir: tempfile::TempDir,
}

pub(crate) fn tls_server(required: bool, authorize: Option<Authorizer>) -> TlsServer {
    tls_server_with(required, authorize, |_| {})
}

/// [`tls_server`] with more of the configuration set by `f`.
fn tls_server_with(
    required: bool,
    authorize: Option<Authorizer>,
    f: impl FnOnce(&mut ServerConfig),
) -> TlsServer {
    let pki_dir = tempfile::Builder::new()
        .prefix("nbd-pki")
        .tempdir()
        .unwrap();
    let pki = Pki::create(pki_dir.path());
    let mut cfg = ServerConfig {
        tls: Some(pki.server_config()),
        tls_required: required,
        authorize,
        ..Default::default()
    };
    f(&mut cfg);
    let h = Harness::with_config(cfg);
    h.volume("acme-disk", 4 * MIB);
    h.volume("other-disk", 4 * MIB);
    let addr = h.server.serve_tcp("127.0.0.1:0").unwrap();
    TlsServer {
        h,
        pki,
        addr,
        _pki_dir: pki_dir,
    }
}

fn request(cmd: u16, flags: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
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
    b
}

/// A raw NBD client over any byte stream (TCP, then TLS over it).
struct Wire<S: Read + Write> {
    s: S,
}

impl<S: Read + Write> Wire<S> {
    fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)?;
        self.s.flush()
    }

    fn read_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b)?;
        Ok(b)
    }

    fn opt(&mut self, option: u32, data: &[u8]) -> std::io::Result<()> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b)
    }

    fn reply(&mut self) -> std::io::Result<OptReply> {
        let h = self.read_n(20)?;
        assert_eq!(be64(&h), OPTION_REPLY_MAGIC);
        let len = be32(&h[16..]) as usize;
        Ok(OptReply {
            option: be32(&h[8..]),
            typ: be32(&h[12..]),
            data: self.read_n(len)?,
        })
    }

    fn replies(&mut self) -> Vec<OptReply> {
        let mut v = Vec::new();
        loop {
            let r = self.reply().unwrap();
            let last = r.typ == REP_ACK || r.typ & (1 << 31) != 0;
            v.push(r);
            if last {
                return v;
            }
        }
    }

    /// One option with a single-reply answer: its type.
    fn ask(&mut self, option: u32, data: &[u8]) -> u32 {
        self.opt(option, data).unwrap();
        let rs = self.replies();
        assert!(rs.iter().all(|r| r.option == option), "{rs:?}");
        rs.last().unwrap().typ
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects over TCP: greeting, client flags.
fn connect(addr: SocketAddr) -> Wire<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = Wire { s };
    assert_eq!(w.read_n(GREETING_LEN).unwrap(), greeting());
    w.send(&3u32.to_be_bytes()).unwrap();
    w
}

/// STARTTLS (must be ACKed with no data), then the TLS handshake as `dir`'s client. The
/// handshake's error, if any (with TLS 1.3 a refused client certificate may only show on the
/// first read).
fn starttls(mut w: Wire<TcpStream>, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Wire<Tls>> {
    w.opt(OPT_STARTTLS, &[]).unwrap();
    let r = w.reply().unwrap();
    assert_eq!((r.option, r.typ, r.data.len()), (OPT_STARTTLS, REP_ACK, 0));
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut sock = w.s;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(Wire {
        s: rustls::StreamOwned::new(conn, sock),
    })
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn raw_forced_tls_client_certificates_and_authorization() {
    let t = tls_server(true, Some(tenant_authorizer()));
    let stats = t.h.server.stats();

    // Before TLS every option but STARTTLS/ABORT is NBD_REP_ERR_TLS_REQD.
    let mut w = connect(t.addr);
    for (o, d) in [
        (OPT_GO, info_data("acme-disk", &[])),
        (OPT_INFO, info_data("acme-disk", &[])),
        (OPT_LIST, vec![]),
        (OPT_STRUCTURED_REPLY, vec![]),
        (OPT_LIST_META_CONTEXT, meta_data("acme-disk", &[])),
        (OPT_EXTENDED_HEADERS, vec![]),
    ] {
        assert_eq!(w.ask(o, &d), REP_ERR_TLS_REQD, "option {o}");
    }

    // STARTTLS, handshake with acme's certificate, negotiation goes on inside TLS.
    let mut w = starttls(w, t.pki.client_config("acme")).unwrap();
    wait_for("the TLS session count", || {
        stats.tls_sessions.load(Ordering::Relaxed) == 1
    });
    assert_eq!(w.ask(OPT_STARTTLS, &[]), REP_ERR_INVALID);
    w.opt(OPT_LIST, &[]).unwrap();
    let names: Vec<String> = w
        .replies()
        .iter()
        .filter(|r| r.typ == REP_SERVER)
        .map(|r| String::from_utf8(r.data[4..].to_vec()).unwrap())
        .collect();
    assert_eq!(names, ["acme-disk"]);
    // Another tenant's export is indistinguishable from a missing one.
    let other = w.ask(OPT_GO, &info_data("other-disk", &[]));
    assert_eq!(other, REP_ERR_UNKNOWN);
    assert_eq!(w.ask(OPT_INFO, &info_data("no-such-disk", &[])), other);
    assert_eq!(w.ask(OPT_STRUCTURED_REPLY, &[]), REP_ACK);
    let rs = {
        w.opt(OPT_LIST_META_CONTEXT, &meta_data("other-disk", &[]))
            .unwrap();
        w.replies()
    };
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].typ, REP_ERR_UNKNOWN);

    // GO on acme's export, then I/O inside TLS, large enough to take many TLS records.
    w.opt(OPT_GO, &info_data("acme-disk", &[])).unwrap();
    let rs = w.replies();
    assert_eq!(rs.last().unwrap().typ, REP_ACK, "{rs:?}");
    let data: Vec<u8> = (0..MIB as usize).map(|i| (i * 7 + 3) as u8).collect();
    let mut req = request(CMD_WRITE, CMDF_FUA, 1, 4096, MIB as u32);
    req.extend_from_slice(&data);
    req.extend(request(CMD_FLUSH, 0, 2, 0, 0));
    req.extend(request(CMD_READ, 0, 3, 4096, MIB as u32));
    w.send(&req).unwrap();
    // In order inside TLS: simple replies for WRITE and FLUSH, then the READ's chunk.
    for handle in [1u64, 2] {
        let h = w.read_n(SIMPLE_REPLY_LEN).unwrap();
        assert_eq!(
            (be32(&h), be32(&h[4..]), be64(&h[8..])),
            (SIMPLE_REPLY_MAGIC, 0, handle)
        );
    }
    // The READ comes as data chunks in order (a large READ is sent piece by piece, as on
    // a plain socket), the last one DONE.
    let mut got = Vec::new();
    loop {
        let h = w.read_n(CHUNK_HEADER_LEN).unwrap();
        assert_eq!(be32(&h), STRUCTURED_REPLY_MAGIC);
        assert_eq!(be64(&h[8..]), 3);
        let p = w.read_n(be32(&h[16..]) as usize).unwrap();
        assert_eq!(be64(&p), 4096 + got.len() as u64);
        got.extend_from_slice(&p[8..]);
        if u16::from_be_bytes([h[4], h[5]]) & REPLY_FLAG_DONE != 0 {
            break;
        }
    }
    assert!(got == data[..], "data read back over TLS differs");
    w.send(&request(CMD_DISC, 0, 4, 0, 0)).unwrap();
    // The server shuts TLS down (close_notify): a clean end of stream.
    let mut rest = Vec::new();
    assert_eq!(w.s.read_to_end(&mut rest).unwrap(), 0);

    // Without a client certificate, or with one from another CA (even for CN "acme"), the
    // handshake fails and no option is ever answered.
    for (i, dir) in ["nocert", "rogue"].into_iter().enumerate() {
        let refused = match starttls(connect(t.addr), t.pki.client_config(dir)) {
            Err(_) => true,
            Ok(mut w) => w.opt(OPT_LIST, &[]).is_err() || w.reply().is_err(),
        };
        assert!(refused, "{dir}: TLS session without a valid certificate");
        wait_for("the TLS failure count", || {
            stats.tls_failures.load(Ordering::Relaxed) == i as u64 + 1
        });
    }
    assert_eq!(stats.tls_sessions.load(Ordering::Relaxed), 1);

    // EXPORT_NAME before TLS cannot be answered with an error: the connection closes.
    let mut w = connect(t.addr);
    w.opt(OPT_EXPORT_NAME, b"acme-disk").unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(w.s.read(&mut b), Ok(0) | Err(_)));

    // ABORT is still answered in plain text.
    let mut w = connect(t.addr);
    assert_eq!(w.ask(OPT_ABORT, &[]), REP_ACK);
}

#[test]
fn starttls_without_tls_is_unsupported_and_unix_sockets_stay_plain() {
    // No TLS configured: STARTTLS on TCP is NBD_REP_ERR_UNSUP and the session continues.
    let h = Harness::new();
    h.volume("v", MIB);
    let addr = h.server.serve_tcp("127.0.0.1:0").unwrap();
    let mut w = connect(addr);
    assert_eq!(w.ask(OPT_STARTTLS, &[]), REP_ERR_UNSUP);
    assert_eq!(w.ask(OPT_INFO, &info_data("v", &[])), REP_ACK);

    // TLS required on TCP: the Unix socket of the same server stays plain (no STARTTLS).
    let t = tls_server(true, None);
    let mut r = Raw::open(&t.h);
    r.opt(OPT_STARTTLS, &[]);
    assert_eq!(r.reply().typ, REP_ERR_UNSUP);
    let (_r, size, _) = Raw::go(&t.h, "acme-disk", false, &[]);
    assert_eq!(size, 4 * MIB);

    // tls_required without a TLS configuration would refuse everyone: serve_tcp says so.
    let h = Harness::with_config(ServerConfig {
        tls_required: true,
        ..Default::default()
    });
    assert!(matches!(
        h.server.serve_tcp("127.0.0.1:0"),
        Err(strata_nbd::ServeError::TlsNotConfigured)
    ));
}

fn nbds_uri(t: &TlsServer, export: &str, creds: &str) -> String {
    format!(
        "nbds://127.0.0.1:{}/{export}?tls-certificates={}",
        t.addr.port(),
        t.pki.dir(creds).display()
    )
}

#[test]
fn nbdinfo_over_tls_opens_only_the_tenants_export() {
    let t = tls_server(true, Some(tenant_authorizer()));
    let out = run_ok("nbdinfo", &[&nbds_uri(&t, "acme-disk", "acme")]);
    assert!(out.contains("4194304"), "{out}");
    assert!(out.contains("acme-disk"), "{out}");
    // Another tenant's export, and acme's export with another tenant's or no certificate.
    for (export, creds) in [
        ("other-disk", "acme"),
        ("acme-disk", "other"),
        ("acme-disk", "nocert"),
        ("acme-disk", "rogue"),
    ] {
        let o = run("nbdinfo", &[&nbds_uri(&t, export, creds)]);
        assert!(
            !o.status.success(),
            "nbdinfo opened {export} with {creds}'s credentials:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // `other` sees its own export.
    run_ok("nbdinfo", &[&nbds_uri(&t, "other-disk", "other")]);
    assert!(t.h.server.stats().tls_sessions.load(Ordering::Relaxed) >= 3);
}

fn qemu_io_tls(t: &TlsServer, export: &str, creds: &str, cmds: &[&str]) -> std::process::Output {
    let obj = format!(
        "tls-creds-x509,id=tls0,endpoint=client,dir={}",
        t.pki.dir(creds).display()
    );
    let img = format!(
        "driver=nbd,host=127.0.0.1,port={},export={export},tls-creds=tls0",
        t.addr.port()
    );
    let mut args = vec!["--object", &obj, "--image-opts", &img];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    run("qemu-io", &args)
}

#[test]
fn qemu_io_writes_and_reads_a_pattern_over_tls() {
    let t = tls_server(true, Some(tenant_authorizer()));
    let o = qemu_io_tls(
        &t,
        "acme-disk",
        "acme",
        &["write -P 0x5a 0 64k", "read -P 0x5a 0 64k"],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "qemu-io failed:\n{out}\n{err}");
    assert!(!out.contains("failed"), "{out}\n{err}");
    assert!(out.contains("wrote 65536/65536"), "{out}");
    assert!(out.contains("read 65536/65536"), "{out}");
    // The data is in the volume.
    let vol = t.h.pool.volume_id("acme-disk").unwrap();
    let mut buf = vec![0u8; 65536];
    t.h.pool
        .read(strata_block::Target::Volume(vol), 0, &mut buf)
        .unwrap();
    assert!(buf.iter().all(|&b| b == 0x5a));
    // With other's certificate acme's export cannot be opened.
    let o = qemu_io_tls(&t, "acme-disk", "other", &["read 0 4k"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Refused like a missing export, not like a permission problem.
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn plain_clients_are_refused_when_tls_is_required() {
    let t = tls_server(true, None);
    let port = t.addr.port().to_string();
    let uri = format!("nbd://127.0.0.1:{port}/acme-disk");
    let o = run("nbdinfo", &[&uri]);
    assert!(
        !o.status.success(),
        "plain nbdinfo got in:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let img = format!("driver=nbd,host=127.0.0.1,port={port},export=acme-disk");
    let o = run("qemu-io", &["--image-opts", &img, "-c", "read 0 4k"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "plain qemu-io got in:\n{out}\n{err}");
    assert!(
        !out.contains("read 4096/4096"),
        "plain qemu-io read:\n{out}"
    );
    assert!(err.contains("TLS"), "{err}");
    // No TLS session was made and nothing was read.
    let s = t.h.server.stats();
    assert_eq!(s.tls_sessions.load(Ordering::Relaxed), 0);
    assert_eq!(s.reads.load(Ordering::Relaxed), 0);
}

/// STARTTLS as `dir`'s client, then GO on `export`: a session in transmission inside TLS.
fn tls_session(t: &TlsServer, dir: &str, export: &str) -> Wire<Tls> {
    let mut w = starttls(connect(t.addr), t.pki.client_config(dir)).unwrap();
    w.opt(OPT_GO, &info_data(export, &[])).unwrap();
    let rs = w.replies();
    assert_eq!(rs.last().unwrap().typ, REP_ACK, "{rs:?}");
    w
}

fn tls_write(w: &mut Wire<Tls>, handle: u64, data: &[u8]) -> u32 {
    let mut req = request(CMD_WRITE, 0, handle, 0, data.len() as u32);
    req.extend_from_slice(data);
    w.send(&req).unwrap();
    let h = w.read_n(SIMPLE_REPLY_LEN).unwrap();
    assert_eq!(be64(&h[8..]), handle);
    be32(&h[4..])
}

#[test]
fn unauthenticated_flood_leaves_room_for_tls_and_unix_clients() {
    let t = tls_server_with(true, Some(tenant_authorizer()), |c| {
        c.max_unauthenticated = 12;
        c.max_per_source = 4;
        c.max_connections = 4;
        c.authorize = Some(Authorizer::new(|export: &str, client: Option<&str>| {
            // The admin socket (None) sees everything; tenants their own volumes.
            let volume = export.split('@').next().unwrap_or(export);
            client.is_none_or(|c| volume.starts_with(&format!("{c}-")))
        }));
    });
    // A tenant session made before the flood.
    let mut before = tls_session(&t, "acme", "acme-disk");
    // 40 plain connections from two addresses that never start TLS: each address gets its
    // 4, the rest are closed at once.
    let mut flood = Vec::new();
    for i in 0..40 {
        let src = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.3" };
        flood.push(tcp_from(src, t.addr, None));
    }
    wait_for("the flood to be sorted", || {
        t.h.server.stats().refused.load(Ordering::Relaxed) >= 32
    });
    // A new TLS tenant from another address still gets in and does I/O, as do the session
    // from before and a local client on the Unix socket.
    let mut after = tls_session(&t, "other", "other-disk");
    assert_eq!(tls_write(&mut after, 1, b"after the flood"), 0);
    assert_eq!(tls_write(&mut before, 2, b"during the flood"), 0);
    let (mut unix, _, _) = Raw::go(&t.h, "acme-disk", false, &[]);
    assert_eq!(unix.write(3, 0, b"local"), 0);
    assert_eq!(t.h.server.stats().refused.load(Ordering::Relaxed), 32);
    drop(flood);
}

#[test]
fn handshake_deadline_covers_tls_and_the_options_inside_it() {
    let t = tls_server_with(true, Some(tenant_authorizer()), |c| {
        c.handshake_timeout = Duration::from_millis(800);
    });
    let mut w = starttls(connect(t.addr), t.pki.client_config("acme")).unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if w.opt(OPT_LIST, &[]).is_err() {
            closed = true;
            break;
        }
        let mut ok = true;
        loop {
            match w.reply() {
                Ok(r) if r.typ == REP_ACK => break,
                Ok(_) => {}
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "endless options inside TLS were never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A TLS client as `dir`: whether it could negotiate anything after the handshake.
fn tls_client_gets_in(t: &TlsServer, dir: &str) -> bool {
    let Ok(mut w) = starttls(connect(t.addr), t.pki.client_config(dir)) else {
        return false;
    };
    if w.opt(OPT_LIST, &[]).is_err() {
        return false;
    }
    matches!(w.reply(), Ok(r) if r.option == OPT_LIST)
}

#[test]
fn expired_and_revoked_client_certificates_are_refused() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let t = tls_server_with(true, Some(tenant_authorizer()), move |c| {
        c.admit = Some(strata_nbd::Admit::new(move |p: &strata_nbd::PeerInfo| {
            seen2.lock().unwrap().push(p.clone());
            p.cert_serial.as_deref() != Some("1a2b3c")
        }));
    });
    t.pki.add_client("expired", "acme", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    t.pki.add_client("revoked", "acme", |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(vec![0x1a, 0x2b, 0x3c]));
    });
    t.pki.add_client("valid", "acme", |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(vec![0x44]));
    });
    let stats = t.h.server.stats();
    // Expired: the verifier fails the handshake; the hook is never asked.
    assert!(!tls_client_gets_in(&t, "expired"));
    wait_for("the failure to be counted", || {
        stats.tls_failures.load(Ordering::Relaxed) == 1
    });
    assert!(seen.lock().unwrap().is_empty());
    // Revoked: the handshake completes, the hook refuses, the connection closes.
    assert!(!tls_client_gets_in(&t, "revoked"));
    wait_for("the refusal to be counted", || {
        stats.admissions_refused.load(Ordering::Relaxed) == 1
    });
    // A valid certificate of the same tenant gets in, and the hook saw who it was.
    assert!(tls_client_gets_in(&t, "valid"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].identity.as_deref(), Some("acme"));
    assert_eq!(seen[1].cert_serial.as_deref(), Some("44"));
    let not_after = seen[1].not_after.expect("not_after");
    assert!(not_after > std::time::SystemTime::now());
    assert_eq!(seen[1].source.map(|a| a.ip()), Some(t.addr.ip()));
}

#[test]
fn close_sessions_sees_tls_identity_and_serial() {
    let t = tls_server(true, Some(tenant_authorizer()));
    t.pki.add_client("acme2", "acme", |p| {
        p.serial_number = Some(rcgen::SerialNumber::from(vec![0x0a, 0xbc]));
    });
    let mut a = tls_session(&t, "acme2", "acme-disk");
    let mut o = tls_session(&t, "other", "other-disk");
    assert_eq!(tls_write(&mut a, 1, b"a"), 0);
    let mut seen = Vec::new();
    let n = t.h.server.close_sessions(|s| {
        seen.push(s.clone());
        s.cert_serial.as_deref() == Some("0abc")
    });
    assert_eq!(n, 1);
    let acme = seen.iter().find(|s| s.export == "acme-disk").unwrap();
    assert_eq!(acme.identity.as_deref(), Some("acme"));
    assert!(acme.source.is_some() && acme.listener.is_none());
    // The revoked session ends; the other goes on.
    let mut b = [0u8; 1];
    assert!(matches!(a.s.read(&mut b), Ok(0) | Err(_)));
    assert_eq!(tls_write(&mut o, 2, b"o"), 0);
}
