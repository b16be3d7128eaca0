// cachet's cost dashboard: reads /api/* and draws the page, again every few seconds.
// No framework and no CDN: the binary serves this file as it is.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "cachet.admin-token";
const HOUR = 3600 * 1000;
const RANGES = { "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR };

const STEPS = { hour: HOUR, day: 24 * HOUR };

// `skew`: the proxy's clock less this browser's, from the Date of its answers (whole seconds,
// so differences under 2 s are taken as none): a preset range ends at the proxy's "now".
const state = { range: "24h", timer: null, busy: false, again: false, skew: 0 };

const $ = (id) => document.getElementById(id);
// SVG presentation attributes do not take var(): the palette is read from the stylesheet.
const color = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// ---- formatting ---------------------------------------------------------------------------

const usd = (nusd) => {
  const v = nusd / 1e9;
  const digits = Math.abs(v) >= 100 ? 2 : Math.abs(v) >= 1 ? 3 : 4;
  return "$" + v.toFixed(digits);
};
const pct = (ratio) => (ratio == null ? "–" : (ratio * 100).toFixed(1) + "%");
const int = (n) => Number(n).toLocaleString("en-US");
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";

// ---- data ---------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, params) {
  const query = new URLSearchParams(params).toString();
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const res = await fetch(`${path}?${query}`, { headers, cache: "no-store" });
  const served = Date.parse(res.headers.get("date") || "");
  if (Number.isFinite(served)) {
    const skew = served - Date.now();
    state.skew = Math.abs(skew) < 2000 ? 0 : skew;
  }
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    let message = res.statusText;
    try {
      message = (await res.json()).error.message;
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new Error(`${path}: ${res.status} ${message}`);
  }
  return res.json();
}

/** The range asked for, as Unix milliseconds, and the time series' grouping. */
function window_() {
  if (state.range === "custom") {
    // The inputs are UTC (so labelled): the ledger's days and hours are UTC days and hours.
    const from = Date.parse($("from").value + "Z");
    const to = Date.parse($("to").value + "Z");
    if (!(Number.isFinite(from) && Number.isFinite(to) && from < to)) {
      throw new Error("custom range: set both times (UTC), the first before the second");
    }
    return { from, to, step: to - from <= 48 * HOUR ? "hour" : "day" };
  }
  // Whole hours, up to the end of the current hour of the proxy's clock (it holds nothing later
  // yet): the proxy then sums them from its hourly totals, not from every record, and every
  // refresh and tab within the hour asks the same question.
  const to = Math.ceil((Date.now() + state.skew + 1) / HOUR) * HOUR;
  const span = RANGES[state.range] || RANGES["24h"];
  return { from: to - span, to, step: span <= 24 * HOUR ? "hour" : "day" };
}

async function load() {
  const w = window_();
  const range = { from: w.from, to: w.to };
  const [series, team, model, upstream, misses, prefixes, advice, instances] = await Promise.all([
    api("/api/usage", { ...range, group_by: w.step }),
    api("/api/usage", { ...range, group_by: "team" }),
    api("/api/usage", { ...range, group_by: "model" }),
    api("/api/usage", { ...range, group_by: "upstream" }),
    api("/api/misses", range),
    api("/api/prefixes", { ...range, limit: 20 }),
    api("/api/advice", range),
    api("/api/instances", range),
  ]);
  return { w, series, team, model, upstream, misses, prefixes, advice, instances };
}

// ---- drawing ------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const W = 560;
const H = 200;
const PAD = { l: 52, r: 8, t: 8, b: 24 };

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

/** Empties `el`, sets its data-series to exactly the points drawn, returns a fresh <svg>. */
function canvas(el, points, height = H) {
  el.replaceChildren();
  el.dataset.series = JSON.stringify(points);
  const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, role: "img" }, el);
  if (points.length === 0) {
    const t = svg("text", { x: W / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, root);
    t.textContent = "no records in this range";
  }
  return root;
}

function legend(el, items) {
  const div = document.createElement("div");
  div.className = "legend";
  for (const [label, color] of items) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color;
    span.append(swatch, label);
    div.append(span);
  }
  el.append(div);
}

