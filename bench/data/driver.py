#!/usr/bin/env python3
"""The steps of bench/data.sh that talk to `strata serve`: its API, fio over NBD, the loop
devices, timing. bench/data.sh owns the daemon, the loop devices and the cleanup; this driver
keeps what it learns between steps in WORK/state.json and the figures in WORK/results.json.

Steps (one per call):
  fio       make the pool of three devices and the five volumes, fill them, run the workloads
  rebuild   fail a device of a filled 2-copy volume, add a device, time the rebuild while fio
            reads another volume; also the devices' own sequential read (first call only)
  scrub     time a scrub of the rebuilt volume's pool
  report    print the tables and the goals

Only the standard library: urllib for the API, fio for I/O.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

WORK = os.environ["WORK"]
STATE = os.path.join(WORK, "state.json")
RESULTS = os.path.join(WORK, "results.json")
MIB = 1 << 20

# Volume kinds: name -> (replicas, encrypted). Plain first: every ratio is to it.
KINDS = [
    ("plain", 1, False),
    ("2-copy", 2, False),
    ("3-copy", 3, False),
    ("encrypted", 1, True),
    ("2-copy enc", 2, True),
]
# name, fio rw, block size, iodepth. Reads first, on the sequentially written volumes.
WORKLOADS = [
    ("seq read 1M qd8", "read", "1M", 8),
    ("rand read 4K qd32", "randread", "4k", 32),
    ("seq write 1M qd8", "write", "1M", 8),
    ("rand write 4K qd32", "randwrite", "4k", 32),
]


class Fail(Exception):
    """A step that did not work: the script exits non-zero."""


def load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----- the API -----


def api(method, path, body=None, ok=(200, 201, 202, 204)):
    url = os.environ["STRATA_URL"] + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Bearer " + os.environ["STRATA_TOKEN"])
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    v = json.loads(text) if text.strip() else None
    if status not in ok:
        raise Fail(f"{method} {path} {body}: {status} {text}")
    return v


def volume(vid):
    return api("GET", f"/v1/volumes/{vid}")


def create_volume(name, size_mib, pool, replicas, encrypted):
    v = api(
        "POST",
        "/v1/volumes",
        {"name": name, "size": f"{size_mib}M", "pool": pool, "replicas": replicas,
         "encrypted": encrypted},
    )
    at = api("POST", f"/v1/volumes/{v['id']}/attachments")
    return {"id": v["id"], "uri": at["uri"], "copies": v["copies"], "size_mib": size_mib}


def attach(vid):
    return api("POST", f"/v1/volumes/{vid}/attachments")["uri"]


def device_path(pool, device_id):
    p = api("GET", f"/v1/pools/{pool}")
    for d in p["devices"]:
        if d["id"] == device_id:
            return d["path"]
    raise Fail(f"device {device_id} not in pool {pool}: {p}")


def wait_for(what, cond, timeout, every=0.1):
    """Polls cond() until it returns something true; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# ----- fio -----


def fio(args, out):
    """Runs fio to completion; returns jobs[0] of its JSON output, or raises."""
    cmd = ["fio", "--name=b", "--output-format=json", f"--output={out}"] + args
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise Fail(f"fio {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-800:]}")
    with open(out) as f:
        j = json.load(f)["jobs"][0]
    if j["error"]:
        raise Fail(f"fio {' '.join(args)}: error {j['error']}")
    return j


def nbd(uri):
    return ["--ioengine=nbd", f"--uri={uri}"]


def side(j):
    s = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
    return {"iops": s["iops"], "mibs": s["bw_bytes"] / MIB, "fio_cpu": j["usr_cpu"] + j["sys_cpu"]}


def fill(uri, size_mib):
    fio(nbd(uri) + ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={size_mib}M"],
        os.path.join(WORK, "fill.json"))


# ----- the daemon's threads: where its CPU time goes -----


TICK = os.sysconf("SC_CLK_TCK")


