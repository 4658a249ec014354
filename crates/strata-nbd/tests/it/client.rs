//! The crate's own NBD client (`strata_nbd::client`) against servers: ours over a Unix
//! socket, ours over TCP with TLS and client certificates (the node port's setting), and
//! qemu-nbd (a server we did not write). Every written byte is checked against a plain
//! in-memory model of the export.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use strata_nbd::client::{
    tls_client_config, ClientConfig, ClientError, ClientPool, ClientTls, Connection, Target,
};
use strata_nbd::proto::REP_ERR_UNKNOWN;

use crate::common::*;
use crate::tls::{tenant_authorizer, tls_server};

const MIB: u64 = 1 << 20;

/// Random reads, writes, zeroes and flushes through `c`, each checked against `model`.
fn exercise(c: &mut Connection, model: &mut [u8], seed: u64, ops: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let size = model.len() as u64;
    for _ in 0..ops {
        let off = rng.gen_range(0..size - 1);
        let len = rng.gen_range(1..=(size - off).min(300_000));
        let (o, l) = (off as usize, len as usize);
        match rng.gen_range(0..5) {
            0 => {
                let data: Vec<u8> = (0..l).map(|_| rng.gen()).collect();
                c.write_at(off, &data, rng.gen_bool(0.2)).unwrap();
                model[o..o + l].copy_from_slice(&data);
            }
            1 => {
                c.write_zeroes(off, len, rng.gen_bool(0.5)).unwrap();
                model[o..o + l].fill(0);
            }
            2 => c.flush().unwrap(),
            3 => {
                // Several writes in flight at once, in disjoint eighths of the export, small
                // ones and ones sent from the caller's buffer.
                let slot = size / 8;
                let mut writes = Vec::new();
                for k in 0..8u64 {
                    if rng.gen_bool(0.5) {
                        let at = k * slot + rng.gen_range(0..slot / 2);
                        let n = rng.gen_range(1..=(slot / 2).min(200_000)) as usize;
                        let data: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                        writes.push((at, data));
                    }
                }
                let refs: Vec<(u64, &[u8])> =
                    writes.iter().map(|(o, d)| (*o, d.as_slice())).collect();
                let rs = c.write_many(&refs).unwrap();
                assert_eq!(rs.len(), writes.len());
                for ((o, d), r) in writes.iter().zip(rs) {
                    r.unwrap();
                    model[*o as usize..*o as usize + d.len()].copy_from_slice(d);
                }
            }
            _ => {
                let mut got = vec![0u8; l];
                c.read_at(off, &mut got).unwrap();
                assert!(got == model[o..o + l], "read of {len} at {off} differs");
            }
        }
    }
    let mut all = vec![0u8; model.len()];
    c.read_at(0, &mut all).unwrap();
    assert!(all == model, "the whole export differs from the model");
}

#[test]
fn client_over_unix_matches_a_model_and_keeps_its_connection_after_refusals() {
    let h = Harness::new();
    h.volume("disk", 4 * MIB);
    let mut c = Connection::connect(
        &Target::Unix(h.sock.clone()),
        "disk",
        &ClientConfig::default(),
    )
    .unwrap();
    assert_eq!(c.info().size, 4 * MIB);
    assert!(c.info().multi_conn());
    let mut model = vec![0u8; (4 * MIB) as usize];
    exercise(&mut c, &mut model, 1, 300);
    // Refused before sending: the connection stays usable.
    let mut b = vec![0u8; 16];
    assert!(matches!(
        c.read_at(4 * MIB - 8, &mut b),
        Err(ClientError::Invalid(_))
    ));
    assert!(!c.is_broken());
    c.read_at(0, &mut b).unwrap();
    assert_eq!(b, model[..16]);
    // An unknown export is the server's refusal, with its reply type.
    match Connection::connect(
        &Target::Unix(h.sock.clone()),
        "nope",
        &ClientConfig::default(),
    ) {
        Err(ClientError::Refused { reply, .. }) => assert_eq!(reply, REP_ERR_UNKNOWN),
        other => panic!("unknown export: {other:?}"),
    }
    c.disconnect();
    assert!(wait_until(5, || h.server.connections() == 0));
}

fn node_tls(t: &crate::tls::TlsServer, dir: &str, name: &str) -> Option<ClientTls> {
    let cfg = tls_client_config(
        &t.pki.read(dir, "ca-cert.pem"),
        &t.pki.read(dir, "client-cert.pem"),
        &t.pki.read(dir, "client-key.pem"),
    )
    .unwrap();
    Some(ClientTls::new(cfg, name).unwrap())
}

