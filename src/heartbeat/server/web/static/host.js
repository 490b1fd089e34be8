// /plugins/<host>: the host's facts, alerts, charts of its plugin history, a card per
// plugin and its recent messages; kept current by the feed.
import {
  ApiError, api, clear, debounce, el, fmtBytes, fmtDuration, fmtNumber, fmtTime, isObject,
  messageItem, prependLimited, serverNow, stateBadge, timeEl,
} from "./common.js";
import { drawChart, legend } from "./chart.js";
import { problemRow } from "./alerts.js";
import { pluginCard } from "./cards.js";

const ORDER = ["cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor", "zfs_monitor",
  "ping_monitor", "nagios_runner", "filesystem_info", "os_info"];
const QUIET = new Set(["HTB", "PLG"]); // shown by the facts and the cards instead
const COUNTER_PLUGINS = new Set(["network_monitor", "disk_monitor"]);
const COUNTER = /^(bytes|packets)_(sent|recv)$|^(err|drop)(in|out)$|^errors_total$|^dropped$|^(read|write)_(bytes|count|time_ms)$/;
const bytesPerSecond = (v) => fmtBytes(v, "/s");

const each = (mapping, fn) => (isObject(mapping) ? Object.keys(mapping).map(fn) : []);
const DEFAULT_CHARTS = [
  { id: "cpu", plugin: "cpu_monitor", title: "CPU", unit: "%", max: 100,
    series: () => [{ label: "CPU", path: ["cpu_percent"] }] },
  { id: "load", plugin: "cpu_monitor", title: "Load average",
    series: () => [["1 min", "load_1min"], ["5 min", "load_5min"], ["15 min", "load_15min"]]
      .map(([label, key]) => ({ label, path: [key] })) },
  { id: "memory", plugin: "memory_monitor", title: "Memory", unit: "%", max: 100,
    series: (d) => [{ label: "RAM", path: ["percent"] },
      ...(d.swap_total_mb ? [{ label: "swap", path: ["swap_percent"] }] : [])] },
  { id: "disk", plugin: "disk_monitor", title: "Disk usage", unit: "%", max: 100,
    series: (d) => each(d.partitions, (mount) => ({ label: mount, path: ["partitions", mount, "percent"] })) },
  { id: "network", plugin: "network_monitor", title: "Network traffic", format: bytesPerSecond,
    series: () => [{ label: "in", path: ["bytes_recv"], rate: true }, { label: "out", path: ["bytes_sent"], rate: true }] },
  { id: "ping", plugin: "ping_monitor", title: "Ping round trip", unit: "ms",
    series: (d) => each(d.targets, (target) => ({ label: target, path: ["targets", target, "rtt_avg"] })) },
  { id: "zfs", plugin: "zfs_monitor", title: "ZFS pool capacity", unit: "%", max: 100,
    series: (d) => each(d.pools, (pool) => ({ label: pool, path: ["pools", pool, "capacity"] })) },
];

function lookup(data, path) {
  let value = data;
  for (const key of path) {
    if (!isObject(value) || !Object.hasOwn(value, key)) return undefined;
    value = value[key];
  }
  return value;
}

function numericPaths(data, prefix = [], out = [], depth = 0) {
  if (!isObject(data) || depth > 4) return out;
  for (const [key, value] of Object.entries(data)) {
    if (typeof value === "number" && Number.isFinite(value)) out.push([...prefix, key]);
    else if (isObject(value)) numericPaths(value, [...prefix, key], out, depth + 1);
  }
  return out;
}

function points(samples, path, rate) {
  const out = [];
  let previous = null;
  for (const { ts, data } of samples) {
    const value = lookup(data, path);
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    if (!rate) out.push([ts, value]);
    else if (previous && ts > previous[0] && value >= previous[1]) {
      out.push([ts, (value - previous[1]) / (ts - previous[0])]);
    }
    previous = [ts, value];
  }
  return out;
}

