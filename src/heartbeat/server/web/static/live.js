// /live: every visible host, kept current by the feed, for fleets of any size.
// Hosts live in a Map; the table shows only the rows in view (virtualised), so
// 10,000 hosts cost ~40 rows of DOM. Updates mark what changed and one
// animation frame redraws; the order (problems first by default) is computed
// again at most every SORT_EVERY ms while events stream in.
import {
  api, canInspect, cell, el, fmtNumber, globMatch, hostHref, levelBadge, markerTags, me, messageItem,
  messageKey, prependLimited, showJournal, stateBadge, summarize, timeEl,
} from "./common.js";

const SORT_EVERY = 400;
const OVERSCAN = 8;
const LEVEL_RANK = { CRITICAL: 3, UNKNOWN: 2, WARNING: 1 };
const QUIET_STATES = new Set(["UP", "UNKNOWN"]);
const STATE_RANK = { DOWN: 3 };
const COLUMNS = {
  problems: { label: "problems first", key: (e) => -e.rank, then: "name" },
  name: { label: "host", key: (e) => e.h.name },
  state: { label: "state", key: (e) => -stateRank(e.h.state), then: "name" },
  alerts: { label: "alerts", key: (e) => -alertRank(e.h.alert_level), then: "name" },
  last_seen: { label: "last seen", key: (e) => -(e.h.last_seen ?? -Infinity), then: "name" },
  rtt: { label: "round trip", key: (e) => e.h.rtt ?? Infinity, then: "name" },
  signed: { label: "signed", key: (e) => (e.h.signed === true ? 0 : e.h.signed === false ? 1 : 2), then: "name" },
  addr: { label: "address", key: (e) => addrKey(e.h.addr), then: "name" },
  latest: { label: "latest message", key: (e) => -(e.h.latest_message?.ts ?? -Infinity), then: "name" },
};
const ALERT_LEVELS = ["CRITICAL", "WARNING", "UNKNOWN"];

function stateRank(state) {
  if (QUIET_STATES.has(state)) return state === "UNKNOWN" ? 0.5 : 0;
  return STATE_RANK[state] ?? 2; // a state this page does not know is a problem too
}
const alertRank = (level) => LEVEL_RANK[level] ?? 0;
function worst(counts) {
  return ["CRITICAL", "UNKNOWN", "WARNING"].find((level) => counts && counts[level] > 0) ?? null;
}
function addrKey(addr) {
  if (typeof addr !== "string") return "~";
  const v4 = addr.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  return v4 ? "0" + v4.slice(1).map((n) => n.padStart(3, "0")).join(".") : "1" + addr;
}
function compare(a, b) {
  if (a < b) return -1;
  return a > b ? 1 : 0;
}

