//! A real etcd cluster for the tests: N members on loopback with free ports, data in a temp
//! dir, killed (SIGKILL) and reaped when dropped, also when the test panics.
//!
//! `start` answers `None` only when no `etcd` binary is found, after printing
//! `SKIPPED: etcd not installed`; `scripts/test` installs etcd and fails when it is missing,
//! so CI never skips these tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_state::{EtcdConfig, EtcdStore, Store};

/// One member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running cluster.
pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    initial: String,
    token: String,
    members: Vec<Member>,
    /// Another address every member's client port also listens on (a veth of a test).
    also: Option<String>,
}

/// The etcd binary: `$STRATA_ETCD`, or `etcd` on the PATH.
pub fn etcd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all ports are chosen, so they are distinct.
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl EtcdCluster {
    /// Starts `n` members and waits until each one serves linearizable reads.
    pub fn start(n: usize) -> Option<Self> {
        Self::start_also_on(n, None)
    }

    /// [`EtcdCluster::start`] with every client port also listening on `also` (an address
    /// of this namespace that daemons in other namespaces reach).
    pub fn start_also_on(n: usize, also: Option<&str>) -> Option<Self> {
        let Some(bin) = etcd_bin() else {
            eprintln!("SKIPPED: etcd not installed (apt-get install etcd-server)");
            return None;
        };
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            bin,
            dir: tempfile::tempdir().unwrap(),
            initial,
            token: format!("strata-test-{}-{}", std::process::id(), ports[0]),
            members,
            also: also.map(str::to_string),
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(&(0..n).collect::<Vec<_>>());
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client);
        let listen = match &self.also {
            Some(a) => format!("{client},http://{a}:{}", m.client),
            None => client.clone(),
        };
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections keep failover tests short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// Client endpoints (`127.0.0.1:PORT`) of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// Client endpoints of every member on address `host` (given to `start_also_on`).
    #[allow(dead_code)] // used by the daemon tests that include this file
    pub fn endpoints_on(&self, host: &str) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{host}:{}", m.client))
            .collect()
    }

    /// A store config naming every member, under `root`.
    pub fn config(&self, root: &str) -> EtcdConfig {
        EtcdConfig::new(self.endpoints()).root(root)
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` on its data dir and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(&[i]);
    }

    fn wait_healthy(&self, which: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in which {
            let ep = format!("127.0.0.1:{}", self.members[i].client);
            loop {
                let cfg = EtcdConfig::new([ep.clone()]).timeout(Duration::from_secs(1));
                if EtcdStore::connect(cfg).and_then(|s| s.revision()).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "etcd member {i} not healthy after 30 s; its log:\n{}",
                        self.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
