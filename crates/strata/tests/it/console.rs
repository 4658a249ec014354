//! The web console in a real browser: Debian's headless Chromium driven through chromedriver's
//! WebDriver HTTP API (plain JSON over ureq, like the rest of this suite: no async runtime and
//! no WebDriver crate for the dozen commands used). The browser signs in, creates a volume
//! through the form, opens its page, and sees the live chart's IOPS move while fio writes to
//! the volume over NBD; a member sees only its tenant's volumes; a wrong token shows the API's
//! `unauthenticated` error. A second test drives the tenant-network pages against real TAP
//! ports (a port and a load balancer made through the forms, a backend's server in a
//! namespace, health as the daemon's checker decides it, a security-group rule added through
//! the form), the node and job pages, and the events page following the journal's long poll.
//! Screenshots at 1280 and 390 px go to `target/console-screenshots/`.
//!
//! Chromium and chromedriver missing is a failure, not a skip: `scripts/test` installs them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to show what is waited for (generous: CI runs suites in parallel
/// on two cores).
const WAIT: Duration = Duration::from_secs(30);

/// A chromedriver process on a free loopback port, and one browser session in it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = agent
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let v = b.raw(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}),
        );
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver command's `value` (an error is `{"error": ..., "message": ...}`).
    fn try_raw(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).send_json(&body),
        };
        let v: Value = r
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap();
        v["value"].clone()
    }

    /// One WebDriver command; panics with the driver's message on an error.
    fn raw(&self, method: &str, path: &str, body: Value) -> Value {
        let v = self.try_raw(method, path, body);
        if let Some(err) = v["error"].as_str() {
            panic!("{method} {path}: {err}: {}", v["message"]);
        }
        v
    }

    fn try_cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_raw(method, &format!("/session/{}{path}", self.session), body)
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` in the page (its arguments are `arguments[0..]`) and returns its value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The element `css` selects, waiting up to [`WAIT`] for it to appear.
    fn find(&self, css: &str) -> String {
        wait_for(&format!("an element {css}"), WAIT, || {
            let v = self.js("return document.querySelector(arguments[0]);", json!([css]));
            v[ELEMENT].as_str().map(str::to_string)
        })
    }

    fn click(&self, css: &str) {
        // A page may redraw between finding and clicking: find again once if it did.
        for _ in 0..3 {
            let e = self.find(css);
            let v = self.try_cmd("POST", &format!("/element/{e}/click"), json!({}));
            match v["error"].as_str() {
                None => return,
                Some("stale element reference") => continue,
                Some(err) => panic!("click {css}: {err}: {}", v["message"]),
            }
        }
        panic!("click {css}: the element kept being redrawn");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    /// The rendered text of `css` (waiting for it to exist).
    fn text(&self, css: &str) -> String {
        wait_for(&format!("the text of {css}"), WAIT, || {
            let v = self.js(
                "return document.querySelector(arguments[0])?.innerText ?? null;",
                json!([css]),
            );
            v.as_str().map(str::to_string)
        })
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// A PNG of the viewport, saved as `name` under `target/console-screenshots/`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        let path = path.canonicalize().unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// The browser console's messages since the last call (Chromium's log extension).
    fn console_log(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", json!({"type": "browser"}))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Opens the console afresh (a new document: `?signin`) and signs in with `token`. The
    /// tab must hold no token (first start, or after the Sign out button).
    fn sign_in(&self, url: &str, token: &str) {
        self.goto(&format!("{url}/?signin"));
        self.type_into("#token", token);
        self.click("#sign-in");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Polls `f` until it gives a value, failing after `timeout` with `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names in the volume list, once it is drawn.
