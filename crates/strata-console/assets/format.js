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

const BIT_UNITS = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s', 'Tbit/s'];

// Bits per second in decimal units, as links and caps are rated.
export function bps(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1000 && i < BIT_UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${BIT_UNITS[i]}`;
}

const BIT_SUFFIX = { k: 1e3, m: 1e6, g: 1e9, t: 1e12 };

// A bits-per-second field: '' is null (none), digits are bit/s, '100M' or '2.5G' scale by
// 10^6 or 10^9. Anything else goes to the API as typed, which refuses it with its own code.
export function parseBps(v) {
  if (v === '') return null;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)$/.exec(v);
  if (!m) return v;
  return Math.round(Number(m[1]) * (m[2] ? BIT_SUFFIX[m[2].toLowerCase()] : 1));
}

// Round trips over 16.7 s land in the histogram's overflow bucket, which reads as u64::MAX.
const RTT_OVERFLOW_US = 16_777_216;

// A round-trip summary ({ samples, mean_us, p50_us, p99_us }) on one line.
export function roundTrips(r) {
  if (!r || !r.samples) return '—';
  const q = (us) => (us >= RTT_OVERFLOW_US ? '> 16.7 s' : micros(us));
  return `p50 ${q(r.p50_us)}, p99 ${q(r.p99_us)}, mean ${q(r.mean_us)} (${r.samples})`;
}

// Milliseconds as the settings read: 1000 ms is '1 s'.
export function millis(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms >= 1000 && ms % 100 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
