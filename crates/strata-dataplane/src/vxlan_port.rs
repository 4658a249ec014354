//! VXLAN ports: the receive socket (a UDP socket bound to `local:dst_port`, shared by the
//! ports of one local address and port, read by the leader only) and the sender of each port
//! ([`crate::encap::VxlanTx`]). A datagram goes to the port whose remote address sent it;
//! others are counted in `unknown_tunnel_remote`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use strata_net::gso::VirtioNetHdr;
use strata_net::key::PortNo;
use strata_net::switch::PortConfig;
use strata_net::vxlan::{self, VxlanTunnel};
use strata_net::Ingress;

use crate::deliver::deliver;
use crate::encap::VxlanTx;
use crate::error::DataplaneError;
use crate::port::{Bufs, Dev, PortIo, VxSock};
use crate::stats::PortIoStats;
use crate::sys;
use crate::worker::{Worker, TOKEN_UDP};

impl Worker {
    pub(crate) fn add_vxlan(
        &mut self,
        name: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        vni: Option<u32>,
        port: u16,
        flow_keyed: bool,
    ) -> Result<PortNo, DataplaneError> {
        let laddr = SocketAddrV4::new(local, port);
        let threads = self.threads();
        let epoll_fd = &self.epoll;
        let lead = self.lead.as_mut().expect("only the leader serves control");
        let idx = match lead
            .socks
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.local == laddr))
        {
            Some(i) => {
                let s = lead.socks[i].as_ref().expect("position found it");
                if s.members.iter().any(|m| m.0 == remote) {
                    return Err(DataplaneError::DuplicateRemote(remote));
                }
                i
            }
            None => {
                let sock = sys::vxlan_socket(local, port)
                    .map_err(|e| DataplaneError::io(format!("binding UDP {laddr}"), e))?;
                let i = lead
                    .socks
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(lead.socks.len());
                epoll_fd
                    .add(sock.as_raw_fd(), TOKEN_UDP | i as u64)
                    .map_err(|e| DataplaneError::io("epoll", e))?;
                let vs = VxSock {
                    sock,
                    local: laddr,
                    members: Vec::new(),
                };
                if i == lead.socks.len() {
                    lead.socks.push(Some(vs));
                } else {
                    lead.socks[i] = Some(vs);
                }
                i
            }
        };
        let src_ports = lead.src_ports;
        let tx = match VxlanTx::open(local, remote, port, src_ports) {
            Ok(tx) => Arc::new(tx),
            Err(e) => {
                self.release_sock(idx);
                return Err(DataplaneError::io("opening a raw IP socket", e));
            }
        };
        let mut t = VxlanTunnel::new(local, remote);
        t.dst_port = port;
        t.flow_keyed = flow_keyed && vni.is_none();
        let added = self.shared.lock().add_port(PortConfig::vxlan(name, t, vni));
        let no = match added {
            Ok(n) => n,
            Err(e) => {
                self.release_sock(idx);
                return Err(e.into());
            }
        };
        if let Some(s) = self.lead().socks[idx].as_mut() {
            s.members.push((remote, no));
        }
        let devs = (0..threads)
            .map(|_| PortIo {
                dev: Dev::Vxlan {
                    tx: tx.clone(),
                    idx,
                },
                rx: false,
                io: PortIoStats::default(),
            })
            .collect();
        drop(tx);
        if let Err(e) = self.install(no, devs) {
            let _ = self.shared.lock().remove_port(name);
            if let Some(s) = self.lead().socks[idx].as_mut() {
                s.members.retain(|m| m.1 != no);
            }
            self.release_sock(idx);
            return Err(e);
        }
        Ok(no)
    }

    /// Closes socket `idx` if no port uses it any more.
    pub(crate) fn release_sock(&mut self, idx: usize) {
        let epoll = &self.epoll;
        let lead = self.lead.as_mut().expect("only the leader serves control");
        if let Some(s) = lead.socks.get_mut(idx) {
            if s.as_ref().is_some_and(|v| v.members.is_empty()) {
                if let Some(v) = s.take() {
                    let _ = epoll.delete(v.sock.as_raw_fd());
                }
            }
        }
    }

    /// Reads up to `batch` datagrams from VXLAN socket `idx` and forwards each inner frame.
    pub(crate) fn rx_udp(&mut self, idx: usize) {
        for _ in 0..self.batch {
            let Some(lead) = self.lead.as_mut() else {
                return;
            };
            let Some(Some(vs)) = lead.socks.get(idx) else {
                return;
            };
            let (n, src) = match sys::recv_datagram(&vs.sock, &mut self.bufs.rx) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "VXLAN socket read failed");
                    return;
                }
            };
            self.rx_frames += 1;
            let Some(no) = vs.members.iter().find(|m| m.0 == *src.ip()).map(|m| m.1) else {
                lead.unknown_tunnel_remote += 1;
                continue;
            };
            if let Some(p) = self.ports.get_mut(&no) {
                p.io.syscalls += 1;
            }
            let Bufs { rx, fx, tx } = &mut self.bufs;
            let (vni, inner) = match vxlan::decap_payload(&rx[..n]) {
                Ok(x) => x,
                Err(_) => {
                    if let Some(p) = self.ports.get_mut(&no) {
                        p.io.rx_errors += 1;
                    }
                    continue;
                }
            };
            fx.clear();
            let gen = {
                let mut sw = self.shared.lock();
                let now = self.shared.now();
                sw.receive(now, Ingress::vxlan(no, vni), inner, fx);
                sw.generation()
            };
            self.shared.fast_sync(gen);
            if !fx.is_empty() {
                deliver(&mut self.ports, fx, tx, &VirtioNetHdr::default(), inner);
            }
        }
    }
}
