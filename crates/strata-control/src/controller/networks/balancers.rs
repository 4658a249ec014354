//! Load balancers: a VIP on a subnet, listeners with weighted backends, session affinity, an
//! active health check; the network's monitor port the probes come from; backend health as
//! the daemon's checker reports it.
//!
//! # Invariants
//! - A VIP is a host address of its subnet that no port, gateway leg, floating IP or other
//!   VIP holds (`used_ips` counts VIPs); backends are addresses of the balancer's network.
//! - Listeners' groups are unique on the node and never reused while held: the switch's group
//!   `G` is exactly listener `G`'s backends (the compiler's delta sets it before its flows).
//! - A network with a health-checked balancer has one monitor port, [`MONITOR_PORT`], on the
//!   subnet of its first such balancer; it goes when the last one does. It is a real port (it
//!   counts in the port quota): the daemon moves its TAP into the namespace
//!   `strata-mon-<network>` and probes from there with the kernel's TCP stack.
//! - A backend's health is the checker's last decision (`lb_down`); a group set again (a
//!   weight or backend change) starts all up in the engine, so the down ones are marked down
//!   again at once, in the same call.

use std::collections::BTreeSet;

use strata_vpc::health::Target;
use strata_vpc::{HealthCheck, HealthKind, LbBackend, LbListener, LbProtocol, LoadBalancer};

use super::*;

/// Name of a network's monitor port.
pub const MONITOR_PORT: &str = "lb-monitor";

/// What `create_load_balancer` is asked.
#[derive(Debug, Clone)]
pub struct NewBalancer {
    /// Name.
    pub name: String,
    /// The VIP's subnet (id or name).
    pub subnet: String,
    /// The VIP (default: the lowest free address).
    pub vip: Option<Ipv4Addr>,
    /// Listeners.
    pub listeners: Vec<NewListener>,
    /// Session affinity.
    pub session_affinity: bool,
    /// Health check.
    pub health: HealthCheck,
}

/// A listener as asked for.
#[derive(Debug, Clone)]
pub struct NewListener {
    /// Protocol.
    pub protocol: LbProtocol,
    /// The VIP's port.
    pub port: u16,
    /// Backends.
    pub backends: Vec<NewBackend>,
}

/// A backend as asked for: a port, or an address.
#[derive(Debug, Clone)]
pub struct NewBackend {
    /// A port of the network (id or name).
    pub port: Option<String>,
    /// Or an address in a subnet of the network.
    pub ip: Option<Ipv4Addr>,
    /// Port number (default: the listener's).
    pub target_port: Option<u16>,
    /// Weight.
    pub weight: u32,
}

/// A monitor port the daemon has to put in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    /// Network id.
    pub network: String,
    /// Namespace name.
    pub namespace: String,
    /// The port's TAP device.
    pub device: String,
    /// Its address and prefix length.
    pub ip: Ipv4Addr,
    /// Prefix length of its subnet.
    pub prefix: u8,
    /// Its MAC.
    pub mac: String,
    /// Its subnet's gateway (the default route).
    pub gateway: Ipv4Addr,
}

/// What the daemon's checker probes.
#[derive(Debug, Clone, Default)]
pub struct LbProbeSet {
    /// Monitor ports.
    pub monitors: Vec<MonitorSpec>,
    /// Targets, their settings, and the namespace to probe from.
    pub targets: Vec<(Target, HealthCheck, String)>,
}

/// The namespace of a network's monitor.
pub fn monitor_namespace(network: &str) -> String {
    let short: String = network.chars().filter(|c| *c != '-').take(12).collect();
    format!("strata-mon-{short}")
}

/// Sets the groups a delta names (before its flows).
pub(super) fn set_groups(sw: &mut strata_net::Switch, d: &Delta) {
    for (id, g) in &d.set_lb_groups {
        sw.set_lb_group(*id, g.backends.clone());
        sw.set_lb_affinity(*id, g.affinity);
    }
}

/// Removes the groups a delta lets go (after its flows).
pub(super) fn remove_groups(sw: &mut strata_net::Switch, d: &Delta) {
    for id in &d.remove_lb_groups {
        sw.remove_lb_group(*id);
    }
}

/// The down backends of the groups a delta sets again.
pub(super) fn regrouped(d: &Delta, down: &BTreeSet<Target>) -> Vec<Target> {
    down.iter()
        .filter(|t| d.set_lb_groups.iter().any(|(g, _)| *g == t.group))
        .copied()
        .collect()
}

