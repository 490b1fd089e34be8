// A public status page: the server rendered it; this keeps it current over
// /status/<slug>/feed (names, states and whether a maintenance window covers a host). Every string from the server goes into
// the page as text. Without this script the page reloads itself every minute.
const slug = document.body.dataset.slug;
const tbody = document.querySelector("#status-hosts tbody");
const ORDER = { DOWN: 0, UNREACHABLE: 1, UNKNOWN: 2, UP: 4 };
const IN_MAINTENANCE = 3; // after the problems, before UP, whatever the state (as the server)
const OVERALL = {
  operational: "All systems operational", maintenance: "Maintenance in progress",
  degraded: "Some systems are down",
  outage: "Major outage", "no hosts": "No hosts to show yet",
};

function when(ts) {
  const time = document.createElement("time");
  if (typeof ts !== "number") {
    time.textContent = "–";
    return time;
  }
  const date = new Date(ts * 1000);
  time.dateTime = date.toISOString();
  time.textContent = `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  return time;
}

function row(name, state, since, maintenance) {
  const tr = document.createElement("tr");
  tr.dataset.host = name;
  tr.dataset.state = state;
  if (maintenance) tr.dataset.maintenance = "true";
  const cells = [["Host", name], ["State", null], ["Since", null]].map(([label, text]) => {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (text !== null) td.textContent = text;
    return td;
  });
  const badge = document.createElement("span");
  badge.className = `state state-${state.toLowerCase()}`;
  badge.textContent = state;
  cells[1].append(badge);
  if (maintenance) {
    const tag = document.createElement("span");
    tag.className = "tag marker marker-maintenance";
    tag.textContent = "maintenance";
    cells[1].append(" ", tag);
  }
  cells[2].append(when(since));
  tr.append(...cells);
  return tr;
}

function place(tr) {
  const rank = (node) => [
    node.dataset.maintenance ? IN_MAINTENANCE : ORDER[node.dataset.state] ?? 2, node.dataset.host];
  const mine = rank(tr);
  for (const other of tbody.children) {
    const theirs = rank(other);
    if (theirs[0] > mine[0] || (theirs[0] === mine[0] && theirs[1] > mine[1])) {
      tbody.insertBefore(tr, other);
      return;
    }
  }
  tbody.append(tr);
}

function showSummary(summary) {
  const overall = document.getElementById("overall");
  overall.dataset.overall = summary.overall;
  document.getElementById("overall-text").textContent = OVERALL[summary.overall] || summary.overall;
  const maintenance = summary.maintenance ? `, ${summary.maintenance} in maintenance` : "";
  document.getElementById("counts").textContent =
    `${summary.up} up, ${summary.down} down, ${summary.unknown} unknown${maintenance} of ${summary.total}`;
}

function touched(ts) {
  const updated = document.getElementById("updated");
  updated.replaceWith(Object.assign(when(ts), { id: "updated" }));
}

function handle(message) {
  if (message.type === "snapshot") {
    tbody.replaceChildren(...message.hosts.map((h) => row(h.name, h.state, h.since, h.maintenance)));
    showSummary(message.summary);
  } else if (message.type === "state") {
    const old = [...tbody.children].find((tr) => tr.dataset.host === message.host);
    if (old) old.remove();
    if (message.state) place(row(message.host, message.state, message.since, message.maintenance));
  } else if (message.type === "summary") {
    showSummary(message.summary);
  }
  if (typeof message.ts === "number") touched(message.ts);
}

let failures = 0;
function connect() {
  const live = document.getElementById("live-state");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/status/${encodeURIComponent(slug)}/feed`);
  socket.addEventListener("open", () => {
    failures = 0;
    live.dataset.state = "live";
    live.textContent = "· live";
  });
  socket.addEventListener("message", (event) => {
    try {
      handle(JSON.parse(event.data));
    } catch (error) {
      console.warn("status: a message could not be shown", error);
    }
  });
  socket.addEventListener("close", () => {
    failures += 1;
    const delay = Math.min(failures * 2, 30);
    live.dataset.state = "lost";
    live.textContent = `· connection lost, retrying in ${delay} s`;
    setTimeout(connect, delay * 1000);
  });
}

connect();
