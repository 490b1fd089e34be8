// /alerts: active threshold alerts with summary counts and a severity filter.
import { ApiError, api, canInspect, cell, debounce, el, fmtNumber, hostHref, levelBadge, me, timeEl } from "./common.js";

const LEVELS = ["CRITICAL", "WARNING", "UNKNOWN"];

export async function alertsPage(feed) {
  const tiles = document.getElementById("alert-summary");
  const tbody = document.querySelector("#alerts tbody");
  const empty = document.getElementById("no-alerts");
  const boxes = [...document.querySelectorAll("#level-filter input[type=checkbox]")];
  let roles = (await me()).roles || {};

  async function load() {
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    const query = chosen.length === LEVELS.length ? "" : `?level=${chosen.join(",")}`;
    let data;
    try {
      data = chosen.length === 0 ? { alerts: [], summary: (await api("/api/0/alerts")).summary } : await api(`/api/0/alerts${query}`);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 503)) {
        tiles.replaceChildren(el("p", { class: "muted", text: "Threshold alerting is not running on this server." }));
        tbody.replaceChildren();
        return;
      }
      throw error;
    }
    const summary = data.summary || {};
    const total = LEVELS.reduce((sum, level) => sum + (summary[level] || 0), 0);
    tiles.replaceChildren(
      el("div", { class: "tile", dataset: { level: "TOTAL" } }, el("strong", { text: String(total) }), el("span", { text: "active" })),
      ...LEVELS.map((level) => el("div", { class: `tile tile-${level.toLowerCase()}`, dataset: { level } },
        el("strong", { text: String(summary[level] || 0) }), el("span", { text: level.toLowerCase() }))));
    const alerts = data.alerts || [];
    tbody.replaceChildren(...alerts.map((a) => el("tr", { dataset: { level: a.level, host: a.host, metric: a.metric_path } },
      cell("Level", levelBadge(a.level)),
      cell("Host", canInspect(roles, a.host) ? el("a", { href: hostHref(a.host), text: a.host }) : a.host),
      cell("Metric", a.metric_path),
      cell("Value", fmtNumber(a.value, 2)),
      cell("Limit", fmtNumber(a.threshold_value, 2)),
      cell("Since", timeEl(a.since, "ago")),
      cell("Message", a.message))));
    empty.hidden = alerts.length > 0;
    empty.textContent = total && !alerts.length ? "No alerts of the chosen severities." : "No active alerts.";
  }

  const reload = debounce(() => load().catch(() => {}), 250);
  for (const box of boxes) box.addEventListener("change", () => load());
  feed.on("alert", reload);
  feed.on("open", ({ again }) => {
    if (again) reload();
  });
  feed.on("host.new", debounce(async () => {
    roles = (await me(true)).roles || {};
  }, 300));
  await load();
}
