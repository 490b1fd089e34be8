// Shared by every page: DOM building, the API, the live feed, formatting.
// Every string from the server goes into the page with textContent (el() below),
// never as markup.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key === "href") node.setAttribute("href", safeHref(value));
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

// A table cell that narrow screens label with its column's name.
export function cell(label, ...content) {
  return el("td", { dataset: { label } }, ...content);
}

// A dotted path or key ("disk_monitor.partitions./var.percent") that may wrap only
// after its separators, never inside a word.
export function pathText(text, cls = "path") {
  const value = String(text ?? "");
  const parts = value.split(/(?<=[./_:-])/);
  const node = el("span", { class: cls, title: value });
  parts.forEach((part, i) => {
    node.append(part);
    if (i < parts.length - 1) node.append(document.createElement("wbr"));
  });
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

function safeHref(value) {
  const text = String(value);
  return text.startsWith("/") && !text.startsWith("//") ? text : "#";
}

export function hostHref(name) {
  return "/plugins/" + encodeURIComponent(name);
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// Server time: every HTTP Date header and every event's ts is a lower bound of the
// server's clock, so the largest offset seen is the best estimate.
let offset = null;
function noteServerTime(seconds) {
  if (!Number.isFinite(seconds)) return;
  const seen = seconds - Date.now() / 1000;
  if (offset === null || seen > offset) offset = seen;
}
export function serverNow() {
  return Date.now() / 1000 + (offset ?? 0);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let csrfToken = null;

export function toLogin() {
  const here = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(here));
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const date = response.headers.get("Date");
  if (date) noteServerTime(Date.parse(date) / 1000);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && document.body.dataset.page !== "login") {
    toLogin();
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

let mePromise = null;
export function me(fresh = false) {
  if (fresh || mePromise === null) {
    mePromise = api("/api/0/me").then((info) => {
      if (info.csrf_token) csrfToken = info.csrf_token;
      return info;
    });
  }
  return mePromise;
}

// A user's role on a host, from /api/0/me (or a user of /api/0/users): `roles` names
// only the hosts where it differs from `default_role` (an admin's is owner everywhere).
export function roleOf(info, name) {
  const roles = info.roles || {};
  return Object.hasOwn(roles, name) ? roles[name] : (info.default_role ?? null);
}

export function canInspect(info, name) {
  const role = roleOf(info, name);
  return role === "owner" || role === "manager";
}

// The live feed: /ws on this origin, the session cookie authenticates it. It
// reconnects by itself and says so (nav badge, and the page's #banner if any).
// The fields a compact snapshot left out: read through the host object's prototype,
// one frozen object of the defaults for the whole snapshot (copying them into
// 10,000 objects was ~0.15 s of the page). `key in h`, `h.key` and for...in see
// them; Object.assign, spread and Object.keys see only the fields sent, so a page
// that copies a host object copies with for...in (copyHost). The lists and objects
// among the defaults are frozen: a page replaces such a field (h.tags = [...]), never
// changes a default in place. The prototype itself is not (an assignment to a field
// a frozen prototype holds throws: h.signed = true must make the host's own field).
function defaultsProto(defaults) {
  const proto = {};
  for (const [key, value] of Object.entries(defaults)) {
    proto[key] = value !== null && typeof value === "object" ? Object.freeze(value) : value;
  }
  return proto;
}
function fill(hosts, proto) {
  for (const h of hosts) Object.setPrototypeOf(h, proto);
}
// Every field of a host object into `target`, those left at their defaults too.
export function copyHost(target, h) {
  for (const key in h) target[key] = h[key];
  return target;
}

export class Feed {
  constructor() {
    this.handlers = new Map();
    this.failures = 0;
    this.everConnected = false;
    this.socket = null;
    this.defaults = null;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
  }

  emit(type, message) {
    for (const fn of [...(this.handlers.get(type) || []), ...(this.handlers.get("*") || [])]) {
      try {
        fn(message);
      } catch (error) {
        console.warn("heartbeat: a feed handler failed", error);
      }
    }
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.setState("connecting", this.everConnected ? "reconnecting…" : "connecting…");
    // A compact snapshot: host objects without the fields at their defaults, which the
    // first page carries and fill() puts behind them (a third of the bytes at fleet size).
    const socket = new WebSocket(`${scheme}//${location.host}/ws?compact=1`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      const again = this.everConnected;
      this.failures = 0;
      this.everConnected = true;
      this.setState("live", "live");
      this.emit("open", { again });
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (typeof message.ts === "number") noteServerTime(message.ts);
      if (message.type === "snapshot") this.defaults = message.defaults ? defaultsProto(message.defaults) : null;
      if (this.defaults && (message.type === "snapshot" || message.type === "snapshot.more")) {
        fill(message.hosts || [], this.defaults);
      }
      this.emit(message.type, message);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      if (event.code === 4001) {
        toLogin();
        return;
      }
      this.failures += 1;
      const delay = Math.min(this.failures, 10);
      this.setState("reconnecting", `connection lost: reconnecting in ${delay} s`);
      this.emit("lost", { delay });
      if (this.failures >= 3) me(true).catch(() => {}); // a 401 here goes to the login
      setTimeout(() => this.connect(), delay * 1000);
    });
  }

  setState(state, text) {
    const badge = document.getElementById("feed-state");
    if (badge) {
      badge.dataset.state = state;
      badge.textContent = text;
    }
    const banner = document.getElementById("banner");
    if (!banner) return;
    if (state === "reconnecting") {
      banner.hidden = false;
      banner.dataset.state = "lost";
      banner.textContent = `Connection to the server lost: ${text.replace("connection lost: ", "")}. ` +
        "This page keeps the last data it had.";
    } else if (state === "live" && this.everConnected && banner.dataset.state === "lost") {
      banner.dataset.state = "restored";
      banner.textContent = "Reconnected: the page is live again.";
      setTimeout(() => {
        if (banner.dataset.state === "restored") banner.hidden = true;
      }, 4000);
    }
  }
}

// The threshold rule for a metric path (["disk_monitor", "partitions", "/", "percent"])
// in a host's effective rules (GET /api/0/hosts/<name>/thresholds): keys match
// exactly or through "*", and a generic rule "percent" also covers "swap_percent",
// as the server's engine matches them (docs/THRESHOLD_ALERTING.md).
const isRule = (node) => isObject(node) && typeof node.operator === "string";
export function ruleFor(tree, path) {
  let nodes = [tree];
  for (let i = 0; i < path.length; i++) {
    const key = String(path[i]);
    const last = i === path.length - 1;
    const next = [];
    for (const node of nodes) {
      if (!isObject(node)) continue;
      for (const candidate of [node[key], node["*"]]) {
        if (candidate === undefined || candidate === null) continue;
        if (last ? isRule(candidate) : !isRule(candidate)) next.push(candidate);
      }
      if (last) {
        for (const [name, rule] of Object.entries(node)) {
          if (isRule(rule) && rule.generic !== false && key.endsWith(`_${name}`)) next.push(rule);
        }
      }
    }
    nodes = next;
  }
  return nodes.find(isRule) || null;
}

// Formatting
export function fmtNumber(value, digits = 1) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", { maximumFractionDigits: digits });
}

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function fmtBytes(bytes, suffix = "") {
  if (typeof bytes !== "number" || !Number.isFinite(bytes)) return "–";
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const sign = bytes < 0 ? "-" : "";
  return `${sign}${value.toFixed(value >= 100 || unit === 0 ? 0 : 1)} ${BYTE_UNITS[unit]}${suffix}`;
}

// The unit of a metric, from its path's last name (the agent's field names,
// docs/AGENT.md): {unit, scale, kind} where kind "bytes" or "duration" picks a
// human formatter, "percent" a 0-100 axis.
export function metricUnit(path) {
  const name = String(path).split(".").pop().toLowerCase();
  if (/(^|_)(percent|capacity|fragmentation|util)$|_pct$|percent_/.test(name)) return { unit: "%", kind: "percent" };
  if (/_mb$/.test(name)) return { unit: "B", scale: 1048576, kind: "bytes" };
  if (/_gb$/.test(name)) return { unit: "B", scale: 1073741824, kind: "bytes" };
  if (/_kb$/.test(name)) return { unit: "B", scale: 1024, kind: "bytes" };
  if (/bytes/.test(name) || /^(size|alloc|free)$/.test(name)) return { unit: "B", kind: "bytes" };
  if (/^rtt|rtt_|_ms$|^time_ms$/.test(name)) return { unit: "ms" };
  if (/_seconds$|_s$|^uptime/.test(name)) return { unit: "s", kind: "duration" };
  if (/_mhz$/.test(name)) return { unit: "MHz" };
  if (/_mbps$/.test(name)) return { unit: "Mb/s" };
  if (/temp|_c$/.test(name)) return { unit: "°C" };
  return { unit: "" };
}

// A metric's value with its unit: "96 %", "1.5 GiB", "12.3 ms", "2 h 3 min".
export function fmtMetric(path, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value === null || value === undefined ? "–" : String(value);
  const u = metricUnit(path);
  if (u.kind === "bytes") return fmtBytes(value * (u.scale || 1));
  if (u.kind === "duration") return fmtDuration(value);
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  const text = Number.isInteger(value) ? value.toLocaleString("en-US") : value.toLocaleString("en-US", { maximumFractionDigits: digits });
  return u.unit ? `${text} ${u.unit}` : text;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds > 0 && seconds < 10 && !Number.isInteger(seconds)) return `${Number(seconds.toFixed(seconds < 1 ? 2 : 1))} s`;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function fmtAgo(ts) {
  if (typeof ts !== "number") return "never";
  return fmtDuration(serverNow() - ts) + " ago";
}

// Time zones: the browser's, or one chosen on /settings (kept in local storage).
// Both are read once and kept (every time element asks: /live draws dozens a
// frame, and a new Intl.DateTimeFormat for the browser's zone cost ~0.1 ms each);
// another tab's choice shows from the next page.
const TZ_KEY = "heartbeat.tz";
let chosenZone = null;
let browserZone = null;
export function timeZone() {
  if (chosenZone === null) {
    try {
      chosenZone = localStorage.getItem(TZ_KEY) || "";
    } catch {
      chosenZone = "";
    }
  }
  return chosenZone;
}
export function setTimeZone(zone) {
  try {
    if (zone) localStorage.setItem(TZ_KEY, zone);
    else localStorage.removeItem(TZ_KEY);
  } catch {
    // private mode: this page only
  }
  chosenZone = zone || "";
  formats.clear();
  today = { second: null, date: "" };
}
export function zoneName() {
  browserZone ??= Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  return timeZone() || browserZone;
}

const formats = new Map();
function partsOf(ts) {
  const zone = timeZone();
  let format = formats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-GB", {
      timeZone: zone || undefined, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "shortOffset",
    });
    formats.set(zone, format);
  }
  const out = {};
  for (const part of format.formatToParts(new Date(ts * 1000))) out[part.type] = part.value;
  if (out.timeZoneName === "GMT+0" || out.timeZoneName === "UTC") out.timeZoneName = "GMT";
  return out;
}

