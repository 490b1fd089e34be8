// /alerts: every problem of the visible hosts, DOWN hosts and threshold alerts
// together (GET /api/0/alerts), with counts and filters; current before stale.
import {
  ApiError, api, canInspect, cell, debounce, el, fmtMetric, hostHref, levelBadge, markerTags,
  me, pathText, stateBadge, timeEl,
} from "./common.js";

const LEVELS = ["CRITICAL", "UNKNOWN", "WARNING"];
const SHOWN = 500;

function problemCell(a) {
  if (a.kind === "host") {
    return el("span", {}, "host ", stateBadge(a.state), a.reason ? el("span", { class: "muted", text: ` (${a.reason})` }) : null);
  }
  return pathText(a.metric_path);
}

// Where a problem is acknowledged: a metric path may hold "/" (kept as is, the API's
// route takes it whole), each segment otherwise escaped.
function ackPath(a) {
  const host = `/api/0/hosts/${encodeURIComponent(a.host)}`;
  if (a.kind === "host") return `${host}/ack`;
  return `${host}/alerts/${String(a.metric_path).split("/").map(encodeURIComponent).join("/")}/ack`;
}

// Acknowledge (with a comment) or take the acknowledgement back; for managers of the host.
function ackCell(a, info, done) {
  if (!canInspect(info, a.host) || a.stale) return cell("", null);
  const error = el("span", { class: "error", role: "alert", hidden: true });
  async function send(method, body) {
    try {
      await api(ackPath(a), { method, body });
      done();
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    }
  }
  if (a.acknowledged) {
    return cell("", el("span", { class: "actions" },
      el("button", { type: "button", class: "secondary ack-undo", text: "Take back", on: { click: () => send("DELETE") } }), error));
  }
  const comment = el("input", { name: "comment", placeholder: "comment", "aria-label": "comment", required: true, autocomplete: "off" });
  const form = el("form", { class: "ack-form", hidden: true, on: { submit: (event) => {
    event.preventDefault();
    send("POST", { comment: comment.value });
  } } }, comment, el("button", { type: "submit", text: "OK" }));
  const open = el("button", { type: "button", class: "secondary ack-open", text: "Acknowledge", on: { click: () => {
    open.hidden = true;
    form.hidden = false;
    comment.focus();
  } } });
  return cell("", el("span", { class: "actions" }, open, form, error));
}

// One problem as a table row; withHost: false leaves the host's column out (its own page);
// onAck: the acknowledgement column, and what to do after a change.
export function problemRow(a, info, withHost = true, onAck = null) {
  return el("tr", { class: a.stale ? "stale" : "", dataset: { level: a.level, host: a.host, kind: a.kind, metric: a.metric_path ?? "", stale: a.stale ? "yes" : "no" } },
    cell("Level", levelBadge(a.level), a.stale ? el("span", { class: "tag muted-tag", text: "stale", title: `the host is ${a.state}: this is its last value` }) : null),
    withHost && cell("Host", canInspect(info, a.host) ? el("a", { class: "name", href: hostHref(a.host), text: a.host, title: a.host }) : el("span", { class: "name", text: a.host, title: a.host }),
      markerTags(a.markers)),
    cell("Problem", problemCell(a)),
    cell("Value", a.kind === "metric" ? fmtMetric(a.metric_path, a.value) : "–"),
    cell("Limit", a.kind === "metric" ? fmtMetric(a.metric_path, a.threshold_value) : "–"),
    cell("Since", typeof a.since === "number" ? timeEl(a.since, "ago") : "–"),
    cell("Message", pathText(a.message, "msg-text")),
    onAck && ackCell(a, info, onAck));
}

export async function alertsPage(feed) {
  const tiles = document.getElementById("alert-summary");
  const tbody = document.querySelector("#alerts tbody");
  const empty = document.getElementById("no-alerts");
  const more = document.getElementById("alerts-more");
  const levelBoxes = [...document.querySelectorAll("#level-filter input[type=checkbox]")];
  const kindBoxes = [...document.querySelectorAll("#kind-filter input[value]")];
  const showStale = document.getElementById("show-stale");
  let info = await me();

  async function load() {
    const levels = levelBoxes.filter((b) => b.checked).map((b) => b.value);
    const kinds = kindBoxes.filter((b) => b.checked).map((b) => b.value);
    // The server filters and keeps the first SHOWN: a fleet's fall is 100,000 problems
    // (35 MB, seconds of the server's time and of this page's, for rows nobody reads).
    const query = new URLSearchParams({ limit: levels.length && kinds.length ? SHOWN : 0 });
    if (levels.length && levels.length < levelBoxes.length) query.set("level", levels.join(","));
    if (kinds.length && kinds.length < kindBoxes.length) query.set("kind", kinds.join(","));
    let data;
    try {
      data = await api(`/api/0/alerts?${query}`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 503)) {
        tiles.replaceChildren(el("p", { class: "muted", text: "Threshold alerting is not running on this server." }));
        tbody.replaceChildren();
        return;
      }
      throw error;
    }
    const summary = data.summary || {};
    const all = data.alerts || [];
    const total = LEVELS.reduce((sum, level) => sum + (summary[level] || 0), 0);
    tiles.replaceChildren(
      el("div", { class: "tile", dataset: { level: "TOTAL" } }, el("strong", { text: String(total) }), el("span", { text: "problems" })),
      el("div", { class: "tile tile-critical", dataset: { level: "HOSTS" } }, el("strong", { text: String(summary.hosts || 0) }), el("span", { text: "hosts not up" })),
      ...LEVELS.map((level) => el("div", { class: `tile tile-${level.toLowerCase()}`, dataset: { level } },
        el("strong", { text: String(summary[level] || 0) }), el("span", { text: level.toLowerCase() }))),
      el("div", { class: "tile", dataset: { level: "STALE" } }, el("strong", { text: String(summary.stale || 0) }), el("span", { text: "stale (host down)" })));
    // Stale problems come last: leaving them out keeps the rows a head of the list.
    const shown = all.filter((a) => showStale.checked || !a.stale);
    tbody.replaceChildren(...shown.map((a) => problemRow(a, info, true, reload)));
    const anyAtAll = total + (summary.stale || 0) > 0;
    empty.hidden = shown.length > 0;
    empty.textContent = anyAtAll && !shown.length ? "No problems of the chosen kinds." : "No problems: every host is up and every metric within its limits.";
    const matching = levels.length && kinds.length ? data.total ?? all.length : 0;
    more.hidden = all.length >= matching;
    more.textContent = `Showing the first ${all.length.toLocaleString("en")} of ${matching.toLocaleString("en")} problems of the chosen kinds, worst first: the filters above narrow them, GET /api/0/alerts lists them all.`;
  }

  const reload = debounce(() => load().catch(() => {}), 250);
  for (const box of [...levelBoxes, ...kindBoxes, showStale]) box.addEventListener("change", () => load());
  for (const kind of ["alert", "host.up", "host.down", "host.unreachable", "host.removed", "ack.added",
    "ack.removed", "maintenance.started", "maintenance.ended", "silence.started", "silence.ended"]) feed.on(kind, reload);
  feed.on("open", ({ again }) => {
    if (again) reload();
  });
  feed.on("host.new", debounce(async () => {
    if (!info.admin) info = await me(true); // a new host may be one the user holds a role on
  }, 300));
  await load();
}
