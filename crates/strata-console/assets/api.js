// Calls to the public /v1 API with the signed-in bearer token. A failed call throws an
// ApiError carrying the API's stable `code` and its message, for the page to show as is.

import { token } from './session.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// `signal` (an AbortSignal) lets a page cancel a call in flight, e.g. the events page's long
// poll when the route changes.
export async function call(method, path, body, secret = token(), signal = undefined) {
  const headers = { Accept: 'application/json' };
  if (secret) headers.Authorization = `Bearer ${secret}`;
  const init = { method, headers, cache: 'no-store', signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the daemon did not answer (${e.message})`);
  }
  const text = await r.text();
  let value = null;
  if (text) {
    try {
      value = JSON.parse(text);
    } catch {
      value = text;
    }
  }
  if (!r.ok) {
    const e = value && value.error;
    throw new ApiError(r.status, e?.code ?? `http_${r.status}`, e?.message ?? String(value ?? r.statusText));
  }
  return value;
}

export const get = (path, signal = undefined) => call('GET', path, undefined, token(), signal);
export const post = (path, body) => call('POST', path, body);
export const put = (path, body) => call('PUT', path, body);
export const patch = (path, body) => call('PATCH', path, body);
export const del = (path) => call('DELETE', path);

// Every item of a paged list (`items` + `next_page_token`).
export async function all(path) {
  const items = [];
  let page = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const q = page ? `${sep}limit=1000&page_token=${encodeURIComponent(page)}` : `${sep}limit=1000`;
    const v = await get(path + q);
    items.push(...v.items);
    page = v.next_page_token;
  } while (page);
  return items;
}

export const enc = encodeURIComponent;

// A query string from an object, leaving out empty values: query({ a: 1, b: '' }) is '?a=1'.
export function query(params) {
  const q = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return q.length ? `?${q.join('&')}` : '';
}
