//! The outside: router legs on external networks (SNAT) and floating IPs.

use super::*;

impl Controller {
    /// An external network (the admin's, seen by every tenant) and the subnet its addresses
    /// come from (its first).
    pub(in crate::controller) fn external_subnet(
        st: &VpcState,
        network: &str,
    ) -> Result<(Network, Subnet), ControlError> {
        let n = st
            .topo
            .networks
            .values()
            .find(|n| n.external && (n.id == network || n.name == network))
            .cloned()
            .ok_or_else(|| ControlError::not_found(Resource::Network, network))?;
        let s = st
            .topo
            .subnets
            .values()
            .filter(|s| s.network == n.id)
            .min_by_key(|s| (s.created, s.key))
            .cloned()
            .ok_or_else(|| conflict(format!("external network {} has no subnet", n.name)))?;
        Ok((n, s))
    }

    /// Gives a router a leg on an external network (an address there, SNAT of its subnets
    /// behind it), or takes it away (`None`).
    pub fn set_router_gateway(
        &self,
        p: &Principal,
        id: &str,
        network: Option<&str>,
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut r = Self::find_router(&st, p, id)?.clone();
        r.gateway = match network {
            None => None,
            Some(net) => {
                let (n, s) = Self::external_subnet(&st, net)?;
                if r.gateway.as_ref().is_some_and(|g| g.network == n.id) {
                    return Ok(r);
                }
                let ip = ipam::allocate_ip(s.cidr, s.gateway, &Self::used_ips(&st.topo, &s.id))
                    .map_err(|e| ipam_err("network", e))?;
                let zone = ipam::lowest_free(&Self::zones(&st.topo), 1, u32::from(u16::MAX))
                    .ok_or_else(|| ControlError::InUse {
                        what: InUse::AddressInUse,
                        message: "no conntrack zone is free".into(),
                    })? as u16;
                let seed = ipam::fnv(&format!("{}-gateway", r.id));
                Some(RouterGateway {
                    network: n.id.clone(),
                    subnet: s.id.clone(),
                    ip,
                    mac: ipam::allocate_mac(seed, &Self::macs(&st.topo)),
                    zone,
                })
            }
        };
        if r.gateway.is_none() {
            let leg: Vec<&FloatingIp> = st
                .topo
                .floating_ips
                .values()
                .filter(|f| {
                    f.port
                        .as_ref()
                        .and_then(|x| st.topo.ports.get(x))
                        .is_some_and(|x| r.subnets.contains(&x.subnet))
                })
                .collect();
            if let Some(f) = leg.first() {
                return Err(ControlError::InUse {
                    what: InUse::AddressInUse,
                    message: format!("floating IP {} needs the router's leg; free it first", f.ip),
                });
            }
        }
        self.update_record(&mut st, r)
    }

    pub(in crate::controller) fn find_fip<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a FloatingIp, ControlError> {
        st.topo
            .floating_ips
            .get(id)
            .or_else(|| {
                st.topo.floating_ips.values().find(|f| {
                    f.ip.to_string() == id && p.tenant.as_deref().is_none_or(|own| own == f.tenant)
                })
            })
            .filter(|f| Self::sees(p, &f.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::FloatingIp, id))
    }

    /// The port a floating IP of `network` may map to: the tenant's, on a subnet of a router
    /// with a leg on that network, and with no other floating IP.
    pub(in crate::controller) fn fip_port(
        st: &VpcState,
        p: &Principal,
        network: &str,
        tenant: &str,
        port: &str,
        this: Option<&str>,
    ) -> Result<String, ControlError> {
        let x = Self::find_port(st, p, port).map_err(ControlError::named_by("port"))?;
        if x.tenant != tenant {
            return Err(conflict(format!(
                "port {} is tenant {}'s, not {tenant}'s",
                x.name, x.tenant
            )));
        }
        let routed = st.topo.routers.values().any(|r| {
            r.subnets.contains(&x.subnet)
                && r.gateway.as_ref().is_some_and(|g| g.network == network)
        });
        if !routed {
            return Err(conflict(format!(
                "port {} is on no subnet of a router with a leg on that external network",
                x.name
            )));
        }
        if let Some(o) = st
            .topo
            .floating_ips
            .values()
            .find(|f| f.port.as_deref() == Some(x.id.as_str()) && Some(f.id.as_str()) != this)
        {
            return Err(ControlError::InUse {
                what: InUse::AddressInUse,
                message: format!("port {} has floating IP {} already", x.name, o.ip),
            });
        }
        Ok(x.id.clone())
    }

    /// Allocates a floating IP on an external network, mapped to a port if one is given.
    pub fn create_floating_ip(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        network: &str,
        port: Option<&str>,
    ) -> Result<FloatingIp, ControlError> {
        let tenant = self.creating_tenant(p, tenant)?;
        let mut st = self.vpc_write()?;
        let (n, s) = Self::external_subnet(&st, network)?;
        let port = port
            .map(|x| Self::fip_port(&st, p, &n.id, &tenant, x, None))
            .transpose()?;
        let ip = ipam::allocate_ip(s.cidr, s.gateway, &Self::used_ips(&st.topo, &s.id))
            .map_err(|e| ipam_err("network", e))?;
        let f = FloatingIp {
            id: new_id(),
            tenant,
            network: n.id.clone(),
            subnet: s.id.clone(),
            ip,
            port,
            load_balancer: None,
            created: now(),
            generation: 1,
        };
        self.commit_vpc(Self::vpc_put(
            Txn::new().when(key("floating-ips", &f.id), 0),
            "floating-ips",
            &f.id,
            &f,
        ))?;
        st.topo.floating_ips.insert(f.id.clone(), f.clone());
        Self::recompile(&mut st, &[Change::FloatingIp(f.id.clone())])?;
        Ok(f)
    }

    /// Maps a floating IP to a port, or frees it of one (`None`).
    pub fn associate_floating_ip(
        &self,
        p: &Principal,
        id: &str,
        port: Option<&str>,
    ) -> Result<FloatingIp, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut f = Self::find_fip(&st, p, id)?.clone();
        f.port = port
            .map(|x| Self::fip_port(&st, p, &f.network, &f.tenant, x, Some(&f.id)))
            .transpose()?;
        f.load_balancer = None;
        self.update_record(&mut st, f)
    }

    /// Floating IPs the caller sees.
    pub fn list_floating_ips(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<FloatingIp>, ControlError> {
        self.tenant_scope(p, tenant)?;
        let st = self.vpc_lock();
        Ok(seen(p, tenant, st.topo.floating_ips.values(), |x| {
            &x.tenant
        }))
    }

    /// A floating IP by id or address.
    pub fn get_floating_ip(&self, p: &Principal, id: &str) -> Result<FloatingIp, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_fip(&st, p, id).cloned()
    }

    /// Releases a floating IP.
    pub fn delete_floating_ip(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let f = Self::find_fip(&st, p, id)?.clone();
        self.commit_vpc(Txn::new().delete(key("floating-ips", &f.id)))?;
        st.topo.floating_ips.remove(&f.id);
        Self::recompile(&mut st, &[Change::FloatingIp(f.id)])
    }
}
