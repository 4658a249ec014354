// One volume: its facts, a live chart of IOPS, throughput and latency (polling
// GET /v1/volumes/{id}/stats every second while the page is open), QoS edit, snapshots with
// clone and delete, its NBD attachment, and delete with confirmation.

import { get, put, post, del, enc } from '../api.js';
import * as fmt from '../format.js';
import { LineChart } from '../chart.js';
import { h, heading, section, table, form, button, status, act, optNumber, sizeValue, link } from '../ui.js';

const POLL_MS = 1000;

export async function render(main, [id]) {
  const path = `/v1/volumes/${enc(id)}`;
  let vol = await get(path);
  const st = status();

  const facts = h('dl', { class: 'facts' });
  const drawFacts = () => facts.replaceChildren(
    h('dt', {}, 'Id'), h('dd', {}, h('code', {}, vol.id)),
    h('dt', {}, 'Tenant'), h('dd', {}, vol.tenant),
    h('dt', {}, 'Size'), h('dd', {}, fmt.bytes(vol.size)),
    h('dt', {}, 'Pool'), h('dd', {}, vol.pool),
    h('dt', {}, 'State'), h('dd', {}, vol.state),
    h('dt', {}, 'Origin'), h('dd', {}, vol.origin ?? '—'),
    h('dt', {}, 'QoS'), h('dd', {}, qosText(vol.qos)),
    h('dt', {}, 'Created'), h('dd', {}, fmt.time(vol.created)));
  drawFacts();

  // The live figures: one chart per unit, the latest value beside each title.
  const latest = {
    iops: h('output', { id: 'stat-iops' }, '—'),
    throughput: h('output', { id: 'stat-throughput' }, '—'),
    latency: h('output', { id: 'stat-latency' }, '—'),
  };
  const canvas = (label) => h('canvas', { class: 'chart', role: 'img', 'aria-label': label });
  const cIops = canvas('IOPS over the last minute');
  const cTput = canvas('throughput over the last minute');
  const cLat = canvas('latency over the last minute');
  const charts = [
    new LineChart(cIops, { series: [{ name: 'IOPS', color: '#2563eb' }], format: fmt.count, floor: 10 }),
    new LineChart(cTput, { series: [{ name: 'throughput', color: '#059669' }], format: fmt.rate, floor: 1 << 20, binary: true }),
    new LineChart(cLat, { series: [{ name: 'p50', color: '#d97706' }, { name: 'p99', color: '#dc2626' }], format: fmt.micros, floor: 1000 }),
  ];
  const statsStatus = status();
  const panel = (title, out, c, legend) => h('figure', { class: 'chart-box' },
    h('figcaption', {}, h('span', {}, title), out, legend ?? null), c);
  const live = section('Live',
    h('div', { class: 'charts' },
      panel('IOPS', latest.iops, cIops),
      panel('Throughput', latest.throughput, cTput),
      panel('Latency', latest.latency, cLat,
        h('span', { class: 'legend' }, h('span', { class: 'swatch p50' }), 'p50 ', h('span', { class: 'swatch p99' }), 'p99'))),
    h('p', { class: 'hint', id: 'stat-totals' }),
    statsStatus.node);
  const totals = live.querySelector('#stat-totals');

  let timer = null;
  let stopped = false;
  const poll = async () => {
    try {
      const s = await get(`${path}/stats`);
      if (stopped) return;
      charts[0].push([s.iops_1s]);
      charts[1].push([s.throughput_1s]);
      charts[2].push([s.latency_p50_us, s.latency_p99_us]);
      latest.iops.textContent = fmt.count(s.iops_1s);
      latest.iops.dataset.value = String(s.iops_1s);
      latest.throughput.textContent = fmt.rate(s.throughput_1s);
      latest.latency.textContent = `${fmt.micros(s.latency_p50_us)} / ${fmt.micros(s.latency_p99_us)}`;
      totals.textContent = `Totals: ${s.totals.reads} reads (${fmt.bytes(s.totals.read_bytes)}), ${s.totals.writes} writes (${fmt.bytes(s.totals.write_bytes)}), ${(s.totals.throttled_us / 1e6).toFixed(1)} s waited for QoS.`;
      statsStatus.clear();
    } catch (e) {
      statsStatus.error(e);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  const redraw = () => charts.forEach((c) => c.draw());
  window.addEventListener('resize', redraw);

  const qos = form('QoS limits', [
    { name: 'iops_limit', label: 'IOPS limit', placeholder: 'unlimited', value: vol.qos.iops_limit ?? '' },
    { name: 'bandwidth_limit', label: 'Bandwidth limit (bytes/s or 200M)', placeholder: 'unlimited', value: vol.qos.bandwidth_limit ?? '' },
    { name: 'burst_iops', label: 'Burst IOPS', placeholder: 'default', value: vol.qos.burst_iops ?? '' },
    { name: 'burst_bandwidth', label: 'Burst bandwidth', placeholder: 'default', value: vol.qos.burst_bandwidth ?? '' },
  ], 'Save QoS', async (v) => {
    vol = await put(`${path}/qos`, {
      iops_limit: optNumber(v.iops_limit),
      bandwidth_limit: sizeValue(v.bandwidth_limit),
      burst_iops: optNumber(v.burst_iops),
      burst_bandwidth: sizeValue(v.burst_bandwidth),
    });
    drawFacts();
    return 'QoS saved (empty fields are unlimited).';
  });

  const snapList = h('div');
  const snapStatus = status();
  const drawSnaps = async () => {
    const snaps = (await get(`${path}/snapshots`)).items;
    snapList.replaceChildren(table([
      { label: 'Name', value: (s) => s.name },
      { label: 'Id', value: (s) => h('code', {}, s.id) },
      { label: 'Group', value: (s) => s.group ?? '' },
      { label: 'Created', value: (s) => fmt.time(s.created) },
      {
        label: 'Actions',
        value: (s) => h('span', { class: 'actions' },
          button(`Clone ${s.name}`, () => {
            const name = prompt(`Name of the clone of ${s.name}`, `${vol.name}-${s.name}`);
            if (name) act(snapStatus, async () => {
              const c = await post(`/v1/snapshots/${enc(s.id)}/clone`, { name });
              return h('span', {}, 'Cloned into ', link(`#/volumes/${enc(c.id)}`, c.name), '.');
            });
          }),
          button(`Delete ${s.name}`, () => {
            if (confirm(`Delete snapshot ${s.name}?`)) {
              act(snapStatus, async () => {
                await del(`/v1/snapshots/${enc(s.id)}`);
                return `Deleted snapshot ${s.name}.`;
              }, drawSnaps);
            }
          }, 'danger')),
      },
    ], snaps, 'No snapshots.'));
  };
  await drawSnaps();
  const snapForm = form('Take a snapshot', [{ name: 'name', label: 'Snapshot name', required: true }], 'Snapshot', async (v) => {
    const s = await post(`${path}/snapshots`, { name: v.name });
    await drawSnaps();
    return `Snapshot ${s.name} taken.`;
  });

  const attach = h('div');
  const drawAttach = async () => {
    // From the list, so a volume without an export is no failed request.
    const a = (await get('/v1/attachments')).items.find((x) => x.volume === vol.id);
    if (a) {
      attach.replaceChildren(h('dl', { class: 'facts' },
        h('dt', {}, 'Export'), h('dd', {}, a.export),
        h('dt', {}, 'URI'), h('dd', {}, h('code', { id: 'attach-uri' }, a.uri)),
        a.tcp_uri ? [h('dt', {}, 'TCP URI'), h('dd', {}, h('code', {}, a.tcp_uri))] : null),
      button('Detach', () => act(st, async () => {
        await del(`${path}/attachments`);
        return 'Detached.';
      }, drawAttach)));
    } else {
      const exp = button('Export over NBD', () => act(st, async () => {
        await post(`${path}/attachments`, null);
        return 'Exported.';
      }, drawAttach));
      exp.id = 'export';
      attach.replaceChildren(h('p', {}, 'Not exported.'), exp);
    }
  };
  await drawAttach();

  const remove = button(`Delete volume ${vol.name}`, () => {
    if (!confirm(`Delete volume ${vol.name} and all its data?`)) return;
    act(st, async () => {
      await del(path);
      location.hash = '#/volumes';
    });
  }, 'danger');

  main.replaceChildren(
    heading(`Volume ${vol.name}`, link('#/volumes', 'All volumes')),
    st.node,
    live,
    section('Details', facts),
    qos,
    snapForm,
    section('Snapshots', snapStatus.node, snapList),
    section('NBD export', attach),
    section('Danger zone', remove),
  );
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    window.removeEventListener('resize', redraw);
  };
}

function qosText(q) {
  return `IOPS ${fmt.limit(q.iops_limit, fmt.count)}, bandwidth ${fmt.limit(q.bandwidth_limit, fmt.rate)}`;
}