// The zone's offset at `ts`, e.g. "GMT+1" ("GMT" for UTC).
export function zoneOffset(ts = Date.now() / 1000) {
  return partsOf(ts).timeZoneName || "";
}

// Date and time in the chosen zone, the date and both from the same zone:
// mode "auto" (time only when today), "full" (with the offset), "time" (HH:MM),
// "seconds" (HH:MM:SS), "date" (MM-DD HH:MM, for axes over days).
export function fmtTime(ts, mode = "auto") {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "–";
  const p = partsOf(ts);
  const date = `${p.year}-${p.month}-${p.day}`;
  const time = `${p.hour}:${p.minute}:${p.second}`;
  if (mode === "time") return `${p.hour}:${p.minute}`;
  if (mode === "seconds") return time;
  if (mode === "date") return `${p.month}-${p.day} ${p.hour}:${p.minute}`;
  if (mode === "full") return `${date} ${time} ${p.timeZoneName}`;
  return date === todayDate() ? time : `${date} ${time}`;
}

// Today's date in the chosen zone, worked out again once a second at most.
let today = { second: null, date: "" };
function todayDate() {
  const second = Math.floor(Date.now() / 1000);
  if (today.second !== second) {
    const p = partsOf(second);
    today = { second, date: `${p.year}-${p.month}-${p.day}` };
  }
  return today.date;
}