fn listed_volumes(b: &Browser) -> Vec<String> {
    b.find("#volume-list");
    let v = b.js(
        "const l = document.querySelector('#volume-list'); \
         return l ? [...l.querySelectorAll('tbody td:first-child a')].map((a) => a.textContent) : [];",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn console_signs_in_creates_a_volume_and_charts_it_under_fio() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("d"));
    let admin = d.admin();
    let (s, v) = d.call("POST", "/v1/tenants", &admin, Some(json!({"name": "ml"})));
    assert_eq!(s, 201, "{v}");
    // A volume of another tenant, which the member must not see.
    let (s, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "theirs", "size": "16M", "tenant": "default"})),
    );
    assert_eq!(s, 201, "{v}");
    let (s, member) = d.call(
        "POST",
        "/v1/tokens",
        &admin,
        Some(json!({"role": "member", "tenant": "ml"})),
    );
    assert_eq!(s, 201, "{member}");
    let member = member["token"].as_str().unwrap().to_string();

    let b = Browser::start();

    // Sign in as the admin: the overview shows the pool.
    b.sign_in(&d.url, &admin);
    wait_for("the overview", WAIT, || {
        b.text("main h1").contains("Overview").then_some(())
    });
    assert!(b.text("main").contains("Pool"), "{}", b.text("main"));
    assert_eq!(b.text("#who"), "admin");
    let offered =
        "return document.querySelector('#nav a[href=\"#/switches\"]').offsetParent !== null;";
    assert_eq!(b.js(offered, json!([])), true);
    b.screenshot("overview-1280.png");
    // Every page renders for an admin without an error.
    for (page, title) in [
        ("snapshots", "Snapshots and checkpoint groups"),
        ("switches", "Switches"),
        ("tenants", "Tenants, quotas and tokens"),
        ("audit", "Audit log"),
        ("events", "Events"),
        ("networks", "Networks, subnets and security groups"),
        ("load-balancers", "Load balancers"),
        ("nodes", "Nodes"),
        ("jobs", "Jobs"),
    ] {
        b.goto(&format!("{}/#/{page}", d.url));
        wait_for(&format!("the {page} page"), WAIT, || {
            (b.text("main h1") == title).then_some(())
        });
        let errors = b.js(
            "return [...document.querySelectorAll('main .error')].map((e) => e.textContent);",
            json!([]),
        );
        assert_eq!(errors, json!([]), "{page}");
    }

    // Create a volume through the form; it is listed.
    b.goto(&format!("{}/#/volumes", d.url));
    let f = "form[aria-label='Create a volume']";
    b.type_into(&format!("{f} input[name='name']"), "web-vol");
    b.type_into(&format!("{f} input[name='size']"), "64M");
    b.click(&format!("{f} select[name='tenant'] option[value='ml']"));
    b.click(&format!("{f} button[type='submit']"));
    wait_for("the form's confirmation", WAIT, || {
        b.text(&format!("{f} .status"))
            .contains("Created volume web-vol")
            .then_some(())
    });
    assert!(listed_volumes(&b).contains(&"web-vol".to_string()));
    let (_, page) = d.call("GET", "/v1/volumes?name=web-vol", &admin, None);
    assert_eq!(page["items"][0]["tenant"], "ml", "{page}");
    assert_eq!(page["items"][0]["size"], 64u64 << 20, "{page}");

    // A bad size shows the API's error code.
    b.type_into(&format!("{f} input[name='name']"), "bad-vol");
    b.type_into(&format!("{f} input[name='size']"), "3");
    b.click(&format!("{f} button[type='submit']"));
    let err = wait_for("the error box", WAIT, || {
        let t = b.js(
            "return document.querySelector(arguments[0])?.textContent ?? null;",
            json!([format!("{f} .error .code")]),
        );
        t.as_str().map(str::to_string)
    });
    assert!(err.starts_with("invalid_"), "{err}");

    // Open its page, export it over NBD from the page, and run fio: the chart's IOPS move.
    let href = wait_for("the volume's link", WAIT, || {
        let v = b.js(
            "return [...document.querySelectorAll('#volume-list a')] \
             .find((a) => a.textContent === 'web-vol')?.getAttribute('href') ?? null;",
            json!([]),
        );
        v.as_str().map(str::to_string)
    });
    b.click(&format!("#volume-list a[href='{href}']"));
    wait_for("the volume page", WAIT, || {
        b.text("main h1").contains("web-vol").then_some(())
    });
    b.find("#stat-iops[data-value]");
    b.click("#export");
    let uri = b.text("#attach-uri");
    assert!(uri.starts_with("nbd"), "{uri}");
    let fio = std::thread::spawn(move || {
        crate::qos::fio(
            &uri,
            &[
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=4",
                "--time_based",
                "--runtime=6",
            ],
        )
    });
    let iops = wait_for("the chart's IOPS above 0", Duration::from_secs(12), || {
        let v = b.js(
            "return Number(document.querySelector('#stat-iops')?.dataset.value ?? 0);",
            json!([]),
        );
        v.as_f64().filter(|x| *x > 0.0)
    });
    assert_ne!(b.text("#stat-iops"), "0", "{iops}");
    // Let the chart draw a few seconds of the load before the pictures.
    std::thread::sleep(Duration::from_secs(3));
    b.js("window.scrollTo(0, 0); return null;", json!([]));
    let shot = b.screenshot("volume-1280.png");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    b.resize(390, 1400);
    std::thread::sleep(Duration::from_millis(1500));
    b.js("window.scrollTo(0, 0); return null;", json!([]));
    b.screenshot("volume-390.png");
    let r = fio.join().unwrap();
    let written = r["jobs"][0]["write"]["total_ios"].as_u64().unwrap();
    assert!(written > 0, "{r}");
    // The collapsible nav at phone width: hidden, then opened by its button.
    b.goto(&format!("{}/#/overview", d.url));
    let nav_shown = "return getComputedStyle(document.getElementById('nav')).display !== 'none';";
    wait_for("the overview", WAIT, || {
        b.text("main h1").contains("Overview").then_some(())
    });
    assert_eq!(b.js(nav_shown, json!([])), false);
    b.click("#nav-toggle");
    assert_eq!(b.js(nav_shown, json!([])), true);
    b.screenshot("overview-nav-390.png");
    b.resize(1280, 1000);

    // No page so far broke the CSP or threw (the API's 4xx answers to the bad size are
    // logged as failed loads, which they are meant to be).
    let severe: Vec<Value> = b
        .console_log()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            !e["message"]
                .as_str()
                .unwrap_or("")
                .contains("Failed to load resource")
        })
        .collect();
    assert!(severe.is_empty(), "browser errors: {severe:?}");

    // Sign out; the member sees its tenant's volume and not the other tenant's.
    b.click("#sign-out");
    b.find("#token");
    b.sign_in(&d.url, &member);
    wait_for("the member's overview", WAIT, || {
        b.text("#who").contains("ml").then_some(())
    });
    b.goto(&format!("{}/#/volumes", d.url));
    let names = wait_for("the member's volume list", WAIT, || {
        let n = listed_volumes(&b);
        (!n.is_empty()).then_some(n)
    });
    assert_eq!(names, vec!["web-vol".to_string()]);
    // The admin-only pages are not offered to a tenant.
    let offered =
        "return document.querySelector('#nav a[href=\"#/switches\"]').offsetParent !== null;";
    assert_eq!(b.js(offered, json!([])), false);
    b.screenshot("volumes-member-1280.png");

    // A wrong token: the API's `unauthenticated` code is shown and nothing is kept.
    b.click("#sign-out");
    b.sign_in(&d.url, "not-a-token");
    let code = b.text("form[aria-label='Sign in'] .error .code");
    assert_eq!(code, "unauthenticated");
    let kept = b.js("return sessionStorage.getItem('strata.token');", json!([]));
    assert_eq!(kept, Value::Null);
    b.screenshot("signin-error-1280.png");
    drop(b);
    d.stop();
}

