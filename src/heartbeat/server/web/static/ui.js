// Entry point of every page: the navigation bar, the live feed, then the page itself.
import { api, Feed, me, tickAges, zoneName, zoneOffset } from "./common.js";
import { startThemeToggle } from "./theme.js";
import { startPie } from "./pie.js";

// Each page's module loads only on its page (/live does not fetch the chart library).
const PAGES = {
  live: async () => (await import("./live.js")).livePage,
  host: async () => (await import("./host.js")).hostPage,
  alerts: async () => (await import("./alerts.js")).alertsPage,
  jobs: async () => (await import("./jobs.js")).jobsPage,
  operations: async () => (await import("./operations.js")).operationsPage,
  settings: async () => (await import("./settings.js")).settingsPage,
};

async function startNav() {
  const page = document.body.dataset.page;
  const current = page === "host" ? "live" : page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
  }
  const logout = document.getElementById("logout");
  const info = await me();
  const who = document.getElementById("who");
  if (document.body.dataset.auth === "on" && info.name) {
    who.textContent = info.full_name || info.name;
    who.title = info.name;
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      try {
        await api("/api/0/auth/logout", { method: "POST" });
      } finally {
        location.assign("/login");
      }
    });
  }
}

async function main() {
  const page = document.body.dataset.page;
  startThemeToggle();
  const zone = document.getElementById("zone-note");
  if (zone) zone.textContent = `times in ${zoneName()} (${zoneOffset()})`;
  if (page === "login") return;
  const feed = new Feed();
  // The page's module loads while /api/0/me is asked, not after it: the feed
  // connects once both are here (with 10,000 hosts its snapshot is most of a
  // first render, so every round trip before it counts).
  const loading = PAGES[page] ? PAGES[page]() : null;
  loading?.catch(() => {}); // its failure is reported where it is awaited
  startNav().catch((error) => console.warn("heartbeat: navigation", error));
  if ((await me()).totp_enrolment_required) {
    // This session may only set up its second factor (/settings shows only that).
    if (page === "settings") await (await loading)(feed);
    return;
  }
  startPie(feed);
  if (loading) await (await loading)(feed);
  feed.connect();
  setInterval(tickAges, 1000);
}

main().catch((error) => {
  if (error && error.status === 401) return;
  const banner = document.getElementById("banner") || document.getElementById("main");
  const note = document.createElement("p");
  note.className = "error";
  note.textContent = `This page could not load: ${error && error.message ? error.message : error}`;
  banner.hidden = false;
  banner.append(note);
});
