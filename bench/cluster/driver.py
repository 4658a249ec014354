"""bench/cluster.sh's driver: pools, volumes and fio runs through the daemons' API."""
import atexit
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request

WORK = os.environ["WORK"]
SECS = int(os.environ["SECS"])
SIZE_MIB = int(os.environ["SIZE_MIB"])
ROUNDS = int(os.environ["ROUNDS"])
TOKEN = os.environ["STRATA_TOKEN"]
URL = {n: os.environ[f"URL_{n}"] for n in ("n1", "n2", "n3", "solo")}
TOKENS = {"solo": os.environ["STRATA_TOKEN_SOLO"]}


def call(node, method, path, body=None):
    req = urllib.request.Request(
        URL[node] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKENS.get(node, TOKEN)}",
                 "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def pool(node, files):
    devs = []
    for f in files:
        path = os.path.join(WORK, node, "devices", f)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.ftruncate(fd, 4 * SIZE_MIB << 20)
        os.fchmod(fd, 0o600)
        os.close(fd)
        devs.append({"path": path})
    call(node, "POST", "/v1/pools", {"name": "fast", "devices": devs})


def volume(node, name, replicas):
    v = call(node, "POST", "/v1/volumes",
             {"name": name, "size": f"{SIZE_MIB}M", "pool": "fast", "replicas": replicas})
    a = call(node, "POST", f"/v1/volumes/{v['id']}/attachments")
    return v, a["uri"]


