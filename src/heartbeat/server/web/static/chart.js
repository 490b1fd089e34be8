// Charts of a host's plugin history, drawn by uPlot (vendored: uPlot.esm.js, see
// uPlot.VERSION.txt). uPlot draws on a canvas and styles its few elements through
// the CSSOM, so the strict CSP holds. This module adds what the overview needs:
// the x axis set by the range selector, drag to zoom, shift-drag to pan and
// double-click to go back, cursors and zoom shared by the host's charts, units on
// axes and in the legend, 0-100 % axes, and the host's own threshold lines.
import uPlot from "./uPlot.esm.js";
import { el, fmtBytes, fmtDuration, fmtTime, timeZone } from "./common.js";

const HEIGHT = 190;
const PALETTE = ["--s0", "--s1", "--s2", "--s3", "--s4", "--s5"];

function cssColor(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

// A formatter for a value of `unit`: "%", "B/s" and "B" (human sizes), "s", else "ms"...
export function formatter(unit) {
  if (unit === "B/s") return (v) => fmtBytes(v, "/s");
  if (unit === "B") return (v) => fmtBytes(v);
  if (unit === "s") return (v) => fmtDuration(v);
  return (v) => {
    if (typeof v !== "number" || !Number.isFinite(v)) return "–";
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    const text = Number(v.toFixed(digits)).toLocaleString("en-US");
    return unit ? `${text} ${unit}` : text;
  };
}

function axisFont() {
  return `11px ${getComputedStyle(document.body).fontFamily}`;
}

// Room for the widest label: "19.1 MiB/s" must not lose its first characters.
function axisSize(self, values, axisIdx, cycleNum) {
  const axis = self.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = (axis.ticks.size || 0) + (axis.gap || 0) + 6;
  const longest = (values || []).reduce((a, b) => (String(b).length > a.length ? String(b) : a), "");
  if (longest) {
    self.ctx.font = axisFont();
    size += self.ctx.measureText(longest).width;
  }
  return Math.ceil(size);
}

// Horizontal dashed lines at the rule's warning and critical limits.
function thresholdPlugin(limits) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        const { left, top, width, height } = u.bbox;
        for (const [value, color] of limits) {
          const y = Math.round(u.valToPos(value, "y", true));
          if (y < top || y > top + height) continue;
          ctx.save();
          ctx.strokeStyle = color;
          ctx.lineWidth = devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(left, y);
          ctx.lineTo(left + width, y);
          ctx.stroke();
          ctx.restore();
        }
      }],
    },
  };
}

// Shift-drag pans the time axis (a plain drag zooms, uPlot's own).
function panPlugin(onPan) {
  return {
    hooks: {
      ready: [(u) => {
        u.over.addEventListener("mousedown", (event) => {
          if (!event.shiftKey) return;
          event.preventDefault();
          event.stopPropagation();
          const { min, max } = u.scales.x;
          const perPixel = (max - min) / u.over.clientWidth;
          const startX = event.clientX;
          const move = (e) => {
            const shift = (startX - e.clientX) * perPixel;
            onPan(min + shift, max + shift);
          };
          const up = () => {
            document.removeEventListener("mousemove", move);
            document.removeEventListener("mouseup", up);
          };
          document.addEventListener("mousemove", move);
          document.addEventListener("mouseup", up);
        }, { capture: true });
      }],
    },
  };
}

/**
 * A group of charts sharing one cursor and one time range (a host's overview).
 * range: {min, max} in Unix seconds; charts follow setRange() and zooms.
 */
export class ChartGroup {
  constructor(key) {
    this.key = key;
    this.charts = new Set();
    this.range = null;
    this.zoomed = null;
    this.onZoom = null;
  }

  setRange(min, max) {
    this.range = { min, max };
    this.zoomed = null;
    for (const chart of this.charts) chart.applyRange();
  }

  zoom(min, max, from = null) {
    this.zoomed = { min, max };
    for (const chart of this.charts) if (chart !== from) chart.applyRange();
    if (this.onZoom) this.onZoom(this.zoomed);
  }

  current() {
    return this.zoomed || this.range;
  }
}

/**
 * One chart in `holder`: series [{label}], options {unit, percent, limits: [[value, level]]}.
 * setData(xs, ys) draws samples: xs Unix seconds, ys one array per series (null: a gap).
 */
