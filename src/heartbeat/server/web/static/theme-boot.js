// Runs before the page is drawn (a plain, blocking script), so a dark page does not
// flash light first: the theme chosen with the toggle, else the system's
// (prefers-color-scheme). theme.js changes it later.
(function () {
  let chosen = null;
  try {
    chosen = localStorage.getItem("heartbeat.theme");
  } catch {
    // no storage: the system's choice
  }
  const dark = chosen === "dark" || (chosen !== "light" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
