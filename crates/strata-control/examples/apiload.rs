//! API load against a running `strata serve`, run through `bash bench/api.sh`:
//! - `clients N SECS`: N concurrent clients create and delete volumes for SECS seconds; prints
//!   latency percentiles, throughput and every error by status and code (goal: 0 errors);
//!   then checks that no volume is left half-deleted and the tenant's usage is back to zero.
//! - `flows N`: adds N flows to one switch, printing the add latency per thousand, then 4
//!   concurrent clients add 50 flows each (every answer must be a success), and the store
//!   file's size (pass the data dir as the last argument).
//!
//! Usage: apiload URL ADMIN_TOKEN clients N SECS | flows N DATA_DIR

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Api {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(url: &str, token: &str) -> Api {
        Api {
            url: url.to_string(),
            token: format!("Bearer {token}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// One call: (status, body).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let r = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.token)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.token)
                .call(),
            (_, b) => self
                .agent
                .post(&url)
                .header("Authorization", &self.token)
                .send_json(b.unwrap_or(Value::Null)),
        };
        match r {
            Ok(mut r) => {
                let s = r.status().as_u16();
                let v = r.body_mut().read_json().unwrap_or(Value::Null);
                (s, v)
            }
            Err(e) => (0, json!({"error": {"code": format!("transport: {e}")}})),
        }
    }
}

fn error_key(s: u16, v: &Value) -> String {
    format!("{s} {}", v["error"]["code"].as_str().unwrap_or("-"))
}

fn clients(url: &str, token: &str, n: usize, secs: u64) {
    let admin = Api::new(url, token);
    admin.call("POST", "/v1/tenants", Some(json!({"name": "load"})));
    let create = Arc::new(Mutex::new(Vec::new()));
    let delete = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let end = Instant::now() + Duration::from_secs(secs);
    let hs: Vec<_> = (0..n)
        .map(|c| {
            let (url, token) = (url.to_string(), token.to_string());
            let (create, delete, errors) = (create.clone(), delete.clone(), errors.clone());
            std::thread::spawn(move || {
                let api = Api::new(&url, &token);
                let (mut cl, mut dl) = (Vec::new(), Vec::new());
                let mut i = 0;
                while Instant::now() < end {
                    i += 1;
                    let t = Instant::now();
                    let (s, v) = api.call(
                        "POST",
                        "/v1/volumes",
                        Some(json!({"name": format!("c{c}-{i}"), "size": "1G", "tenant": "load"})),
                    );
                    cl.push(t.elapsed());
                    if s != 201 {
                        *errors.lock().unwrap().entry(error_key(s, &v)).or_default() += 1;
                        continue;
                    }
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    let t = Instant::now();
                    let (s, v) = api.call("DELETE", &format!("/v1/volumes/{id}"), None);
                    dl.push(t.elapsed());
                    if s != 204 {
                        *errors.lock().unwrap().entry(error_key(s, &v)).or_default() += 1;
                    }
                }
                create.lock().unwrap().extend(cl);
                delete.lock().unwrap().extend(dl);
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let mut c = create.lock().unwrap();
    let mut d = delete.lock().unwrap();
    let total = c.len() + d.len();
    let errs: u64 = errors.lock().unwrap().values().sum();
    println!("Strata API, {n} concurrent clients creating and deleting volumes for {secs} s");
    println!("{:<40} {:>10} {:>10}", "operation", "p50", "p99");
    println!(
        "{:<40} {:>10} {:>10}",
        format!("volume create ({} calls)", c.len()),
        ms(pct(&mut c, 0.5)),
        ms(pct(&mut c, 0.99))
    );
    println!(
        "{:<40} {:>10} {:>10}",
        format!("volume delete ({} calls)", d.len()),
        ms(pct(&mut d, 0.5)),
        ms(pct(&mut d, 0.99))
    );
    println!(
        "requests {total}, {:.0}/s, errors {errs}",
        total as f64 / secs as f64
    );
    for (k, v) in errors.lock().unwrap().iter() {
        println!("  error {k}: {v}");
    }
    // Nothing stuck: every volume of the tenant is gone and its usage is zero.
    let (_, left) = admin.call("GET", "/v1/volumes?tenant=load&limit=1000", None);
    let left = left["items"].as_array().map_or(0, |a| a.len());
    let (_, t) = admin.call("GET", "/v1/tenants/load", None);
    println!("volumes left {left}, tenant usage {}", t["usage"]);
    println!("goal: 0 errors, p99 create < 50 ms, nothing left");
}

fn flows(url: &str, token: &str, n: usize, data: &str) {
    let api = Api::new(url, token);
    let (s, v) = api.call("POST", "/v1/switches", Some(json!({"name": "flows"})));
    assert!(s == 201 || s == 409, "{s} {v}");
    println!("Strata switch flows: add latency as the table grows, one client");
    println!("{:<40} {:>10} {:>10}", "flows in the table", "p50", "p99");
    let mut lat = Vec::new();
    for i in 0..n {
        let flow = format!(
            "table=0,priority=10,ip,nw_dst=10.{}.{}.{}/32,actions=drop",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        let t = Instant::now();
        let (s, v) = api.call(
            "POST",
            "/v1/switches/flows/flows",
            Some(json!({"flow": flow})),
        );
        lat.push(t.elapsed());
        assert!(s < 300, "flow {i}: {s} {v}");
        if (i + 1) % 5000 == 0 || i + 1 == 1000 {
            println!(
                "{:<40} {:>10} {:>10}",
                format!("{} (last {} adds)", i + 1, lat.len()),
                ms(pct(&mut lat, 0.5)),
                ms(pct(&mut lat, 0.99))
            );
            lat.clear();
        }
    }
    let errors = Arc::new(Mutex::new(0u64));
    let hs: Vec<_> = (0..4)
        .map(|c| {
            let (url, token, errors) = (url.to_string(), token.to_string(), errors.clone());
            std::thread::spawn(move || {
                let api = Api::new(&url, &token);
                for i in 0..50 {
                    let flow =
                        format!("table=1,priority=10,ip,nw_src=10.200.{c}.{i}/32,actions=drop");
                    let (s, _) = api.call(
                        "POST",
                        "/v1/switches/flows/flows",
                        Some(json!({"flow": flow})),
                    );
                    if s >= 300 {
                        *errors.lock().unwrap() += 1;
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let size = std::fs::metadata(format!("{data}/state.redb")).map_or(0, |m| m.len());
    println!(
        "4 concurrent clients x 50 flow adds: {} errors",
        errors.lock().unwrap()
    );
    println!(
        "state.redb after {} flows: {:.1} MiB (goal < 50 MiB at 20,000)",
        n + 200,
        size as f64 / (1 << 20) as f64
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(3).map(String::as_str) {
        Some("clients") => clients(
            &a[1],
            &a[2],
            a.get(4).and_then(|s| s.parse().ok()).unwrap_or(64),
            a.get(5).and_then(|s| s.parse().ok()).unwrap_or(60),
        ),
        Some("flows") => flows(
            &a[1],
            &a[2],
            a.get(4).and_then(|s| s.parse().ok()).unwrap_or(20_000),
            a.get(5).map_or(".", String::as_str),
        ),
        _ => eprintln!("usage: apiload URL TOKEN clients N SECS | flows N DATA_DIR"),
    }
}
