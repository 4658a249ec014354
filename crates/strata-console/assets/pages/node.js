// One node of the placement pool: its inventory as the API has it (CPU, memory, GPUs by model
// and their NVLink islands, the NIC's bandwidth, storage devices, labels), what running jobs
// hold on it (each GPU shows the job using it), and cordon / uncordon for admins.

import { get, post, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, facts, button, status, act, link, list } from '../ui.js';

export async function render(main, [name], who) {
  const path = `/v1/nodes/${enc(name)}`;
  const st = status();
  const box = h('div');

  const draw = async () => {
    const [n, jobs] = await Promise.all([get(path), get('/v1/jobs').then((r) => r.items)]);
    // The running jobs with a part here, and which job holds each GPU index.
    const parts = jobs.flatMap((j) => j.placement.filter((p) => p.node === n.name).map((p) => ({ job: j, part: p })));
    const holder = new Map(parts.flatMap(({ job, part }) => part.gpus.map((g) => [g, job])));
    const islands = n.islands.length ? n.islands : [[...Array(n.gpu_count).keys()]];
    const gpuCell = (g) => {
      const j = holder.get(g);
      return h('li', { class: `gpu ${j ? 'used' : 'free'}`, 'data-gpu': String(g) },
        h('span', { class: 'gpu-n' }, `GPU ${g}`), h('span', { class: 'gpu-job' }, j ? j.name : 'free'));
    };
    box.replaceChildren(
      section('Capacity', facts([
        ['State', [n.cordoned ? 'cordoned: takes no new jobs' : 'schedulable', n.hypothetical ? 'hypothetical (declared for planning)' : 'registered by its daemon'].join('; ')],
        ['CPU cores', `${n.used_cpu_cores} of ${n.cpu_cores} held (${fmt.percent(n.used_cpu_cores, n.cpu_cores)})`],
        ['Memory', `${fmt.bytes(n.used_memory_bytes)} of ${fmt.bytes(n.memory_bytes)} held (${fmt.percent(n.used_memory_bytes, n.memory_bytes)})`],
        ['GPUs', `${n.used_gpus} of ${n.gpu_count} held`],
        ['NIC', fmt.bps(n.nic_bps)],
        ['Running jobs', String(n.jobs)],
        ['Updated', fmt.time(n.updated)],
      ])),
      section('GPUs',
        table([
          { label: 'Model', value: (g) => g.model },
          { label: 'Count', value: (g) => String(g.count) },
          { label: 'Memory each', value: (g) => fmt.bytes(g.memory_bytes) },
        ], n.gpus, 'No GPUs.'),
        n.gpu_count
          ? h('div', { id: 'islands' }, islands.map((isl, i) => h('div', { class: 'island' },
            h('h3', {}, n.islands.length ? `NVLink island ${i + 1}: GPUs ${isl.join(', ')}` : 'No NVLink islands reported'),
            h('ul', { class: 'gpus' }, isl.map(gpuCell)))))
          : null),
      section('Storage devices', table([
        { label: 'Device', value: (d) => d.name },
        { label: 'Class', value: (d) => d.class },
        { label: 'Capacity', value: (d) => fmt.bytes(d.capacity_bytes) },
        { label: 'Free', value: (d) => fmt.bytes(d.free_bytes) },
        { label: 'Throughput', value: (d) => fmt.rate(d.throughput_bps) },
      ], n.storage, 'No storage devices.')),
      section('Labels', Object.keys(n.labels).length
        ? h('ul', { class: 'labels', id: 'labels' }, Object.entries(n.labels).map(([k, v]) => h('li', {}, h('code', {}, `${k}=${v}`))))
        : h('p', { class: 'empty' }, 'No labels.')),
      section('Jobs here', table([
        { label: 'Job', value: ({ job }) => link(`#/jobs/${enc(job.tenant)}/${enc(job.name)}`, job.name) },
        { label: 'Tenant', value: ({ job }) => job.tenant },
        { label: 'GPUs', value: ({ part }) => list(part.gpus.map(String), 'none') },
        { label: 'CPU cores', value: ({ part }) => String(part.cpu_cores) },
        { label: 'Memory', value: ({ part }) => fmt.bytes(part.memory_bytes) },
        { label: 'Bandwidth', value: ({ part }) => fmt.bps(part.bandwidth_bps) },
        { label: 'Storage throughput', value: ({ part }) => fmt.rate(part.storage_bps) },
      ], parts, 'No running job has a part here.')),
      who.admin ? section('Scheduling', n.cordoned
        ? button(`Uncordon ${n.name}`, () => act(st, async () => {
          await post(`${path}/uncordon`, null);
          return `${n.name} takes new jobs again.`;
        }, draw))
        : button(`Cordon ${n.name}`, () => act(st, async () => {
          await post(`${path}/cordon`, null);
          return `${n.name} takes no new jobs; running ones stay.`;
        }, draw), 'danger')) : null,
    );
  };
  await draw();
  main.replaceChildren(heading(`Node ${name}`, link('#/nodes', 'All nodes')), st.node, box);
}
