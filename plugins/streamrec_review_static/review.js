// streamrec review page: renders /streamrec/api/overview with DOM calls (text only: no data goes through
// innerHTML except the server's SVG chart, whose text the server escapes). No library, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const num = (v, d = 4) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "\u2014");
const pct = (v) => (typeof v === "number" && isFinite(v) ? (v * 100).toFixed(1) + " %" : "\u2014");
const code = (v) => el("code", {}, v === null || v === undefined ? "\u2014" : v);
const td = (...c) => el("td", {}, ...c);
const tdn = (v, d) => el("td", { class: "num" }, num(v, d));
const fileLink = (key, label) =>
  key ? el("a", { href: "files/" + key.split("/").map(encodeURIComponent).join("/"), target: "_blank",
                  rel: "noopener" }, label) : el("span", { class: "muted" }, "none");

function fill(id, rows, empty, cols) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: cols, class: "muted" }, empty)));
  else body.append(...rows);
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

async function call(method, url, body) {
  const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(url, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
  if (!r.ok) throw new Error(`${r.status}: ${(data && data.detail) || r.statusText}`);
  return data;
}

function params(p) {
  const flat = [];
  const walk = (prefix, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    else flat.push(`${prefix}=${Array.isArray(v) ? v.join(",") : v}`);
  };
  walk("", p || {});
  if (!flat.length) return el("span", { class: "muted" }, "\u2014");
  return el("details", {}, el("summary", {}, `${flat.length} values`), el("ul", {}, flat.map((f) => el("li", {}, code(f)))));
}

function partitions(v) {
  const all = v.partitions || [];
  const fresh = v.new_partitions || [];
  const summary = `${all.length} total` + (fresh.length ? `, new: ${fresh.join(", ")}` : "");
  if (!all.length) return summary;
  return el("details", {}, el("summary", {}, summary), el("ul", {}, all.map((p) => el("li", {}, code(p)))));
}

async function act(url, body, what) {
  const reason = window.prompt(`Reason for ${what} (recorded in the review log):`);
  if (!reason || !reason.trim()) return;
  try {
    await call("POST", url, { ...body, reason });
    showError("");
    await load();
  } catch (err) {
    showError(`${what} failed: ${err.message}`);
  }
}

let state = null;

function render(d) {
  state = d;
  const canAct = d.user && d.user.can_act;
  $("status").textContent = `Bucket ${d.bucket} \u00b7 signed in as ${(d.user && d.user.name) || "?"}` +
    (canAct ? "" : " (read only: actions need edit access to the streamrec_update DAG)");
  const cur = d.versions.find((v) => v.current);
  $("current").replaceChildren(
    d.current
      ? el("span", {}, "Current version ", code(d.current), ` (${cur ? cur.kind : "?"}), validation RMSE `,
          el("strong", {}, num(d.current_rmse)), `, ${d.applied.length} partitions absorbed.`)
      : el("span", {}, "No published version yet: run the bootstrap DAG."));

  // versions: published ones (with lineage), then the others in a collapsed group
  const published = d.versions.filter((v) => v.status === "published");
  $("versions-title").textContent = `Published versions and lineage (${published.length} of ${d.versions.length} versions)`;
  const vrow = (v) => el("tr", { class: v.current ? "current" : null, "data-version": v.version },
    td(code(v.version), v.current ? el("strong", {}, " current") : null),
    td(v.kind || "\u2014"), td(code(v.parent)),
    td(v.status, v.rolled_back ? el("div", { class: "muted" }, `rolled back to ${v.rolled_back.to}: ${v.rolled_back.reason}`) : null),
    td(partitions(v)), td(params(v.params)), tdn(v.rmse), tdn(v.mae),
    td(v.created_at || "\u2014", v.published_at ? el("div", { class: "muted" }, `published ${v.published_at}`) : null),
    td(canAct && v.status === "published" && !v.current
      ? el("button", { type: "button", onclick: () => act("api/rollback", { version: v.version, expected_current: d.current }, `rollback to ${v.version}`) }, "Roll back to this")
      : null, v.gate_report ? fileLink(v.gate_report, "gate report") : null));
  const others = d.versions.filter((v) => v.status !== "published");
  const rows = published.map(vrow);
  if (others.length) {
    rows.push(el("tr", {}, el("th", { colspan: 10 }, `Candidates and rejected versions (${others.length})`)));
    rows.push(...others.map(vrow));
  }
  fill("versions", rows, "No model version yet.", 10);

  // gate decisions
  $("gates-title").textContent = `Gate decisions (${d.gates.filter((g) => g.accepted).length} accepted, ${d.gates.filter((g) => !g.accepted).length} rejected)`;
  fill("gates", d.gates.map((g) => el("tr", { "data-version": g.version },
    td(code(g.version), el("div", { class: "muted" }, g.kind || "")),
    td(el("span", { class: g.accepted ? "ok" : "bad" }, g.accepted ? "accepted" : "rejected"),
       g.requeued_at ? el("div", { class: "muted" }, `re-queued ${g.requeued_at}`) : null),
    tdn(g.candidate_rmse), tdn(g.published_rmse), tdn(g.baseline_rmse), tdn(g.ceiling),
    el("td", { class: "num" }, pct(g.tolerance)), el("td", { class: "num" }, g.validation_rows ?? "\u2014"),
    td((g.new_partitions || []).join(", ") || "\u2014"),
    td(el("ul", {}, (g.reasons || []).map((r) => el("li", {}, r)))),
    td(fileLink(g.gate_report, "gate report")))), "No gate decision yet.", 11);

  // quarantine
  $("quarantine-title").textContent = `Quarantined partitions (${d.quarantined.length})`;
  fill("quarantine", d.quarantined.map((q) => el("tr", { "data-partition": q.id },
    td(code(q.id)), td(q.reason), td(q.quarantined_at || "\u2014"),
    td(fileLink(q.datadocs, "Data Docs")), td(fileLink(q.report, "report.json")),
    td(q.requeued ? el("span", { class: "muted" }, "re-queued: checked again by the next update run")
      : canAct && q.raw_present ? el("button", { type: "button", onclick: () => act("api/requeue", { partition: q.id }, `re-queue of ${q.id}`) }, "Re-queue")
      : null))), "No partition has failed the data contract.", 6);

  // held partitions: by a rollback, or by a rejected candidate
  const held = [
    ...Object.entries(d.held).map(([p, ev]) => [p, `rollback ${ev}`]),
    ...Object.entries(d.rejected).map(([p, v]) => [p, `gate-rejected candidate ${v}`]),
  ];
  $("held-title").textContent = `Held partitions (${held.length})`;
  fill("held", held.map(([p, by]) => el("tr", { "data-partition": p }, td(code(p)), td(by),
    td(canAct ? el("button", { type: "button", onclick: () => act("api/requeue", { partition: p }, `re-queue of ${p}`) }, "Re-queue") : null))),
    "Nothing held.", 3);

  // review log
  $("events-title").textContent = `Review log (${d.events.length})`;
  fill("events", d.events.map((e) => el("tr", {},
    td(e.at || "\u2014"), td(e.action), td(e.actor || "\u2014"),
    td(e.action === "rollback" ? `${e.from} \u2192 ${e.to}; held: ${(e.held || []).join(", ") || "none"}`
      : e.action === "requeue" ? `${(e.partitions || []).join(", ")} (${(e.released || []).map((r) => r.by).join(", ")})` : ""),
    td(e.reason || ""))), "No action taken from this page yet.", 5);
  // the chart's time span and what it shows, by kind
  const pts = d.chart.filter((p) => typeof p.rmse === "number");
  const kinds = {};
  for (const p of pts) kinds[p.kind] = (kinds[p.kind] || 0) + 1;
  $("chart-caption").textContent = pts.length
    ? `${pts.length} versions from ${pts[0].created_at || "?"} to ${pts[pts.length - 1].created_at || "?"}: ` +
      Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ") + "."
    : "";
  $("links").replaceChildren(d.index ? fileLink(d.index, "the static index page (reports/index.html)") : "");

  // versions for the lookup
  const sel = $("lookup-version");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "current"),
    ...published.map((v) => el("option", { value: v.version }, v.version)));
  sel.value = keep;
}

