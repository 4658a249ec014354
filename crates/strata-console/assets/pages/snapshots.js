// Snapshots of every volume the caller may see, and checkpoint groups (several volumes at one
// instant): create, clone all members, delete.

import { all, get, post, del, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form, button, status, act, link } from '../ui.js';

export async function render(main) {
  const st = status();
  const snapBox = h('div');
  const groupBox = h('div');
  let groupNames = new Map(); // group id -> name, for the snapshots' Group column

  const drawSnaps = async () => {
    const vols = await all('/v1/volumes');
    const lists = await Promise.all(vols.map((v) => get(`/v1/volumes/${enc(v.id)}/snapshots`)
      .then((r) => r.items.map((s) => ({ ...s, volumeName: v.name })))));
    snapBox.replaceChildren(table([
      { label: 'Snapshot', value: (s) => s.name },
      { label: 'Volume', value: (s) => link(`#/volumes/${enc(s.volume)}`, s.volumeName) },
      { label: 'Tenant', value: (s) => s.tenant },
      { label: 'Size', value: (s) => fmt.bytes(s.size) },
      { label: 'Group', value: (s) => (s.group ? groupNames.get(s.group) ?? s.group : '') },
      { label: 'Created', value: (s) => fmt.time(s.created) },
    ], lists.flat(), 'No snapshots yet.'));
  };

  const drawGroups = async () => {
    const groups = (await get('/v1/snapshot-groups')).items;
    groupNames = new Map(groups.map((g) => [g.id, g.name]));
    groupBox.replaceChildren(table([
      { label: 'Group', value: (g) => g.name },
      { label: 'Tenant', value: (g) => g.tenant },
      { label: 'Members', value: (g) => String(g.members.length) },
      { label: 'Series', value: (g) => g.series ?? '' },
      { label: 'Ready', value: (g) => (g.ready ? 'yes' : 'no') },
      { label: 'Created', value: (g) => fmt.time(g.created) },
      {
        label: 'Actions',
        value: (g) => h('span', { class: 'actions' },
          button(`Clone ${g.name}`, () => {
            const prefix = prompt(`Prefix of the clones of ${g.name}`, `${g.name}-clone`);
            if (prefix) act(st, async () => {
              await post(`/v1/snapshot-groups/${enc(g.id)}/clone`, { prefix });
              return `Cloned group ${g.name}.`;
            });
          }),
          button(`Delete ${g.name}`, () => {
            if (confirm(`Delete checkpoint group ${g.name} and its snapshots?`)) {
              act(st, async () => {
                await del(`/v1/snapshot-groups/${enc(g.id)}`);
                return `Deleted group ${g.name}.`;
              }, refresh);
            }
          }, 'danger')),
      },
    ], groups, 'No checkpoint groups yet.'));
  };

  const refresh = async () => {
    await drawGroups();
    await drawSnaps();
  };
  await refresh();
  const create = form('Create a checkpoint group', [
    { name: 'name', label: 'Group name', required: true },
    { name: 'volumes', label: 'Volumes (names or ids, comma separated)', required: true },
  ], 'Checkpoint', async (v) => {
    const g = await post('/v1/snapshot-groups', {
      name: v.name,
      volumes: v.volumes.split(',').map((s) => s.trim()).filter(Boolean),
    });
    await refresh();
    return `Checkpoint group ${g.name} taken.`;
  });

  main.replaceChildren(heading('Snapshots and checkpoint groups'), st.node, create,
    section('Checkpoint groups', groupBox), section('Snapshots', snapBox));
}
