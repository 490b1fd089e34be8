// /settings: server status, users and their roles (admins add, edit and remove them
// through /api/0/users), the effective thresholds per host, the server configuration.
import {
  ApiError, api, cell, clear, el, fmtBytes, fmtDuration, fmtMetric, fmtNumber, isObject, me, pathText,
  setTimeZone, timeZone, zoneName, zoneOffset,
} from "./common.js";
import { setTheme, theme } from "./theme.js";
import { accountSection } from "./account.js";


function facts(box, rows) {
  clear(box);
  for (const [label, value] of rows) box.append(el("dt", { text: label }), el("dd", { text: String(value) }));
}

function showValue(value, unit = null) {
  if (value === null || value === undefined) return el("span", { class: "muted", text: "null" });
  if (typeof value === "number" && unit === "seconds") {
    return el("span", { class: "human", title: `${value} s` }, fmtDuration(value), value >= 60 ? el("small", { class: "muted", text: ` (${fmtNumber(value)} s)` }) : null);
  }
  if (typeof value === "number" && unit === "bytes") {
    return el("span", { class: "human", title: `${value} bytes` }, fmtBytes(value), value >= 1024 ? el("small", { class: "muted", text: ` (${fmtNumber(value)} B)` }) : null);
  }
  if (isObject(value) || Array.isArray(value)) {
    const text = JSON.stringify(value, null, 1);
    if (text.length <= 60) return el("code", { text: JSON.stringify(value) });
    return el("details", {}, el("summary", { text: Array.isArray(value) ? `${value.length} items` : `${Object.keys(value).length} keys` }),
      el("pre", { text: JSON.stringify(value, null, 2) }));
  }
  return el("code", { text: String(value) });
}

