//! The incremental compiler: desired state ([`Topology`]) to flow tables, one owner at a time.
//!
//! Every flow belongs to one *owner*: the global defaults, a subnet, a port bound on this
//! node, or a *group set* (the security groups one or more ports share, within one network).
//! A change names the objects that changed; the compiler works out which owners they touch
//! (a port's set and the sets whose rules name its groups as remotes; a subnet's ports and
//! router peers; a router's subnets; a group's sets), compiles those owners alone, and diffs
//! each against what it compiled before. The [`Delta`] holds only the flows that differ:
//! flows to add (an add with a match and priority already present replaces that flow) and
//! flows to remove (strictly, by table, priority and match). No change recomputes the whole.
//!
//! # Invariants
//! - Within one owner, (table, priority, match) identifies a flow; two owners never emit the
//!   same (table, priority, match) (their matches carry the owner's subnet key, port number or
//!   set register), so applying one owner's delta never disturbs another's flows.
//! - After every call, the flows the compiler holds are exactly what compiling the whole
//!   topology from nothing would give (a test checks this against [`Compiler::full`] after
//!   random change sequences).
//! - Each flow's cookie is a hash of what it stands for (the object and, for a rule, the rule
//!   id); [`Compiler::explain`] maps it back, so a trace reads in the tenant's terms.

mod balancers;
mod objects;
pub mod tables;

pub use balancers::LbGroupSpec;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ipam::fnv;
use crate::model::{FloatingIp, LoadBalancer, Network, Port, Router, SecurityGroup, Subnet};

/// Everything the compiler reads: the tenant objects, and which ports are bound on this
/// node (port id to switch port number).
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Subnets by id.
    pub subnets: BTreeMap<String, Subnet>,
    /// Ports by id (on any node: remote-group rules name their addresses).
    pub ports: BTreeMap<String, Port>,
    /// Routers by id.
    pub routers: BTreeMap<String, Router>,
    /// Security groups by id.
    pub groups: BTreeMap<String, SecurityGroup>,
    /// Floating IPs by id.
    pub floating_ips: BTreeMap<String, FloatingIp>,
    /// Load balancers by id.
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    /// Ports bound on this node: id to the switch's port number.
    pub bound: BTreeMap<String, u32>,
    /// Ports on other nodes reached through a tunnel: id to the switch port number of the
    /// tunnel to their node (`objects::remote_port`). A port is in `bound` or here, not both.
    pub remote: BTreeMap<String, u32>,
}

impl Topology {
    /// Whether network `net` has a port on another node (its bound ports then take frames
    /// from the tunnels).
    pub fn has_remote(&self, net: &str) -> bool {
        self.remote
            .keys()
            .filter_map(|id| self.ports.get(id))
            .any(|p| p.network == net)
    }
}

/// What changed (added, updated or removed: the compiler looks at the topology to see which).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// A network.
    Network(String),
    /// A subnet.
    Subnet(String),
    /// A port, or its binding.
    Port(String),
    /// A router.
    Router(String),
    /// A security group or its rules.
    Group(String),
    /// A floating IP or its association.
    FloatingIp(String),
    /// A load balancer (its listeners, backends, affinity, health check).
    LoadBalancer(String),
}

/// The flows (and meters) to change on the switch, in this order: links and meters set,
/// flows added (or replaced), flows removed, meters and links removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Whole flows in `add-flow` syntax.
    pub add: Vec<String>,
    /// Strict `del-flows` filters (table, priority, match).
    pub remove: Vec<String>,
    /// Links (shared capacities) to set: id, bits per second.
    pub set_links: Vec<(u32, u64)>,
    /// Meters to set.
    pub set_meters: Vec<(u32, MeterSpec)>,
    /// Meters to remove.
    pub remove_meters: Vec<u32>,
    /// Links to remove.
    pub remove_links: Vec<u32>,
    /// Load-balancer groups to set (before the flows that name them).
    pub set_lb_groups: Vec<(u32, LbGroupSpec)>,
    /// Load-balancer groups to remove (after the flows that named them).
    pub remove_lb_groups: Vec<u32>,
}

impl Delta {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.set_links.is_empty()
            && self.set_meters.is_empty()
            && self.remove_meters.is_empty()
            && self.remove_links.is_empty()
            && self.set_lb_groups.is_empty()
            && self.remove_lb_groups.is_empty()
    }
}

/// A meter the switch should have: a cap, and a guarantee on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterSpec {
    /// Cap, bits per second.
    pub rate_bps: u64,
    /// Guarantee and the link it is on.
    pub min: Option<(u64, u32)>,
}

