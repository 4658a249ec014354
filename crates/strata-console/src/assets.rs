//! The embedded files: one table from URL path to bytes and content type.
//!
//! Paths are relative to `/console/`; `index.html` is also served at `/`. A file added under
//! `assets/` is served only once it has a row here (the unit tests check that every file the
//! page references, and every module a module imports, has one).

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/console/`.
    pub path: &'static str,
    /// `Content-Type` it is served with.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        Asset {
            path: $path,
            content_type: $ty,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

/// Every file of the console.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("session.js", JS),
    asset!("ui.js", JS),
    asset!("format.js", JS),
    asset!("chart.js", JS),
    asset!("lbspec.js", JS),
    asset!("pages/signin.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/volumes.js", JS),
    asset!("pages/volume.js", JS),
    asset!("pages/snapshots.js", JS),
    asset!("pages/switches.js", JS),
    asset!("pages/tenants.js", JS),
    asset!("pages/audit.js", JS),
    asset!("pages/events.js", JS),
    asset!("pages/networks.js", JS),
    asset!("pages/network.js", JS),
    asset!("pages/secgroups.js", JS),
    asset!("pages/balancers.js", JS),
    asset!("pages/balancer.js", JS),
    asset!("pages/nodes.js", JS),
    asset!("pages/node.js", JS),
    asset!("pages/jobs.js", JS),
    asset!("pages/job.js", JS),
];

/// The file at `path` (relative to `/console/`), if the console has one.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The page itself.
pub fn index() -> &'static Asset {
    find("index.html").expect("index.html is embedded")
}
