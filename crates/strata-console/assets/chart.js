// A small live line chart on a <canvas>: a fixed window of the last `capacity` samples, one or
// more series sharing a y axis that starts at 0 and grows to the largest visible value (at
// least `floor`). It is redrawn whole on each sample (a few hundred points: cheaper than
// keeping any scene state).

export class LineChart {
  constructor(canvas, { series, format, floor = 1, binary = false, capacity = 60 }) {
    this.canvas = canvas;
    this.series = series; // [{ name, color }]
    this.format = format;
    this.floor = floor; // the y axis's least top, so an idle chart has readable ticks
    this.binary = binary; // bytes: ticks round in KiB, MiB, GiB
    this.capacity = capacity;
    this.samples = []; // arrays of numbers, one per series
  }

  push(values) {
    this.samples.push(values);
    if (this.samples.length > this.capacity) this.samples.shift();
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const hgt = c.clientHeight;
    if (!w || !hgt) return;
    if (c.width !== Math.round(w * ratio) || c.height !== Math.round(hgt * ratio)) {
      c.width = Math.round(w * ratio);
      c.height = Math.round(hgt * ratio);
    }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, hgt);
    const max = niceMax(Math.max(this.floor, ...this.samples.flat()), this.binary);
    const style = getComputedStyle(c);
    g.font = `11px ${style.fontFamily}`;
    const ticks = [0, 1, 2, 3, 4].map((i) => this.format((max * i) / 4));
    // The y labels' column is as wide as the widest label.
    const labelWidth = Math.max(...ticks.map((t) => g.measureText(t).width));
    const pad = { left: Math.ceil(labelWidth) + 10, right: 8, top: 8, bottom: 18 };
    const pw = w - pad.left - pad.right;
    const ph = hgt - pad.top - pad.bottom;
    g.fillStyle = style.color;
    g.strokeStyle = 'rgba(128,128,128,0.3)';
    g.lineWidth = 1;
    g.textBaseline = 'middle';
    g.textAlign = 'right';
    for (let i = 0; i <= 4; i += 1) {
      const y = pad.top + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(pad.left, y + 0.5);
      g.lineTo(pad.left + pw, y + 0.5);
      g.stroke();
      g.fillText(ticks[i], pad.left - 6, y);
    }
    g.textAlign = 'left';
    g.textBaseline = 'alphabetic';
    g.fillText(`last ${this.capacity} s`, pad.left, hgt - 4);
    const step = pw / Math.max(1, this.capacity - 1);
    const x0 = pad.left + pw - step * (this.samples.length - 1);
    this.series.forEach((s, k) => {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      this.samples.forEach((v, i) => {
        const x = x0 + i * step;
        const y = pad.top + ph - (max ? (ph * v[k]) / max : 0);
        if (i === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
    });
  }
}

// The smallest 1, 2 or 5 times a power of ten at or above v (1 for an idle chart); with
// `binary`, counted in the largest power of 1024 below v, so byte ticks read 25 MiB, not 23.8.
function niceMax(v, binary) {
  if (v <= 0) return 1;
  let unit = 1;
  while (binary && v / unit >= 1024) unit *= 1024;
  const x = v / unit;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p * unit;
  return 10 * p * unit;
}
