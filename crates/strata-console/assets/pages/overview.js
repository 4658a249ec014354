// Overview: pool capacity and allocation (admins), health as the API reports it, volumes
// that are not available, the newest events, and counts of each kind of object the caller
// can see.

import { get, all } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, errorBox, link, badge } from '../ui.js';

const RECENT_EVENTS = 5;

export async function render(main, _params, who) {
  const [pools, vols, tenants, switches, networks, nodes, jobs, events] = await Promise.allSettled([
    who.admin ? get('/v1/pools') : Promise.resolve(null),
    all('/v1/volumes'),
    get('/v1/tenants'),
    who.admin ? get('/v1/switches') : Promise.resolve(null),
    get('/v1/networks'),
    get('/v1/nodes'),
    get('/v1/jobs'),
    get(`/v1/events?limit=${RECENT_EVENTS}`),
  ]);
  const parts = [heading('Overview')];

  if (pools.status === 'fulfilled' && pools.value) {
    parts.push(section('Capacity', ...pools.value.items.map(poolCard)));
  } else if (pools.status === 'rejected') {
    parts.push(section('Capacity', errorBox(pools.reason)));
  }

  const volumes = vols.status === 'fulfilled' ? vols.value : [];
  const attention = volumes.filter((v) => v.state !== 'available');
  parts.push(section('Health',
    h('p', { class: 'health ok-text', id: 'health' }, 'API reachable; ',
      attention.length ? `${attention.length} volume(s) not available.` : 'every volume is available.'),
    attention.length
      ? table([
        { label: 'Volume', value: (v) => link(`#/volumes/${v.id}`, v.name) },
        { label: 'State', value: (v) => v.state },
      ], attention)
      : null,
    h('p', { class: 'hint' }, 'Device faults and degraded redundancy appear here once the API reports them.')));

  parts.push(section('Recent events',
    events.status === 'rejected'
      ? errorBox(events.reason)
      : h('div', { id: 'recent-events' }, table([
        { label: 'Time', value: (e) => fmt.time(e.time) },
        { label: 'Severity', value: (e) => badge(e.severity, e.severity) },
        { label: 'Type', value: (e) => h('code', { class: 'nowrap' }, e.type) },
        { label: 'Message', value: (e) => e.message },
      ], events.value.items, 'No events yet.', (e) => ({ 'data-seq': String(e.seq) }))),
    h('p', {}, link('#/events', 'All events'))));

  const counts = [
    ['Volumes', vols, () => volumes.length, '#/volumes'],
    ['Tenants', tenants, (v) => v.items.length, '#/tenants'],
    ['Switches', switches, (v) => (v ? v.items.length : null), '#/switches'],
    ['Networks', networks, (v) => v.items.length, '#/networks'],
    ['Nodes', nodes, (v) => v.items.length, '#/nodes'],
    ['Jobs', jobs, (v) => v.items.length, '#/jobs'],
  ];
  parts.push(section('Objects', h('ul', { class: 'tiles' },
    counts.map(([label, res, n, href]) => {
      const value = res.status === 'fulfilled' ? n(res.value) : null;
      if (value === null) return null;
      return h('li', {}, h('a', { href, class: 'tile' }, h('span', { class: 'tile-n' }, String(value)), h('span', {}, label)));
    }))));
  main.replaceChildren(...parts);
}

function poolCard(p) {
  const used = p.capacity ? p.allocated / p.capacity : 0;
  const fill = h('div', { class: `meter-fill${used > 0.85 ? ' warn' : ''}` });
  // Set through the CSSOM: the CSP refuses style attributes in markup.
  fill.style.width = `${(100 * used).toFixed(2)}%`;
  return h('div', { class: 'pool' },
    h('h3', {}, `Pool ${p.name}`),
    h('div', { class: 'meter', role: 'meter', 'aria-label': `pool ${p.name} allocated`, 'aria-valuemin': '0', 'aria-valuemax': String(p.capacity), 'aria-valuenow': String(p.allocated) },
      fill),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Capacity'), h('dd', {}, fmt.bytes(p.capacity)),
      h('dt', {}, 'Allocated'), h('dd', {}, `${fmt.bytes(p.allocated)} (${fmt.percent(p.allocated, p.capacity)})`),
      h('dt', {}, 'Free'), h('dd', {}, fmt.bytes(p.free)),
      h('dt', {}, 'Provisioned'), h('dd', {}, `${fmt.bytes(p.provisioned)} (${fmt.percent(p.provisioned, p.capacity)} of capacity)`)),
    table([
      { label: 'Device', value: (d) => d.path },
      { label: 'Class', value: (d) => d.class },
      { label: 'Capacity', value: (d) => fmt.bytes(d.capacity) },
      { label: 'Allocated', value: (d) => fmt.bytes(d.allocated) },
      { label: 'Metadata', value: (d) => (d.metadata ? 'yes' : '') },
    ], p.devices, 'No devices.'));
}