async function loadStatus() {
  const s = await api("/api/0/status");
  const ingest = s.ingest || {};
  const hosts = s.hosts || {};
  const rows = [
    ["Version", s.version],
    ["Up for", fmtDuration(s.uptime)],
    ["Times shown in", `${zoneName()} (${zoneOffset()})`],
    ["Hosts", `${fmtNumber(hosts.total)} (${fmtNumber(hosts.UP)} up, ${fmtNumber(hosts.DOWN)} down, ${fmtNumber(hosts.UNKNOWN)} unknown)`],
  ];
  // The server's own counters are for admins only (docs/HTTP_API.md).
  if (s.ingest) rows.push(["Datagrams", `${fmtNumber(ingest.received)} received, ${fmtNumber(ingest.dropped_total)} dropped`]);
  if (s.websocket) rows.push(["WebSocket clients", fmtNumber(s.websocket.clients)]);
  if (s.alerting) rows.push(["Alerting", Object.entries(s.alerting).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k} ${v}`).join(", ")]);
  facts(document.getElementById("status"), rows);
}

// Users
function usersSection(info) {
  const tbody = document.querySelector("#users tbody");
  const form = document.getElementById("user-form");
  const addButton = document.getElementById("user-add");
  const error = document.getElementById("user-form-error");
  const title = document.getElementById("user-form-title");
  const save = document.getElementById("user-save");
  let editing = null;

  function rolesText(user) {
    if (user.admin) return "admin: owner of every host";
    const roles = Object.entries(user.roles || {});
    const listed = roles.map(([host, role]) => `${host}: ${role ?? "none"}`).join(", ");
    if (user.default_role) return `${user.default_role} of every host${roles.length ? `, except ${listed}` : ""}`;
    return roles.length ? listed : "no hosts";
  }

  function openForm(user) {
    editing = user ? user.name : null;
    form.reset();
    error.hidden = true;
    form.elements.name.readOnly = Boolean(user);
    form.elements.password.required = !user && !info.authentication;
    document.getElementById("user-current-password").hidden = !(user && user.name === info.name);
    title.textContent = user ? `Edit ${user.name}` : "Add a user";
    save.textContent = user ? "Save" : "Add user";
    if (user) {
      form.elements.name.value = user.name;
      form.elements.full_name.value = user.full_name || "";
      form.elements.email.value = user.email || "";
      form.elements.admin.checked = Boolean(user.admin);
    } else if (!info.authentication) {
      form.elements.admin.checked = true; // the first user must be an admin
    }
    form.hidden = false;
    addButton.hidden = true;
    form.elements[user ? "full_name" : "name"].focus();
  }

  function closeForm() {
    form.hidden = true;
    addButton.hidden = false;
    editing = null;
  }

  function row(user) {
    const actions = el("td", { class: "actions", dataset: { label: "" } });
    const normal = () => actions.replaceChildren(
      el("button", { type: "button", class: "secondary", text: "Edit", on: { click: () => openForm(user) } }),
      el("button", { type: "button", class: "danger", text: "Remove", on: { click: confirm } }));
    const confirm = () => actions.replaceChildren(
      el("span", { text: `Remove ${user.name}? ` }),
      el("button", { type: "button", class: "danger", text: "Yes, remove", on: { click: async () => {
        try {
          await api(`/api/0/users/${encodeURIComponent(user.name)}`, { method: "DELETE" });
          await load();
        } catch (e) {
          actions.replaceChildren(el("span", { class: "error", text: e.message }));
          setTimeout(normal, 4000);
        }
      } } }),
      el("button", { type: "button", class: "secondary", text: "No", on: { click: normal } }));
    normal();
    return el("tr", { dataset: { user: user.name } },
      cell("User", el("strong", { text: user.name }), user.admin ? el("span", { class: "tag", text: "admin" }) : null),
      cell("Full name", user.full_name || "–"),
      cell("E-mail", user.email || "–"),
      cell("Roles", rolesText(user)),
      cell("Source", user.source || "–"),
      actions);
  }

  async function load() {
    const data = await api("/api/0/users");
    tbody.replaceChildren(...(data.users || []).map(row));
    if (!(data.users || []).length) {
      tbody.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No users: anyone who can reach this server may use it. Adding the first user (an admin) turns logins on." })));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const body = { full_name: f.full_name.value, email: f.email.value || null, admin: f.admin.checked };
    if (f.password.value) body.password = f.password.value;
    if (f.password.value && editing && editing === info.name) body.current_password = f.current_password.value;
    try {
      if (editing) {
        const changed = await api(`/api/0/users/${encodeURIComponent(editing)}`, { method: "PUT", body });
        if (changed.session) await me(true); // a new password: this page's session was replaced
      } else await api("/api/0/users", { method: "POST", body: { name: f.name.value, ...body } });
      closeForm();
      if (!info.authentication) {
        location.assign("/login?next=%2Fsettings"); // the first user turned logins on
        return;
      }
      await load();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
  document.getElementById("user-cancel").addEventListener("click", closeForm);
  addButton.addEventListener("click", () => openForm(null));
  addButton.hidden = false;
  return load();
}

// Thresholds
function ruleRows(node, path, out) {
  if (!isObject(node)) return out;
  if (typeof node.operator === "string") {
    out.push([path.join("."), node]);
    return out;
  }
  for (const [key, value] of Object.entries(node)) ruleRows(value, [...path, key], out);
  return out;
}

async function thresholdsSection() {
  const select = document.getElementById("threshold-host");
  const tbody = document.querySelector("#thresholds tbody");
  const note = document.getElementById("thresholds-note");
  const profiles = document.getElementById("threshold-profiles");
  const names = new Set(((await api("/api/0/hosts")).hosts || []).map((h) => h.name));
  try {
    for (const host of Object.keys((await api("/api/0/thresholds")).hosts || {})) names.add(host);
  } catch (error) {
    if (!(error instanceof ApiError && (error.status === 404 || error.status === 503))) throw error;
    note.textContent = "Threshold alerting is not running on this server.";
    note.hidden = false;
    select.disabled = true;
    return;
  }
  select.replaceChildren(...[...names].sort().map((n) => el("option", { value: n, text: n })));
  async function show() {
    clear(tbody);
    if (!select.value) {
      note.textContent = "No hosts yet.";
      note.hidden = false;
      return;
    }
    const data = await api(`/api/0/hosts/${encodeURIComponent(select.value)}/thresholds`);
    profiles.textContent = `Profiles: ${(data.profiles || []).join(" → ") || "none"} · reminders every ${fmtDuration(data.renotify_interval)}`;
    const rows = ruleRows(data.thresholds || {}, [], []);
    tbody.replaceChildren(...rows.map(([path, rule]) => el("tr", { dataset: { metric: path } },
      cell("Metric", el("code", {}, pathText(path))),
      cell("Operator", rule.operator),
      cell("Warning", typeof rule.warning === "number" ? fmtMetric(path, rule.warning) : rule.warning ?? "–"),
      cell("Critical", typeof rule.critical === "number" ? fmtMetric(path, rule.critical) : rule.critical ?? "–"),
      cell("Hysteresis", typeof rule.hysteresis === "number" ? `${fmtNumber(rule.hysteresis * 100, 1)} %` : "–"),
      cell("Display", rule.display ?? ""))));
    note.hidden = rows.length > 0;
    note.textContent = "No rules apply to this host.";
  }
  select.addEventListener("change", () => show());
  await show();
}

// Configuration
async function configSection() {
  const data = await api("/api/0/config");
  const tbody = document.querySelector("#config tbody");
  const onlyChanged = document.getElementById("config-changed");
  document.getElementById("config-note").textContent =
    `From ${data.path || "the built-in defaults"}. Secrets are shown as ********.`;
  const render = () => tbody.replaceChildren(...(data.keys || [])
    .filter((k) => !onlyChanged.checked || k.changed)
    .map((k) => el("tr", { class: k.changed ? "changed" : "", dataset: { key: k.key } },
      cell("Key", el("code", {}, pathText(k.key))),
      cell("Value", showValue(k.value, k.unit), k.changed ? el("small", { class: "muted" }, " default ", showValue(k.default, k.unit)) : null),
      cell("Meaning", k.doc || ""))));
  onlyChanged.addEventListener("change", render);
  render();
}

// Display: time zone and theme, kept in this browser.
function displaySection() {
  const zones = document.getElementById("display-zone");
  const names = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const browser = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  zones.replaceChildren(el("option", { value: "", text: `this browser's (${browser})` }),
    ...[...new Set(["UTC", ...names])].map((z) => el("option", { value: z, text: z })));
  zones.value = timeZone();
  const note = document.getElementById("display-zone-note");
  const show = () => { note.textContent = `Times are shown in ${zoneName()}, now ${zoneOffset()}.`; };
  show();
  zones.addEventListener("change", () => {
    setTimeZone(zones.value);
    show();
  });
  const themes = document.getElementById("display-theme");
  themes.value = theme();
  themes.addEventListener("change", () => setTheme(themes.value));
}

export async function settingsPage() {
  const info = await me();
  displaySection();
  if (info.totp_enrolment_required) {
    // Nothing else until the second factor this server asks for is set up.
    for (const section of document.querySelectorAll("main section")) {
      section.hidden = section.id !== "account-section" && section.id !== "display-section";
    }
    await accountSection(info);
    return;
  }
  const jobs = [loadStatus(), thresholdsSection(), accountSection(info)];
  if (info.admin) {
    jobs.push(usersSection(info), configSection());
  } else {
    const note = document.getElementById("users-note");
    note.textContent = "Only admins manage users.";
    note.hidden = false;
    document.getElementById("users").hidden = true;
    document.getElementById("config-section").hidden = true;
  }
  await Promise.all(jobs);
}
