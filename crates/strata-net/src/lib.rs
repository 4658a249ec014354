//! # strata-net: the packet engine of Strata's virtual switch
//!
//! No I/O happens here. Callers pass a frame, the port it arrived on and the current time;
//! the engine returns effects (which bytes to send out of which ports). Port I/O (TAP devices,
//! UDP sockets for VXLAN) lives elsewhere and drives [`Switch`].
//!
//! Where things happen:
//! - [`packet`]: parse a frame into a [`FlowKey`] (hand-written, bounds-checked, no allocation).
//! - [`syntax`]: flow rules in `ovs-ofctl` syntax, both ways.
//! - [`classifier`]: one table's tuple-space search with wildcard tracking.
//! - [`pipeline`]: up to 255 tables, rule counters and timeouts, translation of a key into a
//!   flat action program, the megaflow cache and exact-match cache in front of it.
//! - [`switch`]: ports, isolation domains, MAC learning, executing programs, rewriting frames.
//! - [`vxlan`], [`csum`], [`gso`]: encapsulation, checksums, segmentation of offloaded frames.
//! - [`conntrack`] with [`l4`]: connection tracking (TCP state and windows, UDP, ICMP, related
//!   errors, per-zone limits, expiry), on IP/L4 headers read further than the flow key needs.
//! - [`respond`]: `dec_ttl` and the actions that answer a packet (ARP, ICMP echo and errors,
//!   DHCP), for the distributed router.
//! - [`meter`]: meters (token-bucket caps) and links (work-conserving minimum guarantees), the
//!   engine half of bandwidth slices.
//! - [`drops`]: every drop reason with a stable name, counted per port; [`rates`]: per-port
//!   rates over 1 s and 10 s from counter samples; [`latency`]: round-trip histograms (TCP
//!   handshakes seen by conntrack, per port); [`probe`]: the switch's own echo probes to a
//!   port (round trip and loss).
//! - [`trace`]: what a packet would hit, without side effects.
//! - [`offload`]: what a port layer that forwards packets without the engine is told (a
//!   result that is a function of the key and [`Switch::generation`]) and gives back.
//! - [`types`]: the vocabulary every other file imports (rule ids, domains, translations,
//!   filters, [`Ingress`] and [`Encap`]), so no two files import each other.
//!
//! Port I/O (TAP devices, VXLAN sockets, threads) is the `strata-dataplane` crate, which drives
//! a [`Switch`]. This crate does no I/O and has no `unsafe` (`#![forbid(unsafe_code)]`).
//!
//! See docs/net-engine.md for the design and the invariants.

#![forbid(unsafe_code)]

pub mod cache;
pub mod classifier;
pub mod conntrack;
pub mod csum;
pub mod ct_exec;
mod ct_syntax;
pub mod drops;
pub mod flow;
pub mod gso;
pub mod key;
pub mod l4;
pub mod latency;
pub mod lb;
pub mod mac;
pub mod meter;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod probe;
pub mod rates;
pub mod respond;
pub mod switch;
pub mod syntax;
pub mod trace;
pub mod types;
pub mod vxlan;

pub use drops::{DropCode, DropCounts};
pub use flow::{Action, FlowRule, RuleError, SetField};
pub use key::{Field, FlowKey, Match, PortNo};
pub use meter::{MeterConfig, MeterError, MeterStats, MeterVerdict};
pub use offload::{CtUse, Offload, OffloadCredit};
pub use packet::{parse_frame, Layout, ParseError};
pub use pipeline::Pipeline;
pub use rates::{PortRates, Rates};
pub use switch::{Effects, PortConfig, PortKind, Switch, SwitchConfig};
pub use syntax::{format_flow, parse_flow, FlowParseError, PortNames};
pub use types::{Domain, Encap, FlowFilter, FlowStats, Ingress, RuleId, Translation};
