//! Why a dataplane operation failed, with a stable code per variant.

use std::io;
use std::net::Ipv4Addr;

use strata_net::switch::PortError;
use strata_net::FlowParseError;

/// Why a dataplane operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// A system call failed (opening a device, binding a socket, entering a namespace).
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The switch refused the port.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A flow did not parse or validate.
    #[error(transparent)]
    Flow(#[from] FlowParseError),
    /// A second VXLAN port for the same remote on one socket.
    #[error("a VXLAN port to {0} on this local address and UDP port already exists")]
    DuplicateRemote(Ipv4Addr),
    /// The VXLAN source port range is empty or starts at 0.
    #[error("VXLAN source port range {lo}-{hi} is empty or starts at 0")]
    BadSourcePorts {
        /// Lowest port asked for.
        lo: u16,
        /// Highest port asked for.
        hi: u16,
    },
    /// An interface by that name (or the veth peer's name) already exists on the host.
    #[error("an interface named {0} already exists")]
    DeviceExists(String),
    /// The dataplane thread is gone.
    #[error("the dataplane has stopped")]
    Stopped,
}

impl DataplaneError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            DataplaneError::Io { .. } => "port_io_error",
            DataplaneError::Port(e) => e.code(),
            DataplaneError::Flow(e) => e.code(),
            DataplaneError::DuplicateRemote(_) => "vxlan_remote_exists",
            DataplaneError::BadSourcePorts { .. } => "bad_vxlan_src_ports",
            // The name is taken, as for a port of the switch: the same code (409).
            DataplaneError::DeviceExists(_) => "port_exists",
            DataplaneError::Stopped => "dataplane_stopped",
        }
    }
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        DataplaneError::Io {
            what: what.into(),
            source,
        }
    }
}
