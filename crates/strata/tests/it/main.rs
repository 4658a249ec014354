//! The binary as a user runs it, one integration-test binary: `strata serve` (create, SIGTERM,
//! restart, kill -9, data-dir lock), the REST API end to end (errors, quotas, the one
//! authorization matrix through HTTP, the OpenAPI document against the live server), the CLI,
//! QoS and metrics, switches, and NBD clients. The controller's own tables (authorization,
//! quotas, recovery) run without the binary in `crates/strata-control/tests/it/`.

mod api;
mod apply;
mod balancers;
mod cli;
mod cli_edges;
mod cluster;
mod common;
mod console;
mod contract;
mod credentials;
mod daemon;
mod encryption;
mod etcd_store;
mod events;
mod failover;
mod groups;
mod hardening;
mod jobs;
mod mesh;
mod nbd;
mod net_latency;
mod networks;
mod qos;
mod readme;
mod rebalance;
mod replicas;
mod schedules;
mod switch;
mod tenant_veth;
mod veth;