// mode: "at" (clock time), "ago" ("12 s ago") or "for" (a duration up to now: "12 s").
export function timeEl(ts, mode = "at") {
  const known = typeof ts === "number";
  return el("time", {
    datetime: known ? new Date(ts * 1000).toISOString() : undefined,
    title: known ? `${fmtTime(ts, "full")} (${zoneName()})` : undefined,
    dataset: known && mode !== "at" ? { [mode]: String(ts) } : undefined,
    text: mode === "ago" ? fmtAgo(ts) : mode === "for" ? fmtDuration(serverNow() - ts) : fmtTime(ts),
  });
}

// Relative times tick once a second.
export function tickAges() {
  for (const node of document.querySelectorAll("time[data-ago]")) {
    node.textContent = fmtAgo(Number(node.dataset.ago));
  }
  for (const node of document.querySelectorAll("time[data-for]")) {
    node.textContent = fmtDuration(serverNow() - Number(node.dataset.for));
  }
}

export function stateBadge(state) {
  const value = typeof state === "string" ? state : "UNKNOWN";
  return el("span", { class: `state state-${value.toLowerCase()}`, dataset: { state: value }, text: value });
}

// Whether a host name matches a shell-style glob (* ? [...] [!...]) as the server's
// maintenance windows match them (heartbeat.server.maintenance: case-sensitive, * spans dots).
export function globMatch(pattern, name) {
  let source = "";
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i];
    if (c === "*") source += ".*";
    else if (c === "?") source += ".";
    else if (c === "[" && pattern.indexOf("]", i + 2) > i) {
      const end = pattern.indexOf("]", i + 2);
      let body = pattern.slice(i + 1, end).replace(/\\/g, "\\\\");
      if (body.startsWith("!")) body = "^" + body.slice(1);
      source += `[${body}]`;
      i = end;
    } else source += c.replace(/[.+^${}()|\]\\]/g, "\\$&");
  }
  return new RegExp(`^${source}$`).test(name);
}

