//! Ports: an address, a MAC and a device on a node (this one unless the request names
//! another node of the cluster: then that node's agent opens it, `mesh.rs`), with their
//! groups.

use super::*;

impl Controller {
    /// Creates a port on a subnet: its address and MAC, a TAP on this node, its flows. The
    /// name of the load balancers' monitor port is reserved: a tenant's port of that name
    /// would be taken for the monitor and given its implicit allows.
    pub fn create_port(
        &self,
        p: &Principal,
        network: &str,
        req: NewPort,
    ) -> Result<Port, ControlError> {
        if req.name == MONITOR_PORT {
            Self::require(p, Role::Member)?;
            return Err(ControlError::invalid(
                "name",
                format!("{MONITOR_PORT} is reserved for the load balancers' health checks"),
            ));
        }
        self.make_port(p, network, req)
    }

    /// [`Controller::create_port`] without the reserved-name check (the monitor port is made
    /// here too).
    pub(super) fn make_port(
        &self,
        p: &Principal,
        network: &str,
        req: NewPort,
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        let node = self.port_node(req.node.as_deref())?;
        let mut st = self.vpc_write()?;
        let n = Self::find_network(&st, p, network)?.clone();
        let s = Self::find_subnet(&st, p, Some(&n.id), &req.subnet)
            .map_err(ControlError::named_by("subnet"))?
            .clone();
        if s.network != n.id {
            return Err(conflict(format!(
                "subnet {} is not of network {}",
                s.name, n.name
            )));
        }
        if st
            .topo
            .ports
            .values()
            .any(|x| x.network == n.id && x.name == req.name)
        {
            return Err(ControlError::exists(Resource::NetworkPort, &req.name));
        }
        let used = Self::used_ips(&st.topo, &s.id);
        let ip = match req.ip {
            Some(ip) => {
                ipam::check_port_ip(s.cidr, s.gateway, &used, ip).map_err(|e| ipam_err("ip", e))?;
                ip
            }
            None => ipam::allocate_ip(s.cidr, s.gateway, &used).map_err(|e| ipam_err("ip", e))?,
        };
        let macs = Self::macs(&st.topo);
        let id = new_id();
        let mac = match &req.mac {
            Some(m) => {
                let m = ipam::parse_mac(m).map_err(|e| ipam_err("mac", e))?;
                if macs.contains(&m) {
                    return Err(ControlError::InUse {
                        what: InUse::AddressInUse,
                        message: format!("MAC {} is in use", fmt_mac(&m)),
                    });
                }
                m
            }
            None => ipam::allocate_mac(ipam::fnv(&id), &macs),
        };
        let groups = match &req.security_groups {
            // The outside is not filtered (its ports stand for it).
            _ if n.external => Vec::new(),
            Some(gs) if !gs.is_empty() => {
                let mut out = Vec::new();
                for g in gs {
                    let gid = Self::tenant_group(&st, p, &n.tenant, g)
                        .map_err(ControlError::named_by("security_groups"))?;
                    if !out.contains(&gid) {
                        out.push(gid);
                    }
                }
                out
            }
            _ => vec![self.default_group(&mut st, &n.tenant)?],
        };
        // The device is named after a hash of the id, moved on past a name another port
        // (or the host) has: two ports never share a device.
        let mut seed = ipam::fnv(&id) as u32;
        let device = loop {
            let d = format!("sp{seed:08x}");
            if !Self::ifname_taken(&st.topo, &d) {
                break d;
            }
            seed = seed.wrapping_add(1);
        };
        let veth_peer = match req.veth_peer.as_deref() {
            None => None,
            Some(given) => {
                let peer = strata_dataplane::veth_peer_name(
                    &device,
                    Some(given).filter(|g| !g.is_empty()),
                );
                if !crate::net::valid_ifname(&peer) || peer == device {
                    return Err(ControlError::invalid(
                        "peer",
                        "a veth peer name is 1 to 15 letters, digits, '-', '_' or '.'",
                    ));
                }
                if Self::ifname_taken(&st.topo, &peer) {
                    return Err(ControlError::InUse {
                        what: InUse::AddressInUse,
                        message: format!("interface name {peer} is taken on this node"),
                    });
                }
                Some(peer)
            }
        };
        let port = Port {
            device,
            id,
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            subnet: s.id.clone(),
            name: req.name.clone(),
            mac,
            ip,
            security_groups: groups,
            veth_peer,
            cap_bps: None,
            min_bps: None,
            created: now(),
            generation: 1,
            node: Some(node),
        };
        // The device first: one that cannot be opened refuses the port. A port of another
        // node is reached through the tunnel to it (made once that node has an address).
        let here = self.is_here(&port);
        let of = if here {
            Some(Self::open_device(&mut st, &port)?)
        } else {
            None
        };
        let stored = self.with_tenant(&n.tenant, |t| {
            charge(
                t,
                Charge::default(),
                Charge {
                    ports: 1,
                    ..Charge::default()
                },
            )?;
            let nk = name_key("port", &n.id, &port.name);
            let txn = Txn::new().when(nk.clone(), 0).put(nk, enc(&port.id));
            Ok((Self::vpc_put(txn, "ports", &port.id, &port), ()))
        });
        if let Err(e) = stored {
            if let (Some(dp), true) = (&st.dp, here) {
                let _ = dp.remove_port(&port.device);
            }
            return Err(e);
        }
        st.topo.ports.insert(port.id.clone(), port.clone());
        match of {
            Some(of) => {
                st.topo.bound.insert(port.id.clone(), of);
            }
            None => {
                if let Err(e) = self.bind_port(&mut st, &port) {
                    tracing::warn!(port = %port.name, %e, "the tunnel to the port's node");
                }
            }
        }
        Self::recompile(&mut st, &[Change::Port(port.id.clone())])?;
        Ok(port)
    }