function yAxis(root, max, format) {
  for (const f of [0, 0.5, 1]) {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - f);
    svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "axis" }, root);
    const t = svg("text", { x: PAD.l - 4, y: y + 3, "text-anchor": "end" }, root);
    t.textContent = format(max * f);
  }
}

/** Where each time bucket lies on the x axis: buckets are placed by their time within the
 * range, so a span with no records shows as a gap, not as neighbouring points. */
function timeAxis(w) {
  const step = STEPS[w.step];
  const span = Math.max(1, w.to - w.from);
  const left = PAD.l;
  const width = W - PAD.l - PAD.r;
  const at = (ms) => left + (width * (Math.min(Math.max(ms, w.from), w.to) - w.from)) / span;
  const start = (row) => Date.parse(row.key.length === 10 ? row.key + "T00:00Z" : row.key);
  return {
    step,
    start,
    // A bucket's share of the range (the first and last may be cut by it).
    band: (row) => ({ x0: at(start(row)), x1: at(start(row) + step) }),
    mid: (row) => (at(start(row)) + at(start(row) + step)) / 2,
    at,
  };
}

function xLabels(root, w, axis) {
  const step = axis.step;
  const buckets = Math.ceil((w.to - w.from) / step);
  const every = Math.max(1, Math.ceil(buckets / 6)) * step;
  const first = Math.ceil(w.from / every) * every;
  for (let t = first; t < w.to; t += every) {
    const iso = new Date(t).toISOString();
    const text = step === HOUR ? (t === first || iso.slice(11, 13) === "00" ? iso.slice(5, 10) + " " : "") + iso.slice(11, 13) + "h" : iso.slice(5, 10);
    const label = svg("text", { x: axis.at(t), y: H - 6, "text-anchor": "middle" }, root);
    label.textContent = text;
  }
}

/** Lines over the time series; `series` = [[field, color, label]]. A line breaks where a
 * bucket has no records or its value is null (a hit rate with no input). */
function lines(el, rows, w, series, format, max) {
  const root = canvas(el, rows);
  if (rows.length === 0) return;
  const axis = timeAxis(w);
  const top = max ?? Math.max(1, ...rows.flatMap((r) => series.map(([f]) => r[f] ?? 0)));
  const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - v / top);
  yAxis(root, top, format);
  xLabels(root, w, axis);
  for (const [field, color] of series) {
    let d = "";
    let previous = null;
    for (const r of rows) {
      const v = r[field];
      if (v == null) {
        previous = null;
        continue;
      }
      const joined = previous != null && axis.start(r) - axis.start(previous) === axis.step;
      d += `${joined ? "L" : "M"}${axis.mid(r).toFixed(1)},${y(v).toFixed(1)}`;
      svg("circle", { cx: axis.mid(r).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: color }, root);
      previous = r;
    }
    if (d) svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 }, root);
  }
  legend(el, series.map(([, color, label]) => [label, color]));
}

/** Stacked bars of token kinds over the time series, each as wide as its bucket. */
function stacked(el, rows, w, kinds) {
  const root = canvas(el, rows);
  if (rows.length === 0) return;
  const axis = timeAxis(w);
  const total = (r) => kinds.reduce((s, [k]) => s + (r.tokens[k] ?? 0), 0);
  const top = Math.max(1, ...rows.map(total));
  const scale = (H - PAD.t - PAD.b) / top;
  yAxis(root, top, (v) => int(Math.round(v)));
  xLabels(root, w, axis);
  for (const r of rows) {
    const { x0, x1 } = axis.band(r);
    const gap = Math.min(2, (x1 - x0) * 0.15);
    let base = H - PAD.b;
    for (const [kind, color] of kinds) {
      const h = (r.tokens[kind] ?? 0) * scale;
      svg("rect", { x: x0 + gap, y: base - h, width: Math.max(0.5, x1 - x0 - 2 * gap), height: h, fill: color }, root);
      base -= h;
    }
  }
  legend(el, kinds.map(([kind, color]) => [kind.replace("_", " "), color]));
}