/// Meter of a port: its switch port number (unique on the switch).
pub fn port_meter(of: u32) -> u32 {
    of & 0x7fff_ffff
}

/// Meter of a network (and the link its ports' guarantees share): its zone, high bit set.
pub fn network_meter(zone: u16) -> u32 {
    0x8000_0000 | u32::from(zone)
}

/// One compiled flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Match, in flow syntax (may be empty).
    pub matches: String,
    /// Actions, in flow syntax.
    pub actions: String,
    /// What it stands for (hashed into the cookie).
    pub why: String,
}

impl Flow {
    pub(crate) fn new(table: u8, priority: u16, m: &str, a: &str, why: &str) -> Flow {
        Flow {
            table,
            priority,
            matches: m.to_string(),
            actions: a.to_string(),
            why: why.to_string(),
        }
    }

    /// The cookie: what the flow stands for, hashed.
    pub fn cookie(&self) -> u64 {
        fnv(&self.why)
    }

    fn head(&self) -> String {
        if self.matches.is_empty() {
            format!("table={},priority={}", self.table, self.priority)
        } else {
            format!(
                "table={},priority={},{}",
                self.table, self.priority, self.matches
            )
        }
    }

    /// The flow in `add-flow` syntax.
    pub fn text(&self) -> String {
        let h = self.head();
        format!("{h},cookie={:#x},actions={}", self.cookie(), self.actions)
    }
}

/// Who a flow belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Owner {
    Global,
    Subnet(String),
    Port(String),
    Router(String),
    Set(SetKey),
    /// A load balancer's VIP flows.
    Balancer(String),
    /// What a network's load balancers share: replies translated back, monitor probes let in.
    Balancers(String),
}

/// A group set: the groups one or more ports share, in one network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SetKey {
    pub network: String,
    pub groups: Vec<String>,
}

type FlowMap = BTreeMap<(u8, u16, String), Flow>;

/// The compiler's memory: what each owner compiled to, and the indices that find the owners
/// a change touches.
#[derive(Debug, Default)]
pub struct Compiler {
    owners: BTreeMap<Owner, FlowMap>,
    /// Set key to its register value (`reg5`), for as long as a port uses it.
    set_ids: BTreeMap<SetKey, u32>,
    /// Ports using each set.
    set_ports: BTreeMap<SetKey, BTreeSet<String>>,
    /// Each compiled port's set.
    port_set: BTreeMap<String, SetKey>,
    /// Each port's groups and network when last seen (remote-group memberships).
    port_groups: BTreeMap<String, (String, Vec<String>)>,
    /// Each router's subnets when last seen.
    router_subnets: BTreeMap<String, Vec<String>>,
    /// The last set register value handed out.
    next_set: u32,
    /// Each compiled remote port's network.
    remote_ports: BTreeMap<String, String>,
    /// The meters and links on the switch.
    meters: BTreeMap<u32, MeterSpec>,
    links: BTreeMap<u32, u64>,
    /// Cookie to explanation, with how many flows use it.
    cookies: HashMap<u64, (String, usize)>,
    /// The load-balancer groups on the switch.
    lb_groups: BTreeMap<u32, LbGroupSpec>,
    /// Each load balancer's network when last seen.
    lb_networks: BTreeMap<String, String>,
    /// Each load balancer's groups on the switch.
    lb_group_ids: BTreeMap<String, Vec<u32>>,
    /// Load balancers whose groups are to be compared again in this change.
    lb_dirty: BTreeSet<String>,
}

impl Compiler {
    /// A compiler that has compiled nothing.
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// Compiles the whole topology (the first call on a new switch).
    pub fn full(&mut self, topo: &Topology) -> Delta {
        let mut changes: Vec<Change> = Vec::new();
        changes.extend(topo.networks.keys().cloned().map(Change::Network));
        changes.extend(topo.subnets.keys().cloned().map(Change::Subnet));
        changes.extend(topo.ports.keys().cloned().map(Change::Port));
        changes.extend(topo.routers.keys().cloned().map(Change::Router));
        changes.extend(topo.groups.keys().cloned().map(Change::Group));
        changes.extend(topo.floating_ips.keys().cloned().map(Change::FloatingIp));
        changes.extend(
            topo.load_balancers
                .keys()
                .cloned()
                .map(Change::LoadBalancer),
        );
        changes.extend(self.lb_networks.keys().cloned().map(Change::LoadBalancer));
        // Owners no longer in the topology go too.
        let mut touched: BTreeSet<Owner> = self.owners.keys().cloned().collect();
        touched.insert(Owner::Global);
        self.apply(topo, &changes, touched)
    }