    /// Where a port for a job's part on `node` goes: that node when it runs a switch of this
    /// cluster (a registered node, on a store shared by nodes), else this node (one machine,
    /// or a part on a node declared for planning).
    pub(in crate::controller) fn switch_node(&self, node: &str) -> Option<String> {
        self.port_node(Some(node)).ok()
    }

    /// The node a new port goes on: this one by default; another only on a store shared by
    /// nodes, and only a node that registered (a declared, hypothetical node has no switch).
    fn port_node(&self, asked: Option<&str>) -> Result<String, ControlError> {
        let Some(n) = asked.filter(|n| *n != self.node) else {
            return Ok(self.node.clone());
        };
        if self.store.leases().is_none() {
            // 409, not 400: the body is valid; this daemon's state refuses it.
            return Err(conflict(format!(
                "this daemon runs alone (no cluster store): its ports are on node {}",
                self.node
            )));
        }
        match self
            .get::<crate::controller::nodes::NodeRecord>(&crate::controller::nodes::node_key(n))?
        {
            Some((r, _)) if !r.hypothetical => Ok(n.to_string()),
            Some(_) => Err(conflict(format!(
                "node {n} is declared for planning: no switch runs there"
            ))),
            None => Err(ControlError::not_found(Resource::Node, n)),
        }
    }

    /// True if `name` is a device or veth peer of a port, or an interface of this node.
    fn ifname_taken(topo: &Topology, name: &str) -> bool {
        topo.ports
            .values()
            .any(|x| x.device == name || x.veth_peer.as_deref() == Some(name))
            || std::path::Path::new("/sys/class/net").join(name).exists()
    }

    /// Ports of a network.
    pub fn list_ports(&self, p: &Principal, network: &str) -> Result<Vec<Port>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(of_network(&n.id, st.topo.ports.values(), |x| &x.network))
    }

    /// A port by id (or name within the caller's tenant).
    pub fn get_port(&self, p: &Principal, id: &str) -> Result<Port, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_port(&st, p, id).cloned()
    }

    /// Sets a port's security groups.
    pub fn set_port_groups(
        &self,
        p: &Principal,
        id: &str,
        groups: &[String],
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut port = Self::find_port(&st, p, id)?.clone();
        let mut ids = Vec::new();
        for g in groups {
            let gid = Self::tenant_group(&st, p, &port.tenant, g)
                .map_err(ControlError::named_by("security_groups"))?;
            if !ids.contains(&gid) {
                ids.push(gid);
            }
        }
        if ids.is_empty() {
            ids.push(self.default_group(&mut st, &port.tenant)?);
        }
        port.security_groups = ids;
        self.update_record(&mut st, port)
    }

    /// Deletes a port: its flows, its record, its TAP.
    pub fn delete_port(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let port = Self::find_port(&st, p, id)?.clone();
        if port.name == MONITOR_PORT
            && st
                .topo
                .load_balancers
                .values()
                .any(|l| l.network == port.network && l.health.active())
        {
            return Err(ControlError::InUse {
                what: InUse::PortInUse,
                message: format!(
                    "{MONITOR_PORT} is where the network's health checks come from: it goes \
                     with the last health-checked load balancer"
                ),
            });
        }
        // Its floating IPs stay allocated, no longer associated (as Neutron does).
        let fips: Vec<FloatingIp> = st
            .topo
            .floating_ips
            .values()
            .filter(|f| f.port.as_deref() == Some(port.id.as_str()))
            .map(|f| FloatingIp {
                port: None,
                generation: f.generation + 1,
                ..f.clone()
            })
            .collect();
        self.with_tenant(&port.tenant, |t| {
            charge(
                t,
                Charge {
                    ports: 1,
                    ..Charge::default()
                },
                Charge::default(),
            )?;
            let mut txn = Txn::new().delete(key("ports", &port.id)).delete(name_key(
                "port",
                &port.network,
                &port.name,
            ));
            for f in &fips {
                txn = Self::vpc_put(txn, "floating-ips", &f.id, f);
            }
            Ok((txn, ()))
        })?;
        st.topo.ports.remove(&port.id);
        // Its flows go before its device or tunnel (a port of another node is deleted here
        // too: its node closes its device when it sees the record gone).
        let (bound, remote) = (
            st.topo.bound.remove(&port.id),
            st.topo.remote.remove(&port.id),
        );
        let mut changes = vec![Change::Port(port.id.clone())];
        for f in fips {
            changes.push(Change::FloatingIp(f.id.clone()));
            st.topo.floating_ips.insert(f.id.clone(), f);
        }
        Self::recompile(&mut st, &changes)?;
        if let Some(of) = bound {
            st.topo.bound.insert(port.id.clone(), of);
        }
        if let Some(of) = remote {
            st.topo.remote.insert(port.id.clone(), of);
        }
        Self::unbind_port(&mut st, &port);
        Ok(())
    }
}
