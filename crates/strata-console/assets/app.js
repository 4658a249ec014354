// The console's shell: who is signed in, the navigation, and hash routing to one module per
// page. A page's render(main, params, who) may return a function that stops what it started
// (the volume page's polling); it runs when the route changes.

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

const PAGES = { overview, volumes, volume, snapshots, switches, tenants, audit, networks, nodes, jobs };

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const toggle = document.getElementById('nav-toggle');
const whoBox = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');

let stop = null;
let who = null;

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
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [name, ...params] = parts;
  if (name === 'volumes' && params.length) return { page: volume, params };
  return { page: PAGES[name] ?? overview, params, name: PAGES[name] ? name : 'overview' };
}

async function show() {
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
      if (e.status === 401) {
        signOut();
        return show();
      }
      main.replaceChildren(errorBox(e));
      return;
    }
  }
  chrome();
  const { page } = route();
  for (const a of nav.querySelectorAll('a')) {
    const here = location.hash.startsWith(a.getAttribute('href'));
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  try {
    stop = (await page.render(main, route().params, who)) ?? null;
    // A keyboard user who picked a page in the nav lands on it, not back at the top.
    if (document.activeElement?.closest('#nav')) main.focus({ preventScroll: true });
  } catch (e) {
    main.replaceChildren(errorBox(e));
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
