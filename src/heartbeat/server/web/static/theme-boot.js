// Runs before the page is drawn (a plain, blocking script): the theme chosen with
// the toggle, so a dark page does not flash light first. theme.js changes it.
try {
  const chosen = localStorage.getItem("heartbeat.theme");
  if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
} catch {
  // no storage: the system's choice
}
