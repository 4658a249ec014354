// DOM helpers shared by the pages: element builder, tables, forms with labelled fields, and
// the error box that shows an API error's code and message. Text is always set as text
// (never parsed as HTML), so nothing the API returns can inject markup.

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export function errorBox(err) {
  const code = err.code ?? 'error';
  return h('div', { class: 'error', role: 'alert' },
    h('strong', { class: 'code' }, code), ' ', err.message);
}

// A page's status line: errors replace its content, `ok` shows a short confirmation.
export function status() {
  const box = h('div', { class: 'status', 'aria-live': 'polite' });
  return {
    node: box,
    error(err) {
      box.replaceChildren(errorBox(err));
    },
    ok(text) {
      box.replaceChildren(h('div', { class: 'ok' }, text));
    },
    clear() {
      box.replaceChildren();
    },
  };
}

// columns: [{ label, value: (row) => string | Node }]
export function table(columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { 'data-label': c.label }, c.value(r))))))));
}

let fieldSeq = 0;

// fields: [{ name, label, type?, required?, placeholder?, value?, options? }]
// onSubmit(values) may throw an ApiError: it is shown in the form, the fields kept.
export function form(title, fields, submitLabel, onSubmit) {
  const st = status();
  const inputs = {};
  const rows = fields.map((f) => {
    const id = `f${++fieldSeq}-${f.name}`;
    let input;
    if (f.options) {
      input = h('select', { id, name: f.name },
        f.options.map((o) => h('option', { value: o, selected: o === f.value }, o === '' ? '(none)' : o)));
    } else {
      input = h('input', {
        id, name: f.name, type: f.type ?? 'text', required: f.required,
        placeholder: f.placeholder, value: f.value ?? null, autocomplete: 'off',
      });
    }
    inputs[f.name] = input;
    return h('div', { class: 'field' }, h('label', { for: id }, f.label), input);
  });
  const button = h('button', { type: 'submit' }, submitLabel);
  const el = h('form', { class: 'card form', 'aria-label': title },
    h('h3', {}, title), h('div', { class: 'fields' }, rows, button), st.node);
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const [k, i] of Object.entries(inputs)) values[k] = i.value.trim();
    button.disabled = true;
    st.clear();
    try {
      const msg = await onSubmit(values);
      if (msg) st.ok(msg);
    } catch (e) {
      st.error(e);
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

export function button(label, onClick, cls = 'secondary') {
  return h('button', { type: 'button', class: cls, onclick: onClick }, label);
}

export function link(href, text) {
  return h('a', { href }, text);
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

export function heading(title, ...extra) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), ...extra);
}

// An optional number field: '' is null (no limit).
export function optNumber(v) {
  if (v === '' || v === undefined) return null;
  const n = Number(v);
  return Number.isFinite(n) && /^[0-9]+$/.test(v) ? n : v;
}

// A size or bandwidth field: digits are bytes, '10G' / '200M' pass through as the API reads them.
export function sizeValue(v) {
  if (v === '') return null;
  return /^[0-9]+$/.test(v) ? Number(v) : v;
}

// Runs an action that may fail and shows its outcome in `st`; refresh() after success.
export async function act(st, fn, refresh) {
  try {
    const msg = await fn();
    if (refresh) await refresh();
    if (msg) st.ok(msg);
  } catch (e) {
    st.error(e);
  }
}
