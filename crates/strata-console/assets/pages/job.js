// One job (`#/jobs/TENANT/NAME`): what it asks for, its slice on each node it runs on (GPU
// indexes, CPU, memory, network bandwidth, storage throughput), and while it is pending the
// placement engine's explanation: the binding constraints and the nodes whose draining would
// make room. Delete asks first.

import { get, del, enc, query } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, facts, button, status, act, link, list, badge } from '../ui.js';

export async function render(main, [tenant, name]) {
  const path = `/v1/jobs/${enc(name)}${query({ tenant })}`;
  const j = await get(path);
  const st = status();
  const asks = [
    `${j.gpus} GPU${j.gpus === 1 ? '' : 's'}${j.gpu_model ? ` × ${j.gpu_model}` : ''}${j.same_island ? ' in one NVLink island' : ''}`,
    j.cpu_cores ? `${j.cpu_cores} CPU cores` : null,
    j.memory_bytes ? `${fmt.bytes(j.memory_bytes)} memory` : null,
    j.bandwidth_bps ? `${fmt.bps(j.bandwidth_bps)} network` : null,
    j.storage_bps ? `${fmt.rate(j.storage_bps)} storage` : null,
  ].filter(Boolean).join(', ');

  const parts = [
    heading(`Job ${j.name}`, link('#/jobs', 'All jobs')),
    st.node,
    section('Details', facts([
      ['State', badge(j.state, j.state === 'running' ? 'up' : 'warning')],
      ['Tenant', j.tenant],
      ['Asks for', asks],
      ['Spans', j.same_label ? `nodes sharing the label ${j.same_label}, if no one node holds it` : 'one node'],
      ['Priority', String(j.priority)],
      ['Nodes', j.nodes || 'none yet'],
      ['Created', fmt.time(j.created)],
    ])),
  ];
  if (j.explanation) {
    const e = j.explanation;
    parts.push(section('Why it waits', h('p', { class: 'explanation', id: 'explanation' }, e.message),
      facts([
        ['Binding constraints', list(e.binding, 'none named')],
        ['Draining would make room', e.drain.length ? h('span', {}, e.drain.flatMap((n, i) => [i ? ', ' : '', link(`#/nodes/${enc(n)}`, n)])) : 'no single node'],
      ])));
  }
  parts.push(section('Placement', table([
    { label: 'Node', value: (p) => link(`#/nodes/${enc(p.node)}`, p.node) },
    { label: 'GPUs', value: (p) => list(p.gpus.map(String), 'none') },
    { label: 'CPU cores', value: (p) => String(p.cpu_cores) },
    { label: 'Memory', value: (p) => fmt.bytes(p.memory_bytes) },
    { label: 'Bandwidth', value: (p) => fmt.bps(p.bandwidth_bps) },
    { label: 'Storage throughput', value: (p) => fmt.rate(p.storage_bps) },
  ], j.placement, 'Not placed yet.', (p) => ({ 'data-node': p.node }))));
  parts.push(section('Danger zone', button(`Delete job ${j.name}`, () => {
    if (!confirm(`Delete job ${j.name}? Its place goes to the next job in the queue.`)) return;
    act(st, async () => {
      await del(path);
      location.hash = '#/jobs';
    });
  }, 'danger')));
  main.replaceChildren(...parts);
}
