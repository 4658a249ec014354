// Load-balancer specs as typed into the console's forms, in the CLI's syntax: a listener
// `tcp:80`, backends `b1:8080@2, 10.0.1.9`: a port of the network by name (or an IPv4
// address), then an optional target port and weight. A part that is not a number goes to the
// API as typed, which refuses it with its own code: the console keeps no second copy of the
// API's rules.

const IPV4 = /^[0-9]{1,3}(\.[0-9]{1,3}){3}$/;
const num = (s) => (/^[0-9]+$/.test(s) ? Number(s) : s);

// `tcp:80`, `udp:53`, or a bare port (TCP).
export function parseListener(text) {
  const t = text.trim();
  const colon = t.indexOf(':');
  if (colon < 0) return { protocol: 'tcp', port: num(t) };
  return { protocol: t.slice(0, colon).toLowerCase(), port: num(t.slice(colon + 1)) };
}

// `NAME_OR_IP[:TARGET_PORT][@WEIGHT]`.
export function parseBackend(text) {
  let rest = text.trim();
  const b = {};
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    b.weight = num(rest.slice(at + 1));
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    b.target_port = num(rest.slice(colon + 1));
    rest = rest.slice(0, colon);
  }
  if (IPV4.test(rest)) b.ip = rest;
  else b.port = rest;
  return b;
}

// A comma-separated list of backends.
export function parseBackends(text) {
  return text.split(',').map((s) => s.trim()).filter(Boolean).map(parseBackend);
}

// A load balancer's listeners as `PUT /v1/load-balancers/{id}/listeners` takes them, from its
// view (the API takes the whole list: a change is this, edited, sent back).
export function listenerSpecs(lb) {
  return lb.listeners.map((l) => ({
    protocol: l.protocol,
    port: l.port,
    backends: l.backends.map((b) => ({
      ...(b.port ? { port: b.port } : { ip: b.ip }),
      target_port: b.target_port,
      weight: b.weight,
    })),
  }));
}

// How many backends are up, down and unchecked, over every listener.
export function healthCounts(lb) {
  const n = { up: 0, down: 0, unchecked: 0, total: 0 };
  for (const l of lb.listeners) {
    for (const b of l.backends) {
      n[b.health] = (n[b.health] ?? 0) + 1;
      n.total += 1;
    }
  }
  return n;
}

// "2 up, 1 down" (or "3 unchecked" without a health check).
export function healthText(lb) {
  const n = healthCounts(lb);
  if (!n.total) return 'no backends';
  return ['up', 'down', 'unchecked'].filter((k) => n[k]).map((k) => `${n[k]} ${k}`).join(', ');
}

// A listener in words: `tcp:80`.
export function listenerName(l) {
  return `${l.protocol}:${l.port}`;
}