/** Horizontal bars per group: spend, and what caching saved. */
function breakdown(el, rows) {
  const height = Math.max(60, 26 * rows.length + 10);
  const root = canvas(el, rows, height);
  if (rows.length === 0) return;
  const top = Math.max(1, ...rows.map((r) => Math.max(r.cost_nusd, Math.abs(r.saved_nusd))));
  const left = 130;
  const width = W - left - 90;
  rows.forEach((r, i) => {
    const y = 6 + i * 26;
    const label = svg("text", { x: left - 6, y: y + 12, "text-anchor": "end" }, root);
    label.textContent = r.key === "" ? "(none)" : r.key.slice(0, 22);
    svg("rect", { x: left, y, width: (width * Math.max(0, r.cost_nusd)) / top, height: 9, fill: color("--spend") }, root);
    // Caching can cost more than it saves (writes never read): that bar is drawn as a loss.
    const lost = r.saved_nusd < 0;
    svg("rect", { x: left, y: y + 10, width: (width * Math.abs(r.saved_nusd)) / top, height: 9, fill: color(lost ? "--loss" : "--read") }, root);
    const note = svg("text", { x: W - 4, y: y + 12, "text-anchor": "end" }, root);
    note.textContent = `${usd(r.cost_nusd)} · ${pct(r.hit_rate)}` + (r.unpriced ? ` · ${int(r.unpriced)} unpriced` : "");
  });
  const items = [["spend", color("--spend")], ["saved", color("--read")]];
  if (rows.some((r) => r.saved_nusd < 0)) items.push(["cost more than uncached", color("--loss")]);
  legend(el, items);
}

// ---- tables -------------------------------------------------------------------------------

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function table(id, rows, fill) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    fill(tr, row);
    body.append(tr);
  }
  $(id).dataset.rows = String(rows.length);
  const empty = $(id + "-empty");
  if (empty) empty.hidden = rows.length > 0;
}

function advise(advice) {
  const list = $("advice");
  list.replaceChildren();
  const item = (text) => {
    const li = document.createElement("li");
    li.textContent = text;
    list.append(li);
  };
  for (const a of advice.one_hour_ttl) {
    item(`Prefix ${a.prefix_key.slice(0, 16)}… (${a.model}) was written again ${a.rewrites}× 5–60 min after its last use: a 1h TTL would have saved about ${usd(a.saving_nusd)}.`);
  }
  for (const a of advice.under_minimum) {
    item(`${int(a.requests)} ${a.model} prompts were just under its ${int(a.min_cacheable_tokens)}-token minimum and could not be cached: grow the stable prefix past it.`);
  }
  for (const a of advice.no_markers) {
    item(`Team ${a.team || "(none)"} sends no cache markers to ${a.upstream} (${int(a.requests)} requests; cachet added ${int(a.breakpoints_added)} breakpoints for them).`);
  }
  for (const a of advice.silent_upstreams) {
    item(`Upstream ${a.upstream}: ${int(a.marked_requests)} marked requests reported no cache activity at all — check that the path keeps the markers.`);
  }
  if (list.children.length === 0) item("Nothing to advise for this range.");
}

// ---- the page -----------------------------------------------------------------------------

/** What the money figures leave out: requests whose price is missing, and the models they
 * asked for (a missing price is never guessed). */
function unpriced(totals, models) {
  const el = $("h-unpriced");
  el.dataset.value = String(totals.unpriced);
  if (!totals.unpriced) {
    el.hidden = true;
    return;
  }
  const named = models.filter((r) => r.unpriced > 0).map((r) => r.key || "(no model)");
  el.textContent = `${int(totals.unpriced)} of ${int(totals.requests)} requests are not in the money figures: the price table lacks a price they need (${named.join(", ")}).`;
  el.hidden = false;
}

/** A reading that followed only the newest records of a long range says so. */
function partial(id, reading) {
  const el = $(id);
  el.hidden = !reading.truncated;
  el.dataset.value = String(Boolean(reading.truncated));
}

/** The readings that follow every write are made every few minutes: when this one was. */
function asOf(id, reading) {
  $(id).textContent = `as of ${when(reading.as_of_ms)}, read again every 5 minutes`;
  $(id).dataset.value = String(reading.as_of_ms);
}

