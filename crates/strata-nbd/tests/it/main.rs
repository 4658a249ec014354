//! strata-nbd's integration tests: real NBD clients as oracles (`clients`), our own raw
//! protocol client for what clients never send (`protocol`), never-panic properties of the
//! parsers (`parsers`), TLS with client certificates over both (`tls`), and export sources that
//! are not one engine pool (`sources`). Every test makes its own temp dir, pool and socket.

mod client;
mod clients;
mod common;
mod limits;
mod listeners;
mod parsers;
mod protocol;
mod sources;
mod tls;
