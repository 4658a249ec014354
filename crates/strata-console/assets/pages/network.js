// One tenant network: its facts and cap, subnets, routers, ports (and the TAP each plugs into),
// floating IPs, load balancers, its traffic (GET /v1/networks/{id}/stats, the figures
// `strata network stats` prints, read again every 5 s while the page is open) with probes on
// demand, the security groups of its tenant, and forms for what a tenant does most. Deletes
// ask first.

import { get, post, put, del, enc } from '../api.js';
import * as fmt from '../format.js';
import {
  h, heading, section, table, form, button, status, act, confirmed, setOptions, facts, link, list, figure,
  badge,
} from '../ui.js';
import { groupsPanel } from './secgroups.js';
import { parseListener, parseBackends, healthText, listenerName } from '../lbspec.js';

const STATS_MS = 5000;

const items = (path) => get(path).then((r) => r.items);
const csv = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);

export async function render(main, [id], who) {
  const path = `/v1/networks/${enc(id)}`;
  let net = await get(path);
  const st = status();
  const groups = groupsPanel(who, net.tenant);
  let subnets = [];
  let ports = [];
  let routers = [];
  let lbs = [];
  let fips = [];
  let nets = [];
  let stats = null;

  const load = async () => {
    [net, subnets, ports, routers, lbs, fips, nets, stats] = await Promise.all([
      get(path),
      items(`${path}/subnets`),
      items(`${path}/ports`),
      items(`${path}/routers`),
      items(`${path}/load-balancers`),
      items('/v1/floating-ips'),
      items('/v1/networks'),
      get(`${path}/stats`).catch(() => null),
      groups.refresh(),
    ]);
  };
  const subnetName = (sid) => subnets.find((s) => s.id === sid)?.name ?? sid;
  const portName = (pid) => ports.find((p) => p.id === pid)?.name ?? pid;
  const netName = (nid) => nets.find((n) => n.id === nid)?.name ?? nid;
  const groupName = (gid) => groups.groups().find((g) => g.id === gid)?.name ?? gid;
  const externals = () => nets.filter((n) => n.external);
  // The floating IPs that concern this network: mapped to its ports or balancers, or (an
  // external network) taken from it.
  const ownFips = () => fips.filter((f) => (f.port && ports.some((p) => p.id === f.port))
    || (f.load_balancer && lbs.some((l) => l.id === f.load_balancer))
    || f.network === net.id);

  const detailsBox = h('div');
  const subnetBox = h('div', { id: 'subnet-list' });
  const routerBox = h('div', { id: 'router-list' });
  const portBox = h('div', { id: 'port-list' });
  const fipBox = h('div', { id: 'fip-list' });
  const lbBox = h('div', { id: 'lb-list' });
  const statsBox = h('div', { id: 'stats' });
  const probeBox = h('div', { id: 'probe' });
  const statsSt = status();

  const drawDetails = () => detailsBox.replaceChildren(facts([
    ['Id', h('code', {}, net.id)],
    ['Tenant', net.tenant],
    ['Address space', net.cidr],
    ['VNI', String(net.vni)],
    ['Kind', net.external ? 'external: routers take a leg here, floating IPs come from here' : 'tenant network'],
    ['Cap on its ports together', net.cap_bps ? fmt.bps(net.cap_bps) : 'none'],
    ['Created', fmt.time(net.created)],
  ]));

  const drawSubnets = () => subnetBox.replaceChildren(table([
    { label: 'Subnet', value: (s) => s.name },
    { label: 'CIDR', value: (s) => s.cidr },
    { label: 'Gateway', value: (s) => h('span', {}, s.gateway, ' ', h('code', { class: 'hint' }, s.gateway_mac)) },
    { label: 'DHCP', value: (s) => (s.dhcp ? 'on' : 'off') },
    { label: 'DNS', value: (s) => list(s.dns, 'none') },
    { label: 'Created', value: (s) => fmt.time(s.created) },
    {
      label: 'Actions',
      value: (s) => button(`Delete ${s.name}`, () => confirmed(`Delete subnet ${s.name}?`, st, async () => {
        await del(`/v1/subnets/${enc(s.id)}`);
        return `Deleted subnet ${s.name}.`;
      }, refresh), 'danger'),
    },
  ], subnets, 'No subnets yet: a port needs one.', (s) => ({ 'data-subnet': s.name })));

  const drawRouters = () => routerBox.replaceChildren(table([
    { label: 'Router', value: (r) => r.name },
    { label: 'Subnets', value: (r) => list(r.subnets.map(subnetName), 'none') },
    { label: 'External gateway', value: (r) => (r.gateway ? `${netName(r.gateway.network)} ${r.gateway.ip} (SNAT address)` : 'none') },
    { label: 'Created', value: (r) => fmt.time(r.created) },
    {
      label: 'Actions',
      value: (r) => button(`Delete ${r.name}`, () => confirmed(`Delete router ${r.name}?`, st, async () => {
        await del(`/v1/routers/${enc(r.id)}`);
        return `Deleted router ${r.name}.`;
      }, refresh), 'danger'),
    },
  ], routers, 'No routers: subnets do not reach each other or the outside.'));

  // A port is bound when its TAP is on this node's switch (the stats list only those).
  const bound = (p) => Boolean(stats?.ports.some((x) => x.device === p.device));
  const drawPorts = () => portBox.replaceChildren(table([
    { label: 'Port', value: (p) => p.name },
    { label: 'Subnet', value: (p) => subnetName(p.subnet) },
    { label: 'IP', value: (p) => p.ip },
    { label: 'MAC', value: (p) => h('code', {}, p.mac) },
    { label: 'Plug into', value: (p) => h('code', { title: 'the TAP device on this node a VM or namespace uses' }, p.device) },
    { label: 'Security groups', value: (p) => list(p.security_groups.map(groupName), 'none') },
    { label: 'Cap', value: (p) => (p.cap_bps ? fmt.bps(p.cap_bps) : 'none') },
    { label: 'Guarantee', value: (p) => (p.min_bps ? fmt.bps(p.min_bps) : 'none') },
    { label: 'State', value: (p) => (bound(p) ? badge('bound', 'up') : badge('not on this node', 'unchecked')) },
    {
      label: 'Actions',
      value: (p) => button(`Delete ${p.name}`, () => confirmed(`Delete port ${p.name} (${p.ip})?`, st, async () => {
        await del(`/v1/network-ports/${enc(p.id)}`);
        return `Deleted port ${p.name}.`;
      }, refresh), 'danger'),
    },
  ], ports, 'No ports yet.', (p) => ({ 'data-port': p.name })));

  const fipTarget = (f) => {
    if (f.port) return `port ${portName(f.port)}`;
    const lb = lbs.find((l) => l.id === f.load_balancer);
    if (lb) return h('span', {}, 'load balancer ', link(`#/load-balancers/${enc(lb.id)}`, lb.name));
    return f.load_balancer ? `load balancer ${f.load_balancer}` : 'nothing (allocated)';
  };
  const drawFips = () => fipBox.replaceChildren(table([
    { label: 'Address', value: (f) => f.ip },
    { label: 'From', value: (f) => netName(f.network) },
    { label: 'Maps to', value: fipTarget },
    { label: 'Tenant', value: (f) => f.tenant },
    {
      label: 'Actions',
      value: (f) => button(`Release ${f.ip}`, () => confirmed(`Release floating IP ${f.ip}?`, st, async () => {
        await del(`/v1/floating-ips/${enc(f.id)}`);
        return `Released ${f.ip}.`;
      }, refresh), 'danger'),
    },
  ], ownFips(), 'No floating IPs.'));

  const lbFip = (lb) => fips.find((f) => f.load_balancer === lb.id)?.ip ?? '';
  const drawLbs = () => lbBox.replaceChildren(table([
    { label: 'Load balancer', value: (l) => link(`#/load-balancers/${enc(l.id)}`, l.name) },
    { label: 'VIP', value: (l) => l.vip },
    { label: 'Listeners', value: (l) => list(l.listeners.map((x) => `${listenerName(x)} → ${x.backends.length}`)) },
    { label: 'Backends', value: (l) => healthText(l) },
    { label: 'Health check', value: (l) => l.health_check.kind },
    { label: 'Affinity', value: (l) => (l.session_affinity ? 'source address' : 'none') },
    { label: 'Floating IP', value: lbFip },
    {
      label: 'Actions',
      value: (l) => button(`Delete ${l.name}`, () => confirmed(`Delete load balancer ${l.name} (${l.vip})?`, st, async () => {
        await del(`/v1/load-balancers/${enc(l.id)}`);
        return `Deleted load balancer ${l.name}.`;
      }, refresh), 'danger'),
    },
  ], lbs, 'No load balancers.', (l) => ({ 'data-lb': l.name })));

  const drawStats = () => {
    if (!stats) {
      statsBox.replaceChildren(h('p', { class: 'empty' }, 'No figures.'));
      return;
    }
    const rows = [...stats.ports, { ...stats.total, port: '(total)' }];
    const drops = (r) => {
      const d = Object.entries(r.drops).filter(([, n]) => n > 0);
      return d.length ? h('ul', { class: 'rules' }, d.map(([k, n]) => h('li', {}, `${k}: ${fmt.count(n)}`))) : 'none';
    };
    const probes = (r) => (r.probes_sent
      ? `${r.probes_sent - r.probes_answered} lost of ${r.probes_sent}; ${fmt.roundTrips(r.probe_rtt)}`
      : '—');
    statsBox.replaceChildren(table([
      { label: 'Port', value: (r) => r.port },
      { label: 'RX packets', value: (r) => figure(r.rx_packets, fmt.count) },
      { label: 'RX bytes', value: (r) => fmt.bytes(r.rx_bytes) },
      { label: 'TX packets', value: (r) => figure(r.tx_packets, fmt.count) },
      { label: 'TX bytes', value: (r) => fmt.bytes(r.tx_bytes) },
      { label: 'RX 1 s / 10 s', value: (r) => `${fmt.bps(r.rx_bps_1s)} / ${fmt.bps(r.rx_bps_10s)}` },
      { label: 'TX 1 s / 10 s', value: (r) => `${fmt.bps(r.tx_bps_1s)} / ${fmt.bps(r.tx_bps_10s)}` },
      { label: 'Drops', value: drops },
      { label: 'Handshake RTT', value: (r) => fmt.roundTrips(r.handshake_rtt) },
      { label: 'Probes', value: probes },
    ], rows, 'No bound ports.', (r) => ({ 'data-port': r.port })));
  };

  const draw = () => {
    drawDetails();
    drawSubnets();
    drawRouters();
    drawPorts();
    drawFips();
    drawLbs();
    drawStats();
    const subnetOptions = subnets.map((s) => ({ value: s.id, label: `${s.name} ${s.cidr}` }));
    setOptions(portForm.fields.subnet, subnetOptions);
    setOptions(lbForm.fields.subnet, subnetOptions);
    const portOptions = ports.map((p) => ({ value: p.id, label: `${p.name} ${p.ip}` }));
    setOptions(bandwidthForm.fields.port, portOptions);
    setOptions(gatewayForm.fields.router, routers.map((r) => ({ value: r.id, label: r.name })));
    const ext = externals().map((n) => ({ value: n.id, label: n.name }));
    setOptions(gatewayForm.fields.network, [{ value: '', label: '(none: take the leg away)' }, ...ext]);
    setOptions(fipCreateForm.fields.network, ext);
    setOptions(fipCreateForm.fields.port, [{ value: '', label: '(not mapped yet)' }, ...portOptions]);
    setOptions(fipMapForm.fields.fip, fips.filter((f) => f.tenant === net.tenant).map((f) => ({ value: f.id, label: f.ip })));
    setOptions(fipMapForm.fields.target, [
      { value: '', label: '(nothing: unmap it)' },
      ...ports.map((p) => ({ value: `port:${p.id}`, label: `port ${p.name}` })),
      ...lbs.map((l) => ({ value: `lb:${l.id}`, label: `load balancer ${l.name}` })),
    ]);
  };
  const refresh = async () => {
    await load();
    draw();
  };

  const subnetForm = form('Create a subnet', [
    { name: 'name', label: 'Subnet name', required: true, placeholder: 'a' },
    { name: 'cidr', label: 'CIDR', required: true, placeholder: '10.0.1.0/24' },
    { name: 'gateway', label: 'Gateway', placeholder: 'the first host' },
    { name: 'dhcp', label: 'DHCP', options: ['on', 'off'] },
    { name: 'dns', label: 'DNS servers (comma separated)', placeholder: 'none' },
  ], 'Create subnet', async (v) => {
    const body = { name: v.name, cidr: v.cidr, dhcp: v.dhcp === 'on', dns: csv(v.dns) };
    if (v.gateway) body.gateway = v.gateway;
    const s = await post(`${path}/subnets`, body);
    await refresh();
    return `Created subnet ${s.name} (${s.cidr}, gateway ${s.gateway}).`;
  });

  const portForm = form('Add a port', [
    { name: 'name', label: 'Port name', required: true, placeholder: 'vm-1' },
    { name: 'subnet', label: 'Subnet', options: [] },
    { name: 'ip', label: 'IP', placeholder: 'the lowest free' },
    { name: 'mac', label: 'MAC', placeholder: 'allocated' },
    { name: 'groups', label: 'Security groups (comma separated)', placeholder: 'default' },
  ], 'Add port', async (v) => {
    const body = { name: v.name, subnet: v.subnet, security_groups: csv(v.groups) };
    if (v.ip) body.ip = v.ip;
    if (v.mac) body.mac = v.mac;
    const p = await post(`${path}/ports`, body);
    await refresh();
    return h('span', {}, `Added port ${p.name} (${p.ip}); plug into `, h('code', {}, p.device), '.');
  });

  const bandwidthForm = form("Set a port's bandwidth", [
    { name: 'port', label: 'Port', options: [] },
    { name: 'cap', label: 'Cap (bit/s, 100M, 1G)', placeholder: 'none' },
    { name: 'min', label: 'Guarantee (bit/s)', placeholder: 'none' },
  ], 'Save bandwidth', async (v) => {
    const p = await put(`/v1/network-ports/${enc(v.port)}/bandwidth`, { cap_bps: fmt.parseBps(v.cap), min_bps: fmt.parseBps(v.min) });
    await refresh();
    return `Port ${p.name}: cap ${p.cap_bps ? fmt.bps(p.cap_bps) : 'none'}, guarantee ${p.min_bps ? fmt.bps(p.min_bps) : 'none'}.`;
  });

  const capForm = form("Set the network's cap", [
    { name: 'cap', label: 'Cap on all its ports (bit/s, 1G)', placeholder: 'none', value: net.cap_bps ?? '' },
  ], 'Save cap', async (v) => {
    net = await put(`${path}/bandwidth`, { cap_bps: fmt.parseBps(v.cap) });
    drawDetails();
    return `Cap ${net.cap_bps ? fmt.bps(net.cap_bps) : 'removed'}.`;
  });

  const routerForm = form('Create a router', [
    { name: 'name', label: 'Router name', required: true, placeholder: 'r1' },
    { name: 'subnets', label: 'Subnets it connects (comma separated)', placeholder: 'a, b' },
  ], 'Create router', async (v) => {
    const r = await post(`${path}/routers`, { name: v.name, subnets: csv(v.subnets) });
    await refresh();
    return `Created router ${r.name}.`;
  });

  const gatewayForm = form("Set a router's external gateway", [
    { name: 'router', label: 'Router', options: [] },
    { name: 'network', label: 'External network', options: [] },
  ], 'Set gateway', async (v) => {
    const r = await put(`/v1/routers/${enc(v.router)}/gateway`, { network: v.network || null });
    await refresh();
    return r.gateway ? `Router ${r.name} reaches the outside from ${r.gateway.ip}.` : `Router ${r.name} has no gateway.`;
  });

  const lbForm = form('Create a load balancer', [
    { name: 'name', label: 'Name', required: true, placeholder: 'web' },
    { name: 'subnet', label: "The VIP's subnet", options: [] },
    { name: 'vip', label: 'VIP', placeholder: 'the lowest free' },
    { name: 'listener', label: 'Listener', required: true, value: 'tcp:80' },
    { name: 'backends', label: 'Backends (port[:target][@weight], comma separated)', placeholder: 'b1:8080@2, b2:8080' },
    { name: 'health', label: 'Health check', options: ['none', 'tcp', 'http'] },
    { name: 'path', label: 'HTTP path', placeholder: '/healthz' },
    { name: 'affinity', label: 'Session affinity', options: [{ value: 'off', label: 'off' }, { value: 'on', label: 'on (by source address)' }] },
  ], 'Create load balancer', async (v) => {
    const listener = { ...parseListener(v.listener), backends: parseBackends(v.backends) };
    const body = { name: v.name, subnet: v.subnet, listeners: [listener], session_affinity: v.affinity === 'on' };
    if (v.vip) body.vip = v.vip;
    if (v.health !== 'none' || v.path) body.health_check = { kind: v.health, ...(v.path ? { path: v.path } : {}) };
    const lb = await post(`${path}/load-balancers`, body);
    await refresh();
    return h('span', {}, 'Created load balancer ', link(`#/load-balancers/${enc(lb.id)}`, lb.name), ` (VIP ${lb.vip}).`);
  });

  const fipCreateForm = form('Allocate a floating IP', [
    { name: 'network', label: 'From external network', options: [] },
    { name: 'port', label: 'Map to port', options: [] },
  ], 'Allocate', async (v) => {
    const body = { network: v.network };
    if (v.port) body.port = v.port;
    if (who.admin) body.tenant = net.tenant;
    const f = await post('/v1/floating-ips', body);
    await refresh();
    return `Allocated ${f.ip}.`;
  });

  const fipMapForm = form('Map a floating IP', [
    { name: 'fip', label: 'Floating IP', options: [] },
    { name: 'target', label: 'To', options: [] },
  ], 'Map', async (v) => {
    const [kind, target] = v.target ? v.target.split(/:(.*)/) : ['', ''];
    const body = kind === 'lb' ? { port: null, load_balancer: target } : { port: target || null };
    const f = await put(`/v1/floating-ips/${enc(v.fip)}/port`, body);
    await refresh();
    return f.port || f.load_balancer ? `${f.ip} mapped.` : `${f.ip} unmapped.`;
  });

  const probeButton = button('Probe every port', () => {
    probeButton.disabled = true;
    act(statsSt, async () => {
      const r = await post(`${path}/probe`, { count: 5, interval_ms: 100 });
      probeBox.replaceChildren(h('h3', {}, 'Probes just sent'), table([
        { label: 'Port', value: (p) => p.port },
        { label: 'IP', value: (p) => p.ip },
        { label: 'Sent', value: (p) => String(p.sent) },
        { label: 'Answered', value: (p) => String(p.answered) },
        { label: 'Loss', value: (p) => `${(p.loss_ppm / 10000).toFixed(1)} %` },
        { label: 'Round trip', value: (p) => fmt.roundTrips(p.rtt) },
      ], r.ports, 'No bound port to probe.'));
    }).finally(() => {
      probeButton.disabled = false;
    });
  });

  await refresh();

  let stopped = false;
  let timer = null;
  const poll = async () => {
    try {
      const s = await get(`${path}/stats`);
      if (stopped) return;
      stats = s;
      drawStats();
    } catch (e) {
      if (!stopped) statsSt.error(e);
    }
    if (!stopped) timer = setTimeout(poll, STATS_MS);
  };
  timer = setTimeout(poll, STATS_MS);

  const remove = button(`Delete network ${net.name}`, () => {
    if (!confirm(`Delete network ${net.name}? It must have no ports, routers or load balancers left.`)) return;
    act(st, async () => {
      await del(path);
      location.hash = '#/networks';
    });
  }, 'danger');

  main.replaceChildren(
    heading(`Network ${net.name}`, link('#/networks', 'All networks')),
    st.node,
    section('Details', detailsBox, capForm),
    section('Subnets', subnetBox, subnetForm),
    section('Ports', portBox, h('div', { class: 'form-row' }, portForm, bandwidthForm)),
    section('Routers', routerBox, h('div', { class: 'form-row' }, routerForm, gatewayForm)),
    section('Load balancers', lbBox, lbForm),
    section('Floating IPs', fipBox, h('div', { class: 'form-row' }, fipCreateForm, fipMapForm)),
    section('Traffic', h('p', { class: 'hint' }, 'Since each port was bound; rates over the last 1 and 10 seconds, read every 5 s. RX is what a port sent into the switch, TX what the switch delivered to it.'),
      statsBox, h('div', { class: 'actions' }, probeButton), statsSt.node, probeBox),
    groups.node,
    section('Danger zone', remove),
  );
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