    /// Compiles what `changes` touch.
    pub fn changed(&mut self, topo: &Topology, changes: &[Change]) -> Delta {
        self.apply(topo, changes, BTreeSet::new())
    }

    /// What a cookie stands for.
    pub fn explain(&self, cookie: u64) -> Option<&str> {
        self.cookies.get(&cookie).map(|(s, _)| s.as_str())
    }

    /// The number of flows held.
    pub fn n_flows(&self) -> usize {
        self.owners.values().map(BTreeMap::len).sum()
    }

    /// Every flow held, in `add-flow` syntax, in (table, priority, match) order.
    pub fn flows(&self) -> Vec<String> {
        let mut all: Vec<&Flow> = self.owners.values().flat_map(|m| m.values()).collect();
        all.sort_by(|a, b| {
            (a.table, std::cmp::Reverse(a.priority), &a.matches).cmp(&(
                b.table,
                std::cmp::Reverse(b.priority),
                &b.matches,
            ))
        });
        all.into_iter().map(Flow::text).collect()
    }

    /// The register value of a port's group set (what `reg5` holds for its packets).
    pub fn set_of_port(&self, port: &str) -> Option<u32> {
        self.port_set
            .get(port)
            .and_then(|k| self.set_ids.get(k))
            .copied()
    }

