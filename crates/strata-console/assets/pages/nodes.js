// The placement pool's nodes: what each has and what its jobs use.

import { get } from '../api.js';
import * as fmt from '../format.js';
import { heading, section, table } from '../ui.js';

export async function render(main) {
  const nodes = (await get('/v1/nodes')).items;
  main.replaceChildren(heading('Nodes'), section('Nodes', table([
    { label: 'Node', value: (n) => n.name },
    { label: 'State', value: (n) => [n.cordoned ? 'cordoned' : 'schedulable', n.hypothetical ? 'hypothetical' : ''].filter(Boolean).join(', ') },
    { label: 'GPUs used', value: (n) => `${n.used_gpus} / ${n.gpu_count}` },
    { label: 'CPU cores used', value: (n) => `${n.used_cpu_cores} / ${n.cpu_cores}` },
    { label: 'Memory used', value: (n) => `${fmt.bytes(n.used_memory_bytes)} / ${fmt.bytes(n.memory_bytes)}` },
    { label: 'NIC', value: (n) => `${fmt.count(n.nic_bps)} bit/s` },
    { label: 'Jobs', value: (n) => (Array.isArray(n.jobs) ? n.jobs.join(', ') : String(n.jobs)) },
    { label: 'Updated', value: (n) => fmt.time(n.updated) },
  ], nodes, 'No nodes.')));
}
