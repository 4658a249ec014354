//! The web console, served by `strata serve` at `/`.
//!
//! Plain HTML, CSS and JavaScript ES modules under `assets/`, embedded in the binary at build
//! time (no build step, nothing fetched at run time). The console holds no privilege of its own:
//! every call it makes goes through the public `/v1` API with the signed-in user's bearer token,
//! so a tenant's console sees exactly what that tenant's CLI sees.
//!
//! Invariants:
//! - every file the page loads is in [`assets::ASSETS`] and is served with its content type;
//! - every answer carries the Content-Security-Policy of [`serve::CSP`]: scripts only from this
//!   origin, no inline script, and `connect-src 'self'` (the page talks to this daemon only);
//! - the console's routes are `/` and `/console/...`: it never answers under `/v1`, so the API
//!   keeps its own routes and JSON 404s.

mod assets;
mod serve;

pub use serve::router;
