//! # strata-vpc: tenant networks as data, and their compiler to flows
//!
//! What a platform team asks of OVN or Neutron, as plain data and pure functions: no I/O, no
//! clock, no global state. The control plane stores the objects, keeps a [`Topology`] of
//! them in memory, and hands each change to a [`Compiler`], which answers with the flows to
//! remove and to add on the node's switch. Nothing here talks to a switch.
//!
//! - [`model`]: networks, subnets, ports, routers, security groups, load balancers (serde
//!   records).
//! - [`ipam`]: CIDR checks, address and MAC allocation, port ranges as masked matches.
//! - [`health`]: the driven health checker of load-balancer backends.
//! - [`compile`]: the logical pipeline (tables, what each object contributes) and the
//!   incremental compiler: a change recompiles only the objects it touches and yields a
//!   minimal flow delta; every flow carries a cookie that names the object (and rule) it
//!   comes from, so a trace can be told in the tenant's terms.
//!
//! Design: `docs/tenant-networks.md`.

pub mod compile;
pub mod health;
pub mod ipam;
pub mod model;

pub use compile::{
    network_meter, port_meter, Change, Compiler, Delta, LbGroupSpec, MeterSpec, Topology,
};
pub use ipam::IpamError;
pub use model::{
    Direction, FloatingIp, HealthCheck, HealthKind, LbBackend, LbListener, LbProtocol,
    LoadBalancer, Network, Port, Protocol, Remote, Router, RouterGateway, RuleSpec, SecurityGroup,
    SgRule, Subnet,
};