async function loadChart() {
  const r = await fetch("api/chart.svg", { credentials: "same-origin" });
  if (!r.ok) throw new Error(`chart: ${r.status}`);
  // The server escapes every text it puts in the SVG (streamrec.pipeline.reports.rmse_svg).
  $("chart").innerHTML = await r.text();
}

async function load() {
  try {
    const d = await call("GET", "api/overview");
    render(d);
    await loadChart();
    document.body.dataset.loaded = "yes";
  } catch (err) {
    showError(`Could not load the review data: ${err.message}`);
    document.body.dataset.loaded = "error";
  }
}

async function lookup(ev) {
  ev.preventDefault();
  const user = $("lookup-user").value.trim();
  const version = $("lookup-version").value;
  const out = $("lookup-result");
  out.replaceChildren(el("p", { class: "muted" }, "Looking up\u2026"));
  try {
    const q = new URLSearchParams({ user, k: "10" });
    if (version) q.set("version", version);
    const t0 = performance.now();
    const d = await call("GET", `api/lookup?${q}`);
    const ms = performance.now() - t0;
    const rated = d.rated || { known: false, count: null, top: [] };
    const rule = d.rule || {};
    const ruleText = `ranking rule: at least ${rule.min_ratings ?? 0} ratings per item, shrink ${rule.shrink ?? 0}, ` +
      `popularity ${rule.popularity ?? 0}`;
    const recs = el("table", { id: "lookup-table" }, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "item"), el("th", {}, "title"), el("th", {}, "predicted rating"))),
      el("tbody", {}, d.items.map((it, i) => el("tr", {}, el("td", { class: "num" }, i + 1), td(code(it.item)),
        td(it.title || el("span", { class: "muted" }, "\u2014")), tdn(it.score, 3)))));
    const own = el("table", { id: "rated-table" }, el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "item"), el("th", {}, "title"), el("th", {}, "their rating"))),
      el("tbody", {}, rated.top.length ? rated.top.map((it, i) => el("tr", {}, el("td", { class: "num" }, i + 1), td(code(it.item)),
        td(it.title || el("span", { class: "muted" }, "\u2014")), tdn(it.rating, 1)))
        : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, rated.known ? "No rating by this user." : "Unknown: this version keeps no seen items."))]));
    out.replaceChildren(
      el("p", {}, `Top ${d.items.length} for user ${d.user} from `, code(d.version),
        d.known_user ? "" : " (unknown user: the most popular by item bias)", el("span", { class: "muted" }, ` \u00b7 ${ms.toFixed(0)} ms`)),
      el("p", { class: "muted", id: "lookup-seen" }, rated.known
        ? `Leaving out the ${rated.count} items this user rated \u00b7 ${ruleText}`
        : `This version keeps no record of what users rated: rated items may appear \u00b7 ${ruleText}`),
      el("div", { class: "side-by-side" },
        el("div", {}, el("h3", {}, "Recommended"), recs),
        el("div", {}, el("h3", {}, "Their own top-rated"), own)));
    out.dataset.answered = "yes";
  } catch (err) {
    out.replaceChildren(el("p", { class: "bad" }, `Lookup failed: ${err.message}`));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lookup-form").addEventListener("submit", lookup);
  $("refresh").addEventListener("click", load);
  load();
});
