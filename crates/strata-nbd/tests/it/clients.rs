//! Real NBD clients as oracles: qemu-io, qemu-img, nbdinfo, nbdcopy, fio.

use std::io::Write;

use crate::common::*;

const MIB: u64 = 1 << 20;

#[test]
fn qemu_io_unaligned_patterns_read_back() {
    let h = Harness::new();
    h.volume("vol", 16 * MIB);
    let uri = h.uri("vol");
    let out = run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 3 5000",
            "-c",
            "write -P 0xcd 5003 1",
            "-c",
            "write -P 0x11 1048575 131077",
            "-c",
            "write -z 4096 100",
            "-c",
            "read -P 0xab 3 4093",
            "-c",
            "read -P 0 4096 100",
            "-c",
            "read -P 0xab 4196 807",
            "-c",
            "read -P 0xcd 5003 1",
            "-c",
            "read -P 0 0 3",
            "-c",
            "read -P 0x11 1048575 131077",
            "-c",
            "read -P 0 1179652 100",
            "-c",
            "flush",
            &uri,
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(out.matches("read ").count(), 7, "{out}");
}

fn pattern_image(path: &std::path::Path, size: u64) {
    // Data, a hole, more data with an unaligned boundary, and an all-zero tail.
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut seed = 0x1234_5678u32;
    let mut chunk = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect()
    };
    use std::io::Seek;
    f.write_all(&chunk(3 * MIB as usize + 777)).unwrap();
    f.seek(std::io::SeekFrom::Start(5 * MIB + 4096)).unwrap();
    f.write_all(&chunk(MIB as usize - 1)).unwrap();
}

#[test]
fn qemu_img_convert_then_compare_identical() {
    let h = Harness::new();
    let size = 8 * MIB;
    h.volume("vol", size);
    let img = h.path("src.raw");
    pattern_image(&img, size);
    let uri = h.uri("vol");
    let img_s = img.to_str().unwrap();
    run_ok(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", img_s, &uri],
    );
    let out = run_ok(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", img_s, &uri],
    );
    assert!(out.contains("Images are identical"), "{out}");
    // And a different image is reported different.
    let other = h.path("other.raw");
    pattern_image(&other, size);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&other)
        .unwrap()
        .write_all(b"X")
        .unwrap();
    let o = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            other.to_str().unwrap(),
            &uri,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn qemu_img_map_and_nbdinfo_map_report_holes_and_trim() {
    let h = Harness::new();
    let v = h.volume("vol", 16 * MIB);
    h.pool.write(v, 2 * MIB, &[7; 65536]).unwrap();
    let uri = h.uri("vol");

    let map = run_ok("qemu-img", &["map", "--output=json", "-f", "raw", &uri]);
    let data: Vec<&str> = map
        .lines()
        .filter(|l| l.contains("\"data\": true"))
        .collect();
    assert_eq!(data.len(), 1, "{map}");
    assert!(
        data[0].contains("\"start\": 2097152, \"length\": 65536"),
        "{map}"
    );
    assert!(map.contains("\"start\": 0, \"length\": 2097152"), "{map}");
    assert!(map.contains("\"zero\": true"), "{map}");

    let m = run_ok("nbdinfo", &["--map", &uri]);
    let lines: Vec<Vec<&str>> = m.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 3, "{m}");
    assert_eq!(lines[0][..3], ["0", "2097152", "3"], "{m}");
    assert_eq!(lines[1][..3], ["2097152", "65536", "0"], "{m}");
    assert_eq!(lines[2][..2], ["2162688", "14614528"], "{m}");

    // Trim through NBD: everything is a hole again.
    run_ok("qemu-io", &["-f", "raw", "-c", "discard 0 16M", &uri]);
    let m = run_ok("nbdinfo", &["--map", &uri]);
    assert_eq!(m.lines().count(), 1, "{m}");
    assert!(m.contains("hole,zero"), "{m}");
    let map = run_ok("qemu-img", &["map", "--output=json", "-f", "raw", &uri]);
    assert!(!map.contains("\"data\": true"), "{map}");

    // The changed-since context through a real client.
    let v2 = h.pool.volume_id("vol").unwrap();
    h.pool.create_snapshot(v2, "s").unwrap();
    h.pool.write(v2, 5 * MIB, &[1; 4096]).unwrap();
    let m = run_ok("nbdinfo", &["--map=strata:changed-since:s", &uri]);
    assert!(m.contains("5242880"), "{m}");
    assert_eq!(m.lines().count(), 3, "{m}");
}