/// Marks `down` down again in their (just set) groups.
pub(super) fn remark_down(dp: &Dataplane, down: Vec<Target>) -> Result<(), ControlError> {
    if down.is_empty() {
        return Ok(());
    }
    dp.with_switch(move |sw, _| {
        for t in &down {
            sw.set_lb_backend_up(t.group, t.ip, t.port, false);
        }
    })
    .map_err(dp_err)
}

fn health_conflicts(h: &HealthCheck) -> Result<(), ControlError> {
    if h.active() && h.timeout_ms >= h.interval_ms {
        return Err(conflict(format!(
            "health check timeout {} ms is not below its interval {} ms",
            h.timeout_ms, h.interval_ms
        )));
    }
    Ok(())
}

impl Controller {
    fn find_balancer<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a LoadBalancer, ControlError> {
        lookup(
            &st.topo.load_balancers,
            p,
            None,
            id,
            |_| true,
            Resource::LoadBalancer,
        )
    }

    /// Listeners as asked, checked against the network, with groups (kept from `old` for an
    /// unchanged protocol and port, else new).
    fn plan_listeners(
        st: &VpcState,
        p: &Principal,
        network: &Network,
        asked: &[NewListener],
        old: &[LbListener],
    ) -> Result<Vec<LbListener>, ControlError> {
        let mut used: BTreeSet<u32> = st
            .topo
            .load_balancers
            .values()
            .flat_map(|l| l.listeners.iter().map(|x| x.group))
            .collect();
        let mut out: Vec<LbListener> = Vec::new();
        for l in asked {
            if out
                .iter()
                .any(|x| x.protocol == l.protocol && x.port == l.port)
            {
                return Err(conflict(format!(
                    "two listeners on {} port {}",
                    l.protocol.as_str(),
                    l.port
                )));
            }
            let mut backends: Vec<LbBackend> = Vec::new();
            for b in &l.backends {
                let (port, ip) = match (&b.port, b.ip) {
                    (Some(x), None) => {
                        let port = Self::find_port(st, p, x)
                            .map_err(ControlError::named_by("backends"))?;
                        if port.network != network.id {
                            return Err(conflict(format!(
                                "backend port {} is not of network {}",
                                port.name, network.name
                            )));
                        }
                        (Some(port.id.clone()), port.ip)
                    }
                    (None, Some(ip)) => {
                        let inside = st
                            .topo
                            .subnets
                            .values()
                            .any(|s| s.network == network.id && s.cidr.contains(&ip));
                        if !inside {
                            return Err(conflict(format!(
                                "backend {ip} is in no subnet of network {}",
                                network.name
                            )));
                        }
                        (None, ip)
                    }
                    _ => {
                        return Err(conflict(
                            "a backend names a port or an address, one of the two",
                        ))
                    }
                };
                let target_port = b.target_port.unwrap_or(l.port);
                if backends
                    .iter()
                    .any(|x| x.ip == ip && x.target_port == target_port)
                {
                    return Err(conflict(format!("backend {ip}:{target_port} twice")));
                }
                backends.push(LbBackend {
                    port,
                    ip,
                    target_port,
                    weight: b.weight,
                });
            }
            let group = match old
                .iter()
                .find(|x| x.protocol == l.protocol && x.port == l.port)
            {
                Some(x) => x.group,
                None => {
                    let g = ipam::lowest_free(&used, 1, u32::MAX)
                        .ok_or_else(|| conflict("no load-balancer group is free on this node"))?;
                    used.insert(g);
                    g
                }
            };
            out.push(LbListener {
                protocol: l.protocol,
                port: l.port,
                group,
                backends,
            });
        }
        Ok(out)
    }

    /// The record a create would store (no monitor yet), or why not.
    fn plan_balancer(
        st: &VpcState,
        p: &Principal,
        network: &str,
        req: &NewBalancer,
    ) -> Result<LoadBalancer, ControlError> {
        let n = Self::find_network(st, p, network)?.clone();
        if n.external {
            return Err(conflict(
                "load balancers are for tenant networks, not the external one",
            ));
        }
        let s = Self::find_subnet(st, p, Some(&n.id), &req.subnet)
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
            .load_balancers
            .values()
            .any(|x| x.network == n.id && x.name == req.name)
        {
            return Err(ControlError::exists(Resource::LoadBalancer, &req.name));
        }
        health_conflicts(&req.health)?;
        let used = Self::used_ips(&st.topo, &s.id);
        let vip = match req.vip {
            Some(ip) => {
                ipam::check_port_ip(s.cidr, s.gateway, &used, ip)
                    .map_err(|e| ipam_err("vip", e))?;
                ip
            }
            None => ipam::allocate_ip(s.cidr, s.gateway, &used).map_err(|e| ipam_err("vip", e))?,
        };
        let listeners = Self::plan_listeners(st, p, &n, &req.listeners, &[])?;
        Ok(LoadBalancer {
            id: new_id(),
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            subnet: s.id.clone(),
            name: req.name.clone(),
            vip,
            listeners,
            session_affinity: req.session_affinity,
            health: req.health.clone(),
            monitor: None,
            created: now(),
            generation: 1,
        })
    }

