//! The console's routes: `/` (the page) and `/console/{path}` (its files), each answer with its
//! content type, a validator (`ETag`) and the security headers.
//!
//! `Cache-Control: no-cache` rather than a long max-age: file names carry no content hash, so
//! a browser must revalidate after an upgrade; the `ETag` (a hash of the embedded bytes) makes
//! that revalidation a 304 without a body.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::assets::{self, Asset};

/// The Content-Security-Policy of every console answer: nothing but this origin's own files,
/// no inline script or style element, no plugin, no framing, and the page may only call back
/// to this daemon (`connect-src 'self'`).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The console's router, to merge with the API's (the two share no path).
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { answer(assets::index(), &h) }),
        )
        .route("/console/{*path}", get(file))
}

async fn file(Path(path): Path<String>, h: HeaderMap) -> Response {
    match assets::find(&path) {
        Some(a) => answer(a, &h),
        None => {
            let mut r = (StatusCode::NOT_FOUND, "no such console file\n").into_response();
            secure(r.headers_mut());
            r
        }
    }
}

fn answer(a: &Asset, req: &HeaderMap) -> Response {
    let tag = etag(a.body);
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == tag.as_bytes());
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.body.into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    secure(h);
    r
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A strong validator: FNV-1a over the bytes (stable across builds of the same files).
fn etag(body: &[u8]) -> String {
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        x ^= u64::from(*b);
        x = x.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{x:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// `src="..."` and `href="..."` values of a document that name a file (not `#/` routes).
    fn references(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            let mut rest = html;
            while let Some(at) = rest.find(attr) {
                rest = &rest[at + attr.len()..];
                let end = rest.find('"').unwrap();
                if !rest.starts_with('#') {
                    out.push(rest[..end].to_string());
                }
            }
        }
        out
    }

    /// The relative module paths a module imports (`from './x.js'`, `import './x.js'`).
    fn imports(js: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in js.lines() {
            let l = line.trim_start();
            if !(l.starts_with("import ") || l.starts_with("} from ")) {
                continue;
            }
            if let Some(q) = l.find("'.") {
                let rest = &l[q + 1..];
                out.push(rest[..rest.find('\'').unwrap()].to_string());
            }
        }
        out
    }

    /// `base` joined with a relative `./` or `../` path, both relative to `/console/`.
    fn join(base: &str, rel: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').collect();
        parts.pop();
        for seg in rel.split('/') {
            match seg {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        parts.join("/")
    }

    fn expected_type(path: &str) -> &'static str {
        match path.rsplit('.').next().unwrap() {
            "html" => "text/html; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("no content type known for .{other}"),
        }
    }

    #[tokio::test]
    async fn the_page_and_every_file_it_references_are_served_with_their_type() {
        let r = get("/").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let html =
            String::from_utf8(to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        let refs = references(&html);
        assert!(refs.len() >= 3, "{refs:?}");
        // Every referenced file, then every module those import, transitively.
        let mut todo: Vec<String> = refs
            .iter()
            .map(|r| {
                r.strip_prefix("/console/")
                    .expect("absolute console path")
                    .to_string()
            })
            .collect();
        let mut seen = Vec::new();
        while let Some(p) = todo.pop() {
            if seen.contains(&p) {
                continue;
            }
            let r = get(&format!("/console/{p}")).await;
            assert_eq!(r.status(), StatusCode::OK, "{p}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], expected_type(&p), "{p}");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP, "{p}");
            let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
            if p.ends_with(".js") {
                let js = std::str::from_utf8(&body).unwrap();
                todo.extend(imports(js).iter().map(|i| join(&p, i)));
            }
            seen.push(p);
        }
        // Every page module is reached from the page.
        for a in assets::ASSETS {
            if a.path.ends_with(".js") {
                assert!(
                    seen.iter().any(|s| s == a.path),
                    "{} is never loaded",
                    a.path
                );
            }
        }
    }

    #[tokio::test]
    async fn unknown_files_are_404_and_etags_revalidate() {
        assert_eq!(
            get("/console/nope.js").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/console/../Cargo.toml").await.status(),
            StatusCode::NOT_FOUND
        );
        let r = get("/console/app.js").await;
        let tag = r.headers()[header::ETAG].clone();
        let r = router()
            .oneshot(
                Request::get("/console/app.js")
                    .header(header::IF_NONE_MATCH, tag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    /// The keys of the object literal `const NAME = { ... };` in `js`: identifiers, or quoted
    /// (`'load-balancers': balancers`).
    fn object_keys(js: &str, name: &str) -> Vec<String> {
        let start = js
            .find(&format!("const {name} = {{"))
            .unwrap_or_else(|| panic!("app.js defines {name}"));
        let body = &js[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                let key = e.split(':').next().unwrap().trim();
                key.trim_matches('\'').to_string()
            })
            .collect()
    }

    fn asset_text(path: &str) -> String {
        String::from_utf8(assets::find(path).unwrap().body.to_vec()).unwrap()
    }

    /// Every route the nav offers (`href="#/NAME"`) has a page, and every link a page builds
    /// to one object (`#/NAME/...`) has an object page: no link of the console leads to the
    /// overview's fallback by mistake.
    #[test]
    fn every_route_linked_has_a_page() {
        let app = asset_text("app.js");
        let pages = object_keys(&app, "PAGES");
        let objects = object_keys(&app, "OBJECT_PAGES");
        assert!(pages.contains(&"load-balancers".to_string()), "{pages:?}");
        let html = asset_text("index.html");
        let mut nav = 0;
        for r in html.split("href=\"#/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(pages.iter().any(|p| p == name), "#/{name} has no page");
            nav += 1;
        }
        assert!(nav >= 10, "{nav} nav links");
        let mut linked = 0;
        for a in assets::ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = asset_text(a.path);
            for r in js.split("`#/").skip(1) {
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                if r[name.len()..].starts_with('/') {
                    assert!(
                        objects.contains(&name),
                        "{}: #/{name}/... has no object page",
                        a.path
                    );
                    linked += 1;
                }
            }
        }
        assert!(linked >= 10, "{linked} object links");
    }

    /// Text from the API is inserted as text: no module parses strings as HTML or code.
    #[test]
    fn no_module_parses_html_or_code() {
        for a in assets::ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let js = String::from_utf8_lossy(a.body);
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute('style'",
            ] {
                assert!(!js.contains(bad), "{}: {bad}", a.path);
            }
        }
    }

    /// The CSP forbids inline script: no file may carry a `<script>` with a body, an inline
    /// event handler attribute or a `javascript:` URL.
    #[test]
    fn no_asset_has_inline_script() {
        for a in assets::ASSETS {
            let text = String::from_utf8_lossy(a.body).to_lowercase();
            let mut rest = text.as_str();
            while let Some(at) = rest.find("<script") {
                rest = &rest[at..];
                let open_end = rest.find('>').expect("closed tag");
                assert!(
                    rest[..open_end].contains(" src="),
                    "{}: script without src",
                    a.path
                );
                let after = &rest[open_end + 1..];
                let close = after.find("</script>").expect("closing tag");
                assert!(
                    after[..close].trim().is_empty(),
                    "{}: inline script body",
                    a.path
                );
                rest = &after[close..];
            }
            if a.path.ends_with(".html") {
                for bad in [
                    " onclick=",
                    " onload=",
                    " onerror=",
                    " onsubmit=",
                    "javascript:",
                ] {
                    assert!(!text.contains(bad), "{}: {bad}", a.path);
                }
                assert!(!text.contains("<style"), "{}: inline style element", a.path);
            }
        }
    }
}
