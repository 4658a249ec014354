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

// columns: [{ label, value: (row) => string | Node }]; rowAttrs(row) gives a row's attributes.
export function table(columns, rows, empty = 'Nothing here yet.', rowAttrs = () => ({})) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', rowAttrs(r), columns.map((c) => h('td', { 'data-label': c.label }, c.value(r))))))));
}

// A label/value list: pairs of [label, value]; a null value leaves its pair out.
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter((p) => p[1] !== null && p[1] !== undefined)
    .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

// A short word in a coloured box: `kind` is one of up, down, unchecked, info, warning, error.
export function badge(text, kind) {
  return h('span', { class: `badge ${kind}` }, text);
}

// A select's choices: strings, or { value, label } where the shown text differs from the value.
function optionNodes(options, selected) {
  return options.map((o) => {
    const [value, label] = typeof o === 'string' ? [o, o === '' ? '(none)' : o] : [o.value, o.label];
    return h('option', { value, selected: value === selected }, label);
  });
}

// Replaces a select's choices, keeping the chosen one while it is still offered.
export function setOptions(select, options) {
  const was = select.value;
  select.replaceChildren(...optionNodes(options, was));
  if ([...select.options].some((o) => o.value === was)) select.value = was;
}

let fieldSeq = 0;

// fields: [{ name, label, type?, required?, placeholder?, value?, options? }]; options are
// strings or { value, label }. onSubmit(values) may throw an ApiError: it is shown in the form,
// the fields kept. The form's `fields` property maps names to their inputs (to refill a select
// with setOptions when what it offers changes).
export function form(title, fields, submitLabel, onSubmit) {
  const st = status();
  const inputs = {};
  const rows = fields.map((f) => {
    const id = `f${++fieldSeq}-${f.name}`;
    let input;
    if (f.options) {
      input = h('select', { id, name: f.name }, optionNodes(f.options, f.value));
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
  el.fields = inputs;
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

// A delete (or other undoable-never action) behind a confirmation: asks `question`, then runs
// `fn` as act() does.
export function confirmed(question, st, fn, refresh) {
  if (confirm(question)) act(st, fn, refresh);
}

// A list as one line: "a, b, c", or `none` for an empty one.
export function list(items, none = '—') {
  return items.length ? items.join(', ') : none;
}

// A number shown formatted, its exact value kept in data-value (what the browser test reads).
export function figure(n, format) {
  return h('span', { class: 'figure', 'data-value': String(n) }, format(n));
}
