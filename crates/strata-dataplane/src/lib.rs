//! # strata-dataplane: the port layer of Strata's virtual switch
//!
//! Forwarding threads that share one [`strata_net::Switch`] and read the devices of its ports
//! (TAP devices, veth pairs through an `AF_PACKET` socket, VXLAN sockets) with epoll, run each frame through the switch and write the
//! effects. The packet engine (`strata-net`) decides; this crate does the I/O.
//!
//! Where things are:
//! - [`handle`]: [`Dataplane`], the public handle (spawn, ports, flows, counters, stop);
//!   [`config`]: [`DataplaneConfig`] and [`PortSpec`]; [`error`]: [`DataplaneError`].
//! - `worker`: the forwarding threads, the leader's command loop and port installation.
//! - `tap_port`: TAP ports (open the queues, read frames); `veth_port`: veth ports (make the
//!   pair, open the packet socket on its host end, read it with `recvmmsg`; [`rx`] reads one
//!   received message, public for the fuzz target); `vxlan_port`: VXLAN ports (the
//!   receive socket, read datagrams); `encap`: the one writer of VXLAN outer headers and the
//!   raw IP socket that sends them.
//! - `deliver`: the transmit path (offloads, partial checksums, segmentation).
//! - `fastpath`: the veth fast path: eBPF programs (`bpf/fastpath.c`, committed compiled)
//!   that forward established flows between veth ports in the kernel, and their manager
//!   (entries from the engine's offload hints, the generation, counters folded back).
//! - [`stats`]: port-layer counters and the snapshot [`DataplaneStats`].
//! - [`sys`]: Linux system calls; the only module with `unsafe`.
//!
//! Invariants:
//! - One switch, behind a mutex. A thread holds the lock only for [`strata_net::Switch::receive`]
//!   (never across a system call) and reads the switch time under it, so the engine sees time
//!   move forward only, and rule changes, port changes, counter reads and MAC learning are
//!   ordered with every frame of every thread. Control reaches the leader thread through an
//!   mpsc queue plus an eventfd.
//! - Thread i reads queue i of every multi-queue TAP and writes to queue i of the output TAP;
//!   the kernel's flow steering then keeps both directions of a connection on one thread, so a
//!   flow is never reordered. Port-layer counters are per thread and summed by `stats()`.
//! - A port is in every thread's table or in none once `add_port`/`remove_port` returns; a
//!   removed TAP is closed by then.
//! - No allocation per packet: each thread's receive buffer, effects, segmentation output and
//!   scratch frames are allocated once and reused. Effects are split: a large frame's
//!   unchanged tail is written from the receive buffer, never copied in user space.
//! - Offloads end to end: a frame read from a TAP that negotiated offloads keeps its
//!   virtio-net header (GSO type and size, partial checksum) when it leaves by another such
//!   TAP, so 64 KiB TSO frames are never cut nor summed by the switch. Only where the output
//!   cannot take them (a VXLAN port, a TAP without offloads) is the frame segmented and its
//!   checksums completed.
//! - One owner of encapsulation: the engine emits the inner frame and an
//!   [`strata_net::Encap`] intent; `encap` writes the outer IPv4/UDP/VXLAN headers, with the
//!   outer UDP source port picked from the flow hash in [`DataplaneConfig::vxlan_src_ports`],
//!   and sends them on a raw IP socket. What the engine asked for is what leaves.
//!
//! See docs/net-engine.md ("Port I/O") for the design.

pub mod config;
mod deliver;
mod encap;
pub mod error;
mod fastpath;
pub mod handle;
mod port;
/// Reading one message a veth port received (public for the fuzz target).
#[doc(hidden)]
pub mod rx;
pub mod stats;
pub mod sys;
mod tap_port;
mod veth_port;
mod vxlan_port;
mod worker;

pub use config::{set_fastpath_default, veth_peer_name, DataplaneConfig, PortSpec, MAX_THREADS};
pub use deliver::fix_partial_csum;
pub use error::DataplaneError;
pub use fastpath::object::OBJECT_ENV as BPF_OBJECT_ENV;
pub use fastpath::FastPathError;
pub use handle::Dataplane;
pub use stats::{DataplaneStats, FastPathStats, PortCounters, PortIoStats};
