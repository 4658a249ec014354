// Sign-in: the token is checked against the API before it is kept.

import { call } from '../api.js';
import { signIn, signOut } from '../session.js';
import { h, status } from '../ui.js';

export function render(main, _params, { onSignedIn, identify }) {
  const st = status();
  const input = h('input', { id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'current-password', spellcheck: 'false' });
  const submit = h('button', { type: 'submit', id: 'sign-in' }, 'Sign in');
  const f = h('form', { class: 'card signin', 'aria-label': 'Sign in' },
    h('h1', {}, 'Sign in to Strata'),
    h('p', {}, 'Paste an API token. The daemon writes the first admin token to ',
      h('code', {}, 'admin.token'), ' in its data dir; ', h('code', {}, 'strata token create'), ' makes more.'),
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'API token'), input),
    submit, st.node);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    st.clear();
    submit.disabled = true;
    const secret = input.value.trim();
    signIn(secret);
    try {
      await call('GET', '/v1/tenants', undefined, secret);
      onSignedIn(await identify());
    } catch (e) {
      signOut();
      st.error(e);
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(f);
  input.focus();
  return null;
}
