// The placement pool's nodes: what each has and what its jobs use; each links to its page.

import { get, enc } from '../api.js';
import * as fmt from '../format.js';
import { heading, section, table, link } from '../ui.js';

export async function render(main) {
  const nodes = (await get('/v1/nodes')).items;
  main.replaceChildren(heading('Nodes'), section('Nodes', table([
    { label: 'Node', value: (n) => link(`#/nodes/${enc(n.name)}`, n.name) },
    { label: 'State', value: (n) => [n.cordoned ? 'cordoned' : 'schedulable', n.hypothetical ? 'hypothetical' : ''].filter(Boolean).join(', ') },
    { label: 'GPUs used', value: (n) => `${n.used_gpus} / ${n.gpu_count}` },
    { label: 'CPU cores used', value: (n) => `${n.used_cpu_cores} / ${n.cpu_cores}` },
    { label: 'Memory used', value: (n) => `${fmt.bytes(n.used_memory_bytes)} / ${fmt.bytes(n.memory_bytes)}` },
    { label: 'NIC', value: (n) => fmt.bps(n.nic_bps) },
    { label: 'Jobs', value: (n) => String(n.jobs) },
    { label: 'Updated', value: (n) => fmt.time(n.updated) },
  ], nodes, 'No nodes.', (n) => ({ 'data-node': n.name }))));
}
