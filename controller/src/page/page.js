// The status page: polls /status every second and draws it; promote and
// abort send the token pasted below, kept in sessionStorage only. Every
// value from /status goes in as text, never as markup.
"use strict";

const STEPS = ["prepare", "start", "health", "gates", "warm_up", "shadow", "paused", "canary", "switch", "verify", "scale_down"];
const SVG = "http://www.w3.org/2000/svg";
let status = null;
let fetchedAt = 0;

function h(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const $ = (id) => document.getElementById(id);
const fill = (id, ...kids) => $(id).replaceChildren(...kids.flat(2).filter((k) => k !== null && k !== undefined && k !== ""));
const short = (d) => (d ? d.replace(/^sha256:/, "").slice(0, 12) : "-");
const ms = (n) => (n === null || n === undefined ? "-" : n < 1000 ? n + " ms" : (n / 1000).toFixed(n < 10000 ? 2 : 1) + " s");
const pct = (x) => (x * 100).toFixed(2) + "%";
const badge = (cls, text) => h("span", { class: "badge " + cls }, text);

// Milliseconds per step, in the order first seen.
function stepTimes(entry) {
  const out = new Map();
  for (const s of entry.steps || []) out.set(s.step, (out.get(s.step) || 0) + s.ms);
  return out;
}

// Time in the current step, on the controller's clock.
function inStep(r) {
  if (!r.step_started_at) return null;
  const at = Date.parse(r.step_started_at);
  const now = status.observed_at ? Date.parse(status.observed_at) + (Date.now() - fetchedAt) : Date.now();
  return Math.max(0, now - at);
}

function renderHead(s) {
  const phase = $("phase");
  phase.className = "badge " + s.phase;
  phase.textContent = s.phase;
  phase.dataset.phase = s.phase;
  fill("reason", s.reason ? h("div", null, s.reason) : null, s.error ? h("div", { class: "err" }, "reconcile error: " + s.error) : null);
  const d = s.desired;
  fill("desired",
    h("div", null, "desired ", h("code", { id: "desired-tag" }, d.tag || "-"), " · ", d.replicas ?? "-", " replicas · digest ",
      h("code", null, short(d.digest)), d.auto_promote === false ? " · autoPromote: false (pauses before the switch)" : ""),
    h("div", { class: "muted" }, "manifest ", h("code", null, d.source)),
    d.error ? h("div", { class: "err" }, "manifest refused: " + d.error) : null,
    s.notifications ? h("div", { class: "muted" }, `webhook: ${s.notifications.sent} sent, ${s.notifications.failed} failed, ${s.notifications.dropped} dropped`,
      s.notifications.error ? " · " + s.notifications.error : "") : null);
}

function renderColors(s) {
  fill("colors", ["blue", "green"].map((c) => {
    const live = s.active.color === c;
    const reps = s.colors[c] || [];
    const count = s.replicas[c];
    const tags = [...new Set(reps.map((r) => r.tag))];
    const digests = [...new Set(reps.map((r) => short(r.digest)))];
    const preview = s.rollout && s.rollout.color === c && s.rollout.step === "paused";
    return h("div", { class: "color " + c + (live ? " live" : ""), id: "color-" + c, "data-live": String(live) },
      h("h3", null, c, live ? badge("Healthy live-mark", "LIVE") : null, preview ? badge("Paused live-mark", "PREVIEW :8081") : null),
      h("div", null, "tag ", h("code", null, tags.join(", ") || "-"), " · digest ", h("code", null, digests.join(", ") || "-")),
      h("div", null, "replicas ", count ? `${count.ready} ready / ${count.desired} desired` : "none"),
      reps.length ? h("table", null, reps.map((r) => h("tr", null, h("td", { class: "mono" }, r.name), h("td", null, r.state),
        h("td", null, badge(r.health === "healthy" ? "pass" : r.health === "unhealthy" ? "fail" : "pending", r.health))))) : null);
  }));
}

// The step bar of a rollout in flight, or of a finished one.
function stepBar(entry, current) {
  const times = stepTimes(entry);
  const rolledBack = current === "rollback" || times.has("rollback") || entry.result === "rolled_back";
  const names = rolledBack ? [...STEPS, "rollback"] : STEPS;
  return h("ol", { class: "steps" }, names.map((n) => {
    const cls = [n === "rollback" ? "rollback" : "", n === current ? "current" : times.has(n) ? "done" : ""].join(" ").trim();
    const t = n === current ? "now " + ms(inStep(entry)) : times.has(n) ? ms(times.get(n)) : "";
    return h("li", { class: cls || null, "data-step": n }, n, h("small", null, t || "\u00a0"));
  }));
}

function renderRollout(s) {
  const r = s.rollout;
  if (!r) {
    fill("rollout", h("div", { class: "muted" }, "no rollout in flight"),
      s.last ? [h("div", null, `last: #${s.last.revision} ${s.last.tag} → ${s.last.color}, ${s.last.result.replace("_", " ")}`), stepBar(s.last, null)] : null);
    return;
  }
  fill("rollout",
    h("div", { id: "current-step", "data-step": r.step }, `#${r.revision} `, h("code", { id: "rollout-tag" }, r.tag), ` → ${r.color}`,
      r.from_tag ? ` (from ${r.from_tag} on ${r.from_color})` : "", " · step ", h("b", null, r.step), " for ", ms(inStep(r)),
      " · started ", new Date(r.started_at).toLocaleTimeString(), r.restarts ? ` · ${r.restarts} controller restarts` : ""),
    stepBar(r, r.step),
    (r.retries || []).map((x) => h("div", { class: "err" }, `${x.step}: ${x.count} retries, last: ${x.error}`)));
}

// The gates of spec.gates in the order they run, and how to show each
// reading (measured against its limit, both from /status).
const GATES = [
  ["golden", "golden trips", (m, l) => `${m} of ${l} priced as promised`, (l) => "all " + l],
  ["min_r2", "held-out R²", (m) => m.toFixed(4), (l) => "≥ " + l],
  ["max_rmse_increase", "RMSE vs live", (m) => (m >= 0 ? "+" : "") + pct(m), (l) => "≤ +" + pct(l)],
  ["latency_budget", "warm-up p99", (m) => ms(Math.round(m * 1000)), (l) => "≤ " + ms(Math.round(l * 1000))],
];

// One row a gate the manifest turns on: its reading where it ran; where it
// did not, "pending" while the rollout may still get there, "not run" once
// it cannot (an earlier gate refused, or the rollout ended).
function gateRows(entry, g, finished) {
  const readings = new Map((entry.gates || []).map((r) => [r.gate, r]));
  const on = { golden: g.golden, min_r2: g.min_r2 !== null, max_rmse_increase: g.max_rmse_increase !== null, latency_budget: g.latency_budget !== null };
  const limits = { golden: null, min_r2: g.min_r2, max_rmse_increase: g.max_rmse_increase, latency_budget: g.latency_budget === null ? null : g.latency_budget / 1000 };
  const refused = (entry.gates || []).some((r) => !r.passed) && !readings.has("latency_budget");
  const past = new Set(["warm_up", "paused", "shadow", "canary", "switch", "verify", "scale_down"]);
  const gone = finished || refused || (entry.step && past.has(entry.step));
  return GATES.filter(([gate]) => on[gate] || readings.has(gate)).map(([gate, name, measured, limit]) => {
    const r = readings.get(gate);
    if (r) return row(name, r.measured === null ? "not a number" : measured(r.measured, r.limit), limit(r.limit), r.passed ? "pass" : "fail");
    const later = gate === "latency_budget" && !finished && !refused;
    const why = gone && !later ? "not run" : "pending";
    return row(name, why === "not run" ? "did not run" : "-", limits[gate] === null ? "all" : limit(limits[gate]), why);
  });
}

function row(name, measured, threshold, verdict) {
  return h("tr", { "data-figure": name, "data-verdict": verdict }, h("td", null, name), h("td", { class: "mono" }, measured), h("td", { class: "mono" }, threshold),
    h("td", null, badge(verdict.replace(" ", "_"), verdict)));
}

function renderFigures(s) {
  const entry = s.rollout || s.last;
  const g = s.desired.gates, a = s.desired.analysis;
  if (!entry) return fill("figures", h("div", { class: "muted" }, "no rollout yet"));
  const finished = !s.rollout;
  const reason = entry.reason || "";
  const rows = [];
  if (g) rows.push(...gateRows(entry, g, finished));
  if (entry.diff) {
    const d = entry.diff;
    rows.push(row("fare diff vs live", `mean $${d.mean_abs.toFixed(4)}, max $${d.max_abs.toFixed(4)}, ${pct(d.over_one_dollar)} over $1`, "recorded, not gated", "pass"));
  }
  if (a) {
    const f = entry.analysis;
    if (a.window === 0) rows.push(row("analysis window", "-", "off", "off"));
    else if (!f) rows.push(row("analysis", "not started", `${ms(a.window)} window after the switch`, reason.startsWith("analysis") ? "fail" : finished ? "not run" : "pending"));
    else {
      const judged = Math.max(0, f.requests - f.shed);
      const enough = judged >= a.min_requests;
      const p99 = f.p99_seconds >= 1e300 ? "above the largest bucket" : ms(Math.round(f.p99_seconds * 1000));
      rows.push(row("predictions judged", `${judged} (${f.own} the controller's own, ${f.shed} shed)`, "≥ " + a.min_requests,
        enough ? "pass" : reason.startsWith("analysis: only") ? "fail" : "pending"));
      rows.push(row("5xx rate", pct(f.error_rate), "≤ " + pct(a.max_error_rate), !enough ? "pending" : f.error_rate > a.max_error_rate ? "fail" : "pass"));
      rows.push(row("p99 small batches", p99, "≤ " + ms(a.max_p99), !enough ? "pending" : f.p99_seconds * 1000 > a.max_p99 ? "fail" : "pass"));
    }
  }
  fill("figures", h("div", { class: "muted" }, `#${entry.revision} ${entry.tag}${finished ? " (last finished)" : " (in flight)"}`),
    h("table", null, h("tr", null, h("th", null, "figure"), h("th", null, "measured"), h("th", null, "threshold"), h("th", null, "verdict")), rows),
    reason ? h("div", { class: finished && entry.result === "rolled_back" ? "err" : "muted" }, "reason: " + reason) : null);
}

function renderHistory(s) {
  fill("history", s.history.map((f) => h("li", { "data-result": f.result, "data-level": f.level ?? "", "data-tag": f.tag },
    h("div", null, h("b", null, `#${f.revision} `), h("code", null, f.tag), ` → ${f.color} `, badge(f.result, f.result.replace("_", " ")),
      f.level ? badge("fail", "level " + f.level) : null, " ", h("span", { class: "muted" }, new Date(f.finished_at).toLocaleString()),
      ` · ${ms(f.duration_ms)}`, f.healthy_to_switched_ms !== null ? ` · healthy→switched ${ms(f.healthy_to_switched_ms)}` : "",
      f.failed_to_restored_ms !== null ? ` · failed→restored ${ms(f.failed_to_restored_ms)}` : ""),
    f.reason ? h("div", { class: "reason" + (f.result === "rolled_back" ? " err" : "") }, f.reason) : null,
    h("div", { class: "muted mono" }, [...stepTimes(f)].map(([n, t]) => `${n} ${ms(t)}`).join(" · "),
      f.restarts ? ` · ${f.restarts} restarts` : "", f.from_tag ? ` · from ${f.from_tag}` : ""))));
  if (!s.history.length) fill("history", h("li", { class: "muted" }, "no rollout has finished yet"));
}

// Bars of the last rollouts' durations, oldest on the left.
function renderChart(s) {
  const runs = s.history.slice(0, 40).reverse();
  if (!runs.length) return fill("chart", h("div", { class: "muted" }, "no rollouts yet"));
  const W = 640, H = 130, top = 12, left = 40;
  const max = Math.max(...runs.map((f) => f.duration_ms), 1);
  const bw = (W - left) / runs.length;
  const bars = runs.map((f, i) => {
    const bh = Math.max(1, (f.duration_ms / max) * (H - top - 14));
    return h("svg:rect", { x: left + i * bw + 1, y: H - 14 - bh, width: Math.max(1, bw - 2), height: bh, fill: f.result === "succeeded" ? "#2e7d32" : "#c62828" },
      h("svg:title", null, `#${f.revision} ${f.tag}: ${ms(f.duration_ms)} ${f.result}`));
  });
  fill("chart", h("svg:svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "rollout durations" },
    h("svg:line", { x1: left, y1: H - 14, x2: W, y2: H - 14, stroke: "#999" }),
    h("svg:text", { x: 0, y: top }, ms(max)), h("svg:text", { x: 0, y: H - 14 }, "0"),
    h("svg:text", { x: left, y: H - 2 }, "#" + runs[0].revision), h("svg:text", { x: W - 30, y: H - 2 }, "#" + runs[runs.length - 1].revision),
    bars), h("div", { class: "muted" }, "green: succeeded, red: rolled back; hover a bar for its figures"));
}

// The live color's requests per second (a line) and faults and shed
// answers per second (bars beneath it), over the points /status keeps;
// each point is colored by the color that was live.
function renderTraffic(s) {
  const points = s.live_traffic || [];
  if (points.length < 2) return fill("traffic", h("div", { class: "muted" }, "no live traffic read yet (every 5 s)"));
  const W = 640, H = 130, top = 12, left = 46, bottom = 14;
  const max = Math.max(...points.map((p) => p.requests_per_second), 1);
  const x = (i) => left + (i / (points.length - 1)) * (W - left - 4);
  const y = (v) => H - bottom - (v / max) * (H - top - bottom);
  const line = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.requests_per_second).toFixed(1)}`).join(" ");
  const bw = Math.max(1, (W - left) / points.length - 1);
  const bars = points.flatMap((p, i) => [
    p.faults_per_second > 0 ? h("svg:rect", { x: x(i) - bw / 2, y: y(p.faults_per_second), width: bw, height: H - bottom - y(p.faults_per_second), fill: "#c62828" }) : null,
    p.shed_per_second > 0 ? h("svg:rect", { x: x(i) - bw / 2, y: y(p.faults_per_second + p.shed_per_second), width: bw, height: y(p.faults_per_second) - y(p.faults_per_second + p.shed_per_second), fill: "#ef6c00" }) : null,
  ]);
  const last = points[points.length - 1];
  const latest = `${last.color}: ${last.requests_per_second.toFixed(1)} req/s, ${last.faults_per_second.toFixed(2)} faults/s, ${last.shed_per_second.toFixed(2)} shed/s over ${last.replicas} replica(s)`;
  fill("traffic", h("svg:svg", { id: "traffic-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "live traffic",
      "data-points": points.length, "data-max-rps": max.toFixed(2) },
    h("svg:line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#999" }),
    h("svg:text", { x: 0, y: top }, max.toFixed(1) + "/s"), h("svg:text", { x: 0, y: H - bottom }, "0"),
    h("svg:text", { x: left, y: H - 2 }, new Date(points[0].at).toLocaleTimeString()),
    h("svg:text", { x: W - 60, y: H - 2 }, new Date(last.at).toLocaleTimeString()),
    bars, h("svg:path", { d: line, fill: "none", stroke: last.color === "green" ? "#2e7d32" : "#1565c0", "stroke-width": 1.5 })),
    h("div", { id: "traffic-latest", class: "muted" }, latest, " · line: requests, red: faults (5xx), orange: shed (503 overloaded)"));
}

function render() {
  const s = status;
  for (const f of [renderHead, renderColors, renderRollout, renderFigures, renderHistory, renderTraffic, renderChart]) {
    try { f(s); } catch (e) { $("conn").textContent = "cannot draw: " + e; }
  }
}

async function poll() {
  try {
    const r = await fetch("/status", { cache: "no-store", signal: AbortSignal.timeout(3000) });
    if (!r.ok) throw new Error("GET /status answered " + r.status);
    status = await r.json();
    fetchedAt = Date.now();
    $("conn").textContent = "updated " + new Date().toLocaleTimeString() + " (every second)";
    $("conn").className = "muted";
    render();
  } catch (e) {
    $("conn").textContent = "the controller does not answer: " + e.message;
    $("conn").className = "err";
  }
  setTimeout(poll, 1000);
}

async function operator(word) {
  const said = $("said");
  said.className = "mono";
  said.textContent = word + "…";
  try {
    const r = await fetch("/api/v1/" + word, { method: "POST", headers: { Authorization: "Bearer " + $("token").value.trim() } });
    const body = await r.json().catch(() => ({}));
    if (r.ok) said.textContent = `${word}: accepted for ${body.tag}`;
    else {
      said.className = "mono err";
      said.textContent = `${word} refused (${r.status}): ${body.error || r.statusText}`;
    }
  } catch (e) {
    said.className = "mono err";
    said.textContent = word + " failed: " + e.message;
  }
}

const token = $("token");
token.value = sessionStorage.getItem("controller-token") || "";
token.addEventListener("input", () => sessionStorage.setItem("controller-token", token.value));
$("promote").addEventListener("click", () => operator("promote"));
$("abort").addEventListener("click", () => operator("abort"));
poll();
