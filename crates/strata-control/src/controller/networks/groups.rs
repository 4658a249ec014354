//! Security groups and their rules.

use super::*;

impl Controller {
    pub(in crate::controller) fn group_record(
        tenant: &str,
        name: &str,
        reevaluate: bool,
        specs: Vec<RuleSpec>,
    ) -> SecurityGroup {
        SecurityGroup {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            rules: specs
                .into_iter()
                .enumerate()
                .map(|(i, spec)| SgRule {
                    id: format!("r{}", i + 1),
                    spec,
                })
                .collect(),
            reevaluate_existing: reevaluate,
            created: now(),
            generation: 1,
        }
    }

    /// Creates a security group with Neutron's starting rules (all egress).
    pub fn create_security_group(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
        reevaluate_existing: bool,
    ) -> Result<SecurityGroup, ControlError> {
        let tenant = self.creating_tenant(p, tenant)?;
        validate_name("name", name)?;
        let mut st = self.vpc_write()?;
        if st
            .topo
            .groups
            .values()
            .any(|g| g.tenant == tenant && g.name == name)
        {
            return Err(ControlError::exists(Resource::SecurityGroup, name));
        }
        let g = Self::group_record(
            &tenant,
            name,
            reevaluate_existing,
            SecurityGroup::default_rules(),
        );
        self.store_group(&g, true)?;
        st.topo.groups.insert(g.id.clone(), g.clone());
        Self::recompile(&mut st, &[Change::Group(g.id.clone())])?;
        Ok(g)
    }

    pub(in crate::controller) fn store_group(
        &self,
        g: &SecurityGroup,
        new: bool,
    ) -> Result<(), ControlError> {
        let mut txn = Txn::new();
        if new {
            let nk = name_key("group", &g.tenant, &g.name);
            txn = txn.when(nk.clone(), 0).put(nk, enc(&g.id));
        }
        self.commit_vpc(Self::vpc_put(txn, "groups", &g.id, g))
    }

    /// The tenant's `default` group, made on first use.
    pub(in crate::controller) fn default_group(
        &self,
        st: &mut VpcState,
        tenant: &str,
    ) -> Result<String, ControlError> {
        if let Some(g) = st
            .topo
            .groups
            .values()
            .find(|g| g.tenant == tenant && g.name == DEFAULT_GROUP)
        {
            return Ok(g.id.clone());
        }
        let mut g =
            Self::group_record(tenant, DEFAULT_GROUP, false, SecurityGroup::default_rules());
        g.rules.push(SgRule {
            id: format!("r{}", g.rules.len() + 1),
            spec: RuleSpec {
                direction: Direction::Ingress,
                protocol: Protocol::Any,
                ports: None,
                remote: Remote::Group(g.id.clone()),
            },
        });
        self.store_group(&g, true)?;
        let id = g.id.clone();
        st.topo.groups.insert(id.clone(), g);
        Self::recompile(st, &[Change::Group(id.clone())])?;
        Ok(id)
    }

    /// Security groups the caller sees.
    pub fn list_security_groups(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<SecurityGroup>, ControlError> {
        self.tenant_scope(p, tenant)?;
        let st = self.vpc_lock();
        Ok(seen(p, tenant, st.topo.groups.values(), |x| &x.tenant))
    }

    /// A group by id or name.
    pub fn get_security_group(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc_lock();
        Self::find_group(&st, p, None, id).cloned()
    }

    /// Adds a rule; it applies to new connections at once (and to open ones if the group
    /// reevaluates them).
    pub fn add_security_group_rule(
        &self,
        p: &Principal,
        group: &str,
        req: NewRule,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut g = Self::find_group(&st, p, None, group)?.clone();
        let remote = match (req.remote_cidr, &req.remote_group) {
            (Some(_), Some(_)) => {
                return Err(conflict(
                    "a rule names a remote CIDR or a remote group, not both",
                ))
            }
            (Some(c), None) => Remote::Cidr(c.trunc()),
            (None, Some(r)) => Remote::Group(
                Self::tenant_group(&st, p, &g.tenant, r)
                    .map_err(ControlError::named_by("remote_group"))?,
            ),
            (None, None) => Remote::Any,
        };
        if let Some((lo, hi)) = req.ports {
            if !matches!(req.protocol, Protocol::Tcp | Protocol::Udp) {
                return Err(conflict("ports apply to tcp and udp only"));
            }
            if lo > hi || lo == 0 {
                return Err(conflict("1 <= port_min <= port_max"));
            }
        }
        let spec = RuleSpec {
            direction: req.direction,
            protocol: req.protocol,
            ports: req.ports,
            remote,
        };
        if g.rules.iter().any(|r| r.spec == spec) {
            return Ok(g);
        }
        let next = g
            .rules
            .iter()
            .filter_map(|r| r.id.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        g.rules.push(SgRule {
            id: format!("r{next}"),
            spec,
        });
        self.update_record(&mut st, g)
    }

    /// Removes a rule.
    pub fn delete_security_group_rule(
        &self,
        p: &Principal,
        group: &str,
        rule: &str,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let mut g = Self::find_group(&st, p, None, group)?.clone();
        let before = g.rules.len();
        g.rules.retain(|r| r.id != rule);
        if g.rules.len() == before {
            return Err(ControlError::not_found(Resource::SecurityGroupRule, rule));
        }
        self.update_record(&mut st, g)
    }

    /// Deletes a group no port uses and no other group names.
    pub fn delete_security_group(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc_write()?;
        let g = Self::find_group(&st, p, None, id)?.clone();
        let used = st
            .topo
            .ports
            .values()
            .any(|x| x.security_groups.contains(&g.id))
            || st.topo.groups.values().any(|o| {
                o.id != g.id
                    && o.rules
                        .iter()
                        .any(|r| matches!(&r.spec.remote, Remote::Group(x) if *x == g.id))
            });
        if used {
            return Err(ControlError::InUse {
                what: InUse::SecurityGroupInUse,
                message: format!(
                    "security group {} is used by ports or named by rules",
                    g.name
                ),
            });
        }
        self.commit_vpc(
            Txn::new()
                .delete(key("groups", &g.id))
                .delete(name_key("group", &g.tenant, &g.name)),
        )?;
        st.topo.groups.remove(&g.id);
        Self::recompile(&mut st, &[Change::Group(g.id)])
    }
}