/// The page shows no error box.
fn assert_no_error_box(b: &Browser, page: &str) {
    let errors = b.js(
        "return [...document.querySelectorAll('main .error')].map((e) => e.textContent);",
        json!([]),
    );
    assert_eq!(errors, json!([]), "{page}");
}

/// Opens `#/route` and waits for its title.
fn open(b: &Browser, d: &Daemon, route: &str, title: &str) {
    b.goto(&format!("{}/#/{route}", d.url));
    wait_for(&format!("the page {route}"), WAIT, || {
        (b.text("main h1") == title).then_some(())
    });
}

/// The text of the cell under column `label` in the row `[attr="value"]` inside `within`
/// (None until that row is drawn).
fn cell(b: &Browser, within: &str, attr: &str, value: &str, label: &str) -> Option<String> {
    b.js(
        "const row = document.querySelector(`${arguments[0]} tr[${arguments[1]}=\"${arguments[2]}\"]`); \
         const td = row && [...row.children].find((c) => c.dataset.label === arguments[3]); \
         return td ? td.innerText.trim() : null;",
        json!([within, attr, value, label]),
    )
    .as_str()
    .map(str::to_string)
}

/// The exact figure behind a formatted number in a cell (`data-value`).
fn figure_in(b: &Browser, within: &str, attr: &str, value: &str, label: &str) -> Option<u64> {
    b.js(
        "const row = document.querySelector(`${arguments[0]} tr[${arguments[1]}=\"${arguments[2]}\"]`); \
         const td = row && [...row.children].find((c) => c.dataset.label === arguments[3]); \
         return td?.querySelector('[data-value]')?.dataset.value ?? null;",
        json!([within, attr, value, label]),
    )
    .as_str()
    .and_then(|v| v.parse().ok())
}

