// Switches (admins): each switch's ports with their counters, its flows, add and delete flows,
// create and delete switches.

import { get, post, del, enc } from '../api.js';
import { h, heading, section, table, form, button, status, act } from '../ui.js';

export async function render(main, _params, who) {
  const st = status();
  const box = h('div');
  if (!who.admin) {
    main.replaceChildren(heading('Switches'), h('p', { class: 'hint' }, 'Switches are managed by admins.'));
    return;
  }
  const draw = async () => {
    const switches = (await get('/v1/switches')).items;
    const cards = await Promise.all(switches.map(async (s) => {
      const [ports, flows] = await Promise.all([
        get(`/v1/switches/${enc(s.name)}/ports`),
        get(`/v1/switches/${enc(s.name)}/flows`),
      ]);
      const addFlow = form(`Add a flow to ${s.name}`, [
        { name: 'flow', label: 'Flow', required: true, placeholder: 'priority=10,in_port=1,actions=output:2' },
      ], 'Add flow', async (v) => {
        await post(`/v1/switches/${enc(s.name)}/flows`, { flow: v.flow });
        await draw();
      });
      return section(`Switch ${s.name}`,
        h('h3', {}, 'Ports'),
        table([
          { label: 'No.', value: (p) => String(p.number) },
          { label: 'Port', value: (p) => p.name },
          { label: 'Kind', value: (p) => p.kind ?? '' },
          { label: 'Peer', value: (p) => p.peer ?? '' },
          { label: 'RX packets', value: (p) => String(p.rx_packets) },
          { label: 'RX bytes', value: (p) => String(p.rx_bytes) },
          { label: 'RX dropped', value: (p) => String(p.rx_dropped) },
          { label: 'RX errors', value: (p) => String(p.rx_errors) },
          { label: 'TX packets', value: (p) => String(p.tx_packets) },
          { label: 'TX bytes', value: (p) => String(p.tx_bytes) },
          { label: 'TX dropped', value: (p) => String(p.tx_dropped) },
        ], ports.items, 'No ports.'),
        h('p', { class: 'hint' }, `Isolation drops: ${ports.isolation_drops}`),
        h('h3', {}, 'Flows'),
        flows.flows.length
          ? h('ul', { class: 'flows' }, flows.flows.map((f) => h('li', {}, h('code', {}, f))))
          : h('p', { class: 'empty' }, 'No flows.'),
        addFlow,
        button(`Delete switch ${s.name}`, () => {
          if (confirm(`Delete switch ${s.name}?`)) {
            act(st, async () => {
              await del(`/v1/switches/${enc(s.name)}`);
              return `Deleted switch ${s.name}.`;
            }, draw);
          }
        }, 'danger'));
    }));
    box.replaceChildren(...(cards.length ? cards : [h('p', { class: 'empty' }, 'No switches yet.')]));
  };
  await draw();
  const create = form('Create a switch', [{ name: 'name', label: 'Switch name', required: true }], 'Create switch', async (v) => {
    await post('/v1/switches', { name: v.name });
    await draw();
    return `Created switch ${v.name}.`;
  });
  main.replaceChildren(heading('Switches'), st.node, create, box);
}