#[test]
fn nbdcopy_multi_conn_copies_equal() {
    let h = Harness::new();
    let size = 32 * MIB;
    h.volume("src", size);
    h.volume("dst", size);
    let src = h.uri("src");
    let dst = h.uri("dst");
    run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x61 0 3M",
            "-c",
            "write -P 0x62 9437187 5000000",
            "-c",
            "write -P 0x63 33550336 4096",
            &src,
        ],
    );
    // Pre-dirty the destination where the source has holes: the copy must zero it.
    run_ok(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x7f 20M 1M", &dst],
    );
    let out = run_ok(
        "nbdcopy",
        &["--connections=4", "--requests=16", "--flush", &src, &dst],
    );
    let _ = out;
    let cmp = run_ok(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &src, &dst],
    );
    assert!(cmp.contains("Images are identical"), "{cmp}");
    assert!(
        h.server
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 8
    );
}

/// Random writes by fio over `jobs` connections (one per job, each on its own `size_mib`
/// slice), each block verified (crc32c) after; fails on any error or bad block.
fn fio_verify(bsrange: &str, iodepth: u32, jobs: u32, size_mib: u64) {
    let h = Harness::new();
    h.volume("vol", u64::from(jobs) * size_mib * MIB);
    let args = [
        "--name=verify".to_string(),
        "--ioengine=nbd".into(),
        format!("--uri={}", h.uri("vol")),
        "--rw=randwrite".into(),
        format!("--bsrange={bsrange}"),
        format!("--iodepth={iodepth}"),
        format!("--numjobs={jobs}"),
        format!("--size={size_mib}M"),
        format!("--offset_increment={size_mib}M"),
        "--verify=crc32c".into(),
        "--verify_fatal=1".into(),
        "--do_verify=1".into(),
        "--verify_state_save=0".into(),
        "--group_reporting".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run("fio", &args);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fio failed:\n{out}\n{err}");
    assert!(out.contains("err= 0"), "{out}");
    assert!(!out.contains("verify: bad"), "{out}");
}

#[test]
fn fio_verify_over_several_connections() {
    fio_verify("512-64k", 16, 4, 16);
}

/// Large requests (carried out by the connection's follower threads while another thread
/// reads on), mixed with small ones, over several connections: every byte verifies.
#[test]
fn fio_verify_large_requests_mixed_with_small() {
    fio_verify("4k-4m", 8, 3, 32);
}

#[test]
fn snapshot_export_refuses_writes_from_qemu_io() {
    let h = Harness::new();
    let v = h.volume("vol", 4 * MIB);
    h.pool.write(v, 0, &[0xab; 4096]).unwrap();
    h.pool.create_snapshot(v, "snap").unwrap();
    let uri = h.uri("vol@snap");
    let info = run_ok("nbdinfo", &[&uri]);
    assert!(info.contains("is_read_only: true"), "{info}");
    let o = run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xcd 0 4096", &uri],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success()
            || text.contains("Operation not permitted")
            || text.contains("read-only"),
        "write to a snapshot export was not refused: {text}"
    );
    assert!(!text.contains("wrote 4096/4096"), "{text}");
    run_ok(
        "qemu-io",
        &["-r", "-f", "raw", "-c", "read -P 0xab 0 4096", &uri],
    );
}
