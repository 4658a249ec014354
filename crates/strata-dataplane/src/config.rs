//! What a dataplane is started with ([`DataplaneConfig`]) and what a port is made of
//! ([`PortSpec`]). Plain data: validated where it is used.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_net::vxlan::{self, SourcePorts};
use strata_net::{Domain, SwitchConfig};

/// A port to add, with the device behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A TAP device (created if missing), optionally an access port of a tenant domain.
    Tap {
        /// Interface name (also the port name), at most 15 bytes.
        name: String,
        /// Isolation domain (None = trunk).
        domain: Option<Domain>,
        /// Negotiate checksum/TSO offloads (true unless testing the slow path).
        offload: bool,
    },
    /// The host-side internal port: a TAP device left in the switch's namespace.
    Internal {
        /// Interface name (also the port name).
        name: String,
        /// Isolation domain (None = trunk).
        domain: Option<Domain>,
    },
    /// A veth pair made for the port: the host end `name` stays with the switch, which reads
    /// and writes it with an `AF_PACKET` socket; the peer is what a container gets (`ip link
    /// set PEER netns X`). Both ends are deleted when the port is removed or the switch stops.
    /// A name (or peer name) already taken fails with [`crate::DataplaneError::DeviceExists`].
    Veth {
        /// Host end's interface name (also the port name), at most 15 bytes.
        name: String,
        /// Peer's interface name (None = `name` + "p").
        peer: Option<String>,
        /// Isolation domain (None = trunk).
        domain: Option<Domain>,
        /// Exchange virtio-net headers with the socket (`PACKET_VNET_HDR`): GSO and partial
        /// checksums pass whole (true unless measuring without).
        vnet_hdr: bool,
    },
    /// A VXLAN tunnel over a UDP socket bound to `local:dst_port`. Ports with the same local
    /// address and UDP port share one socket; received datagrams go to the port whose remote
    /// address sent them.
    Vxlan {
        /// Port name.
        name: String,
        /// Local VTEP address (0.0.0.0 binds every address).
        local: Ipv4Addr,
        /// Remote VTEP address.
        remote: Ipv4Addr,
        /// Fixed VNI (the port is then in domain `Vni(vni)`); None = flow-based.
        vni: Option<u32>,
        /// UDP port, local and remote (4789 by default).
        dst_port: u16,
        /// Flow-keyed (with no fixed VNI): received frames enter with no domain and
        /// `tun_id` = their VNI (`strata_net::vxlan::VxlanTunnel::flow_keyed`).
        flow_keyed: bool,
    },
}

impl PortSpec {
    /// A TAP port with offloads.
    pub fn tap(name: &str, domain: Option<Domain>) -> Self {
        PortSpec::Tap {
            name: name.to_string(),
            domain,
            offload: true,
        }
    }
    /// A veth port with offloads and the default peer name.
    pub fn veth(name: &str, domain: Option<Domain>) -> Self {
        PortSpec::Veth {
            name: name.to_string(),
            peer: None,
            domain,
            vnet_hdr: true,
        }
    }
    /// A VXLAN port on the standard UDP port.
    pub fn vxlan(name: &str, local: Ipv4Addr, remote: Ipv4Addr, vni: Option<u32>) -> Self {
        PortSpec::Vxlan {
            name: name.to_string(),
            local,
            remote,
            vni,
            dst_port: vxlan::VXLAN_PORT,
            flow_keyed: false,
        }
    }
    /// The port name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Tap { name, .. }
            | PortSpec::Internal { name, .. }
            | PortSpec::Veth { name, .. }
            | PortSpec::Vxlan { name, .. } => name,
        }
    }
}

/// The peer name of a veth port: the one given, else the port name + "p" (a 15-byte name
/// loses its last character first, so the default always fits an interface name).
pub fn veth_peer_name(name: &str, peer: Option<&str>) -> String {
    if let Some(p) = peer {
        return p.to_string();
    }
    let mut end = name.len().min(14);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}p", &name[..end])
}

/// Whether [`DataplaneConfig::default`] turns the fast path on (`strata serve --no-fastpath`
/// turns it off for every switch the daemon starts).
static FASTPATH_DEFAULT: AtomicBool = AtomicBool::new(true);

/// Sets the default of [`DataplaneConfig::fastpath`] for dataplanes configured from now on.
pub fn set_fastpath_default(on: bool) {
    FASTPATH_DEFAULT.store(on, Ordering::Relaxed);
}

/// Dataplane configuration.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Outer UDP source ports of VXLAN output: each inner flow's hash is mapped into this
    /// range (RFC 7348 section 5; 49152-65535 by default).
    pub vxlan_src_ports: SourcePorts,
    /// Engine configuration.
    pub switch: SwitchConfig,
    /// Network namespace to run in (a path such as `/var/run/netns/NAME`): devices and sockets
    /// are opened there. None = the caller's namespace.
    pub netns: Option<PathBuf>,
    /// Frames read from one port per wake-up before the others get a turn (0 = 64).
    pub batch: usize,
    /// Forwarding threads (0 = one per CPU, at most [`MAX_THREADS`]). Each reads its own queue
    /// of every TAP port; all share one switch.
    pub threads: usize,
    /// Forward established flows between veth ports in the kernel (the eBPF fast path,
    /// docs/net-engine.md). Loaded at the first veth port; if it cannot be loaded the ports
    /// use the slow path (one log line). On by default ([`set_fastpath_default`]).
    pub fastpath: bool,
    /// Load the fast path's programs from this object file instead of the embedded one
    /// (default: the `STRATA_BPF_OBJECT` environment variable, if set).
    pub bpf_object: Option<PathBuf>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            vxlan_src_ports: SourcePorts::default(),
            switch: SwitchConfig::default(),
            netns: None,
            batch: 0,
            threads: 0,
            fastpath: FASTPATH_DEFAULT.load(Ordering::Relaxed),
            bpf_object: std::env::var_os(crate::fastpath::object::OBJECT_ENV).map(PathBuf::from),
        }
    }
}

/// Most forwarding threads `DataplaneConfig::threads = 0` starts.
pub const MAX_THREADS: usize = 4;

impl DataplaneConfig {
    /// Threads this configuration starts.
    pub fn thread_count(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
            n => n,
        }
    }
}