def threads(pid):
    """tid -> (name, CPU seconds so far) of every thread of pid."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def process_cpu(pid):
    """CPU seconds of the whole process, its exited threads included."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class CpuWindow:
    """The daemon's CPU use between start() and stop(), in % of one core: the total, and by
    thread name (worker-3 and worker-4 summed as worker-N) up to the last sample() — an NBD
    connection's thread exits with its client, so it is seen only while the client runs."""

    def __init__(self):
        self.pid = int(os.environ["STRATA_PID"])

    def start(self):
        self.t0, self.c0, self.a, self.last = time.monotonic(), process_cpu(self.pid), threads(self.pid), None
        return self

    def sample(self):
        self.last = (time.monotonic(), threads(self.pid))

    def stop(self):
        t1 = time.monotonic()
        total = 100 * (process_cpu(self.pid) - self.c0) / (t1 - self.t0)
        ts, b = self.last if self.last else (t1, threads(self.pid))
        by = {}
        for tid, (name, cpu) in b.items():
            used = cpu - self.a.get(tid, (name, 0.0))[1]
            key = re.sub(r"\d+$", "N", name)
            by[key] = by.get(key, 0.0) + used
        dt = max(ts - self.t0, 1e-3)
        top = sorted(by.items(), key=lambda kv: -kv[1])[:3]
        return {"total": total, "top": [(k, round(100 * v / dt)) for k, v in top if v > 0.01 * dt]}


