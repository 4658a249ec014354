// Every load balancer the caller may see, over all its networks (the API lists them per
// network), with the VIP, listeners and how many backends are up. One is created from its
// network's page, where its VIP's subnet and backends are.

import { get, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, link, list } from '../ui.js';
import { healthText, listenerName } from '../lbspec.js';

export async function render(main) {
  const nets = (await get('/v1/networks')).items;
  const [perNet, fips] = await Promise.all([
    Promise.all(nets.map((n) => get(`/v1/networks/${enc(n.id)}/load-balancers`).then((r) => r.items.map((l) => ({ ...l, net: n }))))),
    get('/v1/floating-ips').then((r) => r.items),
  ]);
  const lbs = perNet.flat();
  main.replaceChildren(heading('Load balancers'), section('Load balancers', table([
    { label: 'Load balancer', value: (l) => link(`#/load-balancers/${enc(l.id)}`, l.name) },
    { label: 'Network', value: (l) => link(`#/networks/${enc(l.net.id)}`, l.net.name) },
    { label: 'Tenant', value: (l) => l.tenant },
    { label: 'VIP', value: (l) => l.vip },
    { label: 'Listeners', value: (l) => list(l.listeners.map(listenerName)) },
    { label: 'Backends', value: (l) => healthText(l) },
    { label: 'Health check', value: (l) => l.health_check.kind },
    { label: 'Floating IP', value: (l) => fips.find((f) => f.load_balancer === l.id)?.ip ?? '' },
    { label: 'Created', value: (l) => fmt.time(l.created) },
  ], lbs, 'No load balancers yet.', (l) => ({ 'data-lb': l.name })),
  h('p', { class: 'hint' }, 'Create one from its network\'s page (Networks, then the network).')));
}
