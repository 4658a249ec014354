//! Networks, subnets and routers: the address spaces and how they connect.

use super::*;

impl Controller {
    /// Creates a network (a VPC): its range, a VNI and a conntrack zone.
    pub fn create_network(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
        cidr: Ipv4Net,
        external: bool,
    ) -> Result<Network, ControlError> {
        if external {
            Self::require(p, Role::Admin)?;
        }
        let tenant = self.creating_tenant(p, tenant)?;
        validate_name("name", name)?;
        // `10.0.0.1/16` names `10.0.0.0/16`: host bits are cleared.
        let cidr = cidr.trunc();
        ipam::check_network(cidr).map_err(|e| ipam_err("cidr", e))?;
        let mut st = self.vpc_write()?;
        if st
            .topo
            .networks
            .values()
            .any(|n| n.tenant == tenant && n.name == name)
        {
            return Err(ControlError::exists(Resource::Network, name));
        }
        let vnis: BTreeSet<u32> = st.topo.networks.values().map(|n| n.vni).collect();
        let zones = Self::zones(&st.topo);
        let vni =
            ipam::lowest_free(&vnis, VNI_FIRST, VNI_LAST).ok_or_else(|| ControlError::InUse {
                what: InUse::AddressInUse,
                message: "no VNI is free".into(),
            })?;
        let zone = ipam::lowest_free(&zones, 1, u32::from(u16::MAX)).ok_or_else(|| {
            ControlError::InUse {
                what: InUse::AddressInUse,
                message: "no conntrack zone is free".into(),
            }
        })? as u16;
        let n = Network {
            id: new_id(),
            tenant: tenant.clone(),
            name: name.to_string(),
            cidr,
            vni,
            zone,
            external,
            cap_bps: None,
            created: now(),
            generation: 1,
        };
        self.with_tenant(&tenant, |t| {
            charge(
                t,
                Charge::default(),
                Charge {
                    networks: 1,
                    ..Charge::default()
                },
            )?;
            let nk = name_key("network", &tenant, name);
            let txn = Txn::new().when(nk.clone(), 0).put(nk, enc(&n.id));
            Ok((Self::vpc_put(txn, "networks", &n.id, &n), ()))
        })?;
        st.topo.networks.insert(n.id.clone(), n.clone());
        Self::recompile(&mut st, &[Change::Network(n.id.clone())])?;
        Ok(n)
    }

    /// Networks the caller sees (an admin: all, or one tenant's).
    pub fn list_networks(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<Network>, ControlError> {
        self.tenant_scope(p, tenant)?;
        let st = self.vpc_lock();
        Ok(seen(p, tenant, st.topo.networks.values(), |x| &x.tenant))
    }

    /// A network by id or name.
    pub fn get_network(&self, p: &Principal, id: &str) -> Result<Network, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_network(&st, p, id).cloned()
    }

    /// Deletes an empty network.
    pub fn delete_network(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let n = Self::find_network(&st, p, id)?.clone();
        let t = &st.topo;
        if t.subnets.values().any(|s| s.network == n.id)
            || t.routers.values().any(|r| r.network == n.id)
            || t.ports.values().any(|x| x.network == n.id)
        {
            return Err(ControlError::InUse {
                what: InUse::NetworkNotEmpty,
                message: format!("network {} still has subnets, ports or routers", n.name),
            });
        }
        self.with_tenant(&n.tenant, |t| {
            charge(
                t,
                Charge {
                    networks: 1,
                    ..Charge::default()
                },
                Charge::default(),
            )?;
            Ok((
                Txn::new()
                    .delete(key("networks", &n.id))
                    .delete(name_key("network", &n.tenant, &n.name)),
                (),
            ))
        })?;
        st.topo.networks.remove(&n.id);
        Self::recompile(&mut st, &[Change::Network(n.id)])
    }