class Perf:
    """perf record on the daemon while a step runs, when PERF=1: the hottest symbols."""

    def __init__(self, tag):
        self.proc = None
        if os.environ.get("PERF") != "1" or not tag:
            return
        self.out = os.path.join(WORK, f"perf-{re.sub(r'[^a-z0-9]+', '-', tag.lower())}.data")
        self.tag = tag
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-F", "499", "-p", os.environ["STRATA_PID"], "-o", self.out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        r = subprocess.run(["perf", "report", "-i", self.out, "--stdio", "--no-children",
                            "--sort", "comm,sym", "--percent-limit", "2"],
                           capture_output=True, text=True)
        rows = [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
        return rows[:12]


class Strace:
    """strace -c -w on one daemon thread while a step runs, when PERF=1: where its wall time
    goes by system call (futex: waiting for another thread; clock_nanosleep: the throttle)."""

    def __init__(self, thread, tag):
        self.proc = None
        if os.environ.get("PERF") != "1":
            return
        pid = os.environ["STRATA_PID"]
        # A name ending in "-": every thread whose name starts with it (the resync workers).
        tids = [t for t, (name, _) in threads(pid).items()
                if name == thread or (thread.endswith("-") and name.startswith(thread))]
        if not tids:
            return
        self.out = os.path.join(WORK, f"strace-{re.sub(r'[^a-z0-9]+', '-', tag.lower())}.txt")
        pids = [a for t in tids for a in ("-p", t)]
        self.proc = subprocess.Popen(["strace", "-c", "-w", "-q", "-o", self.out] + pids,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        with open(self.out) as f:
            rows = [l.rstrip() for l in f if re.match(r"\s*\d", l)]
        return rows[:6]


def fio_watched(args, out, secs, tag):
    """fio over NBD with the daemon's CPU watched (and perf'd when asked); returns the
    figures with the daemon's CPU."""
    cpu = CpuWindow().start()
    perf = Perf(tag)
    cmd = ["fio", "--name=b", "--output-format=json", f"--output={out}"] + args
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(max(0.2, secs - 0.5))
    cpu.sample()
    _, err = proc.communicate()
    daemon = cpu.stop()
    hot = perf.stop()
    if proc.returncode != 0:
        raise Fail(f"fio {' '.join(args)}: exit {proc.returncode}: {err.strip()[-800:]}")
    with open(out) as f:
        j = json.load(f)["jobs"][0]
    if j["error"]:
        raise Fail(f"fio {' '.join(args)}: error {j['error']}")
    res = side(j)
    res["daemon"] = daemon
    if hot:
        res["perf"] = hot
    return res


# ----- steps -----


def step_fio():
    secs, size, rounds = int(os.environ["SECS"]), int(os.environ["SIZE_MIB"]), int(os.environ["ROUNDS"])
    pdevs = os.environ["POOL_DEVS"].split()
    api("POST", "/v1/pools", {"name": "p", "devices": [{"path": d} for d in pdevs]})
    log(f"pool p: {' '.join(pdevs)}")
    vols = {}
    for i, (kind, replicas, enc) in enumerate(KINDS):
        vols[kind] = create_volume(f"v{i}", size, "p", replicas, enc)
        log(f"volume {kind}: {vols[kind]['id']} on {', '.join(vols[kind]['copies'])}; filling {size} MiB")
        fill(vols[kind]["uri"], size)
    save(STATE, {"vols": vols})
    raw = {}
    for r in range(rounds):
        for wname, rw, bs, qd in WORKLOADS:
            # Each workload on every kind back to back: a disturbance on the shared machine
            # hits all kinds alike rather than one kind's whole turn.
            for kind, _, _ in KINDS:
                res = fio_watched(nbd(vols[kind]["uri"]) + [
                    f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--size={size}M",
                    f"--runtime={secs}", "--time_based"], os.path.join(WORK, "fio.json"), secs,
                    f"{wname} {kind}" if kind == "2-copy enc" else "")
                raw.setdefault(f"{wname}|{kind}", []).append(res)
                fig = f"{res['iops']:.0f} IOPS" if bs == "4k" else f"{res['mibs']:.0f} MiB/s"
                log(f"round {r + 1} {wname:20} {kind:11} {fig:>12}  daemon CPU {res['daemon']['total']:.0f}%")
    results = load(RESULTS, {})
    results["fio"] = {}
    for key, runs in raw.items():
        med = {k: statistics.median(x[k] for x in runs) for k in ("iops", "mibs", "fio_cpu")}
        med["daemon"] = runs[len(runs) // 2]["daemon"]
        if "perf" in runs[-1]:
            med["perf"] = runs[-1]["perf"]
        results["fio"][key] = med
    save(RESULTS, results)


def fail_loop(dev):
    """Makes a loop device fail as a dying disk does: its backing file cut to 1 MiB and the
    loop device told, so every I/O past that returns an error."""
    back = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", dev], check=True,
                          capture_output=True, text=True).stdout.strip()
    os.truncate(back, MIB)
    subprocess.run(["losetup", "-c", dev], check=True)


def device_read(dev, size_mib):
    """The device's own sequential read (and the write that fills it first), 1 MiB, direct."""
    w = fio([f"--filename={dev}", "--rw=write", "--bs=1M", "--iodepth=8", "--ioengine=libaio",
             "--direct=1", f"--size={size_mib}M"], os.path.join(WORK, "dev.json"))
    r = fio([f"--filename={dev}", "--rw=read", "--bs=1M", "--iodepth=8", "--ioengine=libaio",
             "--direct=1", f"--size={size_mib}M", "--readonly"], os.path.join(WORK, "dev.json"))
    return side(r)["mibs"], side(w)["mibs"]


def rebuild_limit(source, target, size_mib):
    """What a rebuild can reach on these two devices, measured on them just before it: the
    source's sequential read of the volume's extent (it holds the data; read-only) and the
    target's sequential write (it is empty until the device is added), 1 MiB at QD8, direct
    (the limit) and buffered with the page cache dropped first and an fsync at the end (what
    the engine's buffered I/O meets)."""
    out = os.path.join(WORK, "limit.json")
    figs = {}
    for direct in (1, 0):
        subprocess.run(["blockdev", "--flushbufs", source], check=True)
        r = fio([f"--filename={source}", "--rw=read", "--bs=1M", "--iodepth=8",
                 "--ioengine=libaio", f"--direct={direct}", f"--size={size_mib}M",
                 "--readonly"], out)
        w = fio([f"--filename={target}", "--rw=write", "--bs=1M", "--iodepth=8",
                 "--ioengine=libaio", f"--direct={direct}", f"--size={size_mib}M",
                 "--end_fsync=1"], out)
        key = "direct" if direct else "buffered"
        figs[key] = {"read_mibs": side(r)["mibs"], "write_mibs": side(w)["mibs"]}
    # The target's written bytes go: the daemon formats it as a new device.
    subprocess.run(["blkdiscard", target], check=False)
    # The daemon refuses a device whose first MiB is not zeros.
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=1", "oflag=direct",
                    "conv=fsync", "status=none"], check=True)
    subprocess.run(["blockdev", "--flushbufs", target], check=True)
    return figs