    fn apply(
        &mut self,
        topo: &Topology,
        changes: &[Change],
        mut touched: BTreeSet<Owner>,
    ) -> Delta {
        if self.owners.is_empty() {
            touched.insert(Owner::Global);
        }
        // Ports first: their set memberships decide which sets exist.
        for c in changes {
            if let Change::Port(id) = c {
                self.touch_port(topo, id, &mut touched);
                self.lb_touch_port(topo, id, &mut touched);
                // A floating IP's flows name its port's address.
                if topo
                    .floating_ips
                    .values()
                    .any(|f| f.port.as_deref() == Some(id))
                {
                    for r in topo.routers.values().filter(|r| r.gateway.is_some()) {
                        touched.insert(Owner::Router(r.id.clone()));
                    }
                }
            }
        }
        for c in changes {
            match c {
                Change::Port(_) => {}
                Change::LoadBalancer(id) => self.lb_touch(topo, id, &mut touched),
                Change::Network(id) => {
                    self.lb_touch_network(topo, id, &mut touched);
                    for s in topo.subnets.values().filter(|s| &s.network == id) {
                        touched.insert(Owner::Subnet(s.id.clone()));
                    }
                    // Its cap is a meter on each of its ports' frames.
                    for p in topo.ports.values().filter(|p| &p.network == id) {
                        touched.insert(Owner::Port(p.id.clone()));
                    }
                    for k in self.set_ids.keys().filter(|k| &k.network == id) {
                        touched.insert(Owner::Set(k.clone()));
                    }
                }
                Change::Subnet(id) => {
                    touched.insert(Owner::Subnet(id.clone()));
                    if let Some(s) = topo.subnets.get(id) {
                        self.lb_touch_network(topo, &s.network, &mut touched);
                    }
                    for r in topo.routers.values() {
                        let on = r.subnets.contains(id)
                            || r.gateway.as_ref().is_some_and(|g| &g.subnet == id);
                        if on {
                            touched.insert(Owner::Router(r.id.clone()));
                        }
                    }
                    for p in topo.ports.values().filter(|p| &p.subnet == id) {
                        touched.insert(Owner::Port(p.id.clone()));
                    }
                    for peer in self.peers(topo, id) {
                        touched.insert(Owner::Subnet(peer));
                    }
                }
                Change::Router(id) => {
                    touched.insert(Owner::Router(id.clone()));
                    if let Some(r) = topo.routers.get(id) {
                        self.lb_touch_network(topo, &r.network, &mut touched);
                    }
                    for n in self.router_networks(topo, id) {
                        self.lb_touch_network(topo, &n, &mut touched);
                    }
                    let old = self.router_subnets.remove(id).unwrap_or_default();
                    let new = topo.routers.get(id).map(|r| r.subnets.clone());
                    for s in old.iter().chain(new.iter().flatten()) {
                        touched.insert(Owner::Subnet(s.clone()));
                    }
                    if let Some(new) = new {
                        self.router_subnets.insert(id.clone(), new);
                    }
                }
                Change::FloatingIp(_) => {
                    // Few routers have an external leg: each is compiled again.
                    for r in topo.routers.values().filter(|r| r.gateway.is_some()) {
                        touched.insert(Owner::Router(r.id.clone()));
                    }
                    for id in self.owners.keys() {
                        if let Owner::Router(r) = id {
                            touched.insert(Owner::Router(r.clone()));
                        }
                    }
                }
                Change::Group(id) => {
                    for k in self.set_ids.keys() {
                        if k.groups.contains(id) || self.set_names_remote(topo, k, id) {
                            touched.insert(Owner::Set(k.clone()));
                        }
                    }
                }
            }
        }
        let mut delta = Delta::default();
        self.meter_delta(topo, &mut delta);
        self.lb_group_delta(topo, &mut delta);
        for owner in touched {
            let new = self.compile_owner(topo, &owner);
            let old = self.owners.remove(&owner).unwrap_or_default();
            for (k, f) in &new {
                if old.get(k) != Some(f) {
                    delta.add.push(f.text());
                }
            }
            for (k, f) in &old {
                if !new.contains_key(k) {
                    delta.remove.push(f.head());
                }
            }
            for f in old.values() {
                self.unref_cookie(f.cookie());
            }
            for f in new.values() {
                self.cookies
                    .entry(f.cookie())
                    .or_insert_with(|| (f.why.clone(), 0))
                    .1 += 1;
            }
            if !new.is_empty() {
                self.owners.insert(owner, new);
            }
        }
        delta
    }
    /// The meters and links the topology asks for, against those on the switch. O(ports),
    /// done at every change: cheap beside the flows, and always exact.
    fn meter_delta(&mut self, topo: &Topology, d: &mut Delta) {
        let mut links: BTreeMap<u32, u64> = BTreeMap::new();
        let mut meters: BTreeMap<u32, MeterSpec> = BTreeMap::new();
        for n in topo.networks.values() {
            if let Some(cap) = n.cap_bps {
                let id = network_meter(n.zone);
                links.insert(id, cap);
                meters.insert(
                    id,
                    MeterSpec {
                        rate_bps: cap,
                        min: None,
                    },
                );
            }
        }
        for p in topo.ports.values() {
            let Some(&of) = topo.bound.get(&p.id) else {
                continue;
            };
            let net = topo.networks.get(&p.network);
            let link = net.and_then(|n| n.cap_bps.map(|c| (network_meter(n.zone), c)));
            let min = p.min_bps.zip(link).map(|(m, (l, _))| (m, l));
            let rate = match (p.cap_bps, min, link) {
                (Some(c), _, _) => c,
                // A guarantee alone: capped by the network.
                (None, Some(_), Some((_, c))) => c,
                _ => continue,
            };
            meters.insert(
                port_meter(of),
                MeterSpec {
                    rate_bps: rate,
                    min,
                },
            );
        }
        for (id, c) in &links {
            if self.links.get(id) != Some(c) {
                d.set_links.push((*id, *c));
            }
        }
        for (id, m) in &meters {
            if self.meters.get(id) != Some(m) {
                d.set_meters.push((*id, *m));
            }
        }
        d.remove_meters
            .extend(self.meters.keys().filter(|k| !meters.contains_key(k)));
        d.remove_links
            .extend(self.links.keys().filter(|k| !links.contains_key(k)));
        self.meters = meters;
        self.links = links;
    }

    /// The meters a port's frames pass, as actions (its own, then its network's).
    pub(crate) fn meters_of(topo: &Topology, port: &Port) -> String {
        let mut a = String::new();
        let of = topo.bound.get(&port.id).copied();
        let net = topo.networks.get(&port.network);
        let net_cap = net.and_then(|n| n.cap_bps);
        if let Some(of) = of {
            if port.cap_bps.is_some() || (port.min_bps.is_some() && net_cap.is_some()) {
                a.push_str(&format!("meter:{},", port_meter(of)));
            }
        }
        if let (Some(n), Some(_)) = (net, net_cap) {
            a.push_str(&format!("meter:{},", network_meter(n.zone)));
        }
        a
    }

    fn unref_cookie(&mut self, c: u64) {
        if let Some(e) = self.cookies.get_mut(&c) {
            e.1 -= 1;
            if e.1 == 0 {
                self.cookies.remove(&c);
            }
        }
    }

    /// Subnets routed to from `subnet` (on a router with it).
    fn peers(&self, topo: &Topology, subnet: &str) -> Vec<String> {
        topo.routers
            .values()
            .filter(|r| r.subnets.iter().any(|s| s == subnet))
            .flat_map(|r| r.subnets.iter().filter(|s| *s != subnet).cloned())
            .collect()
    }