#[test]
fn a_pool_over_tls_carries_concurrent_writers_on_several_connections() {
    let t = tls_server(true, Some(tenant_authorizer()));
    let cfg = ClientConfig {
        tls: node_tls(&t, "acme", "localhost"),
        ..Default::default()
    };
    let pool = Arc::new(
        ClientPool::connect(Target::Tcp(t.addr.to_string()), "acme-disk", cfg, 4).unwrap(),
    );
    assert_eq!(pool.info().size, 4 * MIB);
    // Eight writers, each on its own 512 KiB region, through at most four connections.
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let base = u64::from(i) * 512 * 1024;
                for k in 0..16u64 {
                    let data = vec![i.wrapping_mul(31).wrapping_add(k as u8); 32 * 1024];
                    pool.write_at(base + k * 32 * 1024, &data, false).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    pool.flush().unwrap();
    assert!(pool.live() <= 4, "{} connections", pool.live());
    assert!(pool.live() >= 2, "the writers never ran side by side");
    for i in 0..8u8 {
        for k in 0..16u64 {
            let mut got = vec![0u8; 32 * 1024];
            pool.read_at(u64::from(i) * 512 * 1024 + k * 32 * 1024, &mut got)
                .unwrap();
            assert!(got
                .iter()
                .all(|&b| b == i.wrapping_mul(31).wrapping_add(k as u8)));
        }
    }
    // The same bytes through the server's engine, not only through the client.
    let v = t.h.pool.volume_id("acme-disk").unwrap();
    let mut b = vec![0u8; 32 * 1024];
    t.h.pool
        .read(v, 3 * 512 * 1024 + 5 * 32 * 1024, &mut b)
        .unwrap();
    assert!(b.iter().all(|&x| x == 3u8.wrapping_mul(31).wrapping_add(5)));
}

#[test]
fn tls_refuses_a_foreign_ca_a_wrong_server_name_and_another_tenants_export() {
    let t = tls_server(true, Some(tenant_authorizer()));
    let target = Target::Tcp(t.addr.to_string());
    let with = |dir: &str, name: &str| ClientConfig {
        tls: node_tls(&t, dir, name),
        io_timeout: Duration::from_secs(5),
    };
    // A client certificate from a CA the server does not trust.
    assert!(matches!(
        Connection::connect(&target, "acme-disk", &with("rogue", "localhost")),
        Err(ClientError::Tls(_) | ClientError::Io { .. })
    ));
    // The server's certificate does not name this server.
    assert!(matches!(
        Connection::connect(&target, "acme-disk", &with("acme", "node-elsewhere")),
        Err(ClientError::Tls(_))
    ));
    // The certificate's tenant may not open another tenant's export.
    assert!(matches!(
        Connection::connect(&target, "other-disk", &with("acme", "localhost")),
        Err(ClientError::Refused { .. })
    ));
    // Without TLS a FORCEDTLS server refuses the export.
    assert!(matches!(
        Connection::connect(&target, "acme-disk", &ClientConfig::default()),
        Err(ClientError::Refused { .. })
    ));
    // The right certificate and name.
    let mut c = Connection::connect(&target, "acme-disk", &with("acme", "localhost")).unwrap();
    let mut model = vec![0u8; (4 * MIB) as usize];
    exercise(&mut c, &mut model, 2, 100);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct QemuNbd(Child);

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_nbd(file: &std::path::Path, port: u16) -> QemuNbd {
    let child = Command::new("qemu-nbd")
        .args([
            "-f",
            "raw",
            "--persistent",
            "--shared=8",
            "-x",
            "exp",
            "--bind",
            "127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-nbd (package qemu-utils) must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "qemu-nbd did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    QemuNbd(child)
}

#[test]
fn qemu_nbd_is_a_server_the_client_speaks_to_and_a_restarted_server_is_reached_again() {
    let h = Harness::new();
    let file = h.path("disk.raw");
    std::fs::write(&file, vec![0u8; (2 * MIB) as usize]).unwrap();
    let port = free_port();
    let target = Target::Tcp(format!("127.0.0.1:{port}"));
    let cfg = ClientConfig {
        io_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let server = qemu_nbd(&file, port);
    let mut c = Connection::connect(&target, "exp", &cfg).unwrap();
    assert_eq!(c.info().size, 2 * MIB);
    let mut model = vec![0u8; (2 * MIB) as usize];
    exercise(&mut c, &mut model, 3, 200);
    c.flush().unwrap();
    c.disconnect();
    // The bytes are in qemu-nbd's file, not just in what the client read back.
    assert!(std::fs::read(&file).unwrap() == model);

    let pool = ClientPool::connect(target.clone(), "exp", cfg.clone(), 2).unwrap();
    pool.write_at(0, b"before", false).unwrap();
    drop(server);
    // The server is gone: the request fails (it does not hang past the timeout).
    let t0 = Instant::now();
    let e = pool.write_at(0, b"gone!!", false).unwrap_err();
    assert!(e.breaks_connection(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(8));
    // Back again: the pool makes a new connection by itself.
    let _server = qemu_nbd(&file, port);
    pool.write_at(0, b"after!", false).unwrap();
    pool.flush().unwrap();
    let mut b = [0u8; 6];
    pool.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"after!");
}
