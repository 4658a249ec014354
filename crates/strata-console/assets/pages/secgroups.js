// Security groups, as one panel shared by the networks list and a network's page: each group
// with its rules (allows: whatever no rule allows is dropped), create and delete a group, add
// and delete a rule. Groups belong to a tenant, not to a network; a network's page shows the
// groups of the network's tenant.

import { get, post, del, enc, query } from '../api.js';
import * as fmt from '../format.js';
import { h, table, form, button, status, confirmed, setOptions, section, optNumber } from '../ui.js';

const CIDR = /^[0-9]{1,3}(\.[0-9]{1,3}){3}\/[0-9]{1,2}$/;

// `tenant`: only this tenant's groups (and new ones made in it); null: every group the caller
// may see. Returns { node, refresh, groups() }; refresh() must be awaited once before use.
export function groupsPanel(who, tenant = null) {
  const st = status();
  const box = h('div', { id: 'group-list' });
  let groups = [];

  const refresh = async () => {
    const q = query({ tenant: who.admin ? tenant : null });
    groups = (await get(`/v1/security-groups${q}`)).items;
    const names = new Map(groups.map((g) => [g.id, g.name]));
    box.replaceChildren(table([
      { label: 'Group', value: (g) => g.name },
      tenant ? null : { label: 'Tenant', value: (g) => g.tenant },
      {
        label: 'Rules',
        value: (g) => (g.rules.length
          ? h('ul', { class: 'rules' }, g.rules.map((r) => h('li', {},
            h('span', { class: 'rule' }, ruleText(r, names)), ' ',
            button('Delete', () => confirmed(`Delete the rule "${ruleText(r, names)}" of ${g.name}?`, st, async () => {
              await del(`/v1/security-groups/${enc(g.id)}/rules/${enc(r.id)}`);
              return `Deleted a rule of ${g.name}.`;
            }, refresh), 'danger small'))))
          : h('span', { class: 'hint' }, 'none: all egress, no ingress')),
      },
      { label: 'Open connections', value: (g) => (g.reevaluate_existing ? 'judged again on change' : 'kept on change') },
      { label: 'Created', value: (g) => fmt.time(g.created) },
      {
        label: 'Actions',
        value: (g) => button(`Delete ${g.name}`, () => confirmed(`Delete security group ${g.name}?`, st, async () => {
          await del(`/v1/security-groups/${enc(g.id)}`);
          return `Deleted security group ${g.name}.`;
        }, refresh), 'danger'),
      },
    ].filter(Boolean), groups, 'No security groups yet.', (g) => ({ 'data-group': g.name })));
    setOptions(ruleForm.fields.group, groups.map((g) => ({
      value: g.id,
      label: who.admin && !tenant ? `${g.name} (${g.tenant})` : g.name,
    })));
  };

  const createFields = [{ name: 'name', label: 'Group name', required: true, placeholder: 'web' }];
  if (who.admin && !tenant) createFields.push({ name: 'tenant', label: 'Tenant', options: who.tenants, value: 'default' });
  createFields.push({ name: 'reevaluate', label: 'When rules change', options: [
    { value: 'no', label: 'keep open connections' },
    { value: 'yes', label: 'judge open connections again' },
  ] });
  const createForm = form('Create a security group', createFields, 'Create group', async (v) => {
    const body = { name: v.name, reevaluate_existing: v.reevaluate === 'yes' };
    const t = tenant ?? v.tenant;
    if (who.admin && t) body.tenant = t;
    const g = await post('/v1/security-groups', body);
    await refresh();
    return `Created security group ${g.name}.`;
  });

  const ruleForm = form('Add a rule', [
    { name: 'group', label: 'Group', options: [] },
    { name: 'direction', label: 'Direction', options: ['ingress', 'egress'] },
    { name: 'protocol', label: 'Protocol', options: ['tcp', 'udp', 'icmp', 'any'] },
    { name: 'ports', label: 'Ports (80 or 8000-8080)', placeholder: 'all' },
    { name: 'remote', label: 'Remote (CIDR or group)', placeholder: 'anywhere' },
  ], 'Add rule', async (v) => {
    const body = { direction: v.direction, protocol: v.protocol };
    if (v.ports) {
      const [lo, hi] = v.ports.split('-').map((x) => x.trim());
      body.port_min = optNumber(lo);
      if (hi !== undefined) body.port_max = optNumber(hi);
    }
    if (v.remote) {
      if (CIDR.test(v.remote)) body.remote_cidr = v.remote;
      else body.remote_group = v.remote;
    }
    const g = await post(`/v1/security-groups/${enc(v.group)}/rules`, body);
    await refresh();
    return `Added a rule to ${g.name}.`;
  });

  const node = section('Security groups', st.node, box,
    h('div', { class: 'form-row' }, createForm, ruleForm));
  return { node, refresh, groups: () => groups };
}

// One rule in words: "ingress tcp 80-90 from 10.0.0.0/8". `names` maps group ids to names.
export function ruleText(r, names = new Map()) {
  const ports = r.port_min === null || r.port_min === undefined ? ''
    : r.port_max && r.port_max !== r.port_min ? ` ${r.port_min}-${r.port_max}` : ` ${r.port_min}`;
  const from = r.remote_cidr ?? (r.remote_group ? `group ${names.get(r.remote_group) ?? r.remote_group}` : 'anywhere');
  return `${r.direction} ${r.protocol}${ports} ${r.direction === 'ingress' ? 'from' : 'to'} ${from}`;
}
