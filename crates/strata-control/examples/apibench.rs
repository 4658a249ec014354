//! API benchmark against a running `strata serve`: volume create-and-delete round trips, and
//! list latency at 1,000 and 10,000 volumes. Run through `bash bench/api.sh`.
//!
//! Usage: apibench URL ADMIN_TOKEN [ROUNDS]

use std::time::{Duration, Instant};

use serde_json::json;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, token) = (&args[1], format!("Bearer {}", args[2]));
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(300);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .into();
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        agent
            .post(format!("{url}{path}"))
            .header("Authorization", &token)
            .send_json(&body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let get = |path: &str| -> serde_json::Value {
        agent
            .get(format!("{url}{path}"))
            .header("Authorization", &token)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    let delete = |path: &str| {
        agent
            .delete(format!("{url}{path}"))
            .header("Authorization", &token)
            .call()
            .unwrap();
    };
    post("/v1/tenants", json!({"name": "bench"}));

    let mut create = Vec::new();
    let mut del = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let v = post(
            "/v1/volumes",
            json!({"name": format!("rt{i}"), "size": "10G", "tenant": "bench"}),
        );
        create.push(t.elapsed());
        let id = v["id"].as_str().unwrap().to_string();
        let t = Instant::now();
        delete(&format!("/v1/volumes/{id}"));
        del.push(t.elapsed());
    }
    println!("Strata API, one client, loopback HTTP, durable state store");
    println!("{:<40} {:>10} {:>10}", "operation", "p50", "p99");
    println!(
        "{:<40} {:>10} {:>10}",
        format!("volume create ({rounds} round trips)"),
        ms(pct(&mut create, 0.5)),
        ms(pct(&mut create, 0.99))
    );
    println!(
        "{:<40} {:>10} {:>10}",
        format!("volume delete ({rounds} round trips)"),
        ms(pct(&mut del, 0.5)),
        ms(pct(&mut del, 0.99))
    );

    let mut have = 0;
    for target in [1_000usize, 10_000] {
        while have < target {
            post(
                "/v1/volumes",
                json!({"name": format!("l{have}"), "size": "1G", "tenant": "bench"}),
            );
            have += 1;
        }
        // A page holds at most 1,000 (the API's bound): a larger list is read page by page,
        // as a client would.
        let page = target.min(1000);
        let mut lat = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let mut seen = 0;
            let mut next: Option<String> = None;
            loop {
                let mut path = format!("/v1/volumes?tenant=bench&limit={page}");
                if let Some(tok) = &next {
                    path += &format!("&page_token={}", tok.replace('/', "%2F"));
                }
                let v = get(&path);
                seen += v["items"].as_array().unwrap().len();
                next = v["next_page_token"].as_str().map(str::to_string);
                if next.is_none() {
                    break;
                }
            }
            lat.push(t.elapsed());
            assert_eq!(seen, target);
        }
        println!(
            "{:<40} {:>10} {:>10}",
            format!("list {target} volumes ({} pages)", target.div_ceil(page)),
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.99))
        );
    }
    println!("goals: p99 create < 20 ms; list of 10,000 < 100 ms");
}
