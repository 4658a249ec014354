//! Our own protocol suite: every option, every error path, malformed and hostile input, over a
//! raw socket.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_block::testing::PowerDomain;
use strata_block::{DeviceSpec, MemDevice, Pool};
use strata_nbd::proto::*;
use strata_nbd::{NbdServer, ServerConfig};
use strata_types::DeviceClass;

use crate::common::*;

const MIB: u64 = 1 << 20;

#[test]
fn unknown_client_flags_close_the_connection() {
    let h = Harness::new();
    let mut r = Raw::connect(&h);
    r.send(&0x8000_0001u32.to_be_bytes());
    assert!(r.closed());
    // The server still serves others.
    h.volume("v", MIB);
    let (_r, size, _) = Raw::go(&h, "v", false, &[]);
    assert_eq!(size, MIB);
}

#[test]
fn every_option() {
    let h = Harness::new();
    let v = h.volume("vol", 4 * MIB);
    h.pool.create_snapshot(v, "s1").unwrap();
    let mut r = Raw::open(&h);

    // LIST: volumes and their snapshots.
    r.opt(OPT_LIST, &[]);
    let rs = r.replies();
    let names: Vec<String> = rs
        .iter()
        .filter(|x| x.typ == REP_SERVER)
        .map(|x| String::from_utf8(x.data[4..].to_vec()).unwrap())
        .collect();
    assert_eq!(names, ["vol", "vol@s1"]);
    assert_eq!(rs.last().unwrap().typ, REP_ACK);
    assert!(rs.iter().all(|x| x.option == OPT_LIST));

    // LIST with data is invalid; the session continues.
    r.opt(OPT_LIST, b"x");
    assert_eq!(r.reply().typ, REP_ERR_INVALID);

    // INFO with name, description and block size.
    r.opt(
        OPT_INFO,
        &info_data("vol", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
    );
    let rs = r.replies();
    assert_eq!(rs.last().unwrap().typ, REP_ACK);
    let info = |t: u16| {
        rs.iter()
            .find(|x| x.typ == REP_INFO && x.data[..2] == t.to_be_bytes())
            .unwrap_or_else(|| panic!("info {t} missing: {rs:?}"))
            .data[2..]
            .to_vec()
    };
    assert_eq!(be64(&info(INFO_EXPORT)), 4 * MIB);
    assert_eq!(info(INFO_NAME), b"vol");
    assert_eq!(info(INFO_DESCRIPTION), b"strata volume vol");
    let bs = info(INFO_BLOCK_SIZE);
    assert_eq!(
        (be32(&bs), be32(&bs[4..]), be32(&bs[8..])),
        (1, 4096, MAX_PAYLOAD)
    );

    // INFO on an unknown export, or malformed.
    r.opt(OPT_INFO, &info_data("nope", &[]));
    assert_eq!(r.reply().typ, REP_ERR_UNKNOWN);
    r.opt(OPT_GO, &[0, 0, 0, 50, b'v']);
    assert_eq!(r.reply().typ, REP_ERR_INVALID);
    r.opt(OPT_GO, &info_data("missing", &[]));
    assert_eq!(r.reply().typ, REP_ERR_UNKNOWN);

    // Unsupported options: UNSUP, session continues.
    for o in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, 4, 999] {
        r.opt(o, if o == 999 { b"some data" } else { &[] });
        let x = r.reply();
        assert_eq!((x.option, x.typ), (o, REP_ERR_UNSUP));
    }

    // Meta contexts need structured replies first.
    r.opt(OPT_LIST_META_CONTEXT, &meta_data("vol", &[]));
    assert_eq!(r.reply().typ, REP_ERR_INVALID);
    r.opt(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(r.reply().typ, REP_ACK);
    r.opt(OPT_LIST_META_CONTEXT, &meta_data("vol", &[]));
    let rs = r.replies();
    let ctx: Vec<String> = rs
        .iter()
        .filter(|x| x.typ == REP_META_CONTEXT)
        .map(|x| String::from_utf8(x.data[4..].to_vec()).unwrap())
        .collect();
    assert_eq!(ctx, ["base:allocation", "strata:changed-since:s1"]);
    r.opt(
        OPT_LIST_META_CONTEXT,
        &meta_data("vol", &["qemu:", "strata:"]),
    );
    let rs = r.replies();
    assert_eq!(rs.len(), 2, "{rs:?}");
    r.opt(OPT_LIST_META_CONTEXT, &meta_data("vol@s1", &[]));
    assert_eq!(r.replies().len(), 2, "snapshots offer base:allocation only");
    r.opt(
        OPT_SET_META_CONTEXT,
        &meta_data(
            "vol",
            &["base:allocation", "strata:changed-since:nope", "x:y"],
        ),
    );
    let rs = r.replies();
    assert_eq!(rs.len(), 2);
    assert_eq!(be32(&rs[0].data), 1);
    r.opt(
        OPT_SET_META_CONTEXT,
        &meta_data("ghost", &["base:allocation"]),
    );
    assert_eq!(r.reply().typ, REP_ERR_UNKNOWN);

    // ABORT is acknowledged, then the server closes.
    r.opt(OPT_ABORT, &[]);
    assert_eq!(r.reply().typ, REP_ACK);
    assert!(r.closed());
}

#[test]
fn export_name_enters_transmission_or_closes() {
    let h = Harness::new();
    h.volume("vol", MIB);
    // Without NO_ZEROES: 8 + 2 + 124 bytes.
    let mut r = Raw::connect(&h);
    r.send(&1u32.to_be_bytes());
    r.opt(OPT_EXPORT_NAME, b"vol");
    let b = r.read_n(134);
    assert_eq!(be64(&b), MIB);
    assert!(b[10..].iter().all(|&x| x == 0));
    assert_eq!(r.write(1, 0, b"hi"), 0);
    // Unknown name: the server must close.
    let mut r = Raw::open(&h);
    r.opt(OPT_EXPORT_NAME, b"nope");
    assert!(r.closed());
}

#[test]
fn transmission_commands_and_error_paths() {
    let h = Harness::new();
    h.volume("vol", MIB);
    let (mut r, size, flags) = Raw::go(&h, "vol", false, &[]);
    assert_eq!(size, MIB);
    for f in [
        TF_HAS_FLAGS,
        TF_SEND_FLUSH,
        TF_SEND_FUA,
        TF_SEND_TRIM,
        TF_SEND_WRITE_ZEROES,
        TF_CAN_MULTI_CONN,
        TF_SEND_CACHE,
        TF_SEND_FAST_ZERO,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(flags & (TF_READ_ONLY | TF_SEND_DF), 0);
    let stats = h.server.stats();
    let writes0 = stats.writes.load(Ordering::Relaxed);

    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(r.write(1, 1001, &data), 0);
    assert_eq!(r.read_simple(2, 1001, 10_000), (0, data.clone()));
    assert_eq!(stats.writes.load(Ordering::Relaxed) - writes0, 1);

    // Past the end: EINVAL for reads, ENOSPC for writes; zero length; unknown command/flag.
    assert_eq!(r.read_simple(3, MIB - 10, 11).0, EINVAL);
    assert_eq!(r.read_simple(3, u64::MAX - 2, 11).0, EINVAL);
    assert_eq!(r.write(4, MIB - 1, b"ab"), ENOSPC);
    assert_eq!(r.read_simple(5, 0, 0).0, EINVAL);
    r.req(42, 0, 6, 0, 0, &[]);
    assert_eq!(r.simple(), (EINVAL, 6));
    r.req(CMD_READ, CMDF_DF, 7, 0, 16, &[]);
    assert_eq!(r.simple(), (EINVAL, 7), "DF without structured replies");
    r.req(CMD_WRITE, CMDF_REQ_ONE, 8, 0, 3, b"xyz");
    assert_eq!(
        r.simple(),
        (EINVAL, 8),
        "payload of a refused write is consumed"
    );
    assert_eq!(r.read_simple(9, 0, 3), (0, vec![0, 0, 0]));
    // READ longer than the maximum block size: EINVAL, the connection continues.
    r.req(CMD_READ, 0, 10, 0, MAX_PAYLOAD + 1, &[]);
    assert_eq!(r.simple(), (EINVAL, 10));
    // BLOCK_STATUS without contexts.
    r.req(CMD_BLOCK_STATUS, 0, 11, 0, 4096, &[]);
    assert_eq!(r.simple(), (EINVAL, 11));

    // FLUSH (offset/len must be zero), FUA write, CACHE.
    let flushes0 = stats.flushes.load(Ordering::Relaxed);
    r.req(CMD_FLUSH, 0, 12, 0, 0, &[]);
    assert_eq!(r.simple(), (0, 12));
    r.req(CMD_FLUSH, 0, 13, 1, 0, &[]);
    assert_eq!(r.simple(), (EINVAL, 13));
    r.req(CMD_WRITE, CMDF_FUA, 14, 0, 4, b"fua!");
    assert_eq!(r.simple(), (0, 14));
    assert!(stats.flushes.load(Ordering::Relaxed) > flushes0);
    r.req(CMD_CACHE, 0, 15, 0, 4096, &[]);
    assert_eq!(r.simple(), (0, 15));

    // TRIM and WRITE_ZEROES read back as zeros; FAST_ZERO with NO_HOLE is ENOTSUP.
    r.req(CMD_TRIM, 0, 16, 1001, 10_000, &[]);
    assert_eq!(r.simple(), (0, 16));
    assert_eq!(r.read_simple(17, 1001, 10_000), (0, vec![0; 10_000]));
    assert_eq!(r.write(18, 0, &[9; 8192]), 0);
    r.req(CMD_WRITE_ZEROES, CMDF_NO_HOLE, 19, 100, 5000, &[]);
    assert_eq!(r.simple(), (0, 19));
    let (_, back) = r.read_simple(20, 0, 8192);
    assert!(back[..100].iter().all(|&b| b == 9));
    assert!(back[100..5100].iter().all(|&b| b == 0));
    assert!(back[5100..].iter().all(|&b| b == 9));
    r.req(
        CMD_WRITE_ZEROES,
        CMDF_NO_HOLE | CMDF_FAST_ZERO,
        21,
        0,
        4096,
        &[],
    );
    assert_eq!(r.simple(), (ENOTSUP, 21));
    r.req(
        CMD_WRITE_ZEROES,
        CMDF_FAST_ZERO | CMDF_FUA,
        22,
        0,
        4096,
        &[],
    );
    assert_eq!(r.simple(), (0, 22));

    // DISC: the server closes after answering what is in flight.
    r.req(CMD_WRITE, 0, 23, 0, 2, b"ok");
    r.req(CMD_DISC, 0, 24, 0, 0, &[]);
    assert_eq!(r.simple(), (0, 23));
    assert!(r.closed());
}

#[test]
fn many_requests_in_flight_are_all_answered() {
    let h = Harness::new();
    h.volume("vol", 8 * MIB);
    let (mut r, _, _) = Raw::go(&h, "vol", true, &[]);
    // Pipeline 200 writes, flushes and reads without reading a reply.
    let mut want = std::collections::HashSet::new();
    for i in 0..200u64 {
        match i % 3 {
            0 => r.req(CMD_WRITE, 0, i, i * 4096, 4096, &[i as u8; 4096]),
            1 => r.req(CMD_FLUSH, 0, i, 0, 0, &[]),
            _ => r.req(CMD_READ, 0, i, (i - 2) * 4096, 4096, &[]),
        }
        want.insert(i);
    }
    for _ in 0..200 {
        let h4 = r.read_n(4);
        let handle = if be32(&h4) == SIMPLE_REPLY_MAGIC {
            let rest = r.read_n(12);
            assert_eq!(be32(&rest), 0);
            be64(&rest[4..])
        } else {
            let rest = r.read_n(16);
            let handle = be64(&rest[4..]);
            let p = r.read_n(be32(&rest[12..]) as usize);
            assert_eq!(be64(&p), (handle - 2) * 4096);
            assert!(p[8..].iter().all(|&b| b == (handle - 2) as u8));
            handle
        };
        assert!(want.remove(&handle), "duplicate or unknown handle {handle}");
    }
}

#[test]
fn structured_replies_and_block_status() {
    let h = Harness::new();
    let v = h.volume("vol", 4 * MIB);
    h.pool.write(v, 0, &[1; 8192]).unwrap();
    h.pool.create_snapshot(v, "base").unwrap();
    h.pool.write(v, MIB, &[2; 4096]).unwrap();
    let (mut r, _, flags) = Raw::go(
        &h,
        "vol",
        true,
        &["base:allocation", "strata:changed-since:base"],
    );
    assert_ne!(flags & TF_SEND_DF, 0);

    r.req(CMD_READ, CMDF_DF, 1, 4000, 200, &[]);
    let c = r.chunk();
    assert_eq!(
        (c.flags, c.typ, c.handle),
        (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1)
    );
    assert_eq!(be64(&c.payload), 4000);
    assert!(c.payload[8..].iter().all(|&b| b == 1));
    assert_eq!(c.payload.len(), 208);

    // A failed read is an error chunk with a message.
    r.req(CMD_READ, 0, 2, 4 * MIB, 1, &[]);
    let c = r.chunk();
    assert_eq!((c.flags, c.typ), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR));
    assert_eq!(be32(&c.payload), EINVAL);
    assert!(c.payload.len() > 6);

    r.req(CMD_BLOCK_STATUS, 0, 3, 0, 2 * MIB as u32, &[]);
    let alloc = r.chunk();
    let changed = r.chunk();
    assert_eq!((alloc.typ, alloc.flags), (REPLY_TYPE_BLOCK_STATUS, 0));
    assert_eq!(
        (changed.typ, changed.flags),
        (REPLY_TYPE_BLOCK_STATUS, REPLY_FLAG_DONE)
    );
    let descs = |p: &[u8]| -> (u32, Vec<(u32, u32)>) {
        let d = p[4..].chunks(8).map(|c| (be32(c), be32(&c[4..]))).collect();
        (be32(p), d)
    };
    let hz = STATE_HOLE | STATE_ZERO;
    let m = MIB as u32;
    assert_eq!(
        descs(&alloc.payload),
        (
            1,
            vec![(8192, 0), (m - 8192, hz), (4096, 0), (m - 4096, hz)]
        )
    );
    assert_eq!(
        descs(&changed.payload),
        (2, vec![(m, 0), (4096, 1), (m - 4096, 0)])
    );

    // REQ_ONE: one descriptor per context.
    r.req(CMD_BLOCK_STATUS, CMDF_REQ_ONE, 4, 4096, m, &[]);
    let a = r.chunk();
    let b = r.chunk();
    assert_eq!(descs(&a.payload).1, [(4096, 0)]);
    assert_eq!(descs(&b.payload).1, [(m - 4096, 0)]);

    // Past the end.
    r.req(CMD_BLOCK_STATUS, 0, 5, 4 * MIB - 512, 1024, &[]);
    let c = r.chunk();
    assert_eq!((c.typ, be32(&c.payload)), (REPLY_TYPE_ERROR, EINVAL));

    // Trim makes holes.
    r.req(CMD_TRIM, 0, 6, 0, 8192, &[]);
    assert_eq!(r.any_reply(), (0, 6));
    r.req(CMD_BLOCK_STATUS, CMDF_REQ_ONE, 7, 0, 8192, &[]);
    assert_eq!(descs(&r.chunk().payload).1, [(8192, hz)]);
    assert_eq!(
        descs(&r.chunk().payload).1,
        [(8192, 1)],
        "trimmed since base"
    );
}

#[test]
fn snapshot_export_is_read_only() {
    let h = Harness::new();
    let v = h.volume("vol", MIB);
    h.pool.write(v, 0, b"before").unwrap();
    h.pool.create_snapshot(v, "snap").unwrap();
    h.pool.write(v, 0, b"after!").unwrap();
    let (mut r, size, flags) = Raw::go(&h, "vol@snap", false, &[]);
    assert_eq!(size, MIB);
    assert_ne!(flags & TF_READ_ONLY, 0);
    assert_eq!(flags & (TF_SEND_TRIM | TF_SEND_WRITE_ZEROES), 0);
    assert_eq!(r.read_simple(1, 0, 6), (0, b"before".to_vec()));
    assert_eq!(r.write(2, 0, b"nope"), EPERM);
    r.req(CMD_TRIM, 0, 3, 0, 4096, &[]);
    assert_eq!(r.simple(), (EPERM, 3));
    r.req(CMD_WRITE_ZEROES, 0, 4, 0, 4096, &[]);
    assert_eq!(r.simple(), (EPERM, 4));
    r.req(CMD_FLUSH, 0, 5, 0, 0, &[]);
    assert_eq!(r.simple(), (0, 5));
    assert_eq!(r.read_simple(6, 0, 6), (0, b"before".to_vec()));
    let mut b = [0u8; 6];
    h.pool.read(v, 0, &mut b).unwrap();
    assert_eq!(&b, b"after!");
}

#[test]
fn malformed_input_ends_only_that_connection() {
    let h = Harness::new();
    h.volume("vol", MIB);
    let (mut good, _, _) = Raw::go(&h, "vol", false, &[]);
    assert_eq!(good.write(1, 0, b"good"), 0);

    // Bad request magic.
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    r.send(&[0xde; 28]);
    assert!(r.closed());
    // Write payload over the cap.
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    r.req(CMD_WRITE, 0, 1, 0, MAX_PAYLOAD + 1, &[]);
    assert!(r.closed());
    // Extended-header request magic (never negotiated).
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    let mut b = REQUEST_EXT_MAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&[0; 28]);
    r.send(&b);
    assert!(r.closed());
    // Bad option magic, and an option longer than the cap.
    let mut r = Raw::open(&h);
    r.send(&[0x11; 16]);
    assert!(r.closed());
    let mut r = Raw::open(&h);
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_GO.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    r.send(&b);
    assert!(r.closed());
    // A client that disconnects in the middle of a write payload, and one mid-header.
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    r.req(CMD_WRITE, 0, 1, 0, 65536, &[7; 1000]);
    drop(r);
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    r.send(&REQUEST_MAGIC.to_be_bytes());
    drop(r);
    // One that disconnects during the handshake.
    let mut r = Raw::open(&h);
    r.send(&IHAVEOPT.to_be_bytes());
    drop(r);

    // The first connection and new ones are unaffected.
    assert_eq!(good.read_simple(2, 0, 4), (0, b"good".to_vec()));
    let (mut fresh, _, _) = Raw::go(&h, "vol", false, &[]);
    assert_eq!(fresh.read_simple(3, 0, 4), (0, b"good".to_vec()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.server.connections() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        h.server.connections(),
        2,
        "broken connections were cleaned up"
    );
    assert!(h.server.stats().violations.load(Ordering::Relaxed) >= 5);
}

#[test]
fn client_that_stops_reading_is_disconnected() {
    let h = Harness::with_config(ServerConfig {
        write_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    h.volume("vol", 64 * MIB);
    let (mut other, _, _) = Raw::go(&h, "vol", false, &[]);
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    // Ask for far more than the socket buffers hold and never read it.
    r.s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..64 {
        let mut b = Vec::new();
        put_request(
            &mut b,
            &Request {
                flags: 0,
                cmd: CMD_READ,
                handle: i,
                offset: 0,
                len: 32 << 20,
            },
        );
        if r.s.write_all(&b).is_err() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while h.server.connections() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(h.server.connections(), 1, "stuck client was disconnected");
    assert_eq!(other.write(1, 0, b"still fine"), 0);
    drop(r);
}

#[test]
fn connection_limit_and_handshake_timeout() {
    let h = Harness::with_config(ServerConfig {
        max_unix_connections: 2,
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    h.volume("vol", MIB);
    let (mut a, _, _) = Raw::go(&h, "vol", false, &[]);
    let silent = UnixStream::connect(&h.sock).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Third connection: refused (closed at once).
    let mut third = UnixStream::connect(&h.sock).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut r = Raw {
        s: third.try_clone().unwrap(),
    };
    assert!(r.closed());
    let _ = third.write_all(b"x");
    // The silent client times out of the handshake, freeing its slot.
    std::thread::sleep(Duration::from_millis(600));
    let (mut b, _, _) = Raw::go(&h, "vol", false, &[]);
    assert_eq!(b.write(1, 0, b"b"), 0);
    assert_eq!(a.write(1, 0, b"a"), 0);
    assert!(h.server.stats().refused.load(Ordering::Relaxed) >= 1);
    drop(silent);
}

#[test]
fn shutdown_closes_connections_and_refuses_new_ones() {
    let h = Harness::new();
    h.volume("vol", MIB);
    let (mut r, _, _) = Raw::go(&h, "vol", false, &[]);
    h.server.shutdown();
    assert!(r.closed());
    assert!(!h.sock.exists());
    assert!(UnixStream::connect(&h.sock).is_err());
    assert!(h.server.serve_unix(h.path("again.sock")).is_err());
}

#[test]
fn tcp_listener_serves_the_same_exports() {
    let h = Harness::new();
    h.volume("vol", MIB);
    let addr = h.server.serve_tcp("127.0.0.1:0").unwrap();
    let uri = format!("nbd://{addr}/vol");
    run_ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 0 4096", &uri],
    );
    run_ok(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0x5a 0 4096", &h.uri("vol")],
    );
}

/// FLUSH on one connection makes a write acknowledged on another durable (multi-conn): cut
/// power right after the flush reply and reopen from what the device made durable.
#[test]
fn flush_on_one_connection_covers_writes_of_another() {
    let power = PowerDomain::new(None, 7);
    let dev = power.device(64 << 20, "crash");
    let pool = Pool::create(vec![DeviceSpec {
        device: dev.clone(),
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    pool.create_volume("vol", 4 * MIB, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let server = NbdServer::new(pool);
    server.serve_unix(&sock).unwrap();
    let h = HarnessRef { sock: sock.clone() };
    let mut a = h.go();
    let mut b = h.go();
    assert_eq!(a.write(1, 12345, b"durable via b"), 0);
    b.req(CMD_FLUSH, 0, 2, 0, 0, &[]);
    assert_eq!(b.simple(), (0, 2));
    power.cut_now();
    server.shutdown();
    let reopened = Pool::open(vec![
        MemDevice::from_image(dev.durable_image(), "after") as Arc<_>
    ])
    .unwrap();
    let v = reopened.volume_id("vol").unwrap();
    let mut buf = [0u8; 13];
    reopened.read(v, 12345, &mut buf).unwrap();
    assert_eq!(&buf, b"durable via b");
}

struct HarnessRef {
    sock: std::path::PathBuf,
}

impl HarnessRef {
    fn go(&self) -> Raw {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw { s };
        assert_eq!(r.read_n(GREETING_LEN), greeting());
        r.send(&3u32.to_be_bytes());
        r.opt(OPT_GO, &info_data("vol", &[]));
        assert_eq!(r.replies().last().unwrap().typ, REP_ACK);
        r
    }
}

/// Large READs and WRITEs take the worker path: pipeline a mix of them with small requests,
/// FUA and flushes, and check every reply and every byte.
#[test]
fn large_requests_pipelined_with_small_ones() {
    let h = Harness::new();
    h.volume("vol", 64 * MIB);
    let (mut r, _, _) = Raw::go(&h, "vol", true, &[]);
    let big = |i: u64| -> Vec<u8> {
        (0..MIB)
            .map(|j| (i as u8) ^ (j as u8) ^ (j >> 9) as u8)
            .collect()
    };
    let mut pending = std::collections::HashMap::new();
    for i in 0..24u64 {
        let off = (i % 12) * 3 * MIB + 4095;
        match i % 4 {
            0 | 1 if i < 12 => {
                let fua = if i % 2 == 1 { CMDF_FUA } else { 0 };
                r.req(CMD_WRITE, fua, i, off, MIB as u32, &big(i));
            }
            0 | 1 => r.req(CMD_WRITE, 0, i, off, 300 << 10, &big(i)[..300 << 10]),
            2 => r.req(CMD_WRITE, 0, i, 60 * MIB + i, 100, &[i as u8; 100]),
            _ => r.req(CMD_FLUSH, 0, i, 0, 0, &[]),
        }
        pending.insert(i, ());
    }
    while !pending.is_empty() {
        let (e, handle) = r.any_reply();
        assert_eq!(e, 0, "handle {handle}");
        assert!(pending.remove(&handle).is_some());
    }
    // Read everything back, big reads pipelined.
    for i in 0..24u64 {
        let off = (i % 12) * 3 * MIB + 4095;
        if i % 4 < 2 {
            let len = if i < 12 { MIB as u32 } else { 300 << 10 };
            r.req(CMD_READ, 0, 100 + i, off, len, &[]);
        }
    }
    // Large reads come as several data chunks (pieces of 128 KiB), the last flagged DONE,
    // chunks of different reads interleaved; each chunk says where its data goes.
    let mut got: std::collections::HashMap<u64, Vec<u8>> = std::collections::HashMap::new();
    let mut done = 0;
    while done < 12 {
        let c = r.chunk();
        assert_eq!(c.typ, REPLY_TYPE_OFFSET_DATA);
        let i = c.handle - 100;
        let base = (i % 12) * 3 * MIB + 4095;
        let at = (be64(&c.payload) - base) as usize;
        let data = got.entry(i).or_default();
        assert_eq!(at, data.len(), "chunks of one read arrive in order here");
        data.extend_from_slice(&c.payload[8..]);
        if c.flags & REPLY_FLAG_DONE != 0 {
            done += 1;
        }
    }
    let k = 300 << 10;
    for (i, data) in got {
        // Writes 12.. overwrote the first 300 KiB of the slot of write i - 12.
        if i < 12 {
            assert!(data[..k] == big(i + 12)[..k], "head of slot {i}");
            assert!(data[k..] == big(i)[k..], "tail of slot {i}");
        } else {
            assert!(data[..] == big(i)[..k], "read of write {i}");
        }
    }
    // A client that vanishes in the middle of a large payload.
    let (mut r2, _, _) = Raw::go(&h, "vol", false, &[]);
    r2.req(CMD_WRITE, 0, 1, 0, MIB as u32, &[1; 1000]);
    drop(r2);
    r.req(CMD_READ, 0, 7, 60 * MIB + 22, 100, &[]);
    let c = r.chunk();
    assert_eq!(c.payload[8..], [22u8; 100][..], "last small write wins");
}

#[test]
fn large_reads_come_in_pieces_unless_df_and_count_once() {
    let h = Harness::new();
    let v = h.volume("vol", 8 * MIB);
    let data: Vec<u8> = (0..MIB as usize)
        .map(|i| (i / 4096) as u8 ^ i as u8)
        .collect();
    h.pool.write(v, 0, &data).unwrap();
    let reads_before = h.pool.io(v).unwrap().totals().reads;
    let (mut r, _, _) = Raw::go(&h, "vol", true, &[]);
    // Without DF: several data chunks, each at its offset, the last one DONE.
    r.req(CMD_READ, 0, 1, 0, MIB as u32, &[]);
    let mut got = Vec::new();
    let mut chunks = 0;
    loop {
        let c = r.chunk();
        assert_eq!((c.typ, c.handle), (REPLY_TYPE_OFFSET_DATA, 1));
        assert_eq!(be64(&c.payload), got.len() as u64);
        got.extend_from_slice(&c.payload[8..]);
        chunks += 1;
        if c.flags & REPLY_FLAG_DONE != 0 {
            break;
        }
    }
    assert!(chunks > 1, "a 1 MiB read came whole");
    assert!(got == data);
    // With DF: exactly one chunk.
    r.req(CMD_READ, CMDF_DF, 2, 0, MIB as u32, &[]);
    let c = r.chunk();
    assert_eq!(c.flags & REPLY_FLAG_DONE, REPLY_FLAG_DONE);
    assert!(c.payload[8..] == data[..]);
    // Each request counts once in the volume's figures (and against IOPS limits).
    assert_eq!(h.pool.io(v).unwrap().totals().reads, reads_before + 2);
}