/// Fills and submits the form titled `title`: text fields by name, then select options by
/// name and value; waits for the form's status and returns its text.
fn submit(b: &Browser, title: &str, texts: &[(&str, &str)], selects: &[(&str, &str)]) -> String {
    let f = format!("form[aria-label=\"{title}\"]");
    for (name, v) in texts {
        b.type_into(&format!("{f} input[name='{name}']"), v);
    }
    for (name, v) in selects {
        b.click(&format!("{f} select[name='{name}'] option[value='{v}']"));
    }
    // A status left by an earlier submit is not this one's answer.
    b.js(
        "document.querySelector(arguments[0]).replaceChildren(); return null;",
        json!([format!("{f} .status")]),
    );
    b.click(&format!("{f} button[type='submit']"));
    wait_for(&format!("the answer of {title}"), WAIT, || {
        let t = b.js(
            "return document.querySelector(arguments[0])?.innerText ?? '';",
            json!([format!("{f} .status")]),
        );
        t.as_str().filter(|t| !t.is_empty()).map(str::to_string)
    })
}

/// The page is no wider than the window (nothing to scroll sideways at phone width).
fn assert_fits(b: &Browser, page: &str) {
    let w = b.js(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
        json!([]),
    );
    assert!(
        w[0].as_u64() <= w[1].as_u64(),
        "{page} is wider than the window: {w}"
    );
}

/// A Python HTTP server on port 8080 inside a namespace, stopped on drop.
struct HttpServer(Child);