    /// Whether set `k`'s groups have a rule whose remote is `group`.
    fn set_names_remote(&self, topo: &Topology, k: &SetKey, group: &str) -> bool {
        k.groups.iter().filter_map(|g| topo.groups.get(g)).any(|g| {
            g.rules
                .iter()
                .any(|r| matches!(&r.spec.remote, crate::model::Remote::Group(x) if x == group))
        })
    }

    /// A port changed: its own owner, its old and new set, and the sets that name its old or
    /// new groups as remotes.
    fn touch_port(&mut self, topo: &Topology, id: &str, touched: &mut BTreeSet<Owner>) {
        touched.insert(Owner::Port(id.to_string()));
        let port = topo.ports.get(id);
        let old = self.port_groups.remove(id);
        // A port on another node coming or going may change whether its network's bound
        // ports take frames from the tunnels (`Topology::has_remote`).
        let was_remote = self.remote_ports.remove(id);
        let is_remote = topo.remote.contains_key(id) && port.is_some();
        if was_remote.is_some() || is_remote {
            let nets: BTreeSet<&String> =
                was_remote.iter().chain(port.map(|p| &p.network)).collect();
            for b in topo.bound.keys() {
                if topo.ports.get(b).is_some_and(|x| nets.contains(&x.network)) {
                    touched.insert(Owner::Port(b.clone()));
                }
            }
        }
        if is_remote {
            if let Some(p) = port {
                self.remote_ports.insert(id.to_string(), p.network.clone());
            }
        }
        let new = port.map(|p| (p.network.clone(), p.security_groups.clone()));
        for (net, groups) in old.iter().chain(new.iter()) {
            for g in groups {
                for k in self.set_ids.keys().filter(|k| &k.network == net) {
                    if self.set_names_remote(topo, k, g) {
                        touched.insert(Owner::Set(k.clone()));
                    }
                }
            }
        }
        if let Some(new) = new {
            self.port_groups.insert(id.to_string(), new);
        }
        // Set membership: only ports bound here make a set exist.
        let new_key = port.filter(|_| topo.bound.contains_key(id)).map(|p| {
            let mut groups = p.security_groups.clone();
            groups.sort();
            groups.dedup();
            // Ports of an external network stand for the outside: no groups filter them.
            if topo.networks.get(&p.network).is_some_and(|n| n.external) {
                groups.clear();
            }
            SetKey {
                network: p.network.clone(),
                groups,
            }
        });
        let old_key = self.port_set.get(id).cloned();
        if old_key == new_key {
            if let Some(k) = new_key {
                touched.insert(Owner::Set(k));
            }
            return;
        }
        if let Some(k) = old_key {
            self.port_set.remove(id);
            if let Some(users) = self.set_ports.get_mut(&k) {
                users.remove(id);
                if users.is_empty() {
                    self.set_ports.remove(&k);
                    self.set_ids.remove(&k);
                }
            }
            touched.insert(Owner::Set(k));
        }
        if let Some(k) = new_key {
            if !self.set_ids.contains_key(&k) {
                // Never a number another set had: a set going and one coming in the same
                // change would otherwise emit the same (table, priority, match).
                self.next_set += 1;
                self.set_ids.insert(k.clone(), self.next_set);
            }
            self.set_ports
                .entry(k.clone())
                .or_default()
                .insert(id.to_string());
            self.port_set.insert(id.to_string(), k.clone());
            touched.insert(Owner::Set(k));
        }
    }

    fn compile_owner(&self, topo: &Topology, owner: &Owner) -> FlowMap {
        let flows = match owner {
            Owner::Global => tables::global(),
            Owner::Subnet(id) => objects::subnet(topo, id),
            Owner::Router(id) => objects::router(topo, id),
            Owner::Port(id) => match self.port_set.get(id).and_then(|k| self.set_ids.get(k)) {
                Some(&set) => objects::port(topo, id, set),
                None => objects::remote_port(topo, id),
            },
            Owner::Set(k) => match self.set_ids.get(k) {
                Some(&set) => objects::set(topo, k, set),
                None => Vec::new(),
            },
            Owner::Balancer(id) => balancers::balancer(topo, id),
            Owner::Balancers(net) => balancers::shared(topo, net),
        };
        flows
            .into_iter()
            .map(|f| ((f.table, f.priority, f.matches.clone()), f))
            .collect()
    }
}

#[cfg(test)]
mod tests;
