// /operations: maintenance windows and silences, listed, made and ended
// (GET/POST /api/0/maintenance, DELETE /api/0/maintenance/<id>, GET/POST /api/0/silences,
// DELETE /api/0/silences/<id>). Changes go through api(), which sends the CSRF token.
import { api, cell, debounce, el, fmtDuration, pathText, timeEl, zoneName } from "./common.js";

function names(text) {
  return String(text || "").split(",").map((s) => s.trim()).filter(Boolean);
}

// What the window covers and when, in words.
function windowWhen(w) {
  if (w.kind === "recurring") {
    return el("span", {}, el("code", { text: w.cron }), ` for ${fmtDuration(w.duration)} (${w.timezone})`);
  }
  return el("span", {}, timeEl(w.start), " – ", timeEl(w.end));
}

function windowState(w) {
  if (w.active) return el("span", { class: "tag marker marker-maintenance", text: "open" }, " until ", timeEl(w.current.end));
  if (typeof w.next_start === "number") return el("span", {}, "next ", timeEl(w.next_start));
  return el("span", { class: "muted", text: "over" });
}

export async function operationsPage(feed) {
  const windowRows = document.querySelector("#windows tbody");
  const silenceRows = document.querySelector("#silences tbody");
  const windowForm = document.getElementById("window-form");
  const silenceForm = document.getElementById("silence-form");
  const windowError = document.getElementById("window-error");
  const silenceError = document.getElementById("silence-error");
  const banner = document.getElementById("banner");

  function failed(error) {
    banner.textContent = error.message;
    banner.hidden = false;
  }

  async function end(path) {
    banner.hidden = true;
    try {
      await api(path, { method: "DELETE" });
    } catch (error) {
      failed(error);
    }
    await load();
  }

  function windowRow(w) {
    const button = w.source === "api"
      ? el("button", { type: "button", class: "secondary", text: w.active ? "End now" : "Delete", on: { click: () => end(`/api/0/maintenance/${encodeURIComponent(w.id)}`) } })
      : el("span", { class: "muted", text: "in the config" });
    return el("tr", { dataset: { window: w.id, active: w.active ? "yes" : "no" } },
      cell("Window", el("strong", { text: w.id })),
      cell("Hosts", pathText([...w.hosts, ...w.tags.map((t) => `tag:${t}`)].join(", "))),
      cell("When", windowWhen(w)),
      cell("State", windowState(w)),
      cell("Comment", pathText(w.comment, "msg-text")),
      cell("By", w.author ?? "config"),
      cell("", el("span", { class: "actions" }, button)));
  }

  function silenceRow(s) {
    const button = s.state === "expired" ? null
      : el("button", { type: "button", class: "secondary", text: "End now", on: { click: () => end(`/api/0/silences/${encodeURIComponent(s.id)}`) } });
    return el("tr", { dataset: { silence: s.id, state: s.state } },
      cell("Silence", el("strong", { text: s.id })),
      cell("Host", pathText(s.host)),
      cell("Metric", pathText(s.metric)),
      cell("Until", timeEl(s.end)),
      cell("State", el("span", { class: `tag marker marker-${s.state === "active" ? "silenced" : "none"}`, text: s.state }),
        s.ended_by ? el("span", { class: "muted", text: ` by ${s.ended_by}` }) : null),
      cell("Comment", pathText(s.comment, "msg-text")),
      cell("By", s.author ?? "–"),
      cell("", el("span", { class: "actions" }, button)));
  }

  async function load() {
    const [windows, silences] = await Promise.all([api("/api/0/maintenance"), api("/api/0/silences")]);
    windowRows.replaceChildren(...(windows.windows || []).map(windowRow));
    document.getElementById("no-windows").hidden = (windows.windows || []).length > 0;
    silenceRows.replaceChildren(...(silences.silences || []).map(silenceRow));
    document.getElementById("no-silences").hidden = (silences.silences || []).length > 0;
  }

  async function submit(form, error, path, body) {
    error.hidden = true;
    try {
      await api(path, { method: "POST", body });
      form.reset();
      await load();
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    }
  }

  windowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = windowForm.elements;
    const body = { hosts: names(f.hosts.value), duration: f.duration.value.trim() };
    if (zoneName() !== "local") body.timezone = zoneName();  // the zone the page shows times in
    if (f.cron.value.trim()) body.cron = f.cron.value.trim();
    else body.start = f.start.value || Date.now() / 1000;
    if (f.comment.value.trim()) body.comment = f.comment.value.trim();
    submit(windowForm, windowError, "/api/0/maintenance", body);
  });
  silenceForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = silenceForm.elements;
    submit(silenceForm, silenceError, "/api/0/silences", {
      host: f.host.value.trim(), metric: f.metric.value.trim() || "*",
      duration: f.duration.value.trim(), comment: f.comment.value });
  });

  const reload = debounce(() => load().catch(() => {}), 250);
  for (const kind of ["maintenance.created", "maintenance.updated", "maintenance.deleted", "maintenance.started",
    "maintenance.ended", "silence.created", "silence.started", "silence.ended"]) feed.on(kind, reload);
  feed.on("open", ({ again }) => {
    if (again) reload();
  });
  await load();
}