def read_iops_log(path):
    """fio's IOPS log: [(ms since the job's start, IOPS over the interval)]."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2:
                rows.append((int(parts[0]), float(parts[1])))
    return rows


def settle(results):
    """Waits until no volume has a copy resyncing (after a restart, copies whose regions the
    intent log still marks resync them), so a rebuild is timed alone; records what it took."""
    t0 = time.monotonic()
    seen = {}

    def quiet():
        busy = 0
        for v in api("GET", "/v1/volumes")["items"]:
            d = volume(v["id"])
            busy += len(d["resync"]) + (d["health"] != "healthy")
            for r in d["resync"]:
                seen[(v["id"], r["copy"])] = r["total_bytes"]
        return busy == 0

    wait_for("every volume's resync to finish", quiet, 600, every=0.2)
    took = time.monotonic() - t0
    total = sum(seen.values())
    if total:
        results.setdefault("settle", []).append({"bytes": total, "secs": took, "copies": len(seen)})
        save(RESULTS, results)
        log(f"waited {took:.1f} s for {len(seen)} copies ({total / MIB:.0f} MiB) to resync first")


def step_rebuild():
    label = os.environ["LABEL"]
    secs = int(os.environ["SECS"])
    size = int(os.environ["REBUILD_MIB"])
    new_dev = os.environ["NEW_DEV"]
    state = load(STATE, {})
    results = load(RESULTS, {})
    client = state["vols"]["plain"]
    client["uri"] = attach(client["id"])  # the socket is new after a restart
    if "rvol" not in state:
        rdevs = os.environ["REBUILD_DEVS"].split()
        api("POST", "/v1/pools", {"name": "r", "devices": [{"path": d} for d in rdevs]})
        rv = create_volume("rebuilt", size, "r", 2, False)
        log(f"pool r: {' '.join(rdevs)}; 2-copy volume {rv['id']}, filling {size} MiB")
        fill(rv["uri"], size)
        state["rvol"] = rv
        save(STATE, state)
        scratch = os.environ["SCRATCH_DEV"]
        rd, wr = device_read(scratch, size)
        results["device"] = {"read_mibs": rd, "write_mibs": wr, "dev": scratch}
        log(f"device {scratch} alone: seq read {rd:.0f} MiB/s, seq write {wr:.0f} MiB/s (1 MiB, direct, qd8)")
    settle(results)
    rv = state["rvol"]
    rv["uri"] = attach(rv["id"])
    v = volume(rv["id"])
    if v["health"] != "healthy":
        raise Fail(f"volume to rebuild is not healthy before the device fails: {v}")
    victim_id = v["copies"][-1]
    victim = device_path("r", victim_id)
    survivor = device_path("r", v["copies"][0])
    limit = rebuild_limit(survivor, new_dev, size)
    d = limit["direct"]
    log(f"{label}: source {survivor} seq read {d['read_mibs']:.0f} MiB/s, target {new_dev} seq "
        f"write {d['write_mibs']:.0f} MiB/s (direct; buffered: "
        f"{limit['buffered']['read_mibs']:.0f} / {limit['buffered']['write_mibs']:.0f})")
    # The survivor's page cache dropped: the rebuild reads the device, not memory.
    subprocess.run(["blockdev", "--flushbufs", survivor], check=True)

    # fio reads the client volume throughout; its IOPS log tells before from during.
    logbase = os.path.join(WORK, f"client-{label}")
    for f in os.listdir(WORK):
        if f.startswith(f"client-{label}_iops"):
            os.remove(os.path.join(WORK, f))
    cmd = ["fio", "--name=client", "--output-format=json", f"--output={logbase}.json"] + nbd(
        client["uri"]) + ["--rw=randread", "--bs=4k", "--iodepth=32",
                          f"--size={client['size_mib']}M", "--runtime=600", "--time_based",
                          f"--write_iops_log={logbase}", "--log_avg_msec=100"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1 + secs)
        t_fail = time.monotonic()
        fail_loop(victim)
        # A write reaches both copies: the failed device's error faults it.
        fio(nbd(rv["uri"]) + ["--rw=write", "--bs=1M", "--size=4M"], os.path.join(WORK, "poke.json"))
        wait_for("the volume to show degraded", lambda: volume(rv["id"])["health"] == "degraded", 30)
        log(f"{label}: device {victim_id} ({victim}) failed; volume degraded; adding {new_dev}")
        t_add = time.monotonic()
        cpu = CpuWindow().start()
        perf = Perf(f"rebuild {label}")
        trace = Strace("resync-", f"rebuild {label}")
        api("POST", "/v1/pools/r/devices", {"path": new_dev})
        first = []
        samples = []

        def rebuilt():
            now = volume(rv["id"])
            t = time.monotonic()
            cpu.sample()
            if now["resync"]:
                if not first:
                    first.append(t)
                samples.append((round(t - t_add, 2), now["resync"][0]["done_bytes"]))
            return now if now["health"] == "healthy" and not now["resync"] else None

        done_v = wait_for("the rebuild to finish", rebuilt, 600, every=0.05)
        t_done = time.monotonic()
        threads_cpu = cpu.stop()
        hot = perf.stop()
        calls = trace.stop()
        if done_v["copies"][-1] == victim_id:
            raise Fail(f"rebuilt volume still names the failed device: {done_v}")
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise Fail("fio did not stop on SIGINT")
    # fio stopped by SIGINT exits 128 and writes its report after a line of its own.
    with open(f"{logbase}.json") as f:
        text = f.read()
    try:
        cj = json.loads(text[text.index("{"):])["jobs"][0]
    except ValueError:
        raise Fail(f"client fio: exit {proc.returncode}, no report: {err.strip()[-800:]}")
    if cj["error"]:
        raise Fail(f"client fio: error {cj['error']}: {err.strip()[-800:]}")
    log_rows = []
    for f in os.listdir(WORK):
        if f.startswith(f"client-{label}_iops") and f.endswith(".log"):
            log_rows = read_iops_log(os.path.join(WORK, f))
    if not log_rows:
        raise Fail("fio wrote no IOPS log")

    def mean_iops(a, b):  # seconds since fio started (fio's clock starts a little later)
        xs = [iops for ms, iops in log_rows if a * 1000 <= ms <= b * 1000]
        return statistics.mean(xs) if xs else float("nan")

    before = mean_iops(1, t_fail - started - 0.2)
    during = mean_iops(t_add - started + 0.1, t_done - started)
    took = t_done - t_add
    copy_took = t_done - first[0] if first else took
    results.setdefault("rebuild", {}).setdefault(label, []).append({
        "mib": size,
        "secs": took,
        "mibs": size / took,
        "copy_secs": copy_took,
        "copy_mibs": size / copy_took if copy_took > 0 else float("nan"),
        "start_lag": (first[0] - t_add) if first else None,
        "client_before": before,
        "client_during": during,
        "limit": limit,
        "daemon": threads_cpu,
        "samples": samples[:: max(1, len(samples) // 20)],
        "perf": hot,
        "strace": calls,
    })
    save(RESULTS, results)
    lim = min(limit["direct"]["read_mibs"], limit["direct"]["write_mibs"])
    log(f"{label}: rebuilt {size} MiB in {took:.2f} s ({size / took:.0f} MiB/s, "
        f"{size / took / lim:.2f}x the smaller of source read and target write; copying "
        f"{copy_took:.2f} s); client rand read {before:.0f} IOPS before, {during:.0f} during")
    # The failed device holds no copy now: out of the pool, so a restart does not look for it.
    api("DELETE", f"/v1/pools/r/devices/{victim_id}")
    state["failed"] = state.get("failed", []) + [victim]
    save(STATE, state)


def step_scrub():
    results = load(RESULTS, {})
    for d in api("GET", "/v1/pools/r")["devices"]:
        if d["health"] == "healthy":  # read from the devices, not their page cache
            subprocess.run(["blockdev", "--flushbufs", d["path"]], check=True)
    t0 = time.monotonic()
    cpu = CpuWindow().start()
    perf = Perf("scrub")
    api("POST", "/v1/pools/r/scrub", {})

    def done():
        s = api("GET", "/v1/pools/r/scrub")
        if s["state"] == "done":
            return s
        cpu.sample()
        return None

    s = wait_for("the scrub to finish", done, 600, every=0.05)
    took = time.monotonic() - t0
    if s["bad_blocks"]:
        raise Fail(f"scrub found bad blocks on a healthy pool: {s}")
    results["scrub"] = {"bytes": s["done_bytes"], "secs": took,
                        "mibs": s["done_bytes"] / MIB / took, "daemon": cpu.stop(),
                        "perf": perf.stop()}
    save(RESULTS, results)
    log(f"scrub: {s['done_bytes'] / MIB:.0f} MiB in {took:.2f} s ({s['done_bytes'] / MIB / took:.0f} MiB/s)")


def step_report():
    r = load(RESULTS, {})
    secs, size, rounds = os.environ["SECS"], os.environ["SIZE_MIB"], os.environ["ROUNDS"]
    print()
    print(f"fio --ioengine=nbd through strata serve, 1 job, {size} MiB volumes written in full first, "
          f"{secs} s per run, median of {rounds} round(s)")
    kinds = [k for k, _, _ in KINDS]
    print(f"{'workload':20}" + "".join(f"{k:>20}" for k in kinds))
    miss = []
    for wname, _, bs, _ in WORKLOADS:
        base = r["fio"][f"{wname}|plain"]
        unit = "iops" if bs == "4k" else "mibs"
        cells = []
        for k in kinds:
            x = r["fio"][f"{wname}|{k}"]
            fig = f"{x[unit] / 1000:.1f}K" if unit == "iops" else f"{x[unit]:.0f}"
            cells.append(fig if k == "plain" else f"{fig} ({x[unit] / base[unit]:.2f}x)")
            if k == "2-copy enc" and x[unit] / base[unit] < 0.7:
                miss.append(wname)
        print(f"{wname + (' IOPS' if unit == 'iops' else ' MiB/s'):20}" + "".join(f"{c:>20}" for c in cells))
    print()
    print("daemon CPU, % of one core (fio's own in brackets), and its busiest threads:")
    for wname, _, _, _ in WORKLOADS:
        row = []
        for k in kinds:
            x = r["fio"][f"{wname}|{k}"]
            row.append(f"{x['daemon']['total']:.0f} [{x['fio_cpu']:.0f}]")
        print(f"  {wname:18}" + "".join(f"{c:>20}" for c in row))
    for wname, _, _, _ in WORKLOADS:
        x = r["fio"][f"{wname}|2-copy enc"]["daemon"]["top"]
        print(f"  2-copy enc, {wname}: " + ", ".join(f"{n} {p}%" for n, p in x))
    dev = r["device"]
    print()
    # The median run (the slower of two): one record, so its client figures go with it.
    rebuilds = {k: sorted(v, key=lambda x: x["mibs"])[(len(v) - 1) // 2] for k, v in r["rebuild"].items()}
    runs = {k: ", ".join(f"{x['mibs']:.0f}" for x in v) for k, v in r["rebuild"].items()}
    print(f"rebuild of a 2-copy {next(iter(rebuilds.values()))['mib']} MiB volume onto a new device "
          f"(from POST .../devices until healthy; median run), a fio 4K rand read qd32 on another "
          f"volume throughout;")
    print(f"scrub of that pool (both copies); device = {dev['dev']} read directly (fio, 1 MiB, direct, qd8)")
    print(f"{'':34}{'MiB/s':>8}{'vs device':>11}   client rand read IOPS before -> during")
    print(f"{'device seq read':34}{dev['read_mibs']:8.0f}{1:10.2f}x")
    print(f"{'device seq write':34}{dev['write_mibs']:8.0f}{dev['write_mibs'] / dev['read_mibs']:10.2f}x")
    for label, x in rebuilds.items():
        lim = x["limit"]
        for kind in ("direct", "buffered"):
            print(f"  {'its source read, ' + kind:32}{lim[kind]['read_mibs']:8.0f}"
                  f"{lim[kind]['read_mibs'] / dev['read_mibs']:10.2f}x")
            print(f"  {'its target write, ' + kind:32}{lim[kind]['write_mibs']:8.0f}"
                  f"{lim[kind]['write_mibs'] / dev['read_mibs']:10.2f}x")
        print(f"{'rebuild, ' + label:34}{x['mibs']:8.0f}{x['mibs'] / dev['read_mibs']:10.2f}x   "
              f"{x['client_before']:.0f} -> {x['client_during']:.0f} "
              f"({x['client_during'] / x['client_before']:.2f}x)   runs: {runs[label]} MiB/s")
        for kind in ("direct", "buffered"):
            m = min(lim[kind]["read_mibs"], lim[kind]["write_mibs"])
            print(f"  vs the smaller of its source read and target write, {kind}: "
                  f"{x['mibs'] / m:.2f}x ({m:.0f} MiB/s)")
        if x["start_lag"] is not None:
            print(f"{'  from its first progress':34}{x['copy_mibs']:8.0f}"
                  f"{x['copy_mibs'] / dev['read_mibs']:10.2f}x   (first progress "
                  f"{x['start_lag']:.2f} s after the device was added)")
        print(f"  daemon threads: " + ", ".join(f"{n} {p}%" for n, p in x["daemon"]["top"])
              + f" (total {x['daemon']['total']:.0f}%)")
    for x in r.get("settle", []):
        print(f"{'resync after the restart':34}{x['bytes'] / MIB / x['secs']:8.0f}"
              f"{x['bytes'] / MIB / x['secs'] / dev['read_mibs']:10.2f}x   ({x['copies']} copies, "
              f"{x['bytes'] / MIB:.0f} MiB, before the rebuild was timed: a clean stop left their "
              f"regions marked)")
    s = r["scrub"]
    print(f"{'scrub':34}{s['mibs']:8.0f}{s['mibs'] / dev['read_mibs']:10.2f}x   "
          f"({s['bytes'] / MIB:.0f} MiB in {s['secs']:.2f} s)")
    print(f"  daemon threads: " + ", ".join(f"{n} {p}%" for n, p in s["daemon"]["top"]))
    print()
    print("goals (issue 11):")
    worst = min(r["fio"][f"{w}|2-copy enc"][u] / r["fio"][f"{w}|plain"][u]
                for w, _, bs, _ in WORKLOADS for u in ["iops" if bs == "4k" else "mibs"])
    print(f"  2 copies + encryption >= 0.7x plain on every workload: worst {worst:.2f}x -> "
          + ("met" if not miss else "NOT met (" + ", ".join(miss) + ")"))
    unl = rebuilds.get("unlimited")
    if unl:
        lim = unl["limit"]["direct"]
        m = min(lim["read_mibs"], lim["write_mibs"])
        q = unl["mibs"] / m
        print(f"  rebuild >= 80% of the devices' sequential bandwidth (the smaller of the source's "
              f"read and the target's write, direct) while client I/O is served: {100 * q:.0f}% "
              f"-> " + ("met" if q >= 0.8 else "NOT met")
              + f" (client reads kept {unl['client_during'] / unl['client_before']:.2f}x)")
    hot = [(f"2-copy enc, {w}", r["fio"][f"{w}|2-copy enc"].get("perf")) for w, _, _, _ in WORKLOADS]
    hot += [(f"rebuild, {k}", x.get("perf")) for k, x in rebuilds.items()]
    hot += [("scrub", s.get("perf"))]
    if any(h for _, h in hot):
        print()
        print("perf record -F 499 on the daemon (share of its samples, comm and symbol, >= 2%):")
        for tag, rows in hot:
            if rows:
                print(f"  {tag}:")
                for row in rows:
                    print(f"    {row}")
        for k, x in rebuilds.items():
            if x.get("strace"):
                print(f"  rebuild, {k}: the resync thread's wall time by system call (strace -c -w):")
                print("    % time     seconds  usecs/call     calls    errors syscall")
                for row in x["strace"]:
                    print(f"    {row.strip()}")
        print()
    print("caveat: every device here is a loop device over a sparse file in one tmpfs: all copies "
          "share the machine's memory bandwidth and its 2 cores (with fio), so copies compete "
          "for the same resources instead of adding devices' bandwidth; ratios, not absolutes, "
          "are the figures.")


def main():
    steps = {"fio": step_fio, "rebuild": step_rebuild, "scrub": step_scrub, "report": step_report}
    try:
        steps[sys.argv[1]]()
    except Fail as e:
        print(f"data bench: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