    /// The network's monitor port (made on `subnet` if it has none). Takes the lock itself:
    /// a port is made as any port is.
    fn ensure_monitor(
        &self,
        p: &Principal,
        network: &str,
        subnet: &str,
    ) -> Result<(String, bool), ControlError> {
        {
            let st = self.vpc_write()?;
            if let Some(m) = st
                .topo
                .ports
                .values()
                .find(|x| x.network == network && x.name == MONITOR_PORT)
            {
                return Ok((m.id.clone(), false));
            }
        }
        let port = self.make_port(
            p,
            network,
            NewPort {
                name: MONITOR_PORT.to_string(),
                subnet: subnet.to_string(),
                ip: None,
                mac: None,
                security_groups: None,
                veth_peer: None,
                // The monitor probes from the node that made it.
                node: None,
            },
        )?;
        Ok((port.id, true))
    }

    /// Deletes the network's monitor port if no health-checked balancer uses it any more.
    fn drop_monitor_if_unused(&self, p: &Principal, network: &str) -> Result<(), ControlError> {
        let id = {
            let st = self.vpc_write()?;
            let used = st
                .topo
                .load_balancers
                .values()
                .any(|l| l.network == network && l.health.active());
            let m = st
                .topo
                .ports
                .values()
                .find(|x| x.network == network && x.name == MONITOR_PORT);
            match m {
                Some(m) if !used => m.id.clone(),
                _ => return Ok(()),
            }
        };
        self.delete_port(p, &id)
    }

