// The console's shell: who is signed in, the navigation, and hash routing to one module per
// page: `#/NAME` is a list page, `#/NAME/ID...` the page of one object. A page's
// render(view, params, who) may return a function that stops what it started (the volume
// page's polling, the events page's long poll); it runs when the route changes. A page
// renders into a view of its own that replaces the shown one only if the route is still its
// own when it is done, so a slow page never overwrites the next one nor keeps polling.

import { get } from './api.js';
import { token, signOut } from './session.js';
import { h, errorBox } from './ui.js';
import * as signin from './pages/signin.js';
import * as overview from './pages/overview.js';
import * as volumes from './pages/volumes.js';
import * as volume from './pages/volume.js';
import * as snapshots from './pages/snapshots.js';
import * as switches from './pages/switches.js';
import * as tenants from './pages/tenants.js';
import * as audit from './pages/audit.js';
import * as networks from './pages/networks.js';
import * as nodes from './pages/nodes.js';
import * as jobs from './pages/jobs.js';
import * as job from './pages/job.js';
import * as network from './pages/network.js';
import * as balancers from './pages/balancers.js';
import * as balancer from './pages/balancer.js';
import * as node from './pages/node.js';
import * as events from './pages/events.js';

// `#/NAME`: the nav's pages.
const PAGES = {
  overview, volumes, snapshots, switches, tenants, audit, events, networks, 'load-balancers': balancers, nodes, jobs,
};
// `#/NAME/ID...`: the page of one object.
const OBJECT_PAGES = { volumes: volume, networks: network, 'load-balancers': balancer, nodes: node, jobs: job };

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const toggle = document.getElementById('nav-toggle');
const whoBox = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');

let stop = null;
let who = null;
let shown = 0; // bumped by every route change: a page rendering for an older one is dropped

// Who the token belongs to: every role may list its tenants; only an admin may list pools.
async function identify() {
  const tenantList = await get('/v1/tenants');
  let admin = true;
  try {
    await get('/v1/pools');
  } catch (e) {
    if (e.status !== 403) throw e;
    admin = false;
  }
  return { admin, tenants: tenantList.items.map((t) => t.name) };
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [name, ...params] = parts;
  // Own keys only: `#/constructor` is no page.
  const pick = (table) => (Object.hasOwn(table, name) ? table[name] : null);
  if (params.length && pick(OBJECT_PAGES)) return { page: pick(OBJECT_PAGES), params };
  return { page: pick(PAGES) ?? overview, params };
}

async function show() {
  const mine = ++shown;
  if (stop) {
    stop();
    stop = null;
  }
  setNav(false);
  if (!token()) {
    who = null;
    chrome();
    stop = signin.render(main, [], { onSignedIn, identify });
    return;
  }
  if (!who) {
    try {
      who = await identify();
    } catch (e) {
      if (mine !== shown) return;
      if (e.status === 401) {
        signOut();
        return show();
      }
      main.replaceChildren(errorBox(e));
      return;
    }
    if (mine !== shown) return;
  }
  chrome();
  const { page, params } = route();
  for (const a of nav.querySelectorAll('a')) {
    const here = location.hash.startsWith(a.getAttribute('href'));
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  const view = h('div', { class: 'view' });
  try {
    const stopPage = (await page.render(view, params, who)) ?? null;
    if (mine !== shown) {
      if (stopPage) stopPage();
      return;
    }
    stop = stopPage;
    main.replaceChildren(view);
    // A keyboard user who picked a page in the nav lands on it, not back at the top.
    if (document.activeElement?.closest('#nav')) main.focus({ preventScroll: true });
  } catch (e) {
    if (mine === shown) main.replaceChildren(errorBox(e));
  }
}

function onSignedIn(identity) {
  who = identity;
  if (!location.hash || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/overview';
  else show();
}

function chrome() {
  const signedIn = Boolean(who);
  nav.hidden = !signedIn;
  toggle.hidden = !signedIn;
  signOutButton.hidden = !signedIn;
  whoBox.textContent = !signedIn ? '' : who.admin ? 'admin' : `tenant ${who.tenants.join(', ')}`;
  // Pages only an admin can use (the API refuses them to a tenant anyway).
  for (const li of nav.querySelectorAll('[data-admin]')) li.hidden = !who?.admin;
}

function setNav(open) {
  document.body.classList.toggle('nav-open', open);
  toggle.setAttribute('aria-expanded', String(open));
}

toggle.addEventListener('click', () => setNav(!document.body.classList.contains('nav-open')));
nav.addEventListener('click', (e) => {
  if (e.target.closest('a')) setNav(false);
});
signOutButton.addEventListener('click', () => {
  signOut();
  who = null;
  if (location.hash === '#/signin') show();
  else location.hash = '#/signin';
});
window.addEventListener('hashchange', show);
show();