export async function hostPage(feed) {
  const name = document.body.dataset.host;
  const base = `/api/0/hosts/${encodeURIComponent(name)}`;
  const factsBox = document.getElementById("host-facts");
  const stateBox = document.getElementById("host-state");
  const alertsBox = document.getElementById("host-alerts");
  const chartsBox = document.getElementById("charts");
  const cardsBox = document.getElementById("plugins");
  const messages = document.getElementById("messages");
  const range = document.getElementById("range");
  const autoRefresh = document.getElementById("auto-refresh");
  const picker = document.getElementById("add-metric");
  const storageKey = `heartbeat.charts.${name}`;
  let detail = null;
  let latest = {};
  const history = new Map(); // plugin -> samples, oldest first
  let charts = [];

  // Facts
  function renderFacts() {
    if (!detail) return;
    stateBox.replaceChildren(stateBadge(detail.state));
    const rows = [
      ["State", el("span", {}, detail.state, typeof detail.since === "number" ? el("span", { class: "muted" }, " for ", timeEl(detail.since, "for")) : null,
        detail.down_reason ? ` (${detail.down_reason})` : "")],
      ["Last seen", typeof detail.last_seen === "number" ? timeEl(detail.last_seen, "ago") : "never"],
      ["Address", detail.addr ? `${detail.addr}${detail.port ? ":" + detail.port : ""}` : "–"],
      ["Round trip", typeof detail.rtt === "number" ? `${fmtNumber(detail.rtt, 2)} ms` : "–"],
      ["Interval", typeof detail.interval === "number" ? fmtDuration(detail.interval) : "–"],
      ["Agent version", detail.version ?? "–"],
      ["Booted", typeof detail.boot_time === "number" ? fmtTime(detail.boot_time) : "–"],
      ["Your role", detail.role ?? "–"],
      ["Notifications", detail.watch === false ? "off (watch: false)" : "on"],
    ];
    clear(factsBox);
    for (const [label, value] of rows) {
      factsBox.append(el("dt", { text: label }), el("dd", {}, value instanceof Node ? value : String(value)));
    }
  }

  // Alerts
  async function loadAlerts() {
    let data;
    try {
      data = await api(`${base}/alerts`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 503)) {
        alertsBox.replaceChildren(el("p", { class: "muted", text: "Threshold alerting is not running on this server." }));
        return;
      }
      throw error;
    }
    const alerts = data.alerts || [];
    if (!alerts.length) {
      alertsBox.replaceChildren(el("p", { class: "muted ok-note", text: "No active alerts." }));
      return;
    }
    const headers = ["Level", "Problem", "Value", "Limit", "Since", "Message"];
    alertsBox.replaceChildren(el("table", { class: "responsive alerts" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, alerts.map((a) => problemRow(a, {}, false)))));
  }

  // Cards
  function renderCards() {
    const names = Object.keys(latest).sort((a, b) => {
      const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    cardsBox.replaceChildren(...names.map((plugin) => pluginCard(plugin, latest[plugin])));
    document.getElementById("no-plugins").hidden = names.length > 0;
  }

  function updateCard(plugin) {
    const card = pluginCard(plugin, latest[plugin]);
    const old = [...cardsBox.children].find((c) => c.dataset.plugin === plugin);
    if (old) old.replaceWith(card);
    else renderCards();
  }

  // Charts
  function customPaths() {
    try {
      const saved = JSON.parse(localStorage.getItem(storageKey) || "[]");
      return Array.isArray(saved) ? saved.filter((p) => Array.isArray(p) && p.length >= 2) : [];
    } catch {
      return [];
    }
  }

  function saveCustom(paths) {
    try {
      localStorage.setItem(storageKey, JSON.stringify(paths));
    } catch {
      // private mode: the chart lasts for this visit only
    }
  }

  function customChart(full) {
    const [plugin, ...path] = full;
    const rate = COUNTER_PLUGINS.has(plugin) && COUNTER.test(path[path.length - 1]);
    return { id: "custom:" + JSON.stringify(full), plugin, title: `${plugin}: ${path.join(" › ")}${rate ? " per second" : ""}`,
      custom: full, series: () => [{ label: path[path.length - 1], path, rate }],
      format: rate && /bytes/.test(path[path.length - 1]) ? bytesPerSecond : undefined };
  }

  function buildCharts() {
    const defs = [];
    for (const def of DEFAULT_CHARTS) {
      const sample = latest[def.plugin];
      if (!sample || !isObject(sample.data)) continue;
      const series = def.series(sample.data).filter((s) => typeof lookup(sample.data, s.path) === "number");
      if (series.length) defs.push({ ...def, resolved: series });
    }
    for (const full of customPaths()) {
      const def = customChart(full);
      if (latest[def.plugin]) defs.push({ ...def, resolved: def.series() });
    }
    charts = defs.map((def) => {
      const plot = el("div", { class: "plot" });
      const readout = el("p", { class: "readout small muted" });
      const remove = def.custom ? el("button", { type: "button", class: "link-button", text: "remove", on: { click: () => {
        saveCustom(customPaths().filter((p) => JSON.stringify(p) !== JSON.stringify(def.custom)));
        buildCharts();
        drawAll();
      } } }) : null;
      const figure = el("figure", { class: "chart", dataset: { chart: def.id, plugin: def.plugin } },
        el("figcaption", {}, el("strong", { text: def.title }), " ", legend(def.resolved), remove), plot, readout);
      return { def, plot, readout, figure };
    });
    chartsBox.replaceChildren(...charts.map((c) => c.figure));
    document.getElementById("no-charts").hidden = charts.length > 0;
    fillPicker();
  }

  function fillPicker() {
    const shown = new Set(customPaths().map((p) => JSON.stringify(p)));
    picker.replaceChildren(el("option", { value: "", text: "a metric…" }));
    for (const plugin of Object.keys(latest).sort()) {
      const paths = numericPaths(latest[plugin].data).filter((p) => !shown.has(JSON.stringify([plugin, ...p])));
      if (!paths.length) continue;
      picker.append(el("optgroup", { label: plugin },
        paths.slice(0, 300).map((p) => el("option", { value: JSON.stringify([plugin, ...p]), text: p.join(" › ") }))));
    }
  }

  function drawAll() {
    for (const chart of charts) {
      const samples = history.get(chart.def.plugin) || [];
      const series = chart.def.resolved.map((s) => ({ label: s.label, points: points(samples, s.path, s.rate) }));
      drawChart(chart.plot, series, { unit: chart.def.unit, max: chart.def.max, format: chart.def.format, readout: chart.readout });
    }
  }

  async function loadHistory() {
    const since = serverNow() - Number(range.value);
    const plugins = [...new Set(charts.map((c) => c.def.plugin))];
    const loaded = await Promise.all(plugins.map((plugin) =>
      api(`${base}/plugins/${encodeURIComponent(plugin)}?limit=10000&since=${since.toFixed(0)}`)
        .then((data) => [plugin, (data.samples || []).slice().reverse()])
        .catch((error) => {
          if (error instanceof ApiError && error.status === 404) return [plugin, []];
          throw error;
        })));
    history.clear();
    for (const [plugin, samples] of loaded) history.set(plugin, samples);
    drawAll();
  }

  // Messages
  async function loadMessages() {
    try {
      const data = await api(`/api/0/messages?host=${encodeURIComponent(name)}&limit=100`);
      clear(messages);
      for (const entry of (data.messages || []).slice().reverse()) {
        if (entry.message && !QUIET.has(entry.message.ID)) prependLimited(messages, messageItem(entry.timestamp, null, entry.message), 50);
      }
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 503)) throw error;
      messages.replaceChildren(el("li", { class: "muted", text: "The message journal is switched off." }));
    }
  }

  async function loadAll() {
    const [host, plugins] = await Promise.all([api(base), api(`${base}/plugins`)]);
    detail = host;
    latest = plugins.plugins || {};
    renderFacts();
    renderCards();
    buildCharts();
    await Promise.all([loadHistory(), loadAlerts(), loadMessages()]);
  }

  picker.addEventListener("change", () => {
    if (!picker.value) return;
    saveCustom([...customPaths(), JSON.parse(picker.value)]);
    buildCharts();
    loadHistory();
  });
  range.addEventListener("change", () => loadHistory());
  autoRefresh.addEventListener("change", () => {
    if (autoRefresh.checked) loadHistory();
  });
  setInterval(() => {
    if (autoRefresh.checked) loadHistory().catch(() => {});
  }, 60000);
  new ResizeObserver(debounce(drawAll, 150)).observe(chartsBox);

  feed.on("open", ({ again }) => {
    if (again) loadAll().catch(() => {});
  });
  feed.on("snapshot", (event) => {
    const found = (event.hosts || []).find((h) => h.name === name);
    if (found && detail) {
      Object.assign(detail, found);
      renderFacts();
    }
  });
  feed.on("message", (event) => {
    if (event.host !== name || !detail) return;
    const message = event.message || {};
    if (message.ID === "HTB") {
      detail.last_seen = event.ts;
      if (typeof message.rtt === "number") detail.rtt = message.rtt;
      renderFacts();
    } else if (!QUIET.has(message.ID)) {
      prependLimited(messages, messageItem(event.ts, null, message), 50);
    }
  });
  for (const kind of ["host.up", "host.down", "host.address", "host.boot"]) {
    feed.on(kind, (event) => {
      if (event.host === name) api(base).then((host) => { detail = host; renderFacts(); }).catch(() => {});
    });
  }
  feed.on("host.plugins", (event) => {
    if (event.host !== name || !isObject(event.plugins)) return;
    const fresh = Object.keys(event.plugins).some((p) => !latest[p]);
    for (const [plugin, data] of Object.entries(event.plugins)) {
      latest[plugin] = { ts: event.ts, data };
      updateCard(plugin);
      if (autoRefresh.checked && history.has(plugin)) {
        const samples = history.get(plugin);
        samples.push({ ts: event.ts, data });
        const since = serverNow() - Number(range.value);
        while (samples.length && samples[0].ts < since) samples.shift();
      }
    }
    if (fresh) {
      buildCharts();
      loadHistory().catch(() => {});
    } else if (autoRefresh.checked) {
      drawAll();
    }
  });
  const reloadAlerts = debounce(() => loadAlerts().catch(() => {}), 250);
  for (const kind of ["alert", "host.up", "host.down"]) {
    feed.on(kind, (event) => {
      if (event.host === name) reloadAlerts();
    });
  }

  await loadAll();
}


