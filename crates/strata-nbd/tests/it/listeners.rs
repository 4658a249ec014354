//! Unix listeners: the identity a tenant socket gives its connections (and what LIST shows
//! them), socket modes whatever the umask, stopping one listener, its own capacity, and
//! closing sessions by what they are.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_nbd::proto::*;
use strata_nbd::{Authorizer, ServerConfig, UnixListenerOptions};

use crate::common::*;

const MIB: u64 = 1 << 20;

/// The admin socket (`None`) may open everything; a tenant `T` the volumes `T-*`.
fn harness() -> Harness {
    let h = Harness::with_config(ServerConfig {
        authorize: Some(Authorizer::new(|export: &str, who: Option<&str>| {
            let volume = export.split('@').next().unwrap_or(export);
            who.is_none_or(|t| volume.starts_with(&format!("{t}-")))
        })),
        ..ServerConfig::default()
    });
    let v = h.volume("acme-disk", MIB);
    h.pool.create_snapshot(v, "s1").unwrap();
    h.volume("other-disk", MIB);
    h
}

fn list(r: &mut Raw) -> Vec<String> {
    r.opt(OPT_LIST, &[]);
    r.replies()
        .iter()
        .filter(|x| x.typ == REP_SERVER)
        .map(|x| String::from_utf8(x.data[4..].to_vec()).unwrap())
        .collect()
}

#[test]
fn tenant_socket_carries_its_identity_and_lists_only_its_exports() {
    let h = harness();
    let tenant = h.path("acme.sock");
    h.server
        .serve_unix_with(
            &tenant,
            UnixListenerOptions {
                identity: Some("acme".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut r = Raw::connect_path(&tenant);
    r.send(&3u32.to_be_bytes());
    assert_eq!(list(&mut r), ["acme-disk", "acme-disk@s1"]);
    r.opt(OPT_GO, &info_data("other-disk", &[]));
    assert_eq!(r.replies().last().unwrap().typ, REP_ERR_UNKNOWN);
    r.opt(OPT_GO, &info_data("acme-disk", &[]));
    assert_eq!(r.replies().last().unwrap().typ, REP_ACK);
    assert_eq!(r.write(1, 0, b"tenant"), 0);
    // The admin socket sees everything.
    let mut a = Raw::open(&h);
    assert_eq!(list(&mut a), ["acme-disk", "acme-disk@s1", "other-disk"]);
}

#[test]
fn sockets_get_their_mode_whatever_the_umask() {
    let h = harness();
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let admin = h.path("admin2.sock");
    let tenant = h.path("t.sock");
    let r1 = h.server.serve_unix(&admin);
    let r2 = h.server.serve_unix_with(
        &tenant,
        UnixListenerOptions {
            identity: Some("acme".into()),
            mode: 0o660,
            owner: Some((4321, 4322)),
            ..Default::default()
        },
    );
    rustix::process::umask(old);
    r1.unwrap();
    r2.unwrap();
    let md = std::fs::metadata(&admin).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    let md = std::fs::metadata(&tenant).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o660);
    assert_eq!((md.uid(), md.gid()), (4321, 4322));
    // Nothing left behind beside them, and both serve.
    let names: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    Raw::connect_path(&admin);
    Raw::connect_path(&tenant);
    // A path that is not a socket is never replaced.
    let file = h.path("plain-file");
    std::fs::write(&file, b"keep").unwrap();
    assert!(h.server.serve_unix(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

#[test]
fn stop_unix_stops_one_listener_and_its_sessions() {
    let h = harness();
    let tenant = h.path("acme.sock");
    h.server
        .serve_unix_with(
            &tenant,
            UnixListenerOptions {
                identity: Some("acme".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut r = Raw::connect_path(&tenant);
    r.send(&3u32.to_be_bytes());
    r.opt(OPT_GO, &info_data("acme-disk", &[]));
    assert_eq!(r.replies().last().unwrap().typ, REP_ACK);
    let (mut admin, _, _) = Raw::go(&h, "other-disk", false, &[]);
    assert!(h.server.stop_unix(&tenant));
    assert!(!h.server.stop_unix(&tenant));
    assert!(!tenant.exists());
    assert!(UnixStream::connect(&tenant).is_err());
    assert!(r.closed(), "the stopped listener's session stayed open");
    assert_eq!(admin.write(1, 0, b"admin"), 0);
    // The path can be served again.
    h.server.serve_unix(&tenant).unwrap();
    Raw::connect_path(&tenant);
}

#[test]
fn unix_listener_has_its_own_capacity() {
    let h = harness();
    let small = h.path("small.sock");
    h.server
        .serve_unix_with(
            &small,
            UnixListenerOptions {
                max_connections: 1,
                ..Default::default()
            },
        )
        .unwrap();
    let _one = Raw::connect_path(&small);
    let mut two = UnixStream::connect(&small).unwrap();
    two.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        peer_closed(&mut two),
        "second connection over capacity was served"
    );
    // The other listener is not affected.
    let (mut r, _, _) = Raw::go(&h, "acme-disk", false, &[]);
    assert_eq!(r.write(1, 0, b"x"), 0);
}

#[test]
fn close_sessions_ends_matching_sessions_within_a_second() {
    let h = harness();
    h.volume("victim", MIB);
    let stop = Arc::new(AtomicBool::new(false));
    let run = |export: &'static str| {
        let (mut r, _, _) = Raw::go(&h, export, false, &[]);
        r.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut b = Vec::new();
                put_request(
                    &mut b,
                    &Request {
                        flags: 0,
                        cmd: CMD_WRITE,
                        handle: n,
                        offset: 0,
                        len: 4096,
                    },
                );
                b.extend_from_slice(&[n as u8; 4096]);
                if std::io::Write::write_all(&mut r.s, &b).is_err() {
                    return (n, Instant::now());
                }
                let mut h = [0u8; SIMPLE_REPLY_LEN];
                if std::io::Read::read_exact(&mut r.s, &mut h).is_err() {
                    return (n, Instant::now());
                }
                n += 1;
            }
            (n, Instant::now())
        })
    };
    let v = run("victim");
    let keep = run("other-disk");
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();
    let asked = Instant::now();
    let n = h.server.close_sessions(|s| {
        seen.push(s.clone());
        s.volume == "victim"
    });
    assert_eq!(n, 1);
    let (done, ended) = v.join().unwrap();
    assert!(done > 0, "the victim did no I/O before");
    assert!(ended.duration_since(asked) < Duration::from_secs(1));
    let info = seen.iter().find(|s| s.export == "victim").unwrap();
    assert_eq!(info.identity, None);
    assert_eq!(info.listener.as_deref(), Some(h.sock.as_path()));
    assert_eq!(info.cert_serial, None);
    // The other session is untouched.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (kept, _) = keep.join().unwrap();
    assert!(kept > 0);
    assert!(wait_until(5, || h.server.connections() == 0));
}