// Markers a host or problem carries (maintenance, silenced, acknowledged...), as tags:
// a marker is a string or an object with a kind and optional text, by, until.
export function markerTags(markers) {
  if (!Array.isArray(markers) || !markers.length) return null;
  return el("span", { class: "markers" }, markers.map((m) => {
    const kind = typeof m === "string" ? m : String((m && (m.kind || m.type)) ?? "marker");
    const parts = isObject(m) ? [m.text || m.comment || m.reason, m.by ? `by ${m.by}` : null,
      typeof m.until === "number" ? `until ${fmtTime(m.until)}` : null].filter(Boolean) : [];
    return el("span", { class: `tag marker marker-${kind.toLowerCase().replace(/[^a-z0-9-]/g, "")}`, dataset: { marker: kind }, text: kind, title: parts.join(" · ") || kind });
  }));
}

export function levelBadge(level) {
  const value = typeof level === "string" ? level : "UNKNOWN";
  return el("span", { class: `level level-${value.toLowerCase()}`, text: value });
}

// One line saying what a received message was.
export function summarize(message) {
  if (!message || typeof message !== "object") return "";
  switch (message.ID) {
    case "HTB":
      return "heartbeat" + (typeof message.rtt === "number" ? ` · rtt ${fmtNumber(message.rtt, 2)} ms` : "");
    case "MSG":
      return String(message.text ?? "");
    case "PLG":
      return "plugin data: " + Object.keys(message.plugins || {}).join(", ");
    case "BOOT":
      return "booted";
    case "SHUT":
      return "shutting down";
    case "RES":
      return `result of ${message.cmd_id}: rc ${message.rc}` + (message.output ? ` · ${message.output}` : "");
    default:
      return String(message.ID ?? "?");
  }
}

// host: null leaves the host out; link: whether the host's overview may be opened.
export function messageItem(ts, host, message, link = false) {
  const kind = String(message.ID ?? "?");
  const level = message.ID === "MSG" && typeof message.level === "string" ? message.level : "";
  let who = null;
  if (host !== null) {
    who = link ? el("a", { class: "msg-host", href: hostHref(host), text: host })
      : el("span", { class: "msg-host", text: host });
  }
  const key = messageKey(ts, host ?? message.name, message);
  return el("li", { class: `message kind-${kind.toLowerCase()}`, dataset: { kind, key } },
    timeEl(ts),
    who,
    el("span", { class: `kind ${level ? "msg-" + level.toLowerCase() : ""}`, text: level ? `${kind} ${level}` : kind }),
    el("span", { class: "msg-text", text: summarize(message) }));
}

// The journal writes times to the millisecond (%.3f) and the feed sends them whole:
// a message is told by its time as the journal has it, its host, ID, seq and text.
export function messageKey(ts, host, message) {
  return `${Number(ts).toFixed(3)} ${host} ${message.ID} ${message.seq ?? ""} ${message.text ?? ""}`;
}

// The journal's latest `items` (messageItem, newest first) into `list`, under what the
// feed added while the journal was asked (the items not in `before`, the list's items
// when it was asked), leaving out the journal's copies of those and of `waiting` (keys
// of what the feed brought that is not drawn yet). Without this a message the feed
// brought during the request was listed twice, or not at all when the answer, read
// before it came, replaced the list.
export function showJournal(list, before, items, limit, waiting = []) {
  const fresh = [...list.children].filter((item) => !before.has(item));
  const seen = new Set([...fresh.map((item) => item.dataset.key), ...waiting]);
  const loaded = items.filter((item) => !seen.has(item.dataset.key));
  list.replaceChildren(...fresh, ...loaded.slice(0, Math.max(0, limit - fresh.length)));
}

export function prependLimited(list, item, limit = 100) {
  list.prepend(item);
  while (list.children.length > limit) list.lastElementChild.remove();
}
