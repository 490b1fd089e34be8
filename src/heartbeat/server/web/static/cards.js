// Readable cards for each plugin's latest data (docs/AGENT.md has the shapes).
// Unknown plugins and unexpected shapes fall back to a generic key/value tree.
import { cell, el, fmtBytes, fmtDuration, fmtNumber, fmtTime, isObject, levelBadge, ruleFor } from "./common.js";

// The host's effective threshold rules: bars turn amber and red at its own limits.
let rules = {};
export function setRules(tree) {
  rules = isObject(tree) ? tree : {};
}

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const mib = (v) => (num(v) === null ? "–" : fmtBytes(v * 1048576));
const gib = (v) => (num(v) === null ? "–" : fmtBytes(v * 1073741824));
const pct = (v) => (num(v) === null ? "–" : `${fmtNumber(v, 1)} %`);

function facts(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [label, value] of pairs) {
    if (value === undefined) continue;
    dl.append(el("dt", { text: label }), el("dd", {}, value instanceof Node ? value : String(value ?? "–")));
  }
  return dl;
}

// A 0-100 % bar; `path` (the metric's, e.g. ["cpu_monitor", "cpu_percent"]) picks the
// host's rule for its colours; without one it stays neutral.
export function usageBar(percent, label, path = null) {
  const value = num(percent);
  const clamped = value === null ? 0 : Math.max(0, Math.min(100, value));
  const fill = el("span", { class: "fill" });
  fill.style.width = `${clamped}%`;
  const rule = path ? ruleFor(rules, path) : null;
  const past = (limit) => typeof limit === "number" && value !== null &&
    (rule.operator.startsWith("<") ? value <= limit : value >= limit);
  const level = !rule || ![">", ">=", "<", "<="].includes(rule.operator) ? ""
    : past(rule.critical) ? " crit" : past(rule.warning) ? " warn" : "";
  return el("span", {
    class: `bar${level}`, role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": value === null ? undefined : String(value), "aria-label": label,
  }, fill, el("span", { class: "bar-text", text: value === null ? "–" : `${fmtNumber(value, 1)} %` }));
}

function table(headers, rows, cls = "") {
  return el("table", { class: `mini responsive ${cls}` },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) => cell(headers[i], c ?? "–"))))));
}

// Generic: nested mappings as nested lists, at most a few levels deep.
export function tree(value, depth = 0) {
  if (isObject(value)) {
    if (depth > 4) return el("span", { class: "muted", text: `{${Object.keys(value).length} keys}` });
    const dl = el("dl", { class: "tree" });
    for (const [key, item] of Object.entries(value)) {
      dl.append(el("dt", { text: key }), el("dd", {}, tree(item, depth + 1)));
    }
    return dl;
  }
  if (Array.isArray(value)) {
    if (value.every((v) => !isObject(v) && !Array.isArray(v))) {
      return el("span", { text: value.map((v) => (typeof v === "number" ? fmtNumber(v, 2) : String(v))).join(", ") || "[]" });
    }
    return el("ol", { class: "tree-list" }, value.slice(0, 50).map((v) => el("li", {}, tree(v, depth + 1))));
  }
  if (typeof value === "number") return el("span", { text: fmtNumber(value, 2) });
  if (value === null) return el("span", { class: "muted", text: "null" });
  return el("span", { text: String(value) });
}

function cpu(d) {
  const cores = Array.isArray(d.per_core) ? d.per_core : [];
  return [
    usageBar(d.cpu_percent, "CPU", ["cpu_monitor", "cpu_percent"]),
    facts([
      ["Load", [d.load_1min, d.load_5min, d.load_15min].map((v) => fmtNumber(v, 2)).join(" / ")],
      ["CPUs", d.cpu_count],
      ["Frequency", num(d.frequency_mhz) === null ? "–" : `${fmtNumber(d.frequency_mhz, 0)} MHz`],
      ["Processes", `${fmtNumber(d.process_count)} (${fmtNumber(d.process_running)} running, ${fmtNumber(d.process_zombie)} zombie)`],
      ["Threads", fmtNumber(d.thread_count)],
      ["Uptime", fmtDuration(d.uptime_seconds)],
    ]),
    cores.length ? el("div", { class: "cores" }, cores.map((v, i) => usageBar(v, `core ${i}`))) : null,
  ];
}