def busy_seconds():
    """CPU seconds the whole machine spent busy (every process: fio and the nodes share it)."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:]]
    idle = t[3] + t[4]
    return (sum(t[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def fio(uri, rw, bs, depth, secs=None, size=None):
    args = ["fio", "--name=b", "--ioengine=nbd", f"--uri={uri}", "--output-format=json",
            f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}", "--group_reporting"]
    if secs:
        args += ["--time_based", f"--runtime={secs}", f"--size={SIZE_MIB}M"]
    if size:
        args += [f"--size={size}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    j = json.loads(out[out.index("{"):])["jobs"][0]
    assert j["error"] == 0, j
    side = j["read"] if "read" in rw else j["write"]
    return side["iops"], side["bw_bytes"] / (1 << 20)


pool("n1", ["d0.img"])
pool("n2", ["d0.img"])
pool("n3", ["d0.img", "d1.img"])
kinds = {}
v, kinds["plain"] = volume("n1", "plain", 1)
v, kinds["across"] = volume("n1", "across", 2)
assert any(":" in c for c in v["copies"]), v
v, kinds["local2"] = volume("n3", "local2", 2)
assert not any(":" in c for c in v["copies"]), v
for k, uri in kinds.items():
    fio(uri, "write", "1M", 8, size=f"{SIZE_MIB}M")  # every block written once

tests = [("4k randwrite QD32", "randwrite", "4k", 32, "iops"),
         ("4k randread QD32", "randread", "4k", 32, "iops"),
         ("1M write QD8", "write", "1M", 8, "mib"),
         ("1M read QD8", "read", "1M", 8, "mib")]
res = {(t[0], k): [] for t in tests for k in kinds}
cpu = {(t[0], k): [] for t in tests for k in kinds}
for r in range(ROUNDS):
    for (label, rw, bs, depth, _) in tests:
        for k, uri in kinds.items():
            b0 = busy_seconds()
            iops, mib = fio(uri, rw, bs, depth, secs=SECS)
            res[(label, k)].append(iops if bs == "4k" else mib)
            cpu[(label, k)].append((busy_seconds() - b0) / (mib * SECS / 1024))

print(f"\ncopies across nodes, {SIZE_MIB} MiB volumes, {SECS} s runs, median of {ROUNDS}"
      " (tmpfs files; the three nodes share this machine's cores)")
print(f"{'test':20} {'plain':>10} {'2 local':>10} {'2 nodes':>10} {'nodes/local':>12} {'nodes/plain':>12}")
for (label, _, bs, _, unit) in tests:
    m = {k: statistics.median(res[(label, k)]) for k in kinds}
    u = "IOPS" if unit == "iops" else "MiB/s"
    print(f"{label + ' ' + u:20} {m['plain']:10.0f} {m['local2']:10.0f} {m['across']:10.0f}"
          f" {m['across'] / m['local2']:11.2f}x {m['across'] / m['plain']:11.2f}x")
print("goal (issue 14): a 2-copy volume across nodes at least 0.7x the same on one node")
print(f"\nCPU seconds per GiB moved (the whole machine, {os.cpu_count()} cores, median)")
print(f"{'test':20} {'plain':>10} {'2 local':>10} {'2 nodes':>10} {'nodes/local':>12}")
for (label, _, _, _, _) in tests:
    m = {k: statistics.median(cpu[(label, k)]) for k in kinds}
    print(f"{label:20} {m['plain']:10.2f} {m['local2']:10.2f} {m['across']:10.2f}"
          f" {m['across'] / m['local2']:11.2f}x")


# API: volume create latency, etcd (a cluster node) beside redb (one machine).
call("solo", "POST", "/v1/tenants", {"name": "bench"})
call("n3", "POST", "/v1/tenants", {"name": "bench"})
lat = {}
for node in ("n3", "solo"):
    xs = []
    for i in range(200):
        t = time.perf_counter()
        call(node, "POST", "/v1/volumes", {"name": f"api{i}", "size": "16M", "tenant": "bench"})
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    lat[node] = (xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1])
print(f"\nAPI volume create, 200 sequential: etcd p50 {lat['n3'][0]:.1f} ms p99 {lat['n3'][1]:.1f} ms;"
      f" redb p50 {lat['solo'][0]:.1f} ms p99 {lat['solo'][1]:.1f} ms;"
      f" etcd/redb p99 {lat['n3'][1] / lat['solo'][1]:.2f}x")

# Tenant networks across nodes: iperf3 between two veth ports of one network on n1 and n2
# (the VXLAN tunnel between the nodes), two ports on n1 alone, and the peer: the kernel's
# bridge and vxlan devices (what Open vSwitch's or OVN's kernel datapath amounts to) between
# two "node" namespaces over a veth underlay, one namespace per endpoint as with Strata.
def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def netns(name):
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    NETNS.append(name)
    return name


def ns(name, *args, check=True):
    return sh("ip", "netns", "exec", name, *args, check=check)


def iperf(client_ns, server_ns, ip):
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if ":5201" in ns(server_ns, "ss", "-Hltn").stdout:
            break
        time.sleep(0.1)
    out = ns(client_ns, "iperf3", "-c", ip, "-t", str(SECS), "-J").stdout
    srv.wait(timeout=30)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


NETNS = []
try:
    net = call("n1", "POST", "/v1/networks", {"name": "bench", "cidr": "10.97.0.0/16"})
    call("n1", "POST", f"/v1/networks/{net['id']}/subnets", {"name": "a", "cidr": "10.97.1.0/24"})
    ports = {}
    for name, node in (("a1", "n1"), ("b1", "n1"), ("a2", "n2")):
        ports[name] = call(node, "POST", f"/v1/networks/{net['id']}/ports",
                           {"name": name, "subnet": "a", "veth": {"peer": f"bn{name}"}})
    for name, p in ports.items():
        n = netns(f"bench-{name}")
        sh("ip", "link", "set", p["veth_peer"], "netns", n)
        ns(n, "ip", "link", "set", p["veth_peer"], "address", p["mac"])
        ns(n, "ip", "addr", "add", p["ip"] + "/24", "dev", p["veth_peer"])
        ns(n, "ip", "link", "set", p["veth_peer"], "up")
        ns(n, "ethtool", "-K", p["veth_peer"], "tx", "off", check=False)
    for _ in range(100):
        if ns("bench-a1", "ping", "-c", "1", "-W", "1", ports["a2"]["ip"], check=False).returncode == 0:
            break
        time.sleep(0.2)
    k = [netns(x) for x in ("bench-k1", "bench-k2", "bench-kc1", "bench-kc2")]
    sh("ip", "link", "add", "bku1", "type", "veth", "peer", "name", "bku2")
    for i, (node, c) in enumerate(((k[0], k[2]), (k[1], k[3])), start=1):
        sh("ip", "link", "set", f"bku{i}", "netns", node)
        ns(node, "ip", "addr", "add", f"192.168.97.{i}/24", "dev", f"bku{i}")
        ns(node, "ip", "link", "set", f"bku{i}", "up")
        ns(node, "ip", "link", "add", "br0", "type", "bridge")
        ns(node, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local",
           f"192.168.97.{i}", "remote", f"192.168.97.{3 - i}", "dstport", "4789")
        ns(node, "ip", "link", "set", "vx0", "master", "br0")
        ns(node, "ip", "link", "add", "e0", "type", "veth", "peer", "name", "c0")
        ns(node, "ip", "link", "set", "e0", "master", "br0")
        ns(node, "ip", "link", "set", "c0", "netns", c)
        for dev in ("vx0", "e0", "br0"):
            ns(node, "ip", "link", "set", dev, "up")
        # The tenant MTU Strata's DHCP hands out, so both carry the same frames.
        ns(c, "ip", "addr", "add", f"10.98.0.{i}/24", "dev", "c0")
        ns(c, "ip", "link", "set", "c0", "mtu", "1450", "up")
    for n in ("bench-a1", "bench-b1", "bench-a2"):
        p = ports[n.split("-")[1]]
        ns(n, "ip", "link", "set", p["veth_peer"], "mtu", "1450")
    across = statistics.median(iperf("bench-a1", "bench-a2", ports["a2"]["ip"]) for _ in range(ROUNDS))
    local = statistics.median(iperf("bench-a1", "bench-b1", ports["b1"]["ip"]) for _ in range(ROUNDS))
    kernel = statistics.median(iperf("bench-kc1", "bench-kc2", "10.98.0.2") for _ in range(ROUNDS))
    print(f"\ntenant network, iperf3 1 stream, {SECS} s, median of {ROUNDS} (Gbit/s):"
          f" across nodes {across:.2f}, one node {local:.2f};"
          f" kernel bridge+vxlan across namespaces {kernel:.2f};"
          f" across/kernel {across / kernel:.2f}x")
finally:
    for n in NETNS:
        sh("ip", "netns", "del", n, check=False)


# A fourth node with a node port and a pool: where n2 rebuilds the copy n1 takes with it.
def start_node(name, *extra):
    # An explicit mode, as every file the bench makes (never the umask's).
    log_path = os.path.join(WORK, f"{name}.log")
    log = os.fdopen(os.open(log_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "w")
    env = dict(os.environ, STRATA_CONFIG=os.path.join(WORK, "config.yaml"), RUST_LOG="info",
               NO_COLOR="1")
    proc = subprocess.Popen([os.environ["BIN"], "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             os.path.join(WORK, name), "--store", os.environ["STORE"], "--node",
                             name, *extra], stderr=log, env=env)
    for _ in range(600):
        with open(log_path) as f:
            text = f.read()
        if "strata serving" in text:
            url = text.split("strata serving")[1].split("listen=")[1].split()[0]
            URL[name] = "http://" + url
            return proc
        assert proc.poll() is None, text
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


n4 = start_node("n4", "--advertise", f"127.0.0.14:{free_port()}", "--join-secret-file",
                os.path.join(WORK, "join.secret"))
atexit.register(lambda: n4.poll() is None and n4.kill())
pool("n4", ["d0.img"])


# Failover: kill -9 the serving node of the cross-node volume; n2 holds its other copy.
across = [v for v in call("n2", "GET", "/v1/volumes")["items"] if v["name"] == "across"][0]
assert across["copies"][1].startswith("n2:"), across
killed = time.perf_counter()
os.kill(int(os.environ["PID_n1"]), signal.SIGKILL)
while True:
    try:
        call("n2", "POST", f"/v1/volumes/{across['id']}/takeover")
        break
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"null")
        assert e.code == 409 and body["error"]["code"] == "serving_node_up", body
        time.sleep(0.05)
took = time.perf_counter() - killed
uri = call("n2", "POST", f"/v1/volumes/{across['id']}/attachments")["uri"]
subprocess.run(["fio", "--name=f", "--ioengine=nbd", f"--uri={uri}", "--rw=read", "--bs=4k",
                "--size=4k", "--output-format=json"], check=True, capture_output=True)
first = time.perf_counter() - killed
print(f"failover: takeover {took:.2f} s after kill -9 (the lease TTL is 6 s), first read"
      f" {first:.2f} s after it")

# Rebuild across nodes: n1's copy is lost with it; 2 s later n2 rebuilds it whole on n4.
# The rate is from the first bytes copied to the copy healthy (the wait before, for n4's
# agent to make the copy, is printed apart).
named = copying = None
seen = total = 0
deadline = time.perf_counter() + 600
while time.perf_counter() < deadline:
    v = call("n2", "GET", f"/v1/volumes/{across['id']}")
    now = time.perf_counter()
    if named is None and any(c.startswith("n4:") for c in v["copies"]):
        named = now
    for r in v.get("resync") or []:
        if copying is None and r["done_bytes"] > 0:
            copying, seen, total = now, r["done_bytes"], r["total_bytes"]
    if copying is not None and v["health"] == "healthy" and not v.get("resync"):
        break
    time.sleep(0.02)
else:
    raise RuntimeError(f"no rebuild onto n4: {v}")
took = time.perf_counter() - copying
rate = (total - seen) / (1 << 20) / took
write_mib = statistics.median(res[("1M write QD8", "across")])
print(f"rebuild across nodes (n2 to n4, {total >> 20} MiB to copy): {rate:.0f} MiB/s"
      f" ({took:.2f} s copying, after {copying - named:.2f} s for the new copy to be made);"
      f" the volume's 1 MiB writes across nodes {write_mib:.0f} MiB/s;"
      f" rebuild/write {rate / write_mib:.2f}x")
n4.terminate()
n4.wait(timeout=30)
