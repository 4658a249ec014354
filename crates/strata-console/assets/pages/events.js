// The event journal (GET /v1/events): what happened to the platform's objects, newest first,
// as far as the caller may see (a tenant sees its own objects' events; devices, pools and
// nodes are the admins'). Filters by kind and (admins) tenant. "Follow" long-polls
// `?after=CURSOR&wait=5` (the API waits at most 5 s a call) and puts what arrives on top;
// the page's stop function ends the poll, and aborts the call in flight, on a route change.

import { get, enc, query } from '../api.js';
import * as fmt from '../format.js';
import { h, heading, section, table, status, badge, link } from '../ui.js';

const KINDS = ['', 'device', 'volume', 'pool', 'tenant', 'node'];
const LIMIT = 200;
const WAIT_S = 5;
const RETRY_MS = 2000;

export async function render(main, _params, who) {
  const st = status();
  const box = h('div', { id: 'event-list' });
  const state = h('p', { class: 'hint', id: 'events-state', 'aria-live': 'polite' });
  const kind = h('select', { id: 'events-kind' }, KINDS.map((k) => h('option', { value: k }, k || 'all kinds')));
  const tenant = h('select', { id: 'events-tenant' }, ['', ...who.tenants].map((t) => h('option', { value: t }, t || 'all tenants')));
  const follow = h('button', { type: 'button', id: 'events-follow', class: 'secondary toggle', 'aria-pressed': 'false' }, 'Follow');

  let events = [];
  let fresh = new Set(); // seqs that arrived by following, marked until the next filter change
  let cursor = 0;
  let following = false;
  let stopped = false;
  // Bumped by every filter change and by stop: a poll of an older generation ends.
  let generation = 0;
  let inFlight = null;

  const filters = () => ({ type: kind.value, tenant: who.admin ? tenant.value : '' });
  const draw = () => box.replaceChildren(table([
    { label: 'Time', value: (e) => fmt.time(e.time) },
    { label: 'Severity', value: (e) => badge(e.severity, e.severity) },
    { label: 'Type', value: (e) => h('code', { class: 'nowrap' }, e.type) },
    { label: 'Object', value: (e) => objectLink(e) },
    { label: 'Tenant', value: (e) => e.tenant ?? '' },
    { label: 'Message', value: (e) => e.message },
  ], events, 'No events.', (e) => ({ 'data-seq': String(e.seq), class: fresh.has(e.seq) ? 'fresh' : null })));

  const load = async () => {
    const r = await get(`/v1/events${query({ ...filters(), limit: LIMIT })}`);
    events = r.items;
    cursor = r.cursor;
    fresh = new Set();
    draw();
  };

  const poll = async (mine) => {
    while (following && !stopped && mine === generation) {
      const ctl = new AbortController();
      inFlight = ctl;
      try {
        const r = await get(`/v1/events${query({ ...filters(), after: cursor, wait: WAIT_S, limit: LIMIT })}`, ctl.signal);
        if (mine !== generation) return;
        cursor = r.cursor;
        if (r.items.length) {
          // They come oldest first; the page shows newest first.
          const arrived = [...r.items].reverse();
          for (const e of arrived) fresh.add(e.seq);
          events = [...arrived, ...events].slice(0, LIMIT);
          draw();
        }
        st.clear();
      } catch (e) {
        if (mine !== generation) return;
        st.error(e);
        await new Promise((ok) => setTimeout(ok, RETRY_MS));
      } finally {
        if (inFlight === ctl) inFlight = null;
      }
    }
  };

  const setFollowing = (on) => {
    following = on;
    generation += 1;
    inFlight?.abort();
    follow.setAttribute('aria-pressed', String(on));
    follow.textContent = on ? 'Following (stop)' : 'Follow';
    state.textContent = on ? `Following: new events appear on top as they happen (each call waits up to ${WAIT_S} s).` : '';
    if (on) poll(generation);
  };
  follow.addEventListener('click', () => setFollowing(!following));

  const refilter = async () => {
    const was = following;
    setFollowing(false);
    try {
      await load();
      st.clear();
    } catch (e) {
      st.error(e);
    }
    if (was) setFollowing(true);
  };
  kind.addEventListener('change', refilter);
  tenant.addEventListener('change', refilter);

  await load();
  const controls = h('div', { class: 'filters' },
    h('div', { class: 'field inline' }, h('label', { for: 'events-kind' }, 'Kind'), kind),
    who.admin ? h('div', { class: 'field inline' }, h('label', { for: 'events-tenant' }, 'Tenant'), tenant) : null,
    follow);
  main.replaceChildren(heading('Events'),
    section(`Newest ${LIMIT} at most`, controls, state, st.node, box),
    h('p', { class: 'hint' }, 'Who changed what is in the audit log; events say what happened, whoever caused it.'));
  return () => {
    stopped = true;
    generation += 1;
    inFlight?.abort();
  };
}

// The object an event is about, linked to its page where the console has one.
function objectLink(e) {
  const label = e.name && e.name !== e.object ? `${e.object_kind} ${e.name}` : `${e.object_kind} ${e.object}`;
  if (e.object_kind === 'volume') return link(`#/volumes/${enc(e.object)}`, label);
  if (e.object_kind === 'node') return link(`#/nodes/${enc(e.object)}`, label);
  return label;
}
