// Jobs the caller may see, with their placement (the slice on each node); each links to its
// page, where a pending job says why it waits.

import { get, enc } from '../api.js';
import * as fmt from '../format.js';
import { heading, section, table, link, badge } from '../ui.js';

export async function render(main) {
  const jobs = (await get('/v1/jobs')).items;
  main.replaceChildren(heading('Jobs'), section('Jobs', table([
    { label: 'Job', value: (j) => link(`#/jobs/${enc(j.tenant)}/${enc(j.name)}`, j.name) },
    { label: 'Tenant', value: (j) => j.tenant },
    { label: 'State', value: (j) => badge(j.state, j.state === 'running' ? 'up' : 'warning') },
    { label: 'Priority', value: (j) => String(j.priority) },
    { label: 'GPUs', value: (j) => `${j.gpus}${j.gpu_model ? ` × ${j.gpu_model}` : ''}` },
    { label: 'CPU cores', value: (j) => String(j.cpu_cores) },
    { label: 'Memory', value: (j) => fmt.bytes(j.memory_bytes) },
    { label: 'Placement', value: (j) => j.placement.map((p) => `${p.node}: ${p.gpus.length} GPU, ${p.cpu_cores} cores`).join('; ') || j.explanation?.message || '' },
    { label: 'Created', value: (j) => fmt.time(j.created) },
  ], jobs, 'No jobs.', (j) => ({ 'data-job': `${j.tenant}/${j.name}` }))));
}
