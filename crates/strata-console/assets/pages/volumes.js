// Volumes: the list the caller may see (a filter over name, id and tenant), and a create form.

import { all, post } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form, link, optNumber, sizeValue } from '../ui.js';

export async function render(main, _params, who) {
  let volumes = await all('/v1/volumes');
  const list = h('div', { id: 'volume-list' });
  const filter = h('input', { id: 'volume-filter', type: 'search', placeholder: 'name, id or tenant' });

  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = volumes.filter((v) => !q || [v.name, v.id, v.tenant].some((s) => s.toLowerCase().includes(q)));
    list.replaceChildren(table([
      { label: 'Name', value: (v) => link(`#/volumes/${encodeURIComponent(v.id)}`, v.name) },
      { label: 'Tenant', value: (v) => v.tenant },
      { label: 'Size', value: (v) => fmt.bytes(v.size) },
      { label: 'State', value: (v) => v.state },
      { label: 'IOPS limit', value: (v) => fmt.limit(v.qos.iops_limit, fmt.count) },
      { label: 'Bandwidth limit', value: (v) => fmt.limit(v.qos.bandwidth_limit, fmt.rate) },
      { label: 'Origin', value: (v) => v.origin ?? '' },
      { label: 'Created', value: (v) => fmt.time(v.created) },
    ], rows, q ? 'No volume matches the filter.' : 'No volumes yet.'));
  };
  filter.addEventListener('input', draw);

  const fields = [
    { name: 'name', label: 'Name', required: true, placeholder: 'data-1' },
    { name: 'size', label: 'Size', required: true, placeholder: '10G', value: '1G' },
  ];
  if (who.admin) fields.push({ name: 'tenant', label: 'Tenant', options: who.tenants, value: 'default' });
  fields.push({ name: 'iops_limit', label: 'IOPS limit', placeholder: 'unlimited', type: 'text' });
  fields.push({ name: 'bandwidth_limit', label: 'Bandwidth limit', placeholder: 'e.g. 200M' });

  const create = form('Create a volume', fields, 'Create volume', async (v) => {
    const body = { name: v.name, size: sizeValue(v.size) };
    if (v.tenant) body.tenant = v.tenant;
    if (v.iops_limit) body.iops_limit = optNumber(v.iops_limit);
    if (v.bandwidth_limit) body.bandwidth_limit = sizeValue(v.bandwidth_limit);
    const made = await post('/v1/volumes', body);
    volumes = await all('/v1/volumes');
    draw();
    return `Created volume ${made.name} (${made.id}).`;
  });

  draw();
  main.replaceChildren(
    heading('Volumes'),
    create,
    section('All volumes',
      h('div', { class: 'field inline' }, h('label', { for: 'volume-filter' }, 'Filter'), filter),
      list),
  );
}