    /// Creates a subnet of a network.
    pub fn create_subnet(
        &self,
        p: &Principal,
        network: &str,
        req: NewSubnet,
    ) -> Result<Subnet, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        let mut st = self.vpc_write()?;
        let n = Self::find_network(&st, p, network)?.clone();
        let t = &st.topo;
        if t.subnets
            .values()
            .any(|s| s.network == n.id && s.name == req.name)
        {
            return Err(ControlError::exists(Resource::Subnet, &req.name));
        }
        let others: Vec<Ipv4Net> = t
            .subnets
            .values()
            .filter(|s| s.network == n.id)
            .map(|s| s.cidr)
            .collect();
        let req = NewSubnet {
            cidr: req.cidr.trunc(),
            ..req
        };
        ipam::check_subnet(n.cidr, &others, req.cidr).map_err(|e| ipam_err("cidr", e))?;
        let gateway = req
            .gateway
            .unwrap_or_else(|| ipam::default_gateway(req.cidr));
        ipam::check_host(req.cidr, gateway).map_err(|e| ipam_err("gateway", e))?;
        let keys: BTreeSet<u32> = t.subnets.values().map(|s| s.key).collect();
        let macs = Self::macs(t);
        let id = new_id();
        let s = Subnet {
            id: id.clone(),
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            name: req.name.clone(),
            cidr: req.cidr,
            gateway,
            gateway_mac: ipam::allocate_mac(ipam::fnv(&id), &macs),
            dhcp: req.dhcp,
            dns: req.dns,
            key: ipam::lowest_free(&keys, 1, u32::MAX).unwrap_or(u32::MAX),
            created: now(),
            generation: 1,
        };
        let nk = name_key("subnet", &n.id, &s.name);
        let txn = Self::vpc_put(
            Txn::new().when(nk.clone(), 0).put(nk, enc(&s.id)),
            "subnets",
            &s.id,
            &s,
        );
        self.commit_vpc(txn)?;
        st.topo.subnets.insert(s.id.clone(), s.clone());
        Self::recompile(&mut st, &[Change::Subnet(s.id.clone())])?;
        Ok(s)
    }

    pub(in crate::controller) fn commit_vpc(&self, txn: Txn) -> Result<(), ControlError> {
        if self.store.txn(txn)?.succeeded {
            Ok(())
        } else {
            Err(ControlError::Busy(
                "the network state was changed by another writer; retry".into(),
            ))
        }
    }
    /// Conntrack zones in use: networks' and routers' NAT.
    pub(in crate::controller) fn zones(t: &Topology) -> BTreeSet<u32> {
        t.networks
            .values()
            .map(|n| u32::from(n.zone))
            .chain(
                t.routers
                    .values()
                    .filter_map(|r| r.gateway.as_ref().map(|g| u32::from(g.zone))),
            )
            .collect()
    }

    /// Addresses of a subnet in use: ports, router legs and floating IPs.
    pub(in crate::controller) fn used_ips(t: &Topology, subnet: &str) -> BTreeSet<Ipv4Addr> {
        t.ports
            .values()
            .filter(|x| x.subnet == subnet)
            .map(|x| x.ip)
            .chain(t.routers.values().filter_map(|r| {
                r.gateway
                    .as_ref()
                    .filter(|g| g.subnet == subnet)
                    .map(|g| g.ip)
            }))
            .chain(
                t.floating_ips
                    .values()
                    .filter(|f| f.subnet == subnet)
                    .map(|f| f.ip),
            )
            // Load balancers' VIPs.
            .chain(
                t.load_balancers
                    .values()
                    .filter(|l| l.subnet == subnet)
                    .map(|l| l.vip),
            )
            .collect()
    }

    pub(in crate::controller) fn macs(t: &Topology) -> BTreeSet<[u8; 6]> {
        t.ports
            .values()
            .map(|p| p.mac)
            .chain(t.subnets.values().map(|s| s.gateway_mac))
            .chain(
                t.routers
                    .values()
                    .filter_map(|r| r.gateway.as_ref().map(|g| g.mac)),
            )
            .collect()
    }

    /// Subnets of a network.
    pub fn list_subnets(&self, p: &Principal, network: &str) -> Result<Vec<Subnet>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(of_network(&n.id, st.topo.subnets.values(), |x| &x.network))
    }

    /// A subnet by id (or name within the caller's tenant).
    pub fn get_subnet(&self, p: &Principal, id: &str) -> Result<Subnet, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_subnet(&st, p, None, id).cloned()
    }

    /// Deletes a subnet no port or router uses.
    pub fn delete_subnet(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let s = Self::find_subnet(&st, p, None, id)?.clone();
        if st.topo.ports.values().any(|x| x.subnet == s.id)
            || st.topo.routers.values().any(|r| {
                r.subnets.contains(&s.id) || r.gateway.as_ref().is_some_and(|g| g.subnet == s.id)
            })
            || st.topo.floating_ips.values().any(|f| f.subnet == s.id)
        {
            return Err(ControlError::InUse {
                what: InUse::NetworkNotEmpty,
                message: format!("subnet {} still has ports or a router", s.name),
            });
        }
        self.commit_vpc(
            Txn::new()
                .delete(key("subnets", &s.id))
                .delete(name_key("subnet", &s.network, &s.name)),
        )?;
        st.topo.subnets.remove(&s.id);
        Self::recompile(&mut st, &[Change::Subnet(s.id)])
    }

    pub(in crate::controller) fn check_router_subnets(
        st: &VpcState,
        p: &Principal,
        n: &Network,
        router: Option<&str>,
        subnets: &[String],
    ) -> Result<Vec<String>, ControlError> {
        let mut out = Vec::new();
        for s in subnets {
            let sub = Self::find_subnet(st, p, Some(&n.id), s)
                .map_err(ControlError::named_by("subnets"))?;
            if sub.network != n.id {
                return Err(conflict(format!(
                    "subnet {} is not of network {}",
                    sub.name, n.name
                )));
            }
            if let Some(other) = st
                .topo
                .routers
                .values()
                .find(|r| Some(r.id.as_str()) != router && r.subnets.contains(&sub.id))
            {
                return Err(ControlError::InUse {
                    what: InUse::AddressInUse,
                    message: format!("subnet {} is on router {} already", sub.name, other.name),
                });
            }
            if !out.contains(&sub.id) {
                out.push(sub.id.clone());
            }
        }
        Ok(out)
    }

    /// Creates a router connecting subnets of one network.
    pub fn create_router(
        &self,
        p: &Principal,
        network: &str,
        name: &str,
        subnets: &[String],
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", name)?;
        let mut st = self.vpc_write()?;
        let n = Self::find_network(&st, p, network)?.clone();
        if st
            .topo
            .routers
            .values()
            .any(|r| r.network == n.id && r.name == name)
        {
            return Err(ControlError::exists(Resource::Router, name));
        }
        let subs = Self::check_router_subnets(&st, p, &n, None, subnets)?;
        let r = Router {
            id: new_id(),
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            name: name.to_string(),
            subnets: subs,
            gateway: None,
            created: now(),
            generation: 1,
        };
        let nk = name_key("router", &n.id, name);
        self.commit_vpc(Self::vpc_put(
            Txn::new().when(nk.clone(), 0).put(nk, enc(&r.id)),
            "routers",
            &r.id,
            &r,
        ))?;
        st.topo.routers.insert(r.id.clone(), r.clone());
        Self::recompile(&mut st, &[Change::Router(r.id.clone())])?;
        Ok(r)
    }

    /// Sets the subnets a router connects.
    pub fn set_router_subnets(
        &self,
        p: &Principal,
        id: &str,
        subnets: &[String],
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut r = Self::find_router(&st, p, id)?.clone();
        let n = st.topo.networks[&r.network].clone();
        r.subnets = Self::check_router_subnets(&st, p, &n, Some(&r.id), subnets)?;
        self.update_record(&mut st, r)
    }

    /// Routers of a network.
    pub fn list_routers(&self, p: &Principal, network: &str) -> Result<Vec<Router>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(of_network(&n.id, st.topo.routers.values(), |x| &x.network))
    }

    /// A router by id (or name within the caller's tenant).
    pub fn get_router(&self, p: &Principal, id: &str) -> Result<Router, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_router(&st, p, id).cloned()
    }

    /// Deletes a router.
    pub fn delete_router(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let r = Self::find_router(&st, p, id)?.clone();
        self.commit_vpc(
            Txn::new()
                .delete(key("routers", &r.id))
                .delete(name_key("router", &r.network, &r.name)),
        )?;
        st.topo.routers.remove(&r.id);
        Self::recompile(&mut st, &[Change::Router(r.id)])
    }
}
