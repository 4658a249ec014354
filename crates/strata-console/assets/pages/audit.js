// The audit log (admins), newest first, with a filter over actor, action and resource.

import { get } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table } from '../ui.js';

export async function render(main) {
  const entries = (await get('/v1/audit?limit=500')).items;
  const filter = h('input', { id: 'audit-filter', type: 'search', placeholder: 'actor, action, resource' });
  const box = h('div');
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = entries.filter((e) => !q || [e.actor, e.action, e.resource, e.tenant ?? '', e.outcome]
      .some((s) => s.toLowerCase().includes(q)));
    box.replaceChildren(table([
      { label: 'Time', value: (e) => fmt.time(e.time) },
      { label: 'Actor', value: (e) => e.actor },
      { label: 'Tenant', value: (e) => e.tenant ?? '' },
      { label: 'Action', value: (e) => e.action },
      { label: 'Resource', value: (e) => e.resource },
      { label: 'Outcome', value: (e) => h('span', { class: e.outcome === 'ok' ? '' : 'bad' }, e.outcome) },
    ], rows, 'No entries.'));
  };
  filter.addEventListener('input', draw);
  draw();
  main.replaceChildren(heading('Audit log'), section(`Newest ${entries.length} entries`,
    h('div', { class: 'field inline' }, h('label', { for: 'audit-filter' }, 'Filter'), filter), box));
}
