// A small hand-written SVG line chart: time on x, one or more series on y.
// Hand-written rather than a vendored library: the UI needs lines, two axes and a
// read-out, which is ~150 lines of SVG; a library would be 10-100x that to vendor,
// audit and keep current, and most inject styles or markup that a strict CSP refuses.
import { el, fmtTime } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 170;
const MARGIN = { left: 48, right: 10, top: 10, bottom: 22 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function niceCeil(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// At most ~2 points per pixel: average the points of each bucket of time.
function downsample(points, buckets) {
  if (points.length <= buckets * 2) return points;
  const t0 = points[0][0];
  const span = points[points.length - 1][0] - t0 || 1;
  const out = [];
  let current = -1, sumT = 0, sumV = 0, n = 0;
  for (const [t, v] of points) {
    const bucket = Math.min(buckets - 1, Math.floor(((t - t0) / span) * buckets));
    if (bucket !== current && n) {
      out.push([sumT / n, sumV / n]);
      sumT = sumV = n = 0;
    }
    current = bucket;
    sumT += t; sumV += v; n += 1;
  }
  if (n) out.push([sumT / n, sumV / n]);
  return out;
}

// Split where the gap between samples is far longer than usual (the host was away).
function segments(points) {
  if (points.length < 3) return [points];
  const gaps = points.slice(1).map((p, i) => p[0] - points[i][0]).sort((a, b) => a - b);
  const usual = gaps[Math.floor(gaps.length / 2)] || 1;
  const out = [[points[0]]];
  for (let i = 1; i < points.length; i++) {
    if (points[i][0] - points[i - 1][0] > Math.max(usual * 5, 1)) out.push([]);
    out[out.length - 1].push(points[i]);
  }
  return out;
}

export function formatValue(value, unit, format) {
  if (typeof value !== "number") return "–";
  if (format) return format(value);
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toFixed(digits)}${unit ? " " + unit : ""}`;
}

/**
 * Draw into `holder` (an element whose width sets the chart's):
 * series = [{label, points: [[ts, value], ...]}], options {unit, max, format}.
 */
export function drawChart(holder, series, options = {}) {
  const width = Math.max(240, Math.round(holder.clientWidth || 600));
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const all = series.flatMap((s) => s.points);
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${HEIGHT}`, width, height: HEIGHT, class: "chart-svg",
    role: "img", "data-count": String(all.length),
  });
  root.append(svg("title", {}, series.map((s) => s.label).join(", ")));
  if (all.length === 0) {
    root.append(svg("text", { x: width / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "axis" },
      "no samples in this range"));
    holder.replaceChildren(root);
    return root;
  }
  let t0 = Math.min(...all.map((p) => p[0]));
  let t1 = Math.max(...all.map((p) => p[0]));
  if (t1 - t0 < 10) t0 = t1 - 10;
  const lo = Math.min(0, ...all.map((p) => p[1]));
  let hi = niceCeil(Math.max(...all.map((p) => p[1])));
  if (options.max && hi > options.max) hi = options.max;
  if (hi <= lo) hi = lo + 1;
  const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => MARGIN.top + plotH - ((v - lo) / (hi - lo)) * plotH;

  for (const fraction of [0, 0.5, 1]) {
    const value = lo + (hi - lo) * fraction;
    root.append(svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(value), y2: y(value), class: "grid" }));
    root.append(svg("text", { x: MARGIN.left - 4, y: y(value) + 4, "text-anchor": "end", class: "axis" },
      options.format ? options.format(value) : String(Number(value.toPrecision(3)))));
  }
  const ticks = width < 420 ? [0, 1] : [0, 0.5, 1];
  for (const fraction of ticks) {
    const t = t0 + (t1 - t0) * fraction;
    const anchor = fraction === 0 ? "start" : fraction === 1 ? "end" : "middle";
    root.append(svg("text", { x: x(t), y: HEIGHT - 6, "text-anchor": anchor, class: "axis" },
      t1 - t0 < 600 ? fmtTime(t).slice(-8) : fmtTime(t).slice(-8, -3)));
  }
  series.forEach((s, index) => {
    const points = downsample(s.points, Math.max(10, Math.floor(plotW / 2)));
    for (const segment of segments(points)) {
      const coords = segment.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      if (segment.length === 1) {
        const [t, v] = segment[0];
        root.append(svg("circle", { cx: x(t), cy: y(v), r: 2, class: `dot series-${index % 6}` }));
      } else {
        root.append(svg("polyline", { points: coords, class: `line series-${index % 6}` }));
      }
    }
  });

  // Read-out: the values at the time under the pointer; the latest ones otherwise.
  const guide = svg("line", { y1: MARGIN.top, y2: MARGIN.top + plotH, class: "guide", visibility: "hidden" });
  root.append(guide);
  const readout = options.readout;
  const show = (t) => {
    if (!readout) return;
    const parts = [fmtTime(t)];
    for (const s of series) {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
      if (best) parts.push(`${s.label} ${formatValue(best[1], options.unit, options.format)}`);
    }
    readout.textContent = parts.join(" · ");
  };
  const area = svg("rect", { x: MARGIN.left, y: MARGIN.top, width: plotW, height: plotH, class: "hit" });
  area.addEventListener("pointermove", (event) => {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * width;
    const t = t0 + ((px - MARGIN.left) / plotW) * (t1 - t0);
    guide.setAttribute("x1", px);
    guide.setAttribute("x2", px);
    guide.setAttribute("visibility", "visible");
    show(t);
  });
  area.addEventListener("pointerleave", () => {
    guide.setAttribute("visibility", "hidden");
    show(t1);
  });
  root.append(area);
  show(t1);
  holder.replaceChildren(root);
  return root;
}

export function legend(series) {
  return el("span", { class: "legend" },
    series.map((s, index) => el("span", { class: `key series-${index % 6}`, text: s.label })));
}