function memory(d) {
  return [
    el("p", { class: "bar-label", text: `RAM: ${mib(d.used_mb)} used, ${mib(d.available_mb)} available of ${mib(d.total_mb)}` }),
    usageBar(d.percent, "RAM", ["memory_monitor", "percent"]),
    num(d.swap_total_mb) ? el("p", { class: "bar-label", text: `Swap: ${mib(d.swap_used_mb)} of ${mib(d.swap_total_mb)}` }) : null,
    num(d.swap_total_mb) ? usageBar(d.swap_percent, "swap", ["memory_monitor", "swap_percent"]) : null,
    facts([
      ["Buffers / cache", `${mib(d.buffers_mb)} / ${mib(d.cached_mb)}`],
      ["ZFS ARC", num(d.zfs_arc_mb) === null ? undefined : `${mib(d.zfs_arc_mb)} (min ${mib(d.zfs_arc_min_mb)}, max ${mib(d.zfs_arc_max_mb)})`],
    ]),
  ];
}

function disk(d) {
  const parts = isObject(d.partitions) ? Object.entries(d.partitions) : [];
  const out = parts.map(([mount, p]) => el("div", { class: "partition", dataset: { mount } },
    el("p", { class: "bar-label" }, el("strong", { text: mount }), " ",
      el("span", { class: "muted", text: `${p.device ?? ""} ${p.fstype ?? ""}` })),
    usageBar(p.percent, mount, ["disk_monitor", "partitions", mount, "percent"]),
    el("p", { class: "small muted", text: `${gib(p.used_gb)} used, ${gib(p.free_gb)} free of ${gib(p.total_gb)}` +
      (num(p.inodes_percent) === null ? "" : ` · inodes ${pct(p.inodes_percent)}`) })));
  if (isObject(d.io)) {
    out.push(facts([["Read since boot", fmtBytes(d.io.read_bytes)], ["Written since boot", fmtBytes(d.io.write_bytes)]]));
  }
  return out;
}

function network(d) {
  const interfaces = isObject(d.interfaces) ? Object.entries(d.interfaces) : [];
  const c = isObject(d.connections) ? d.connections : null;
  return [
    facts([
      ["Received", fmtBytes(d.bytes_recv)], ["Sent", fmtBytes(d.bytes_sent)],
      ["Errors / dropped", `${fmtNumber(d.errors_total)} / ${fmtNumber(d.dropped)}`],
      ["Connections", c ? `${fmtNumber(c.total)} (${fmtNumber(c.established)} established, ${fmtNumber(c.listen)} listening)` : "–"],
    ]),
    interfaces.length ? table(["Interface", "Up", "Speed", "Received", "Sent", "Errors"],
      interfaces.map(([name, i]) => [name, i.is_up ? "yes" : "no",
        num(i.speed_mbps) ? `${i.speed_mbps} Mb/s` : "–", fmtBytes(i.bytes_recv), fmtBytes(i.bytes_sent),
        fmtNumber((i.errin || 0) + (i.errout || 0))])) : null,
  ];
}

function ping(d) {
  const targets = isObject(d.targets) ? Object.entries(d.targets) : [];
  return table(["Target", "Reachable", "RTT avg", "Loss", "Note"], targets.map(([name, t]) => [
    name, t.reachable ? "yes" : "no", num(t.rtt_avg) === null ? "–" : `${fmtNumber(t.rtt_avg, 2)} ms`,
    pct(t.loss_percent), t.error ?? ""]));
}

const NAGIOS_LEVELS = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];
function nagios(d) {
  const checks = Object.keys(d).filter((k) => k.endsWith("_status_code")).map((k) => k.slice(0, -12)).sort();
  return checks.map((name) => {
    const code = d[`${name}_status_code`];
    const status = typeof d[`${name}_status`] === "string" ? d[`${name}_status`] : NAGIOS_LEVELS[code] ?? "UNKNOWN";
    const perf = Object.entries(d).filter(([k]) => k.startsWith(`${name}_`) &&
      !["_status_code", "_status", "_output"].some((s) => k === name + s));
    return el("div", { class: "check", dataset: { check: name } },
      el("p", {}, status === "OK" ? el("span", { class: "level level-ok", text: "OK" }) : levelBadge(status),
        " ", el("strong", { text: name })),
      el("p", { class: "small", text: String(d[`${name}_output`] ?? "") }),
      perf.length ? el("p", { class: "small muted", text: perf.map(([k, v]) => `${k.slice(name.length + 1)}=${v ?? "U"}`).join(" ") }) : null);
  });
}