function headline(totals) {
  const set = (id, value, text) => {
    $(id).dataset.value = String(value);
    $(id).textContent = text;
  };
  set("h-spend", totals.cost_nusd, usd(totals.cost_nusd));
  set("h-uncached", totals.cost_uncached_nusd, usd(totals.cost_uncached_nusd));
  set("h-saved", totals.saved_nusd, usd(totals.saved_nusd));
  const share = totals.cost_uncached_nusd > 0 ? totals.saved_nusd / totals.cost_uncached_nusd : null;
  $("h-saved-pct").textContent = share == null ? "" : pct(share);
  set("h-hit", totals.hit_rate ?? "", pct(totals.hit_rate));
  set("h-requests", totals.requests, int(totals.requests));
}

function render(d) {
  const board = $("board");
  board.dataset.from = String(d.w.from);
  board.dataset.to = String(d.w.to);
  board.dataset.step = d.w.step;
  headline(d.series.totals);
  unpriced(d.series.totals, d.model.rows);
  partial("prefixes-partial", d.prefixes);
  partial("advice-partial", d.advice);
  asOf("prefixes-as-of", d.prefixes);
  asOf("advice-as-of", d.advice);
  const rows = d.series.rows.slice().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  lines($("chart-spend"), rows, d.w, [
    ["cost_uncached_nusd", color("--uncached"), "without caching"],
    ["cost_nusd", color("--spend"), "spend"],
  ], (v) => usd(v));
  lines($("chart-hit"), rows, d.w, [["hit_rate", color("--hit"), "token hit rate"]], (v) => pct(v), 1);
  stacked($("chart-tokens"), rows, d.w, [
    ["cache_read", color("--read")],
    ["cache_write", color("--write")],
    ["input_uncached", color("--input")],
    ["output", color("--output")],
  ]);
  breakdown($("chart-team"), d.team.rows);
  breakdown($("chart-model"), d.model.rows);
  breakdown($("chart-upstream"), d.upstream.rows);
  table("prefixes", d.prefixes.rows, (tr, p) => {
    const key = cell(tr, p.prefix_key.slice(0, 16) + "…");
    key.title = p.prefix_key;
    cell(tr, p.team || "(none)");
    cell(tr, p.model);
    cell(tr, int(p.tokens.input_uncached + p.tokens.cache_read + p.tokens.cache_write), "num");
    cell(tr, usd(p.cost_nusd), "num");
    cell(tr, pct(p.hit_rate), "num");
    cell(tr, p.reads_per_write == null ? "–" : p.reads_per_write.toFixed(1), "num");
    cell(tr, int(p.wasted_writes), "num");
  });
  table("misses", d.misses, (tr, m) => {
    cell(tr, m.reason.replaceAll("_", " "));
    cell(tr, int(m.count), "num");
    cell(tr, int(m.tokens), "num");
    cell(tr, usd(m.cost_nusd), "num");
    const example = [m.example_prefix ? m.example_prefix.slice(0, 12) + "…" : null, m.example_segment]
      .filter(Boolean)
      .join(" at ");
    cell(tr, example || "–");
    cell(tr, m.fix);
  });
  advise(d.advice);
  table("instances", d.instances, (tr, i) => {
    cell(tr, i.instance_id);
    cell(tr, int(i.requests), "num");
    cell(tr, when(i.first_ms));
    cell(tr, when(i.last_ms));
  });
  $("status").textContent = "updated " + new Date().toLocaleTimeString();
  board.dataset.refreshed = String(Number(board.dataset.refreshed || 0) + 1);
}

function showLogin(refused) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !refused;
  $("token").focus();
}

async function refresh() {
  // A refresh asked for while one runs (a range clicked) runs right after it.
  if (state.busy) {
    state.again = true;
    return;
  }
  state.busy = true;
  try {
    const data = await load();
    $("login").hidden = true;
    $("board").hidden = false;
    render(data);
  } catch (e) {
    if (e instanceof Unauthorized) {
      showLogin(Boolean(sessionStorage.getItem(TOKEN_KEY)));
    } else {
      $("status").textContent = String(e.message || e);
    }
  } finally {
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh();
    }
  }
}

function start() {
  for (const b of document.querySelectorAll("#ranges button")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
      refresh();
    });
  }
  const now = new Date();
  $("to").value = now.toISOString().slice(0, 16);
  $("from").value = new Date(now.getTime() - 24 * HOUR).toISOString().slice(0, 16);
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    refresh();
  });
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

start();