impl HttpServer {
    fn start(ns: &Netns, dir: &Path) -> HttpServer {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "python3",
                "-m",
                "http.server",
                "8080",
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        HttpServer(child)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const NODES: &str = "\
nodes:
  - name: gpu-1
    cpu: 64
    memory: 1Ti
    nic: 400G
    gpus: [{model: H200, count: 8, memory: 141Gi}]
    islands: [[0,1,2,3],[4,5,6,7]]
    labels: {rack: r1}
  - name: gpu-2
    cpu: 64
    memory: 1Ti
    nic: 400G
    gpus: [{model: H200, count: 4, memory: 141Gi}]
    labels: {rack: r2}
";

#[test]
fn console_shows_networks_load_balancers_nodes_jobs_and_follows_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let admin = d.admin();
    let tag = std::process::id() % 100_000;
    let api = |method: &str, path: &str, body: Option<Value>, want: u16| -> Value {
        let (st, v) = d.call(method, path, &admin, body);
        assert_eq!(st, want, "{method} {path}: {v}");
        v
    };

    // Through the API: a network, a subnet, one port; declared nodes, a running and a
    // pending job; a volume refused by a quota (an event).
    let net = api(
        "POST",
        "/v1/networks",
        Some(json!({"name": "web", "cidr": "10.81.0.0/16"})),
        201,
    );
    let net_id = s(&net, "id");
    let subnet = api(
        "POST",
        &format!("/v1/networks/{net_id}/subnets"),
        Some(json!({"name": "a", "cidr": "10.81.1.0/24", "dns": ["10.81.1.53"]})),
        201,
    );
    let subnet_id = s(&subnet, "id");
    let b1 = api(
        "POST",
        &format!("/v1/networks/{net_id}/ports"),
        Some(json!({"name": "b1", "subnet": "a"})),
        201,
    );
    api(
        "POST",
        "/v1/nodes",
        Some(json!({ "inventory": NODES })),
        201,
    );
    let train = api(
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "train", "tenant": "default", "gpus": 4, "gpu_model": "H200",
                    "cpu_cores": 4, "memory_bytes": 1u64 << 30, "same_island": true}),
        ),
        201,
    );
    assert_eq!(train["state"], "running", "{train}");
    let big = api(
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "big", "tenant": "default", "gpus": 16, "gpu_model": "H200",
                    "same_island": true}),
        ),
        201,
    );
    assert_eq!(big["state"], "pending", "{big}");
    api(
        "POST",
        "/v1/tenants",
        Some(json!({"name": "ev", "quota": {"volumes": 0}})),
        201,
    );
    let (_, v) = d.call(
        "POST",
        "/v1/volumes",
        &admin,
        Some(json!({"name": "refused-1", "size": "16M", "tenant": "ev"})),
    );
    assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    let refusal = api(
        "GET",
        "/v1/events?type=tenant.quota_refused&limit=1",
        None,
        200,
    )["items"][0]
        .clone();
    let refusal_msg = s(&refusal, "message");
    assert!(!refusal_msg.is_empty(), "{refusal}");

    let b = Browser::start();
    b.sign_in(&d.url, &admin);
    wait_for("the overview", WAIT, || {
        b.text("main h1").contains("Overview").then_some(())
    });
    // The overview shows the newest events, the refusal among them.
    wait_for("the refusal on the overview", WAIT, || {
        b.text("#recent-events")
            .contains(&refusal_msg)
            .then_some(())
    });

    // The network's page, from the list.
    open(&b, &d, "networks", "Networks, subnets and security groups");
    b.click(&format!("#network-list a[href='#/networks/{net_id}']"));
    wait_for("the network page", WAIT, || {
        (b.text("main h1") == "Network web").then_some(())
    });
    assert_no_error_box(&b, "network");
    let shown = cell(&b, "#subnet-list", "data-subnet", "a", "DNS");
    assert_eq!(shown.as_deref(), Some("10.81.1.53"));

    // A second port through the form.
    let said = submit(
        &b,
        "Add a port",
        &[("name", "b2")],
        &[("subnet", subnet_id.as_str())],
    );
    assert!(said.contains("Added port b2"), "{said}");
    let ports = api("GET", &format!("/v1/networks/{net_id}/ports"), None, 200);
    let b2 = ports["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b2")
        .expect("the form made b2")
        .clone();
    for p in [&b1, &b2] {
        let name = s(p, "name");
        let ip = wait_for(&format!("{name}'s row"), WAIT, || {
            cell(&b, "#port-list", "data-port", &name, "IP")
        });
        assert_eq!(ip, s(p, "ip"), "{name}");
        let dev = cell(&b, "#port-list", "data-port", &name, "Plug into").unwrap();
        assert_eq!(dev, s(p, "device"), "{name}");
        let mac = cell(&b, "#port-list", "data-port", &name, "MAC").unwrap();
        assert_eq!(mac, s(p, "mac"), "{name}");
    }

    // A load balancer over both through the form, health-checked over TCP.
    let said = submit(
        &b,
        "Create a load balancer",
        &[
            ("name", "lb1"),
            ("listener", "tcp:80"),
            ("backends", "b1:8080@2, b2:8080"),
        ],
        &[("subnet", subnet_id.as_str()), ("health", "tcp")],
    );
    assert!(said.contains("Created load balancer lb1"), "{said}");
    let lbs = api(
        "GET",
        &format!("/v1/networks/{net_id}/load-balancers"),
        None,
        200,
    );
    let lb = lbs["items"][0].clone();
    let (lb_id, vip) = (s(&lb, "id"), s(&lb, "vip"));
    assert_eq!(lb["listeners"][0]["port"], 80, "{lb}");
    assert_eq!(lb["listeners"][0]["backends"][0]["weight"], 2, "{lb}");
    assert_eq!(lb["health_check"]["kind"], "tcp", "{lb}");
    assert_eq!(
        cell(&b, "#lb-list", "data-lb", "lb1", "VIP").as_deref(),
        Some(vip.as_str())
    );

    // b1 gets a server in a namespace; b2 stays unplugged, so its health checks fail.
    let ns = Netns::new(&format!("cs{tag}b1"));
    plug(&ns, &b1, 24, &s(&subnet, "gateway"));
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let server = HttpServer::start(&ns, &www);

    // The traffic table: the health probes reach b1 (what the switch delivered to it).
    let tx = wait_for("b1's TX packets above 0", WAIT, || {
        figure_in(&b, "#stats", "data-port", "b1", "TX packets").filter(|n| *n > 0)
    });
    let total = figure_in(&b, "#stats", "data-port", "(total)", "TX packets").unwrap();
    assert!(total >= tx, "{total} < {tx}");
    b.js("window.scrollTo(0, 0); return null;", json!([]));
    b.screenshot("network-1280.png");

    // The load balancer's page: the VIP, both backends by name, health as the checker says.
    b.click(&format!("#lb-list a[href='#/load-balancers/{lb_id}']"));
    wait_for("the load balancer page", WAIT, || {
        (b.text("main h1") == "Load balancer lb1").then_some(())
    });
    assert_eq!(b.text("#lb-vip"), vip);
    wait_for("b1 up and b2 down on the page", WAIT, || {
        let h1 = cell(&b, "#listener-0", "data-backend", "b1", "Health")?;
        let h2 = cell(&b, "#listener-0", "data-backend", "b2", "Health")?;
        (h1 == "up" && h2 == "down").then_some(())
    });
    let now = api("GET", &format!("/v1/load-balancers/{lb_id}"), None, 200);
    let health: Vec<(String, String)> = now["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (s(x, "ip"), s(x, "health")))
        .collect();
    assert_eq!(
        health,
        vec![
            (s(&b1, "ip"), "up".to_string()),
            (s(&b2, "ip"), "down".to_string())
        ],
        "the API says what the page shows"
    );
    assert_eq!(
        cell(&b, "#listener-0", "data-backend", "b1", "Weight").as_deref(),
        Some("2")
    );
    assert_no_error_box(&b, "load balancer");
    b.js("window.scrollTo(0, 0); return null;", json!([]));
    b.screenshot("load-balancer-1280.png");

    // A security group and a rule through the network page's forms; a bad port is refused
    // with the API's code and adds nothing.
    open(&b, &d, &format!("networks/{net_id}"), "Network web");
    let said = submit(&b, "Create a security group", &[("name", "web-sg")], &[]);
    assert!(said.contains("Created security group web-sg"), "{said}");
    let groups = api("GET", "/v1/security-groups", None, 200);
    let sg = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "web-sg")
        .expect("the form made web-sg")
        .clone();
    let sg_id = s(&sg, "id");
    let said = submit(
        &b,
        "Add a rule",
        &[("ports", "8080"), ("remote", "10.81.0.0/16")],
        &[
            ("group", sg_id.as_str()),
            ("direction", "ingress"),
            ("protocol", "tcp"),
        ],
    );
    assert!(said.contains("Added a rule to web-sg"), "{said}");
    let rules = wait_for("the rule in the list", WAIT, || {
        cell(&b, "#group-list", "data-group", "web-sg", "Rules")
    });
    assert!(
        rules.contains("ingress tcp 8080 from 10.81.0.0/16"),
        "{rules}"
    );
    let g = api(
        "GET",
        &format!("/v1/security-groups/{}", s(&sg, "id")),
        None,
        200,
    );
    // A new group has its allow-all egress rule; the form added the ingress one.
    let rules_before = g["rules"].as_array().unwrap().len();
    let added = g["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["direction"] == "ingress")
        .expect("the ingress rule");
    assert_eq!(added["port_min"], 8080, "{g}");
    assert_eq!(added["remote_cidr"], "10.81.0.0/16", "{g}");
    let said = submit(
        &b,
        "Add a rule",
        &[("ports", "70000")],
        &[("group", sg_id.as_str())],
    );
    let code = b.text("form[aria-label=\"Add a rule\"] .error .code");
    assert!(code.starts_with("invalid_"), "{code}: {said}");
    let g = api(
        "GET",
        &format!("/v1/security-groups/{}", s(&sg, "id")),
        None,
        200,
    );
    assert_eq!(g["rules"].as_array().unwrap().len(), rules_before, "{g}");

    // The node the running job landed on: its inventory and which GPUs the job holds.
    let node = s(&train["placement"][0], "node");
    let gpus: Vec<u64> = train["placement"][0]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect();
    open(&b, &d, "nodes", "Nodes");
    b.click(&format!("a[href='#/nodes/{node}']"));
    wait_for("the node page", WAIT, || {
        (b.text("main h1") == format!("Node {node}")).then_some(())
    });
    assert_no_error_box(&b, "node");
    assert!(b.text("main").contains("H200"), "{}", b.text("main"));
    for g in &gpus {
        let holder = b.text(&format!("li[data-gpu='{g}'] .gpu-job"));
        assert_eq!(holder, "train", "GPU {g}");
    }
    let label = if node == "gpu-1" {
        "rack=r1"
    } else {
        "rack=r2"
    };
    assert!(b.text("#labels").contains(label), "{}", b.text("#labels"));
    b.js("window.scrollTo(0, 0); return null;", json!([]));
    b.screenshot("node-1280.png");

    // The jobs: the running one's slice, the pending one's explanation.
    open(&b, &d, "jobs", "Jobs");
    b.click("a[href='#/jobs/default/train']");
    wait_for("the running job's page", WAIT, || {
        (b.text("main h1") == "Job train").then_some(())
    });
    let held = gpus
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        cell(&b, "main", "data-node", &node, "GPUs").as_deref(),
        Some(held.as_str())
    );
    open(&b, &d, "jobs", "Jobs");
    b.click("a[href='#/jobs/default/big']");
    wait_for("the pending job's page", WAIT, || {
        (b.text("main h1") == "Job big").then_some(())
    });
    let why = api("GET", "/v1/jobs/big?tenant=default", None, 200);
    assert_eq!(b.text("#explanation"), s(&why["explanation"], "message"));
    assert_no_error_box(&b, "job");
    b.screenshot("job-1280.png");

    // The events page: the refusal; then, following, a node cordoned after it is open.
    open(&b, &d, "events", "Events");
    wait_for("the refusal in the list", WAIT, || {
        b.text("#event-list").contains(&refusal_msg).then_some(())
    });
    assert_no_error_box(&b, "events");
    // From here every request of the page is kept, to count the event polls later.
    b.js(
        "performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000); return null;",
        json!([]),
    );
    b.click("#events-follow");
    assert_eq!(
        b.js(
            "return document.querySelector('#events-follow').getAttribute('aria-pressed');",
            json!([])
        ),
        "true"
    );
    // Let the first long poll start, so the event comes through it rather than a reload.
    std::thread::sleep(Duration::from_millis(500));
    api("POST", "/v1/nodes/gpu-2/cordon", None, 200);
    let cordoned =
        api("GET", "/v1/events?type=node.cordoned&limit=1", None, 200)["items"][0].clone();
    let seq = cordoned["seq"].as_u64().unwrap().to_string();
    wait_for("the followed event on top", WAIT, || {
        let top = b.js(
            "const r = document.querySelector('#event-list tbody tr'); \
             return r ? [r.dataset.seq, r.className, r.innerText] : null;",
            json!([]),
        );
        (top[0] == seq.as_str()
            && top[1] == "fresh"
            && top[2].as_str()?.contains(&s(&cordoned, "message")))
        .then_some(())
    });
    b.screenshot("events-1280.png");

    // Leaving the page stops the poll: no call of it completes afterwards.
    let polls = "return performance.getEntriesByType('resource') \
                 .filter((e) => e.name.includes('/v1/events?') && e.name.includes('after=')).length;";
    b.click("#nav a[href='#/overview']");
    wait_for("the overview", WAIT, || {
        (b.text("main h1") == "Overview").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = b.js(polls, json!([])).as_u64().unwrap();
    assert!(before >= 1, "the page followed with long polls");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(b.js(polls, json!([])).as_u64().unwrap(), before);

    // At phone width: each new page fits the window.
    b.resize(390, 1400);
    for (route, title, shot) in [
        (
            format!("networks/{net_id}"),
            "Network web".to_string(),
            "network-390.png",
        ),
        (
            format!("load-balancers/{lb_id}"),
            "Load balancer lb1".to_string(),
            "load-balancer-390.png",
        ),
        (
            format!("nodes/{node}"),
            format!("Node {node}"),
            "node-390.png",
        ),
        (
            "jobs/default/big".to_string(),
            "Job big".to_string(),
            "job-390.png",
        ),
        ("events".to_string(), "Events".to_string(), "events-390.png"),
    ] {
        open(&b, &d, &route, &title);
        std::thread::sleep(Duration::from_millis(300));
        assert_no_error_box(&b, &route);
        assert_fits(&b, &route);
        b.js("window.scrollTo(0, 0); return null;", json!([]));
        b.screenshot(shot);
    }
    b.resize(1280, 1000);

    // No page broke the CSP or threw (the refused rule's 400 is a failed load, as meant).
    let severe: Vec<Value> = b
        .console_log()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            !e["message"]
                .as_str()
                .unwrap_or("")
                .contains("Failed to load resource")
        })
        .collect();
    assert!(severe.is_empty(), "browser errors: {severe:?}");

    drop(b);
    drop(server);
    drop(ns);
    // The health checker's namespace for the network (the daemon leaves it in place).
    let short: String = net_id.chars().filter(|c| *c != '-').take(12).collect();
    let _ = Command::new("ip")
        .args(["netns", "del", &format!("strata-mon-{short}")])
        .status();
    d.stop();
}