    /// Creates a load balancer on a network.
    pub fn create_load_balancer(
        &self,
        p: &Principal,
        network: &str,
        req: NewBalancer,
    ) -> Result<LoadBalancer, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        // Everything is checked before the monitor port is made, so a refusal changes nothing.
        let first = Self::plan_balancer(&self.vpc_lock(), p, network, &req)?;
        let monitor = if req.health.active() {
            Some(self.ensure_monitor(p, &first.network, &first.subnet)?)
        } else {
            None
        };
        let mut st = self.vpc_write()?;
        let planned = Self::plan_balancer(&st, p, network, &req);
        let mut lb = match planned {
            Ok(lb) => lb,
            Err(e) => {
                drop(st);
                if let Some((_, true)) = monitor {
                    let _ = self.drop_monitor_if_unused(p, &first.network);
                }
                return Err(e);
            }
        };
        lb.monitor = monitor.map(|(id, _)| id);
        self.commit_vpc(Self::vpc_put(
            Txn::new().when(key("load-balancers", &lb.id), 0),
            "load-balancers",
            &lb.id,
            &lb,
        ))?;
        st.topo.load_balancers.insert(lb.id.clone(), lb.clone());
        Self::recompile(&mut st, &[Change::LoadBalancer(lb.id.clone())])?;
        Ok(lb)
    }

    /// Load balancers of a network.
    pub fn list_load_balancers(
        &self,
        p: &Principal,
        network: &str,
    ) -> Result<Vec<LoadBalancer>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(of_network(&n.id, st.topo.load_balancers.values(), |x| {
            &x.network
        }))
    }

    /// A load balancer by id (or name within the caller's tenant).
    pub fn get_load_balancer(&self, p: &Principal, id: &str) -> Result<LoadBalancer, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_balancer(&st, p, id).cloned()
    }

    /// Each backend's health, listener by listener (None: not probed).
    pub fn load_balancer_health(&self, lb: &LoadBalancer) -> Vec<Vec<Option<bool>>> {
        let st = self.vpc_lock();
        lb.listeners
            .iter()
            .map(|l| {
                l.backends
                    .iter()
                    .map(|b| {
                        let probed = lb.health.active() && l.protocol == LbProtocol::Tcp;
                        probed.then(|| {
                            !st.lb_down.contains(&Target {
                                group: l.group,
                                ip: b.ip,
                                port: b.target_port,
                            })
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Replaces a load balancer's listeners and backends (a listener kept on the same
    /// protocol and port keeps its group, so its open connections stay pinned).
    pub fn set_load_balancer_listeners(
        &self,
        p: &Principal,
        id: &str,
        listeners: Vec<NewListener>,
    ) -> Result<LoadBalancer, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut lb = Self::find_balancer(&st, p, id)?.clone();
        let n = Self::find_network(&st, p, &lb.network)?.clone();
        lb.listeners = Self::plan_listeners(&st, p, &n, &listeners, &lb.listeners)?;
        self.update_record(&mut st, lb)
    }

    /// Changes session affinity and the health check.
    pub fn set_load_balancer_settings(
        &self,
        p: &Principal,
        id: &str,
        session_affinity: Option<bool>,
        health: Option<HealthCheck>,
    ) -> Result<LoadBalancer, ControlError> {
        Self::require(p, Role::Member)?;
        let first = self.get_load_balancer(p, id)?;
        if let Some(h) = &health {
            health_conflicts(h)?;
        }
        let wants_monitor = health.as_ref().unwrap_or(&first.health).active();
        let monitor = if wants_monitor {
            Some(self.ensure_monitor(p, &first.network, &first.subnet)?.0)
        } else {
            None
        };
        let lb = {
            let mut st = self.vpc_write()?;
            let mut lb = Self::find_balancer(&st, p, id)?.clone();
            if let Some(a) = session_affinity {
                lb.session_affinity = a;
            }
            if let Some(h) = health {
                lb.health = h;
            }
            lb.monitor = monitor;
            self.update_record(&mut st, lb)?
        };
        self.drop_monitor_if_unused(p, &lb.network)?;
        Ok(lb)
    }

    /// Deletes a load balancer; a floating IP on its VIP stays allocated, not associated.
    pub fn delete_load_balancer(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let network = {
            let mut st = self.vpc_write()?;
            let lb = Self::find_balancer(&st, p, id)?.clone();
            let fips: Vec<FloatingIp> = st
                .topo
                .floating_ips
                .values()
                .filter(|f| f.load_balancer.as_deref() == Some(lb.id.as_str()))
                .map(|f| FloatingIp {
                    load_balancer: None,
                    generation: f.generation + 1,
                    ..f.clone()
                })
                .collect();
            let mut txn = Txn::new().delete(key("load-balancers", &lb.id));
            for f in &fips {
                txn = Self::vpc_put(txn, "floating-ips", &f.id, f);
            }
            self.commit_vpc(txn)?;
            let mut changes = vec![Change::LoadBalancer(lb.id.clone())];
            for f in fips {
                changes.push(Change::FloatingIp(f.id.clone()));
                st.topo.floating_ips.insert(f.id.clone(), f);
            }
            st.topo.load_balancers.remove(&lb.id);
            let groups: Vec<u32> = lb.listeners.iter().map(|l| l.group).collect();
            st.lb_down.retain(|t| !groups.contains(&t.group));
            Self::recompile(&mut st, &changes)?;
            lb.network
        };
        self.drop_monitor_if_unused(p, &network)
    }

    /// Maps a floating IP to a port, to a load balancer's VIP, or to nothing.
    pub fn associate_floating_ip_to(
        &self,
        p: &Principal,
        id: &str,
        port: Option<&str>,
        balancer: Option<&str>,
    ) -> Result<FloatingIp, ControlError> {
        let Some(b) = balancer else {
            return self.associate_floating_ip(p, id, port);
        };
        if port.is_some() {
            return Err(conflict(
                "a floating IP maps to a port or a load balancer, not both",
            ));
        }
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut f = Self::find_fip(&st, p, id)?.clone();
        let lb = Self::find_balancer(&st, p, b).map_err(ControlError::named_by("load_balancer"))?;
        if lb.tenant != f.tenant {
            return Err(conflict(format!(
                "load balancer {} is tenant {}'s, not {}'s",
                lb.name, lb.tenant, f.tenant
            )));
        }
        let routed = st.topo.routers.values().any(|r| {
            r.subnets.contains(&lb.subnet)
                && r.gateway.as_ref().is_some_and(|g| g.network == f.network)
        });
        if !routed {
            return Err(conflict(format!(
                "load balancer {}'s subnet is on no router with a leg on that external network",
                lb.name
            )));
        }
        if let Some(o) = st
            .topo
            .floating_ips
            .values()
            .find(|x| x.load_balancer.as_deref() == Some(lb.id.as_str()) && x.id != f.id)
        {
            return Err(ControlError::InUse {
                what: InUse::AddressInUse,
                message: format!("load balancer {} has floating IP {} already", lb.name, o.ip),
            });
        }
        f.load_balancer = Some(lb.id.clone());
        f.port = None;
        self.update_record(&mut st, f)
    }

    /// What the daemon's checker probes: the monitor ports and every probed backend.
    pub fn lb_probe_set(&self) -> LbProbeSet {
        let st = self.vpc_lock();
        let mut out = LbProbeSet::default();
        for lb in st
            .topo
            .load_balancers
            .values()
            .filter(|l| l.health.active())
        {
            let Some(m) = lb.monitor.as_ref().and_then(|m| st.topo.ports.get(m)) else {
                continue;
            };
            let ns = monitor_namespace(&lb.network);
            if !out.monitors.iter().any(|x| x.network == lb.network) {
                if let Some(s) = st.topo.subnets.get(&m.subnet) {
                    out.monitors.push(MonitorSpec {
                        network: lb.network.clone(),
                        namespace: ns.clone(),
                        device: m.device.clone(),
                        ip: m.ip,
                        prefix: s.cidr.prefix_len(),
                        mac: fmt_mac(&m.mac),
                        gateway: s.gateway,
                    });
                }
            }
            for l in lb
                .listeners
                .iter()
                .filter(|l| l.protocol == LbProtocol::Tcp)
            {
                for b in &l.backends {
                    let t = Target {
                        group: l.group,
                        ip: b.ip,
                        port: b.target_port,
                    };
                    out.targets.push((t, lb.health.clone(), ns.clone()));
                }
            }
        }
        out
    }

    /// The checker's decision on a backend: marks it up or down in its group (new
    /// connections avoid a down one; open ones stay pinned), and audits the change.
    pub fn set_lb_backend_health(&self, t: Target, up: bool) -> Result<(), ControlError> {
        let mut st = self.vpc_lock();
        let Some(lb) = st
            .topo
            .load_balancers
            .values()
            .find(|l| l.listeners.iter().any(|x| x.group == t.group))
            .cloned()
        else {
            return Ok(());
        };
        let changed = if up {
            st.lb_down.remove(&t)
        } else {
            st.lb_down.insert(t)
        };
        if let Some(dp) = &st.dp {
            dp.with_switch(move |sw, _| sw.set_lb_backend_up(t.group, t.ip, t.port, up))
                .map_err(dp_err)?;
        }
        drop(st);
        if changed {
            let state = if up { "up" } else { "down" };
            tracing::info!(load_balancer = %lb.name, backend = %format!("{}:{}", t.ip, t.port), state, "load-balancer backend health changed");
            self.audit_event(
                Some(&lb.tenant),
                "load_balancer.backend_health",
                &format!("load-balancers/{}/backends/{}:{}", lb.id, t.ip, t.port),
                state,
            );
        }
        Ok(())
    }

    /// `strata_lb_backend_up` for `/metrics`: 1 up (or not probed), 0 down.
    pub(in crate::controller) fn lb_metrics(&self, o: &mut String) {
        use std::fmt::Write;
        let st = self.vpc_lock();
        let mut lines = String::new();
        for lb in st.topo.load_balancers.values() {
            for l in &lb.listeners {
                for b in &l.backends {
                    let t = Target {
                        group: l.group,
                        ip: b.ip,
                        port: b.target_port,
                    };
                    let up = u8::from(!st.lb_down.contains(&t));
                    let _ = writeln!(
                        lines,
                        "strata_lb_backend_up{{tenant=\"{}\",load_balancer=\"{}\",listener=\"{}/{}\",backend=\"{}:{}\"}} {up}",
                        lb.tenant,
                        lb.name,
                        l.protocol.as_str(),
                        l.port,
                        b.ip,
                        b.target_port
                    );
                }
            }
        }
        let _ = write!(
            o,
            "# HELP strata_lb_backend_up Whether a load-balancer backend takes new connections (health checks).\n# TYPE strata_lb_backend_up gauge\n{lines}"
        );
    }
}

/// Health check defaults filled in, for the wire's optional fields.
pub fn health_check(
    kind: HealthKind,
    interval_ms: Option<u32>,
    timeout_ms: Option<u32>,
    rise: Option<u32>,
    fall: Option<u32>,
) -> HealthCheck {
    HealthCheck {
        kind,
        interval_ms: interval_ms.unwrap_or(HealthCheck::DEFAULT_INTERVAL_MS),
        timeout_ms: timeout_ms.unwrap_or(HealthCheck::DEFAULT_TIMEOUT_MS),
        rise: rise.unwrap_or(HealthCheck::DEFAULT_RISE),
        fall: fall.unwrap_or(HealthCheck::DEFAULT_FALL),
    }
}
