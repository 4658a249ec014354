// Tenant networks with their subnets, and security groups with their rules.

import { get, post, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form } from '../ui.js';

export async function render(main, _params, who) {
  const netBox = h('div');
  const sgBox = h('div');
  const draw = async () => {
    const nets = (await get('/v1/networks')).items;
    const subnets = await Promise.all(nets.map((n) => get(`/v1/networks/${enc(n.id)}/subnets`).then((r) => r.items)));
    netBox.replaceChildren(table([
      { label: 'Network', value: (n) => n.name },
      { label: 'Tenant', value: (n) => n.tenant },
      { label: 'CIDR', value: (n) => n.cidr },
      { label: 'VNI', value: (n) => String(n.vni) },
      { label: 'External', value: (n) => (n.external ? 'yes' : '') },
      { label: 'Cap', value: (n) => (n.cap_bps ? `${fmt.count(n.cap_bps)} bit/s` : '') },
      { label: 'Subnets', value: (n) => subnets[nets.indexOf(n)].map((s) => `${s.name} ${s.cidr}`).join(', ') },
      { label: 'Created', value: (n) => fmt.time(n.created) },
    ], nets, 'No networks yet.'));
    const groups = (await get('/v1/security-groups')).items;
    sgBox.replaceChildren(table([
      { label: 'Group', value: (g) => g.name },
      { label: 'Tenant', value: (g) => g.tenant },
      {
        label: 'Rules',
        value: (g) => (g.rules.length
          ? h('ul', { class: 'rules' }, g.rules.map((r) => h('li', {}, ruleText(r))))
          : 'none (all egress, no ingress)'),
      },
      { label: 'Created', value: (g) => fmt.time(g.created) },
    ], groups, 'No security groups yet.'));
  };
  await draw();
  const fields = [
    { name: 'name', label: 'Network name', required: true },
    { name: 'cidr', label: 'CIDR', required: true, placeholder: '10.0.0.0/16' },
  ];
  if (who.admin) fields.push({ name: 'tenant', label: 'Tenant', options: who.tenants, value: 'default' });
  const create = form('Create a network', fields, 'Create network', async (v) => {
    const body = { name: v.name, cidr: v.cidr };
    if (v.tenant) body.tenant = v.tenant;
    await post('/v1/networks', body);
    await draw();
    return `Created network ${v.name}.`;
  });
  main.replaceChildren(heading('Networks, subnets and security groups'), create,
    section('Networks', netBox), section('Security groups', sgBox));
}

function ruleText(r) {
  const ports = r.port_min === null || r.port_min === undefined ? ''
    : r.port_max && r.port_max !== r.port_min ? ` ${r.port_min}-${r.port_max}` : ` ${r.port_min}`;
  const from = r.remote_cidr ?? (r.remote_group ? `group ${r.remote_group}` : 'any');
  return `${r.direction} ${r.protocol}${ports} ${r.direction === 'ingress' ? 'from' : 'to'} ${from}`;
}