export async function livePage(feed) {
  const viewport = document.getElementById("hosts-viewport");
  const table = document.getElementById("hosts");
  const tbody = table.querySelector("tbody");
  const empty = document.getElementById("no-hosts");
  const summary = document.getElementById("summary");
  const list = document.getElementById("messages");
  const showHeartbeats = document.getElementById("show-heartbeats");
  const search = document.getElementById("live-search");
  const stateFilter = document.getElementById("filter-state");
  const levelFilter = document.getElementById("filter-level");
  const tagFilter = document.getElementById("filter-tag");
  const sortPick = document.getElementById("sort-pick");
  const entries = new Map(); // name -> {h, rank, text, row, version}
  let info = { admin: false, default_role: null, roles: {} };
  let order = [];
  let orderDirty = true;
  let forceOrder = true;
  let lastSort = 0;
  let sortTimer = null;
  let frame = 0;
  let drawn = { first: -1, last: -1, names: new Set() };
  let rowHeight = 0;
  let heightSure = false;
  let sort = { column: "problems", descending: false };
  let pendingMessages = [];

  const inspectable = (name) => canInspect(info, name);

  // Entries
  function index(entry) {
    const h = entry.h;
    entry.rank = Math.max(stateRank(h.state), alertRank(h.alert_level));
    const latest = h.latest_message ? summarize(h.latest_message.message) : "";
    entry.text = [h.name, h.addr, h.description, ...(h.tags || []), latest].filter(Boolean).join("\n").toLowerCase();
    entry.version += 1;
  }

  function put(h) {
    let entry = entries.get(h.name);
    if (!entry) {
      entry = { h, rank: 0, text: "", version: 0 };
      entries.set(h.name, entry);
    } else {
      entry.h = h;
    }
    if (!entry.h.alerts) entry.h.alerts = { CRITICAL: 0, WARNING: 0, UNKNOWN: 0 };
    index(entry);
    return entry;
  }

  function update(name, fields, reorders = true) {
    let entry = entries.get(name);
    if (!entry) {
      entry = put({ name, state: "UNKNOWN", ...fields });
      refreshRoles();
      refreshTags();
    } else {
      Object.assign(entry.h, fields);
      index(entry);
    }
    changed(name, reorders);
  }

  function changed(name, reorders) {
    if (reorders) orderLater();
    if (drawn.names.has(name)) schedule();
    summaryLater();
  }

  // Filtering and order
  function matches(entry) {
    const h = entry.h;
    const wanted = search.value.trim().toLowerCase();
    if (wanted && !wanted.split(/\s+/).every((word) => entry.text.includes(word))) return false;
    const state = stateFilter.value;
    if (state === "problem" ? entry.rank === 0 : state && h.state !== state) return false;
    const level = levelFilter.value;
    if (level === "any" && !h.alert_level) return false;
    if (level === "none" && h.alert_level) return false;
    if (ALERT_LEVELS.includes(level) && !(h.alerts && h.alerts[level] > 0)) return false;
    if (tagFilter.value && !(h.tags || []).includes(tagFilter.value)) return false;
    return true;
  }

  const filtering = () => Boolean(search.value.trim() || stateFilter.value || levelFilter.value || tagFilter.value);

  function computeOrder() {
    const column = COLUMNS[sort.column] || COLUMNS.problems;
    const sign = sort.descending ? -1 : 1;
    const then = column.then ? COLUMNS[column.then].key : null;
    const filtered = filtering();
    order = [];
    for (const entry of entries.values()) {
      if (filtered && !matches(entry)) continue;
      entry.k1 = column.key(entry);
      entry.k2 = then ? then(entry) : 0;
      order.push(entry);
    }
    order.sort((a, b) => sign * compare(a.k1, b.k1) || compare(a.k2, b.k2));
    orderDirty = false;
    forceOrder = false;
    lastSort = performance.now();
    if (filtering()) summaryLater();
    drawn = { first: -1, last: -1, names: drawn.names };
  }

  function orderLater() {
    orderDirty = true;
    if (sortTimer) return;
    const wait = Math.max(0, SORT_EVERY - (performance.now() - lastSort));
    sortTimer = setTimeout(() => {
      // Sorted in a task of its own, not in the frame that draws: each stays short.
      sortTimer = null;
      if (orderDirty) computeOrder();
      schedule();
    }, wait);
  }

  function orderNow() {
    orderDirty = true;
    forceOrder = true;
    schedule();
  }

  // Drawing: only the rows in view, between two spacer rows
  const top = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: "8" }));
  const bottom = el("tr", { class: "spacer", "aria-hidden": "true" }, el("td", { colspan: "8" }));

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function measure() {
    const rows = tbody.querySelectorAll("tr[data-host]");
    if (rows.length >= 2) rowHeight = rows[1].offsetTop - rows[0].offsetTop;
    else if (rows.length === 1) rowHeight = rows[0].offsetHeight;
    return rowHeight || 40;
  }

  function draw() {
    frame = 0;
    if (orderDirty && forceOrder) computeOrder();
    const height = rowHeight || measure();
    const first = Math.max(0, Math.floor(viewport.scrollTop / height) - OVERSCAN);
    const last = Math.min(order.length, Math.ceil((viewport.scrollTop + viewport.clientHeight) / height) + OVERSCAN);
    const rows = [];
    const names = new Set();
    for (let i = first; i < last; i++) {
      const entry = order[i];
      names.add(entry.h.name);
      if (!entry.row || entry.rowVersion !== entry.version) {
        entry.row = renderRow(entry.h);
        entry.rowVersion = entry.version;
      }
      rows.push(entry.row);
    }
    top.style.height = `${first * height}px`;
    bottom.style.height = `${(order.length - last) * height}px`;
    place([top, ...rows, bottom]);
    drawn = { first, last, names };
    // Rows have one height (the style sheet's): measured until two draws agree, and
    // again after a resize, not at every frame (reading it forces a layout mid-task).
    if (!heightSure && rows.length >= 2) {
      const measured = measure();
      heightSure = Math.abs(measured - height) <= 0.5;
      if (!heightSure) schedule();
    }
    empty.hidden = entries.size > 0;
    if (!entries.size) empty.replaceChildren(...emptyNote());
    table.dataset.shown = String(order.length);
    table.dataset.rendered = String(rows.length);
  }

  // The rows in the table: only those that changed are swapped (a frame that
  // replaced every row laid out and painted the whole table again).
  function place(wanted) {
    const current = tbody.children;
    if (current.length === wanted.length) {
      const differ = [];
      for (let i = 0; i < wanted.length; i++) if (current[i] !== wanted[i]) differ.push(i);
      if (differ.every((i) => wanted[i].parentNode !== tbody)) {
        for (const i of differ) current[i].replaceWith(wanted[i]);
        return;
      }
    }
    tbody.replaceChildren(...wanted);
  }

  function renderRow(h) {
    const name = inspectable(h.name)
      ? el("a", { href: hostHref(h.name), text: h.name, title: h.description ? `${h.name}: ${h.description}` : h.name })
      : el("span", { text: h.name, title: "the overview is for the host's owner and managers" });
    const latest = h.latest_message
      ? el("span", { class: "latest", title: summarize(h.latest_message.message) }, timeEl(h.latest_message.ts), " ", summarize(h.latest_message.message))
      : el("span", { class: "muted", text: "–" });
    const counts = h.alerts || {};
    const alertCount = ALERT_LEVELS.reduce((sum, level) => sum + (counts[level] || 0), 0);
    return el("tr", { class: "host", dataset: { host: h.name, state: h.state, level: h.alert_level ?? "" } },
      cell("Host", el("span", { class: "name" }, name), h.description ? el("small", { class: "muted desc", text: h.description }) : null,
        markerTags(h.markers)),
      cell("State", stateBadge(h.state),
        typeof h.since === "number" ? el("small", { class: "muted" }, " for ", timeEl(h.since, "for")) : null,
        h.down_reason && h.state !== "UP" ? el("small", { class: "muted", text: ` (${h.down_reason})` }) : null),
      cell("Alerts", h.alert_level ? el("span", { title: ALERT_LEVELS.map((l) => `${counts[l] || 0} ${l.toLowerCase()}`).join(", ") },
        levelBadge(h.alert_level), alertCount > 1 ? el("small", { class: "muted", text: ` ${alertCount}` }) : null) : el("span", { class: "muted", text: "–" })),
      cell("Last seen", typeof h.last_seen === "number" ? timeEl(h.last_seen, "ago") : "never"),
      cell("RTT", typeof h.rtt === "number" ? `${fmtNumber(h.rtt, 2)} ms` : "–"),
      cell("Signed", signedMark(h)),
      cell("Address", el("span", { class: "addr", text: h.addr ?? "–", title: h.addr ?? "" })),
      cell("Latest message", latest));
  }

  function signedMark(h) {
    if (h.signed === true) {
      return el("span", { class: "signed", text: `yes (${h.key_id})`, title: "its last datagram was signed with this key" });
    }
    if (h.signed === false) return el("span", { class: "muted", text: "no", title: "its last datagram was not signed" });
    return "–";
  }

  // Nothing to show: no host yet, or none this user holds a role on.
  function emptyNote() {
    if (info.admin || !info.name || !info.authentication) return ["No hosts yet. They appear here with their first heartbeat."];
    const admins = (info.admins || []).map((a) => a.full_name ? `${a.full_name} (${a.name})` : a.name);
    return [`You hold no role on any host yet, ${info.full_name || info.name}: no host is shown to you. `,
      "A host's owner can make you its monitor or manager on the host's page" +
      (admins.length ? `, and so can an admin: ${admins.join(", ")}.` : ".")];
  }

  // Summary, filters and sorting controls
  let summaryTimer = null;
  function summaryLater() {
    if (!summaryTimer) summaryTimer = setTimeout(updateSummary, 250);
  }
  function updateSummary() {
    summaryTimer = null;
    const counts = new Map();
    let alerting = 0;
    for (const { h } of entries.values()) {
      counts.set(h.state, (counts.get(h.state) || 0) + 1);
      if (h.alert_level) alerting += 1;
    }
    const states = [...counts.keys()].sort((a, b) => stateRank(b) - stateRank(a) || compare(a, b));
    const parts = states.map((state) => `${counts.get(state)} ${state.toLowerCase()}`);
    summary.textContent = `${entries.size} host${entries.size === 1 ? "" : "s"}: ${parts.join(", ") || "none"}` +
      ` · ${alerting} with alerts` + (filtering() ? ` · ${order.length} shown` : "");
    for (const state of states) {
      if (![...stateFilter.options].some((o) => o.value === state)) stateFilter.append(el("option", { value: state, text: state.toLowerCase() }));
    }
  }

  let tagTimer = null;
  function refreshTags() {
    if (tagTimer) return;
    tagTimer = setTimeout(() => {
      tagTimer = null;
      const tags = new Set();
      for (const { h } of entries.values()) for (const tag of h.tags || []) tags.add(tag);
      const chosen = tagFilter.value;
      tagFilter.replaceChildren(el("option", { value: "", text: "any" }), ...[...tags].sort().map((t) => el("option", { value: t, text: t })));
      tagFilter.value = tags.has(chosen) ? chosen : "";
      tagFilter.closest("label").hidden = tags.size === 0;
    }, 200);
  }

  let rolesTimer = null;
  function refreshRoles() {
    if (info.admin || rolesTimer) return;
    rolesTimer = setTimeout(async () => {
      rolesTimer = null;
      info = await me(true);
      for (const entry of entries.values()) entry.version += 1;
      schedule();
    }, 300);
  }

  function setSort(column) {
    sort = sort.column === column ? { column, descending: !sort.descending } : { column, descending: false };
    showSort();
    orderNow();
  }
  function showSort() {
    for (const th of table.querySelectorAll("th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort !== sort.column ? "none" : sort.descending ? "descending" : "ascending");
    }
    sortPick.value = sort.column;
  }
  sortPick.replaceChildren(...Object.entries(COLUMNS).map(([value, c]) => el("option", { value, text: c.label })));
  for (const th of table.querySelectorAll("th[data-sort]")) th.querySelector("button").addEventListener("click", () => setSort(th.dataset.sort));
  sortPick.addEventListener("change", () => {
    sort = { column: sortPick.value, descending: false };
    showSort();
    orderNow();
  });
  for (const control of [stateFilter, levelFilter, tagFilter]) control.addEventListener("change", () => { orderNow(); summaryLater(); });
  search.addEventListener("input", () => { orderNow(); summaryLater(); });
  viewport.addEventListener("scroll", schedule, { passive: true });
  new ResizeObserver(() => { rowHeight = 0; heightSure = false; schedule(); }).observe(viewport);
  showSort();

  // The feed
  feed.on("snapshot", (event) => {
    entries.clear();
    addPage(event);
  });
  feed.on("snapshot.more", addPage);
  function addPage(event) {
    for (const h of event.hosts || []) put(h);
    if (event.more) {
      orderLater();
    } else {
      // The whole fleet is in: sorted in the next frame, not up to SORT_EVERY later.
      refreshTags();
      refreshRoles();
      orderNow();
      messagesOnce();
    }
    summaryLater();
    schedule();
  }

  feed.on("message", (event) => {
    const message = event.message || {};
    const signed = { signed: typeof event.key_id === "string", key_id: event.key_id ?? null };
    if (message.ID === "HTB") {
      const fields = { last_seen: event.ts, addr: event.source_ip ?? null, ...signed };
      if (typeof message.rtt === "number") fields.rtt = message.rtt;
      update(event.host, fields, sort.column !== "problems" && sort.column !== "name");
    } else if (message.ID === "PLG") {
      update(event.host, signed, false);
    } else {
      update(event.host, { ...signed, latest_message: { ts: event.ts, message } }, sort.column === "latest");
    }
    addMessage(event.ts, event.host, message);
  });
  feed.on("host.new", (event) => update(event.host, { first_seen: event.ts, since: event.ts }));
  feed.on("host.up", (event) => update(event.host, { state: "UP", since: event.ts, down_reason: null }));
  feed.on("host.down", (event) => update(event.host, { state: "DOWN", since: event.ts, down_reason: event.reason ?? null }));
  feed.on("host.unreachable", (event) => update(event.host, { state: "UNREACHABLE", since: event.ts, down_reason: null }));
  // What covers a host (maintenance, silence, acknowledgement, flapping): its object again.
  async function refetch(name) {
    try {
      const h = await api(`/api/0/hosts/${encodeURIComponent(name)}`);
      update(name, { markers: h.markers, in_maintenance: h.in_maintenance, acknowledged: h.acknowledged, flapping: h.flapping }, false);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
  }
  for (const kind of ["ack.added", "ack.removed", "host.flapping", "silence.started", "silence.ended",
    "maintenance.started", "maintenance.ended"]) {
    feed.on(kind, (event) => {
      if (event.host) refetch(event.host).catch(() => {});
    });
  }
  // A window of globs or tags (its events have no host: admins): the hosts it covers
  // marked here, as the server's calendar matches them (a glob, or a tag of the host).
  function covers(window, h) {
    return (window.hosts || []).some((pattern) => globMatch(pattern, h.name)) ||
      (window.tags || []).some((tag) => (h.tags || []).includes(tag));
  }
  function withoutWindow(h, id) {
    return (h.markers || []).filter((m) => !(m.kind === "maintenance" && m.id === id));
  }
  feed.on("maintenance.started", (event) => {
    if (event.host) return;
    const marker = { kind: "maintenance", id: event.id, text: `maintenance '${event.id}'`, until: event.current ? event.current.end : null };
    for (const { h } of [...entries.values()]) {
      if (covers(event, h)) update(h.name, { in_maintenance: true, markers: [...withoutWindow(h, event.id), marker] }, false);
    }
  });
  feed.on("maintenance.ended", (event) => {
    if (event.host) return;
    for (const { h } of [...entries.values()]) {
      const markers = withoutWindow(h, event.id);
      if (markers.length !== (h.markers || []).length) {
        update(h.name, { markers, in_maintenance: markers.some((m) => m.kind === "maintenance") }, false);
      }
    }
  });
  feed.on("host.address", (event) => update(event.host, { addr: event.addr ?? null }, sort.column === "addr"));
  feed.on("alert", (event) => {
    const entry = entries.get(event.host);
    if (!entry || event.level === event.previous) return;
    const counts = { ...entry.h.alerts };
    if (event.previous in counts) counts[event.previous] = Math.max(0, counts[event.previous] - 1);
    if (event.level in counts) counts[event.level] += 1;
    update(event.host, { alerts: counts, alert_level: worst(counts) });
  });
  feed.on("host.removed", (event) => {
    entries.delete(event.host);
    orderNow();
    summaryLater();
  });

  // Recent messages, batched per frame
  function addMessage(ts, host, message) {
    if ((message.ID === "HTB" || message.ID === "PLG") && !showHeartbeats.checked) return;
    pendingMessages.push([ts, host, message]);
    if (pendingMessages.length === 1) {
      requestAnimationFrame(() => {
        const batch = pendingMessages.slice(-50);
        pendingMessages = [];
        // Each once: the journal's answer may have brought one the feed was slower with.
        const present = new Set([...list.children].map((item) => item.dataset.key));
        for (const [t, name, m] of batch) {
          if (!present.has(messageKey(t, name, m))) prependLimited(list, messageItem(t, name, m, inspectable(name)), 50);
        }
      });
    }
  }

  // The journal's latest, asked once the snapshot is in (its scan on the server
  // no longer competes with the snapshot's pages); what the feed added while it
  // was asked stays on top, and the journal's copies of it are left out.
  async function loadMessages() {
    const before = new Set(list.children);
    let messages = [];
    const types = showHeartbeats.checked ? "" : "&types=MSG,BOOT,SHUT,RES";
    try {
      messages = (await api(`/api/0/messages?limit=50${types}`)).messages || [];
    } catch (error) {
      if (error.status !== 503) throw error;
    }
    const items = messages.map((entry) => {
      const message = entry.message || {};
      const host = typeof message.name === "string" ? message.name : "?";
      return messageItem(entry.timestamp, host, message, inspectable(host));
    });
    showJournal(list, before, items, 50, pendingMessages.map(([t, name, m]) => messageKey(t, name, m)));
  }
  let messagesAsked = false;
  function messagesOnce() {
    if (messagesAsked) return;
    messagesAsked = true;
    loadMessages().catch((error) => console.warn("heartbeat: live page", error));
  }
  showHeartbeats.addEventListener("change", () => loadMessages());
  // The feed connects once this returns: who may open which overview loads meanwhile
  // (the recent messages once the snapshot is in: messagesOnce).
  me().then((found) => {
    info = found;
    for (const entry of entries.values()) entry.version += 1;
    schedule();
    if (!entries.size) empty.replaceChildren(...emptyNote());
  }).catch((error) => console.warn("heartbeat: live page", error));
}
