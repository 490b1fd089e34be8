// /settings, "Your API keys" (and your second factor): what a signed-in user manages for
// themself through /api/0/users/<me>/keys. A new key's token is shown once, as text.
import { ApiError, api, cell, el, timeEl } from "./common.js";

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
  await keysSection(info);
}
