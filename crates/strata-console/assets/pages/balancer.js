// One load balancer: its VIP and floating IP, each listener with its backends' weights and
// health (as the daemon's checker last decided: up, down, or unchecked without a health
// check; read again every 2 s while the page is open), the health-check and affinity
// settings, and forms to add a listener or a backend, change a weight, map a floating IP.
// A backend change sends the whole listener list back (PUT .../listeners), as the API takes.

import { get, put, del, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form, button, status, act, confirmed, setOptions, facts, link, badge, optNumber } from '../ui.js';
import { parseListener, parseBackend, parseBackends, listenerSpecs, healthText, listenerName } from '../lbspec.js';

const HEALTH_MS = 2000;

export async function render(main, [id]) {
  const path = `/v1/load-balancers/${enc(id)}`;
  let lb = await get(path);
  const netPath = `/v1/networks/${enc(lb.network)}`;
  const st = status();
  let net = null;
  let subnets = [];
  let ports = [];
  let fips = [];

  const loadAround = async () => {
    [net, subnets, ports, fips] = await Promise.all([
      get(netPath),
      get(`${netPath}/subnets`).then((r) => r.items),
      get(`${netPath}/ports`).then((r) => r.items),
      get('/v1/floating-ips').then((r) => r.items),
    ]);
  };
  const portName = (pid) => ports.find((p) => p.id === pid)?.name ?? pid;
  const subnet = () => subnets.find((s) => s.id === lb.subnet);
  const fip = () => fips.find((f) => f.load_balancer === lb.id);

  const detailsBox = h('div');
  const listenerBox = h('div', { id: 'listeners' });
  const settingsBox = h('div');

  const drawDetails = () => detailsBox.replaceChildren(facts([
    ['VIP', h('span', { id: 'lb-vip' }, lb.vip)],
    ['Subnet', subnet() ? `${subnet().name} ${subnet().cidr}` : lb.subnet],
    ['Network', net ? link(`#/networks/${enc(net.id)}`, net.name) : lb.network],
    ['Tenant', lb.tenant],
    ['Floating IP', fip()?.ip ?? 'none'],
    ['Backends', healthText(lb)],
    ['Monitor port', lb.monitor ? `${portName(lb.monitor)} (health probes come from it)` : 'none (no health check)'],
    ['Generation', String(lb.generation)],
    ['Id', h('code', {}, lb.id)],
    ['Created', fmt.time(lb.created)],
  ]));

  const drawSettings = () => {
    const c = lb.health_check;
    settingsBox.replaceChildren(facts([
      ['Health check', c.kind === 'http' ? `HTTP GET ${c.path}` : c.kind === 'tcp' ? 'TCP connect' : 'none'],
      ['Interval', fmt.millis(c.interval_ms)],
      ['Timeout', fmt.millis(c.timeout_ms)],
      ['Back after', `${c.rise} successes`],
      ['Out after', `${c.fall} failures`],
      ['Session affinity', lb.session_affinity ? 'on: a client (source address) stays on one backend' : 'off'],
    ]));
  };

  // Sends `listeners` (specs) and redraws from the answer.
  const setListeners = async (listeners) => {
    lb = await put(`${path}/listeners`, { listeners });
    draw();
  };

  const drawListeners = () => listenerBox.replaceChildren(...lb.listeners.map((l, i) => h('div', { class: 'listener', id: `listener-${i}` },
    h('h3', {}, `Listener ${l.protocol.toUpperCase()} ${l.port}`, h('span', { class: 'hint' }, ` switch group ${l.group}`)),
    table([
      { label: 'Backend', value: (b) => (b.port ? portName(b.port) : b.ip) },
      { label: 'IP', value: (b) => b.ip },
      { label: 'Target port', value: (b) => String(b.target_port) },
      { label: 'Weight', value: (b) => (b.weight === 0 ? '0 (no new connections)' : String(b.weight)) },
      { label: 'Health', value: (b) => badge(b.health, b.health) },
      {
        label: 'Actions',
        value: (b) => button(`Remove ${b.port ? portName(b.port) : b.ip}`, () => confirmed(
          `Remove backend ${b.port ? portName(b.port) : b.ip} from ${listenerName(l)}?`, st, async () => {
            const specs = listenerSpecs(lb);
            specs[i].backends = specs[i].backends.filter((_, j) => l.backends[j] !== b);
            await setListeners(specs);
            return 'Backend removed.';
          },
        ), 'danger'),
      },
    ], l.backends, 'No backends: connections to it are refused.', (b) => ({ 'data-backend': b.port ? portName(b.port) : b.ip })),
    lb.listeners.length > 1
      ? button(`Remove listener ${listenerName(l)}`, () => confirmed(`Remove listener ${listenerName(l)}?`, st, async () => {
        await setListeners(listenerSpecs(lb).filter((_, j) => j !== i));
        return `Listener ${listenerName(l)} removed.`;
      }), 'danger')
      : null)));

  const backendOptions = () => lb.listeners.flatMap((l, i) => l.backends.map((b, j) => ({
    value: `${i}/${j}`,
    label: `${listenerName(l)} ${b.port ? portName(b.port) : b.ip}:${b.target_port}`,
  })));
  const draw = () => {
    drawDetails();
    drawSettings();
    drawListeners();
    setOptions(backendForm.fields.listener, lb.listeners.map((l, i) => ({ value: String(i), label: listenerName(l) })));
    setOptions(weightForm.fields.backend, backendOptions());
    const free = fips.filter((f) => f.tenant === lb.tenant && !f.port && (!f.load_balancer || f.load_balancer === lb.id));
    setOptions(fipForm.fields.fip, free.map((f) => ({ value: f.id, label: f.ip })));
  };

  const backendForm = form('Add a backend', [
    { name: 'listener', label: 'Listener', options: [] },
    { name: 'backend', label: 'Port name or IP[:target port]', required: true, placeholder: 'b3:8080' },
    { name: 'weight', label: 'Weight (0 to 256)', placeholder: '1' },
  ], 'Add backend', async (v) => {
    const specs = listenerSpecs(lb);
    const b = parseBackend(v.backend);
    if (v.weight) b.weight = optNumber(v.weight);
    specs[Number(v.listener)].backends.push(b);
    await setListeners(specs);
    return 'Backend added.';
  });

  const weightForm = form('Change a weight', [
    { name: 'backend', label: 'Backend', options: [] },
    { name: 'weight', label: 'Weight (0: no new connections)', required: true },
  ], 'Save weight', async (v) => {
    const [i, j] = v.backend.split('/').map(Number);
    const specs = listenerSpecs(lb);
    specs[i].backends[j].weight = optNumber(v.weight);
    await setListeners(specs);
    return 'Weight saved.';
  });

  const listenerForm = form('Add a listener', [
    { name: 'listener', label: 'Protocol:port', required: true, placeholder: 'tcp:443' },
    { name: 'backends', label: 'Backends (port[:target][@weight], comma separated)', placeholder: 'b1:8443' },
  ], 'Add listener', async (v) => {
    const specs = listenerSpecs(lb);
    specs.push({ ...parseListener(v.listener), backends: parseBackends(v.backends) });
    await setListeners(specs);
    return `Listener ${v.listener} added.`;
  });

  const c = lb.health_check;
  const settingsForm = form('Health check and affinity', [
    { name: 'kind', label: 'Health check', options: ['none', 'tcp', 'http'], value: c.kind },
    { name: 'path', label: 'HTTP path', placeholder: '/healthz', value: c.path ?? '' },
    { name: 'interval_ms', label: 'Interval (ms)', value: String(c.interval_ms) },
    { name: 'timeout_ms', label: 'Timeout (ms)', value: String(c.timeout_ms) },
    { name: 'rise', label: 'Back after (successes)', value: String(c.rise) },
    { name: 'fall', label: 'Out after (failures)', value: String(c.fall) },
    { name: 'affinity', label: 'Session affinity', options: ['off', 'on'], value: lb.session_affinity ? 'on' : 'off' },
  ], 'Save settings', async (v) => {
    const health = { kind: v.kind };
    if (v.path && v.kind === 'http') health.path = v.path;
    for (const k of ['interval_ms', 'timeout_ms', 'rise', 'fall']) {
      if (v[k]) health[k] = optNumber(v[k]);
    }
    lb = await put(`${path}/settings`, { session_affinity: v.affinity === 'on', health_check: health });
    draw();
    return 'Settings saved.';
  });

  const fipForm = form('Map a floating IP to the VIP', [
    { name: 'fip', label: 'Floating IP', options: [] },
  ], 'Map', async (v) => {
    const f = await put(`/v1/floating-ips/${enc(v.fip)}/port`, { port: null, load_balancer: lb.id });
    fips = (await get('/v1/floating-ips')).items;
    draw();
    return `${f.ip} maps to ${lb.vip}.`;
  });
  const unmap = button('Unmap the floating IP', () => {
    const f = fip();
    if (!f) return;
    confirmed(`Unmap ${f.ip} from ${lb.name}?`, st, async () => {
      await put(`/v1/floating-ips/${enc(f.id)}/port`, { port: null });
      fips = (await get('/v1/floating-ips')).items;
      draw();
      return `${f.ip} unmapped.`;
    });
  });

  await loadAround();
  draw();

  let stopped = false;
  let timer = null;
  const healthStatus = status();
  const poll = async () => {
    try {
      const fresh = await get(path);
      if (stopped) return;
      lb = fresh;
      drawDetails();
      drawListeners();
      healthStatus.clear();
    } catch (e) {
      if (!stopped) healthStatus.error(e);
    }
    if (!stopped) timer = setTimeout(poll, HEALTH_MS);
  };
  timer = setTimeout(poll, HEALTH_MS);

  const remove = button(`Delete load balancer ${lb.name}`, () => {
    if (!confirm(`Delete load balancer ${lb.name} (${lb.vip})?`)) return;
    act(st, async () => {
      await del(path);
      location.hash = `#/networks/${enc(lb.network)}`;
    });
  }, 'danger');

  main.replaceChildren(
    heading(`Load balancer ${lb.name}`, link(`#/networks/${enc(lb.network)}`, `Network ${net?.name ?? lb.network}`), link('#/load-balancers', 'All load balancers')),
    st.node,
    section('Details', detailsBox),
    section('Listeners and backends', h('p', { class: 'hint' }, 'Health as the daemon\'s checker last decided, read every 2 s.'),
      listenerBox, healthStatus.node, h('div', { class: 'form-row' }, backendForm, weightForm, listenerForm)),
    section('Settings', settingsBox, settingsForm),
    section('Floating IP', fipForm, unmap),
    section('Danger zone', remove),
  );
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
