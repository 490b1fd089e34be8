// /jobs: the cron jobs the user may see (GET /api/0/jobs), their level, last run and
// next expected time, kept current by the feed's job events; a job's runs on click.
import { api, cell, debounce, el, fmtDuration, levelBadge, timeEl } from "./common.js";

const LEVELS = ["CRITICAL", "WARNING", "OK"];

function when(ts) {
  return typeof ts === "number" ? timeEl(ts, "at") : "–";
}

function took(seconds) {
  return typeof seconds === "number" ? fmtDuration(seconds) : "–";
}

function lastRun(run) {
  if (!run) return "never";
  const code = run.exit_code === null || run.exit_code === undefined ? "" : ` (exit ${run.exit_code})`;
  return el("span", {}, el("span", { class: `outcome outcome-${run.outcome}`, text: run.outcome + code }), " ", when(run.ended ?? run.started));
}

function jobRow(job, open) {
  const name = el("button", { type: "button", class: "link-button name", text: job.name, title: job.description || job.name });
  name.addEventListener("click", () => open(job.name));
  return el("tr", { dataset: { job: job.name, level: job.level, status: job.status } },
    cell("Level", levelBadge(job.level), el("span", { class: "muted", text: ` ${job.status}` })),
    cell("Job", name, job.reason ? el("span", { class: "muted", text: ` ${job.reason}` }) : null),
    cell("Host", job.host || "–"),
    cell("Schedule", el("span", { text: job.schedule, title: `grace ${fmtDuration(job.grace)}, max runtime ${fmtDuration(job.max_runtime)}` })),
    cell("Last run", job.running_since ? el("span", {}, "running since ", when(job.running_since)) : lastRun(job.last_run)),
    cell("Duration", took(job.last_duration)),
    cell("Next expected", when(job.next_expected)));
}

function runRow(run) {
  return el("tr", { dataset: { outcome: run.outcome } },
    cell("Outcome", el("span", { class: `outcome outcome-${run.outcome}`, text: run.outcome })),
    cell("Started", when(run.started)),
    cell("Ended", when(run.ended)),
    cell("Duration", took(run.duration)),
    cell("Exit code", run.exit_code === null || run.exit_code === undefined ? "–" : String(run.exit_code)),
    cell("From", run.source || "–"),
    cell("Log (its end)", el("pre", { class: "job-log", text: (run.log || "").split("\n").slice(-12).join("\n") })));
}

export async function jobsPage(feed) {
  const tiles = document.getElementById("job-summary");
  const tbody = document.querySelector("#jobs tbody");
  const empty = document.getElementById("no-jobs");
  const runsSection = document.getElementById("job-runs");
  const runsBody = document.querySelector("#runs tbody");
  let shown = null;

  async function openRuns(name) {
    const job = await api(`/api/0/jobs/${encodeURIComponent(name)}?limit=20`);
    shown = name;
    document.getElementById("job-runs-title").textContent = `Runs of ${job.name}`;
    document.getElementById("job-ping").textContent = job.ping_url
      ? `Ping URL: ${location.origin}${job.ping_url} (/start, /fail, /<exit code>)`
      : "";
    runsBody.replaceChildren(...job.runs.map(runRow));
    runsSection.hidden = false;
  }

  async function load() {
    const data = await api("/api/0/jobs");
    const jobs = data.jobs || [];
    tiles.replaceChildren(
      el("div", { class: "tile", dataset: { level: "TOTAL" } }, el("strong", { text: String(jobs.length) }), el("span", { text: "jobs" })),
      ...LEVELS.map((level) => el("div", { class: `tile tile-${level.toLowerCase()}`, dataset: { level } },
        el("strong", { text: String((data.levels || {})[level] || 0) }), el("span", { text: level.toLowerCase() }))));
    jobs.sort((a, b) => LEVELS.indexOf(a.level) - LEVELS.indexOf(b.level) || a.name.localeCompare(b.name));
    tbody.replaceChildren(...jobs.map((job) => jobRow(job, (name) => openRuns(name).catch(() => {}))));
    empty.hidden = jobs.length > 0;
    if (shown) await openRuns(shown);
  }

  const reload = debounce(() => load().catch(() => {}), 250);
  for (const kind of ["job", "job.ping"]) feed.on(kind, reload);
  feed.on("open", ({ again }) => {
    if (again) reload();
  });
  await load();
}
