//! Integration tests of the port layer against real devices and real peers (one binary,
//! modules per area). They need root; each test makes and deletes its own namespaces.

mod dataplane;
mod encap;
mod fastpath;
mod fastpath_ct;
mod fastpath_vxlan;
mod meterbed;
mod meters;
mod netenv;
mod responders;
mod veth;
