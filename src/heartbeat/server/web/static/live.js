// /live: every visible host, kept current by the feed; recent messages.
import {
  api, canInspect, cell, clear, debounce, el, fmtNumber, hostHref, me, messageItem,
  prependLimited, stateBadge, summarize, timeEl,
} from "./common.js";

export async function livePage(feed) {
  const tbody = document.querySelector("#hosts tbody");
  const empty = document.getElementById("no-hosts");
  const summary = document.getElementById("summary");
  const list = document.getElementById("messages");
  const showHeartbeats = document.getElementById("show-heartbeats");
  const hosts = new Map(); // name -> {data, row}
  const latestByHost = new Map(); // name -> {ts, message}: the newest message but HTB and PLG
  let roles = (await me()).roles || {};

  const refreshRoles = debounce(async () => {
    roles = (await me(true)).roles || {};
    for (const entry of hosts.values()) render(entry);
  }, 300);

  function render(entry) {
    const h = entry.data;
    const name = canInspect(roles, h.name)
      ? el("a", { href: hostHref(h.name), text: h.name })
      : el("span", { text: h.name, title: "the overview is for the host's owner and managers" });
    const newest = latestByHost.get(h.name);
    const latest = newest
      ? el("span", { class: "latest" }, timeEl(newest.ts), " ", summarize(newest.message))
      : el("span", { class: "muted", text: "–" });
    const row = el("tr", { dataset: { host: h.name, state: h.state } },
      cell("Host", name),
      cell("State", stateBadge(h.state),
        typeof h.since === "number" ? el("small", { class: "muted" }, " for ", timeEl(h.since, "for")) : null,
        h.state === "DOWN" && h.down_reason ? el("small", { class: "muted", text: ` (${h.down_reason})` }) : null),
      cell("Last seen", typeof h.last_seen === "number" ? timeEl(h.last_seen, "ago") : "never"),
      cell("RTT", typeof h.rtt === "number" ? `${fmtNumber(h.rtt, 2)} ms` : "–"),
      cell("Signed", signedMark(h)),
      cell("Address", h.addr ?? "–"),
      cell("Latest message", latest));
    if (entry.row) entry.row.replaceWith(row);
    entry.row = row;
    return row;
  }

  function signedMark(h) {
    if (h.signed === true) {
      return el("span", { class: "signed", text: `yes (${h.key_id})`,
        title: "its last datagram was signed with this key" });
    }
    if (h.signed === false) return el("span", { class: "muted", text: "no", title: "its last datagram was not signed" });
    return "–";
  }

  function place(entry) {
    const names = [...hosts.keys()].sort();
    const index = names.indexOf(entry.data.name);
    const after = names.slice(index + 1).map((n) => hosts.get(n).row).find((r) => r && r.isConnected);
    if (after) tbody.insertBefore(entry.row, after);
    else tbody.append(entry.row);
  }

  function upsert(name, fields) {
    let entry = hosts.get(name);
    if (!entry) {
      entry = { data: { name, state: "UNKNOWN", ...fields }, row: null };
      hosts.set(name, entry);
      render(entry);
      place(entry);
    } else {
      Object.assign(entry.data, fields);
      render(entry);
    }
    updateSummary();
    return entry;
  }

  function updateSummary() {
    const counts = { UP: 0, DOWN: 0, UNKNOWN: 0 };
    for (const { data } of hosts.values()) counts[data.state] = (counts[data.state] || 0) + 1;
    empty.hidden = hosts.size > 0;
    summary.textContent = `${hosts.size} host${hosts.size === 1 ? "" : "s"}: ` +
      `${counts.UP} up, ${counts.DOWN} down, ${counts.UNKNOWN} unknown`;
  }

  function addMessage(ts, host, message) {
    if ((message.ID === "HTB" || message.ID === "PLG") && !showHeartbeats.checked) return;
    prependLimited(list, messageItem(ts, host, message, canInspect(roles, host)), 50);
  }

  feed.on("snapshot", (event) => {
    hosts.clear();
    clear(tbody);
    addPage(event);
  });
  feed.on("snapshot.more", addPage);
  function addPage(event) {
    for (const h of event.hosts || []) {
      const entry = { data: h, row: null };
      hosts.set(h.name, entry);
      tbody.append(render(entry));
    }
    updateSummary();
    refreshRoles();
  }
  feed.on("message", (event) => {
    const message = event.message || {};
    if (!hosts.has(event.host)) refreshRoles();
    const signed = { signed: typeof event.key_id === "string", key_id: event.key_id ?? null };
    if (message.ID === "HTB") {
      const fields = { last_seen: event.ts, addr: event.source_ip ?? null, ...signed };
      if (typeof message.rtt === "number") fields.rtt = message.rtt;
      upsert(event.host, fields);
    } else if (message.ID !== "PLG") {
      latestByHost.set(event.host, { ts: event.ts, message });
      upsert(event.host, signed);
    } else {
      upsert(event.host, signed);
    }
    addMessage(event.ts, event.host, message);
  });
  feed.on("host.new", (event) => {
    upsert(event.host, { first_seen: event.ts, since: event.ts });
    refreshRoles();
  });
  feed.on("host.up", (event) => upsert(event.host, { state: "UP", since: event.ts, down_reason: null }));
  feed.on("host.down", (event) => upsert(event.host, { state: "DOWN", since: event.ts, down_reason: event.reason ?? null }));
  feed.on("host.address", (event) => upsert(event.host, { addr: event.addr ?? null }));
  feed.on("host.removed", (event) => {
    const entry = hosts.get(event.host);
    if (entry && entry.row) entry.row.remove();
    hosts.delete(event.host);
    updateSummary();
  });

  showHeartbeats.addEventListener("change", () => loadMessages());

  async function loadMessages() {
    let entries = [];
    try {
      entries = (await api("/api/0/messages?limit=200")).messages || [];
    } catch (error) {
      if (error.status !== 503) throw error;
    }
    clear(list);
    for (const entry of entries.slice().reverse()) {
      const message = entry.message || {};
      const host = typeof message.name === "string" ? message.name : "?";
      if (message.ID !== "HTB" && message.ID !== "PLG") {
        latestByHost.set(host, { ts: entry.timestamp, message });
      }
      addMessage(entry.timestamp, host, message);
    }
    for (const entry of hosts.values()) render(entry);
  }
  await loadMessages();
  updateSummary();
}
