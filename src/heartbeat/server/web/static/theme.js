// Light, dark or as the system (prefers-color-scheme): the toggle in the navigation
// bar and the choice on /settings, kept in local storage (theme-boot.js applies it
// before the first paint). Pages that draw on canvas listen for "heartbeat-theme".
const KEY = "heartbeat.theme";
const NEXT = { auto: "dark", dark: "light", light: "auto" };
const LABEL = { auto: "◐ auto", dark: "● dark", light: "○ light" };

export function theme() {
  try {
    const chosen = localStorage.getItem(KEY);
    return chosen === "light" || chosen === "dark" ? chosen : "auto";
  } catch {
    return "auto";
  }
}

export function setTheme(value) {
  try {
    if (value === "light" || value === "dark") localStorage.setItem(KEY, value);
    else localStorage.removeItem(KEY);
  } catch {
    // private mode: this page only
  }
  apply();
  showToggle();
  window.dispatchEvent(new CustomEvent("heartbeat-theme", { detail: value }));
}

// data-theme on <html> is what the style sheet follows: the choice, or the system's.
function apply() {
  const value = theme();
  const dark = value === "dark" || (value === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}

function showToggle() {
  const button = document.getElementById("theme-toggle");
  if (!button) return;
  const value = theme();
  button.textContent = LABEL[value];
  button.title = `Theme: ${value === "auto" ? "as the system" : value} (click for ${NEXT[value]})`;
  button.dataset.theme = value;
}

export function startThemeToggle() {
  const button = document.getElementById("theme-toggle");
  if (!button) return;
  showToggle();
  button.addEventListener("click", () => setTheme(NEXT[theme()]));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (theme() !== "auto") return;
    apply();
    window.dispatchEvent(new CustomEvent("heartbeat-theme", { detail: "auto" }));
  });
}
