// Tenant networks: the list (each links to its page), create a network, and the security
// groups panel.

import { get, post, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form, link } from '../ui.js';
import { groupsPanel } from './secgroups.js';

export async function render(main, _params, who) {
  const netBox = h('div', { id: 'network-list' });
  const draw = async () => {
    const nets = (await get('/v1/networks')).items;
    const subnets = await Promise.all(nets.map((n) => get(`/v1/networks/${enc(n.id)}/subnets`).then((r) => r.items)));
    netBox.replaceChildren(table([
      { label: 'Network', value: (n) => link(`#/networks/${enc(n.id)}`, n.name) },
      { label: 'Tenant', value: (n) => n.tenant },
      { label: 'CIDR', value: (n) => n.cidr },
      { label: 'VNI', value: (n) => String(n.vni) },
      { label: 'External', value: (n) => (n.external ? 'yes' : '') },
      { label: 'Cap', value: (n) => (n.cap_bps ? fmt.bps(n.cap_bps) : '') },
      { label: 'Subnets', value: (n) => subnets[nets.indexOf(n)].map((s) => `${s.name} ${s.cidr}`).join(', ') },
      { label: 'Created', value: (n) => fmt.time(n.created) },
    ], nets, 'No networks yet.'));
  };
  const groups = groupsPanel(who);
  await Promise.all([draw(), groups.refresh()]);
  const fields = [
    { name: 'name', label: 'Network name', required: true },
    { name: 'cidr', label: 'CIDR', required: true, placeholder: '10.0.0.0/16' },
  ];
  if (who.admin) {
    fields.push({ name: 'tenant', label: 'Tenant', options: who.tenants, value: 'default' });
    fields.push({ name: 'external', label: 'Kind', options: [
      { value: 'no', label: 'tenant network' },
      { value: 'yes', label: 'external (the outside)' },
    ] });
  }
  const create = form('Create a network', fields, 'Create network', async (v) => {
    const body = { name: v.name, cidr: v.cidr };
    if (v.tenant) body.tenant = v.tenant;
    if (v.external === 'yes') body.external = true;
    const n = await post('/v1/networks', body);
    await draw();
    return h('span', {}, 'Created network ', link(`#/networks/${enc(n.id)}`, n.name), '.');
  });
  main.replaceChildren(heading('Networks, subnets and security groups'), create,
    section('Networks', netBox), groups.node);
}
