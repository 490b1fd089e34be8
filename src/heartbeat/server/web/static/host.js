// /plugins/<host>: the host's facts, alerts, charts of its plugin history, a card per
// plugin and its recent messages; kept current by the feed.
import {
  ApiError, api, clear, copyHost, debounce, el, fmtDuration, fmtNumber, fmtTime, isObject, levelBadge, markerTags, me,
  messageItem, metricUnit, prependLimited, ruleFor, serverNow, showJournal, stateBadge, timeEl,
} from "./common.js";
import { Chart, ChartGroup, legendKeys } from "./chart.js";
import { problemRow } from "./alerts.js";
import { pluginCard, setRules, unavailable } from "./cards.js";

const ORDER = ["cpu_monitor", "memory_monitor", "disk_monitor", "network_monitor", "zfs_monitor",
  "ping_monitor", "nagios_runner", "filesystem_info", "os_info"];
const QUIET = new Set(["HTB", "PLG"]); // shown by the facts and the cards instead
const COUNTER_PLUGINS = new Set(["network_monitor", "disk_monitor"]);
const COUNTER = /^(bytes|packets)_(sent|recv)$|^(err|drop)(in|out)$|^errors_total$|^dropped$|^(read|write)_(bytes|count|time_ms)$/;

const each = (mapping, fn) => (isObject(mapping) ? Object.keys(mapping).map(fn) : []);
const DEFAULT_CHARTS = [
  { id: "cpu", plugin: "cpu_monitor", title: "CPU", unit: "%", percent: true,
    series: () => [{ label: "CPU", path: ["cpu_percent"] }] },
  { id: "load", plugin: "cpu_monitor", title: "Load average",
    series: () => [["1 min", "load_1min"], ["5 min", "load_5min"], ["15 min", "load_15min"]]
      .map(([label, key]) => ({ label, path: [key] })) },
  { id: "memory", plugin: "memory_monitor", title: "Memory", unit: "%", percent: true,
    series: (d) => [{ label: "RAM", path: ["percent"] },
      ...(d.swap_total_mb ? [{ label: "swap", path: ["swap_percent"] }] : [])] },
  { id: "disk", plugin: "disk_monitor", title: "Disk usage", unit: "%", percent: true,
    series: (d) => each(d.partitions, (mount) => ({ label: mount, path: ["partitions", mount, "percent"] })) },
  { id: "network", plugin: "network_monitor", title: "Network traffic", unit: "B/s",
    series: () => [{ label: "in", path: ["bytes_recv"], rate: true }, { label: "out", path: ["bytes_sent"], rate: true }] },
  { id: "ping", plugin: "ping_monitor", title: "Ping round trip", unit: "ms",
    series: (d) => each(d.targets, (target) => ({ label: target, path: ["targets", target, "rtt_avg"] })) },
  { id: "zfs", plugin: "zfs_monitor", title: "ZFS pool capacity", unit: "%", percent: true,
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

// uPlot's aligned data: the samples' times, one array of values per series (null
// where a series has no value, or as a gap where the host was silent far longer
// than usual); counters become rates per second.
function aligned(samples, series) {
  const xs = [];
  const ys = series.map(() => []);
  const previous = series.map(() => null);
  const gaps = samples.slice(1).map((s, i) => s.ts - samples[i].ts).sort((a, b) => a - b);
  const usual = gaps[Math.floor(gaps.length / 2)] || 1;
  let last = null;
  for (const { ts, data } of samples) {
    if (last !== null && ts - last > Math.max(usual * 5, 1)) {
      xs.push((ts + last) / 2);
      for (const y of ys) y.push(null);
    }
    last = ts;
    xs.push(ts);
    series.forEach((s, i) => {
      const value = lookup(data, s.path);
      if (typeof value !== "number" || !Number.isFinite(value)) {
        ys[i].push(null);
        return;
      }
      if (!s.rate) ys[i].push(value);
      else {
        const p = previous[i];
        ys[i].push(p && ts > p[0] && value >= p[1] ? (value - p[1]) / (ts - p[0]) : null);
        previous[i] = [ts, value];
      }
    });
  }
  return [xs, ys];
}

// Warning and critical limits of the host's rules for these series, for the lines.
function limitsOf(rules, plugin, series) {
  const found = new Map();
  for (const s of series) {
    const rule = ruleFor(rules, [plugin, ...s.path]);
    if (!rule || ![">", ">=", "<", "<="].includes(rule.operator)) continue;
    for (const level of ["warning", "critical"]) {
      if (typeof rule[level] === "number") found.set(`${level}:${rule[level]}`, [rule[level], level.toUpperCase()]);
    }
  }
  return [...found.values()];
}

export async function hostPage(feed) {
  const name = document.body.dataset.host;
  const base = `/api/0/hosts/${encodeURIComponent(name)}`;
  const factsBox = document.getElementById("host-facts");
  const stateBox = document.getElementById("host-state");
  const description = document.getElementById("host-description");
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
  let rules = {};
  const group = new ChartGroup(`host:${name}`);
  const zoomNote = document.getElementById("zoom-note");
  group.onZoom = () => {
    zoomNote.hidden = false;
  };

  // Facts
  function renderFacts() {
    if (!detail) return;
    stateBox.replaceChildren(...[stateBadge(detail.state), " ",
      detail.alert_level ? levelBadge(detail.alert_level) : null, markerTags(detail.markers)].filter(Boolean));
    description.textContent = detail.description || "";
    description.hidden = !detail.description;
    const rows = [
      ["State", el("span", {}, detail.state, typeof detail.since === "number" ? el("span", { class: "muted" }, " for ", timeEl(detail.since, "for")) : null,
        detail.down_reason ? ` (${detail.down_reason})` : "")],
      ["Last seen", typeof detail.last_seen === "number" ? timeEl(detail.last_seen, "ago") : "never"],
      ["Address", detail.addr ? `${detail.addr}${detail.port ? ":" + detail.port : ""}` : "–"],
      ["Round trip", typeof detail.rtt === "number" ? `${fmtNumber(detail.rtt, 2)} ms` : "–"],
      ["Interval", typeof detail.interval === "number" ? fmtDuration(detail.interval) : "–"],
      ["Agent version", detail.version ?? "–"],
      ["Booted", typeof detail.boot_time === "number" ? fmtTime(detail.boot_time, "full") : "–"],
      ["Tags", (detail.tags || []).length ? el("span", {}, detail.tags.map((t) => el("span", { class: "tag", text: t }))) : undefined],
      ["Your role", detail.role ?? "–"],
      ["Notifications", detail.watch === false ? "off (watch: false)" : "on"],
    ];
    clear(factsBox);
    for (const [label, value] of rows) {
      if (value === undefined) continue;
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
      return unavailable(latest[a]) - unavailable(latest[b]) ||
        (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
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
    const field = path[path.length - 1];
    const rate = COUNTER_PLUGINS.has(plugin) && COUNTER.test(field);
    const u = metricUnit(path.join("."));
    const unit = rate ? (/bytes/.test(field) ? "B/s" : "/s") : u.kind === "bytes" && !u.scale ? "B" : u.kind === "duration" ? "s" : u.unit;
    return { id: "custom:" + JSON.stringify(full), plugin, title: `${plugin}: ${path.join(" › ")}${rate ? " per second" : ""}`,
      custom: full, series: () => [{ label: field, path, rate }], unit, percent: u.kind === "percent" };
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
    for (const chart of charts) chart.chart.destroy();
    charts = defs.map((def) => {
      const plot = el("div", { class: "plot" });
      const remove = def.custom ? el("button", { type: "button", class: "link-button", text: "remove", on: { click: () => {
        saveCustom(customPaths().filter((p) => JSON.stringify(p) !== JSON.stringify(def.custom)));
        buildCharts();
        drawAll();
      } } }) : null;
      const limits = limitsOf(rules, def.plugin, def.resolved);
      const figure = el("figure", { class: "chart", dataset: { chart: def.id, plugin: def.plugin, limits: limits.map((l) => l[0]).join(",") } },
        el("figcaption", {}, el("strong", { text: def.title }), " ", legendKeys(def.resolved), remove), plot);
      const chart = new Chart(plot, group, def.resolved, { unit: def.unit, percent: def.percent, limits });
      return { def, plot, figure, chart };
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
    if (!group.zoomed) group.setRange(serverNow() - Number(range.value), serverNow());
    for (const chart of charts) {
      const samples = history.get(chart.def.plugin) || [];
      const [xs, ys] = aligned(samples, chart.def.resolved);
      chart.chart.setData(xs, ys, samples.length);
    }
  }

  async function loadRules() {
    try {
      rules = (await api(`${base}/thresholds`)).thresholds || {};
    } catch (error) {
      if (!(error instanceof ApiError && (error.status === 404 || error.status === 503))) throw error;
      rules = {};
    }
    setRules(rules);
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
    const before = new Set(messages.children);
    try {
      const data = await api(`/api/0/messages?host=${encodeURIComponent(name)}&limit=100`);
      const items = (data.messages || []).filter((entry) => entry.message && !QUIET.has(entry.message.ID))
        .map((entry) => messageItem(entry.timestamp, null, entry.message));
      showJournal(messages, before, items, 50);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 503)) throw error;
      messages.replaceChildren(el("li", { class: "muted", text: "The message journal is switched off." }));
    }
  }

  // Access: the owner (and admins) edit who manages and monitors the host.
  const accessSection = document.getElementById("access-section");
  const accessForm = document.getElementById("access-form");
  const accessError = document.getElementById("access-error");
  const accessSaved = document.getElementById("access-saved");
  const names = (text) => text.split(/[\s,]+/).map((n) => n.trim()).filter(Boolean);

  function showAccess(access) {
    accessForm.elements.owner.value = access.owner ?? "";
    accessForm.elements.managers.value = (access.managers || []).join(", ");
    accessForm.elements.monitors.value = (access.monitors || []).join(", ");
    document.getElementById("access-source").textContent = access.source === "api"
      ? "Set here (kept in the store; it wins over the config file until reset)."
      : "From the config file (hosts:), or the default owner.";
    document.getElementById("access-reset").disabled = access.source !== "api";
  }

  // Edits not yet saved are never overwritten by a reload (a feed reconnect reloads).
  let accessEdited = false;
  accessForm.addEventListener("input", () => { accessEdited = true; });

  async function loadAccess() {
    if (detail.role !== "owner") return;
    const access = await api(`${base}/access`);
    if (!accessEdited) showAccess(access);
    accessSection.hidden = false;
    const info = await me();
    if (info.admin && info.authentication) {
      const users = (await api("/api/0/users")).users || [];
      document.getElementById("user-names").replaceChildren(...users.map((u) => el("option", { value: u.name, text: u.full_name || u.name })));
    }
  }

  async function saveAccess(method, body) {
    accessError.hidden = true;
    accessSaved.hidden = true;
    try {
      showAccess(await api(`${base}/access`, { method, body }));
      accessEdited = false;
      accessSaved.textContent = method === "DELETE" ? "Reset to the config file's." : "Saved.";
      accessSaved.hidden = false;
    } catch (error) {
      accessError.textContent = error.message;
      accessError.hidden = false;
    }
  }

  accessForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = accessForm.elements;
    saveAccess("PUT", { owner: f.owner.value.trim() || null, managers: names(f.managers.value), monitors: names(f.monitors.value) });
  });
  document.getElementById("access-reset").addEventListener("click", () => saveAccess("DELETE"));

  async function loadAll() {
    const [host, plugins] = await Promise.all([api(base), api(`${base}/plugins`), loadRules()]);
    detail = host;
    latest = plugins.plugins || {};
    renderFacts();
    renderCards();
    buildCharts();
    await Promise.all([loadHistory(), loadAlerts(), loadAccess()]);
  }

  picker.addEventListener("change", () => {
    if (!picker.value) return;
    saveCustom([...customPaths(), JSON.parse(picker.value)]);
    buildCharts();
    loadHistory();
  });
  range.addEventListener("change", () => {
    group.zoomed = null;
    zoomNote.hidden = true;
    loadHistory();
  });
  zoomNote.querySelector("button").addEventListener("click", () => {
    zoomNote.hidden = true;
    group.setRange(serverNow() - Number(range.value), serverNow());
  });
  autoRefresh.addEventListener("change", () => {
    if (autoRefresh.checked) loadHistory();
  });
  setInterval(() => {
    if (autoRefresh.checked) loadHistory().catch(() => {});
  }, 60000);
  new ResizeObserver(debounce(() => charts.forEach((c) => c.chart.resize()), 150)).observe(chartsBox);
  window.addEventListener("heartbeat-theme", () => {
    buildCharts();
    drawAll();
  });

  // The messages are asked once the feed is open, as /live does: what comes after it the
  // feed brings, what came before the journal has (asked before, a message sent between
  // the answer and the feed's start was listed by neither).
  feed.on("open", ({ again }) => {
    if (again) loadAll().catch(() => {});
    loadMessages().catch((error) => console.warn("heartbeat: host page", error));
  });
  feed.on("snapshot", (event) => {
    const found = (event.hosts || []).find((h) => h.name === name);
    if (found && detail) {
      copyHost(detail, found);
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


