// Tenants with their quotas and usage, quota edit (only the limits named change), and API
// tokens: list, create (the secret is shown once), revoke.

import { get, post, patch, del, enc } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, form, button, status, act, optNumber, sizeValue } from '../ui.js';

const ROLES_ADMIN = ['member', 'reader', 'tenant-admin', 'admin'];
const ROLES_TENANT = ['member', 'reader', 'tenant-admin'];

export async function render(main, _params, who) {
  const st = status();
  const tenantBox = h('div');
  const tokenBox = h('div');
  const secretBox = h('div', { 'aria-live': 'polite' });

  const drawTenants = async () => {
    const tenants = (await get('/v1/tenants')).items;
    const q = (t, k, f = fmt.count) => `${f(t.usage[k])} / ${fmt.limit(t.quota[k], f)}`;
    tenantBox.replaceChildren(table([
      { label: 'Tenant', value: (t) => t.name },
      { label: 'Capacity', value: (t) => q(t, 'capacity_bytes', fmt.bytes) },
      { label: 'Volumes', value: (t) => q(t, 'volumes') },
      { label: 'Snapshots', value: (t) => q(t, 'snapshots') },
      { label: 'IOPS', value: (t) => q(t, 'iops') },
      { label: 'GPUs', value: (t) => q(t, 'gpus') },
      { label: 'Networks', value: (t) => q(t, 'networks') },
      { label: 'Ports', value: (t) => q(t, 'ports') },
      { label: 'Created', value: (t) => fmt.time(t.created) },
      {
        label: 'Actions',
        value: (t) => (who.admin
          ? button(`Delete ${t.name}`, () => {
            if (confirm(`Delete tenant ${t.name}?`)) {
              act(st, async () => {
                await del(`/v1/tenants/${enc(t.name)}`);
                return `Deleted tenant ${t.name}.`;
              }, drawTenants);
            }
          }, 'danger')
          : ''),
      },
    ], tenants, 'No tenants.'));
  };

  const drawTokens = async () => {
    const tokens = (await get('/v1/tokens')).items;
    tokenBox.replaceChildren(table([
      { label: 'Id', value: (t) => h('code', {}, t.id) },
      { label: 'Role', value: (t) => t.role },
      { label: 'Tenant', value: (t) => t.tenant ?? '' },
      { label: 'Created', value: (t) => fmt.time(t.created) },
      { label: 'Expires', value: (t) => (t.expired ? 'expired' : t.expires ? fmt.time(t.expires) : 'never') },
      { label: 'Last used', value: (t) => fmt.time(t.last_used) },
      {
        label: 'Actions',
        value: (t) => button(`Revoke ${t.id}`, () => {
          if (confirm(`Revoke token ${t.id}?`)) {
            act(st, async () => {
              await del(`/v1/tokens/${enc(t.id)}`);
              return `Revoked token ${t.id}.`;
            }, drawTokens);
          }
        }, 'danger'),
      },
    ], tokens, 'No tokens.'));
  };

  await Promise.all([drawTenants(), drawTokens()]);
  const forms = [];
  if (who.admin) {
    forms.push(form('Create a tenant', [{ name: 'name', label: 'Tenant name', required: true }], 'Create tenant', async (v) => {
      await post('/v1/tenants', { name: v.name });
      await drawTenants();
      return `Created tenant ${v.name}.`;
    }));
    forms.push(form('Change a quota', [
      { name: 'tenant', label: 'Tenant', options: who.tenants },
      { name: 'capacity_bytes', label: 'Capacity (bytes or 100G)', placeholder: 'unchanged' },
      { name: 'volumes', label: 'Volumes', placeholder: 'unchanged' },
      { name: 'snapshots', label: 'Snapshots', placeholder: 'unchanged' },
      { name: 'iops', label: 'IOPS', placeholder: 'unchanged' },
    ], 'Save quota', async (v) => {
      // Only the limits filled in change; "unlimited" removes one.
      const body = {};
      for (const k of ['capacity_bytes', 'volumes', 'snapshots', 'iops']) {
        if (v[k] === 'unlimited') body[k] = null;
        else if (v[k]) body[k] = k === 'capacity_bytes' ? sizeValue(v[k]) : optNumber(v[k]);
      }
      await patch(`/v1/tenants/${enc(v.tenant)}/quota`, body);
      await drawTenants();
      return `Quota of ${v.tenant} changed.`;
    }));
  }
  forms.push(form('Create a token', [
    { name: 'role', label: 'Role', options: who.admin ? ROLES_ADMIN : ROLES_TENANT },
    { name: 'tenant', label: 'Tenant', options: who.admin ? ['', ...who.tenants] : who.tenants },
    { name: 'expires', label: 'Expires after', placeholder: '30d, 12h or never' },
  ], 'Create token', async (v) => {
    const body = { role: v.role };
    if (v.role !== 'admin') body.tenant = v.tenant;
    if (v.expires) body.expires = v.expires;
    const t = await post('/v1/tokens', body);
    secretBox.replaceChildren(h('div', { class: 'ok' }, `Token ${t.id} created. Its secret is shown once: `,
      h('code', { class: 'secret' }, t.token)));
    await drawTokens();
  }));

  main.replaceChildren(heading('Tenants, quotas and tokens'), st.node, ...forms, secretBox,
    section('Tenants', tenantBox), section('Tokens', tokenBox));
}
