//! The web console in a real browser: Debian's headless Chromium driven through chromedriver's
//! WebDriver HTTP API (plain JSON over ureq, like the rest of this suite: no async runtime and
//! no WebDriver crate for the dozen commands used). The browser signs in, creates a volume
//! through the form, opens its page, and sees the live chart's IOPS move while fio writes to
//! the volume over NBD; a member sees only its tenant's volumes; a wrong token shows the API's
//! `unauthenticated` error. Screenshots at 1280 and 390 px go to `target/console-screenshots/`.
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
        ("networks", "Networks, subnets and security groups"),
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