export class Chart {
  constructor(holder, group, series, options = {}) {
    this.holder = holder;
    this.group = group;
    this.series = series;
    this.options = options;
    this.format = formatter(options.unit);
    this.plot = null;
    this.data = [[], ...series.map(() => [])];
    group.charts.add(this);
  }

  build() {
    const width = Math.max(240, Math.round(this.holder.clientWidth || 600));
    const text = cssColor("--muted", "#5f6b7a");
    const grid = cssColor("--grid", "#e3e8ee");
    const limits = (this.options.limits || []).map(([value, level]) =>
      [value, cssColor(level === "CRITICAL" ? "--critical" : "--warning", level === "CRITICAL" ? "#cf222e" : "#bf8700")]);
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1, size: 4 }, font: axisFont() };
    const zone = timeZone();
    const opts = {
      width,
      height: HEIGHT,
      tzDate: zone ? (ts) => uPlot.tzDate(new Date(ts * 1e3), zone) : undefined,
      cursor: {
        sync: { key: this.group.key, setSeries: false },
        drag: { x: true, y: false, setScale: true },
      },
      legend: { live: true },
      scales: {
        x: { time: true, range: () => {
          const r = this.group.current();
          return r ? [r.min, r.max] : [null, null];
        } },
        y: this.options.percent
          ? { range: [0, 100] }
          : { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(max ?? 1, ...limits.map((l) => l[0] * 1.05), min === max ? (max ?? 0) + 1 : 0)] },
      },
      axes: [
        { ...axis, size: 30, values: (u, splits) => {
          const span = splits[splits.length - 1] - splits[0];
          return splits.map((t) => fmtTime(t, span > 86400 ? "date" : span < 300 ? "seconds" : "time"));
        } },
        { ...axis, values: (u, splits) => splits.map((v) => this.format(v)), size: axisSize },
      ],
      series: [
        { value: (u, t) => (t == null ? "–" : fmtTime(t)) },
        ...this.series.map((s, i) => ({
          label: s.label,
          stroke: cssColor(PALETTE[i % PALETTE.length], "#1f6feb"),
          width: 1.6,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : this.format(v)),
        })),
      ],
      plugins: [thresholdPlugin(limits), panPlugin((min, max) => this.zoomTo(min, max))],
      hooks: {
        // Off the plot, the legend reads the latest values.
        setCursor: [(u) => {
          if (u.cursor.idx == null && u.data[0].length) u.setLegend({ idx: u.data[0].length - 1 }, false);
        }],
        setSelect: [(u) => {
          if (u.select.width < 2) return;
          const min = u.posToVal(u.select.left, "x");
          const max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ width: 0, height: 0 }, false);
          this.zoomTo(min, max);
        }],
      },
    };
    opts.cursor.drag.setScale = false;
    if (this.plot) this.plot.destroy();
    this.plot = new uPlot(opts, this.data, this.holder);
    this.plot.over.addEventListener("dblclick", () => this.group.setRange(this.group.range.min, this.group.range.max));
    this.holder.dataset.count = String(this.count ?? this.data[0].length);
  }

  zoomTo(min, max) {
    this.group.zoom(min, max, this);
    this.applyRange();
  }

  applyRange() {
    const r = this.group.current();
    if (this.plot && r) this.plot.setScale("x", { min: r.min, max: r.max });
  }

  // count: the samples behind xs (which also holds the gaps' null points).
  setData(xs, ys, count = xs.length) {
    this.data = [xs, ...ys];
    this.count = count;
    this.holder.dataset.count = String(count);
    if (!this.plot) this.build();
    else this.plot.setData(this.data, false);
    this.applyRange();
    if (xs.length && this.plot.cursor.idx == null) this.plot.setLegend({ idx: xs.length - 1 }, false);
  }

  resize() {
    const width = Math.max(240, Math.round(this.holder.clientWidth || 600));
    if (this.plot && Math.abs(this.plot.width - width) > 1) this.plot.setSize({ width, height: HEIGHT });
  }

  destroy() {
    this.group.charts.delete(this);
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

export function legendKeys(series) {
  return el("span", { class: "legend" },
    series.map((s, index) => el("span", { class: `key series-${index % 6}`, text: s.label })));
}
