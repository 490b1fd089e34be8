// /settings, "Two-factor authentication" and "Your API keys": what a signed-in user
// manages for themself through /api/0/users/<me>/totp and /keys. Secrets (a new key's
// token, recovery codes) are shown once, as text; the QR code is an image the server made.
import { ApiError, api, cell, el, fmtTime, timeEl } from "./common.js";

const POLICY_NOTES = {
  config: "Set by totp_required in the server's configuration.",
  api: "Set here (it wins over the configuration).",
};

function totpSection(info) {
  const base = `/api/0/users/${encodeURIComponent(info.name)}/totp`;
  const status = document.getElementById("totp-status");
  const start = document.getElementById("totp-start");
  const newCodes = document.getElementById("totp-new-codes");
  const off = document.getElementById("totp-off");
  const enrol = document.getElementById("totp-enrol");
  const enrolError = document.getElementById("totp-enrol-error");
  const codeForm = document.getElementById("totp-code-form");
  const codeError = document.getElementById("totp-code-error");
  const codes = document.getElementById("totp-codes");
  let pending = null; // what the code form is asked for: "off" or "codes"

  function show(state) {
    status.replaceChildren(state.enrolled
      ? el("span", {}, el("strong", { text: "On" }), ` since ${fmtTime(state.enrolled_at)}; `,
        `${state.recovery_codes_left} recovery codes left.`)
      : el("span", {}, el("strong", { text: "Off." }),
        state.required ? " This server requires it for you." : " Logging in needs only your password."));
    document.getElementById("totp-required-note").hidden = !info.totp_enrolment_required;
    start.hidden = state.enrolled;
    newCodes.hidden = off.hidden = !state.enrolled;
  }

  function showCodes(list) {
    document.getElementById("totp-codes-list").replaceChildren(
      ...list.map((code) => el("li", {}, el("code", { text: code }))));
    codes.hidden = false;
  }

  start.addEventListener("click", async () => {
    const made = await api(base, { method: "POST" });
    document.getElementById("totp-qr").src = made.qr;
    document.getElementById("totp-secret").textContent = made.secret.replace(/(.{4})/g, "$1 ").trim();
    enrol.reset();
    enrolError.hidden = true;
    enrol.hidden = false;
    enrol.elements.code.focus();
  });
  enrol.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const done = await api(`${base}/confirm`, { method: "POST", body: { code: enrol.elements.code.value.trim() } });
      enrol.hidden = true;
      document.getElementById("totp-qr").removeAttribute("src");
      document.getElementById("totp-secret").textContent = "";
      showCodes(done.recovery_codes);
      if (info.totp_enrolment_required) {
        info.totp_enrolment_required = false;
        document.getElementById("totp-codes-done").addEventListener("click", () => location.assign("/live"));
      }
      show(done);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      enrolError.textContent = e.message;
      enrolError.hidden = false;
    }
  });
  document.getElementById("totp-codes-done").addEventListener("click", () => {
    document.getElementById("totp-codes-list").replaceChildren();
    codes.hidden = true;
  });

  function ask(what, label) {
    pending = what;
    document.getElementById("totp-code-label").textContent = label;
    codeForm.reset();
    codeError.hidden = true;
    codeForm.hidden = false;
    codeForm.elements.code.focus();
  }
  off.addEventListener("click", () => ask("off", "To turn it off, a code from your app (or a recovery code)"));
  newCodes.addEventListener("click", () => ask("codes", "For new recovery codes, a code from your app"));
  document.getElementById("totp-code-cancel").addEventListener("click", () => { codeForm.hidden = true; });
  codeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { code: codeForm.elements.code.value.trim() };
    try {
      if (pending === "off") {
        show(await api(base, { method: "DELETE", body }));
      } else {
        showCodes((await api(`${base}/recovery`, { method: "POST", body })).recovery_codes);
        show(await api(base));
      }
      codeForm.hidden = true;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      codeError.textContent = e.message;
      codeError.hidden = false;
    }
  });
  return api(base).then(show);
}

async function policySection() {
  const box = document.getElementById("totp-policy-box");
  const select = document.getElementById("totp-policy");
  const note = document.getElementById("totp-policy-note");
  const show = (policy) => {
    select.value = policy.totp_required;
    note.textContent = POLICY_NOTES[policy.source] || "";
  };
  show(await api("/api/0/auth/policy"));
  box.hidden = false;
  select.addEventListener("change", async () => {
    show(await api("/api/0/auth/policy", { method: "PUT", body: { totp_required: select.value } }));
  });
}

const ACCESS = { ro: "read-only", rw: "read-write" };

function keysSection(info) {
  const base = `/api/0/users/${encodeURIComponent(info.name)}/keys`;
  const tbody = document.querySelector("#keys tbody");
  const note = document.getElementById("keys-note");
  const form = document.getElementById("key-form");
  const error = document.getElementById("key-form-error");
  const shown = document.getElementById("new-key");
  const token = document.getElementById("new-key-token");

  async function load() {
    const data = await api(base);
    tbody.replaceChildren(...data.keys.map((key) => el("tr", { dataset: { key: key.id } },
      cell("Name", el("strong", { text: key.name }), " ", el("code", { class: "muted", text: key.hint })),
      cell("Access", ACCESS[key.scope] || key.scope),
      cell("Created", timeEl(key.created)),
      cell("Expires", key.expires === null ? "never"
        : key.expired ? el("span", { class: "error", text: "expired" }) : timeEl(key.expires)),
      cell("Last used", key.last_used === null ? "never"
        : el("span", {}, timeEl(key.last_used, "ago"), key.last_address ? ` from ${key.last_address}` : "")),
      cell("", revokeButtons(key)))));
    note.hidden = data.keys.length > 0;
    note.textContent = "You have no API keys.";
  }

  // Revoke asks once more in place: scripts using the key stop working at once.
  function revokeButtons(key) {
    const box = el("span", { class: "buttons" });
    const ask = el("button", { type: "button", class: "secondary", text: "Revoke" });
    ask.addEventListener("click", () => box.replaceChildren(
      el("button", { type: "button", text: "Yes, revoke", on: { click: async () => {
        await api(`${base}/${encodeURIComponent(key.id)}`, { method: "DELETE" });
        await load();
      } } }),
      el("button", { type: "button", class: "secondary", text: "Keep",
        on: { click: () => box.replaceChildren(ask) } })));
    box.append(ask);
    return box;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const date = form.elements.expires.value;
    const body = { name: form.elements.name.value.trim(), scope: form.elements.scope.value,
                   expires: date ? Date.parse(`${date}T23:59:59`) / 1000 : null };
    try {
      const made = await api(base, { method: "POST", body });
      token.textContent = made.token;
      shown.hidden = false;
      form.reset();
      await load();
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      error.textContent = e.message;
      error.hidden = false;
    }
  });
  document.getElementById("new-key-copy").addEventListener("click", () => {
    navigator.clipboard?.writeText(token.textContent).catch(() => {});
  });
  document.getElementById("new-key-done").addEventListener("click", () => {
    token.textContent = "";
    shown.hidden = true;
  });
  return load();
}

// A section for each thing a user manages for themself; none without users, or when
// this page was opened with an API key (keys never manage keys).
export async function accountSection(info) {
  if (!info.name || info.auth === "key") return;
  document.getElementById("account-section").hidden = false;
  if (info.totp_enrolment_required) {
    document.getElementById("keys-box").hidden = true;
    await totpSection(info);
    return;
  }
  const jobs = [totpSection(info), keysSection(info)];
  if (info.admin) jobs.push(policySection());
  await Promise.all(jobs);
}
