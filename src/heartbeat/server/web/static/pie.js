// The alert-count pie chart in the navigation bar, on every page.
import { api, debounce } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const LEVELS = ["CRITICAL", "UNKNOWN", "WARNING"];

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export function pieChart(summary, size = 22) {
  const r = size / 2;
  const root = svg("svg", { viewBox: `0 0 ${size} ${size}`, width: size, height: size, class: "pie-chart" });
  const total = LEVELS.reduce((sum, level) => sum + (summary[level] || 0), 0);
  if (total === 0) {
    root.append(svg("circle", { cx: r, cy: r, r: r - 1, class: "slice-none" }));
    return root;
  }
  let angle = -Math.PI / 2;
  for (const level of LEVELS) {
    const count = summary[level] || 0;
    if (!count) continue;
    const cls = `slice slice-${level.toLowerCase()}`;
    if (count === total) {
      root.append(svg("circle", { cx: r, cy: r, r: r - 1, class: cls, "data-level": level }));
      break;
    }
    const next = angle + (2 * Math.PI * count) / total;
    const large = next - angle > Math.PI ? 1 : 0;
    const x1 = r + (r - 1) * Math.cos(angle), y1 = r + (r - 1) * Math.sin(angle);
    const x2 = r + (r - 1) * Math.cos(next), y2 = r + (r - 1) * Math.sin(next);
    root.append(svg("path", {
      d: `M${r},${r} L${x1.toFixed(2)},${y1.toFixed(2)} A${r - 1},${r - 1} 0 ${large} 1 ${x2.toFixed(2)},${y2.toFixed(2)} Z`,
      class: cls, "data-level": level,
    }));
    angle = next;
  }
  return root;
}

export function startPie(feed) {
  const holder = document.getElementById("alert-pie");
  const link = document.getElementById("alerts-link");
  if (!holder || !link) return;
  const draw = (summary) => {
    const total = LEVELS.reduce((sum, level) => sum + (summary[level] || 0), 0);
    holder.replaceChildren(pieChart(summary));
    holder.dataset.total = String(total);
    for (const level of LEVELS) holder.dataset[level.toLowerCase()] = String(summary[level] || 0);
    const count = document.createElement("span");
    count.className = "pie-count";
    count.textContent = String(total);
    holder.append(count);
    link.title = `${summary.CRITICAL || 0} critical, ${summary.UNKNOWN || 0} unknown, ` +
      `${summary.WARNING || 0} warning` + (summary.stale ? `; ${summary.stale} stale` : "");
    link.setAttribute("aria-label", `Problems: ${link.title}`);
  };
  const refresh = async () => {
    try {
      const data = await api("/api/0/alerts?limit=0"); // the counts alone
      holder.dataset.available = "yes";
      draw(data.summary || {});
    } catch (error) {
      if (error.status === 404 || error.status === 503) {
        holder.dataset.available = "no";
        holder.replaceChildren();
        link.title = "threshold alerting is not running";
      }
    }
  };
  const later = debounce(refresh, 250);
  for (const kind of ["alert", "host.up", "host.down", "host.unreachable", "host.removed"]) feed.on(kind, later);
  feed.on("open", refresh);
  setInterval(refresh, 60000);
  refresh();
}
