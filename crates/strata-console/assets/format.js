// How figures read: bytes in binary units, rates per second, times in the reader's zone.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  const digits = v < 10 ? 2 : v < 100 ? 1 : 0;
  return `${i === 0 ? v : v.toFixed(digits)} ${UNITS[i]}`;
}

export function rate(n) {
  return `${bytes(n)}/s`;
}

export function count(n) {
  if (n === null || n === undefined) return '—';
  const v = Number(n);
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(1)} k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

export function micros(us) {
  if (us === null || us === undefined) return '—';
  return us >= 1000 ? `${(us / 1000).toFixed(us >= 10000 ? 0 : 1)} ms` : `${us} µs`;
}

export function time(secs) {
  if (!secs) return '—';
  return new Date(secs * 1000).toLocaleString();
}

export function limit(v, fmt = String) {
  return v === null || v === undefined ? 'unlimited' : fmt(v);
}

export function percent(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)} %` : '—';
}