const HEALTH_GOOD = new Set(["ONLINE"]);
function zfs(d) {
  if (d.available === false) return el("p", { class: "muted", text: `ZFS is not available: ${d.reason ?? "no reason given"}` });
  const pools = isObject(d.pools) ? Object.entries(d.pools) : [];
  if (!pools.length) return el("p", { class: "muted", text: "No pools." });
  return pools.map(([name, p]) => {
    const health = typeof p.health === "string" ? p.health : "?";
    const badge = el("span", { class: `health ${HEALTH_GOOD.has(health) ? "health-ok" : "health-bad"}`, text: health });
    const vdevs = Array.isArray(p.vdevs) ? p.vdevs : [];
    return el("div", { class: "pool", dataset: { pool: name, health } },
      el("p", { class: "pool-head" }, el("strong", { text: name }), " ", badge),
      el("p", { class: "bar-label", text: `Capacity: ${fmtBytes(p.alloc)} of ${fmtBytes(p.size)}` }),
      usageBar(p.capacity, `${name} capacity`, ["zfs_monitor", "pools", name, "capacity"]),
      facts([
        ["Fragmentation", num(p.fragmentation) === null ? "–" : `${p.fragmentation} %`],
        ["Dedup ratio", num(p.dedup_ratio) === null ? "–" : `${fmtNumber(p.dedup_ratio, 2)}×`],
        ["I/O (average since import)", `read ${fmtNumber(p.read_ops)} op/s, ${fmtBytes(p.read_bytes, "/s")} · ` +
          `write ${fmtNumber(p.write_ops)} op/s, ${fmtBytes(p.write_bytes, "/s")}`],
        ["Errors (read / write / checksum)", `${fmtNumber(p.read_errors)} / ${fmtNumber(p.write_errors)} / ${fmtNumber(p.checksum_errors)}`],
        ["Data errors", p.data_errors ?? "–"],
        ["Scan", p.scan ?? undefined],
        ["Status", p.status ?? undefined],
      ]),
      vdevs.length ? table(["Device", "State", "Read", "Write", "Cksum", "Note"], vdevs.map((v) => [
        el("span", { class: `depth-${Math.min(4, Number(v.depth) || 0)}`, text: String(v.name ?? "") }),
        stateLike(v.state), v.read, v.write, v.cksum, v.note ?? ""]), "vdevs") : null);
  });
}

function stateLike(state) {
  const text = String(state ?? "?");
  return el("span", { class: `health ${HEALTH_GOOD.has(text) || text === "AVAIL" || text === "INUSE" ? "health-ok" : "health-bad"}`, text });
}

function filesystems(d) {
  const fs = isObject(d.filesystems) ? Object.entries(d.filesystems) : [];
  return table(["Mount", "Device", "Type", "Options"], fs.map(([mount, f]) => [mount, f.device, f.fstype, f.options]));
}

function osInfo(d) {
  return facts([
    ["System", `${d.distribution ?? d.system ?? "?"}`], ["Kernel", d.kernel], ["Architecture", d.architecture],
    ["CPU", d.cpu_model ? `${d.cpu_model} (${d.cpu_count} threads)` : undefined],
    ["Memory", mib(d.memory_total_mb)], ["Booted", typeof d.boot_time === "number" ? fmtTime(d.boot_time) : undefined],
    ["Python / agent", `${d.python_version ?? "?"} / ${d.agent_version ?? "?"}`],
  ]);
}

const RENDERERS = {
  cpu_monitor: cpu, memory_monitor: memory, disk_monitor: disk, network_monitor: network,
  ping_monitor: ping, nagios_runner: nagios, zfs_monitor: zfs, filesystem_info: filesystems, os_info: osInfo,
};

// A plugin that says it cannot run here ({"available": false, "reason": ...}, e.g.
// zfs_monitor on a host without ZFS) is one collapsed line, not a card of nothing.
export function unavailable(sample) {
  return Boolean(sample && isObject(sample.data) && sample.data.available === false);
}

export function pluginCard(name, sample) {
  const data = sample ? sample.data : undefined;
  if (unavailable(sample)) {
    return el("details", { class: "card plugin unavailable", dataset: { plugin: name, available: "no" } },
      el("summary", {}, el("strong", { text: name }), el("span", { class: "muted", text: ` not available: ${data.reason ?? "no reason given"}` })),
      tree(data));
  }
  let body;
  if (isObject(data) && typeof data.error === "string" && Object.keys(data).length <= 2) {
    body = el("p", { class: "error", text: `Collection failed: ${data.error}` });
  } else {
    const render = RENDERERS[name];
    try {
      body = render && isObject(data) ? render(data) : tree(data);
    } catch (error) {
      console.warn("heartbeat: plugin card", name, error);
      body = tree(data);
    }
  }
  const details = el("details", { class: "raw" }, el("summary", { text: "all fields" }), tree(data));
  return el("article", { class: "card plugin", dataset: { plugin: name } },
    el("header", {}, el("h3", { text: name }), el("small", { class: "muted" }, "updated ", sample ? fmtTime(sample.ts) : "–")),
    el("div", { class: "card-body" }, body),
    RENDERERS[name] ? details : null);
}
