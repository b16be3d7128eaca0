// The dashboard end to end in a real browser: `cachet sim` and `cachet serve` (SQLite ledger,
// admin token), a workload replayed through the proxy, then headless Chromium opens
// /dashboard, signs in, and every figure and chart it draws is held against /api/*. More
// traffic then changes the headline without a reload. Screenshots go to $CACHET_ARTIFACTS
// (default: artifacts/dashboard at the repository root).
//
//   CACHET_BIN=target/debug/cachet node --test tests/dashboard/
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = resolve(ROOT, process.env.CACHET_BIN ?? "target/debug/cachet");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = resolve(ROOT, process.env.CACHET_ARTIFACTS ?? "artifacts/dashboard");
const TOKEN = "e2e-dashboard-token";

const children = [];
const tmp = mkdtempSync(join(tmpdir(), "cachet-dashboard-"));
after(() => {
  for (const child of children) child.kill("SIGTERM");
  rmSync(tmp, { recursive: true, force: true });
});

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
    server.on("error", fail);
  });
}

async function start(args, port, env = {}) {
  const child = spawn(BIN, args, {
    // The proxy keeps state (its tenant secret) under its working directory: the temp dir.
    cwd: tmp,
    env: { ...process.env, RUST_LOG: "", ...env },
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  for (let i = 0; i < 200; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null);
      if (res?.ok || res?.status === 404) return child;
    } catch (_) {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${args.join(" ")} did not start on ${port}`);
}

async function api(base, path, params, token = TOKEN) {
  const query = new URLSearchParams(params).toString();
  const res = await fetch(`${base}${path}?${query}`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  return { status: res.status, body: await res.json() };
}

async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Records for 26 of the 29 days before today (none 10 to 12 days ago), written straight into
 * the SQLite ledger (as another instance would have written them), so that the 30-day view has
 * a month to draw, with a gap. */
async function seedHistory(db) {
  const script = `
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=10)
now = int(time.time() * 1000)
day = 86400000
rows = []
for d in range(1, 30):
    if d in (10, 11, 12):
        continue  # three days without records: drawn as a gap
    for i in range(3):
        at = now - d * day - i * 60000
        rows.append((at, f"history-{d}-{i}", "client", "history-instance", "t", "history",
            "anthropic", "anthropic", "claude-sonnet-4-6", "messages", 0, 200, "ok", 1,
            100 * d, 1000 * i, 50, 0, 20, 1000 + d, 5000 + d, "", 0, 0, 1.0, 0.1))
db.executemany("""INSERT INTO ledger (at_ms, request_id, call, instance_id, tenant, team,
    upstream, provider, model, endpoint, stream, status, outcome, usage_complete,
    input_uncached, cache_read, cache_write_5m, cache_write_1h, output, cost_nusd,
    cost_uncached_nusd, rewrites, client_markers, breakpoints, latency_ms, overhead_ms)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", rows)
db.commit()
print(len(rows))
`;
  const { stdout } = await promisify(execFile)("python3", ["-c", script, db]);
  return Number(stdout.trim());
}

const byKey = (rows) => rows.slice().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

test("the dashboard draws what /api/usage says, signs in with the token and follows new traffic", async () => {
  const simPort = await freePort();
  const proxyPort = await freePort();
  const sim = `http://127.0.0.1:${simPort}`;
  const base = `http://127.0.0.1:${proxyPort}`;
  await start(["sim", "--listen", `127.0.0.1:${simPort}`], simPort);
  const config = join(tmp, "cachet.toml");
  writeFileSync(
    config,
    `listen = "127.0.0.1:${proxyPort}"
[admin]
token = "${TOKEN}"
[ledger]
url = "sqlite://${tmp}/cachet.db"
flush_interval = "200ms"
[log]
level = "warn"
[[upstreams]]
name = "openai"
provider = "openai"
base_url = "${sim}/openai"
[[upstreams]]
name = "anthropic"
provider = "anthropic"
base_url = "${sim}/anthropic"
[[upstreams]]
name = "gemini"
provider = "gemini"
base_url = "${sim}/gemini"
[[upstreams]]
name = "deepseek"
provider = "deepseek"
base_url = "${sim}/deepseek"
`,
  );
  await start(["serve", "--config", config], proxyPort);

  // A workload replayed through the proxy: its records are the dashboard's data.
  const run = promisify(execFile);
  const { stdout } = await run(BIN, ["replay", "--workload", "chat", "--send-to", base]);
  const sent = [...stdout.matchAll(/\((\d+) requests\)/g)].reduce((s, m) => s + Number(m[1]), 0);
  assert.ok(sent > 100, stdout);
  await eventually("the replay in the ledger", async () => {
    const { body } = await api(base, "/api/usage", { group_by: "upstream" });
    return body.totals?.requests >= sent;
  });
  assert.equal((await api(base, "/api/usage", {}, null)).status, 401, "the API wants the token");

  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1800 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${base}/dashboard`);

    // Signed out: the form, not the board.
    await page.waitForSelector("#login:not([hidden])");
    assert.equal(await page.isHidden("#board"), true);
    await page.screenshot({ path: join(ARTIFACTS, "1-login.png") });
    await page.fill("#token", "not-the-token");
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#login-error:not([hidden])");
    await page.fill("#token", TOKEN);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#board:not([hidden])");
    await page.waitForFunction(() => document.getElementById("h-requests").dataset.value);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("cachet.admin-token")), TOKEN);

    // Everything drawn, read at one instant (a redraw is synchronous).
    const drawn = await page.evaluate(() => {
      const board = document.getElementById("board");
      const value = (id) => document.getElementById(id).dataset.value;
      const series = {};
      for (const chart of document.querySelectorAll(".chart")) {
        series[chart.id] = JSON.parse(chart.dataset.series);
      }
      return {
        from: board.dataset.from,
        to: board.dataset.to,
        step: board.dataset.step,
        headline: {
          spend: value("h-spend"),
          uncached: value("h-uncached"),
          saved: value("h-saved"),
          hit: value("h-hit"),
          requests: value("h-requests"),
        },
        unpriced: value("h-unpriced"),
        prefixesAsOf: value("prefixes-as-of"),
        unpricedShown: !document.getElementById("h-unpriced").hidden,
        series,
        tables: Object.fromEntries(
          ["prefixes", "misses", "instances"].map((id) => [
            id,
            document.querySelectorAll(`#${id} tbody tr`).length,
          ]),
        ),
        paths: document.querySelectorAll(".chart svg path, .chart svg rect").length,
      };
    });
    assert.equal(drawn.step, "hour", "24 h is drawn by the hour");
    const range = { from: drawn.from, to: drawn.to };
    const usage = (group_by) => api(base, "/api/usage", { ...range, group_by }).then((r) => r.body);
    const [series, team, model, upstream] = await Promise.all(
      ["hour", "team", "model", "upstream"].map(usage),
    );
    const t = series.totals;
    assert.ok(t.requests >= sent);
    assert.deepEqual(drawn.headline, {
      spend: String(t.cost_nusd),
      uncached: String(t.cost_uncached_nusd),
      saved: String(t.saved_nusd),
      hit: String(t.hit_rate),
      requests: String(t.requests),
    });
    // OpenAI and Gemini have no output price in the table: their requests are named, not summed.
    assert.equal(drawn.unpriced, String(t.unpriced));
    assert.ok(t.unpriced > 0 && drawn.unpricedShown, "the unpriced requests are shown");
    for (const id of ["chart-spend", "chart-hit", "chart-tokens"]) {
      assert.deepEqual(drawn.series[id], byKey(series.rows), id);
    }
    assert.deepEqual(drawn.series["chart-team"], team.rows);
    assert.deepEqual(drawn.series["chart-model"], model.rows);
    assert.deepEqual(drawn.series["chart-upstream"], upstream.rows);
    assert.deepEqual(
      upstream.rows.map((r) => r.key).sort(),
      ["anthropic", "deepseek", "gemini", "openai"],
    );
    assert.ok(drawn.paths > 10, "the charts are drawn");
    const prefixes = (await api(base, "/api/prefixes", { ...range, limit: 20 })).body;
    assert.equal(drawn.tables.prefixes, prefixes.rows.length);
    // The prefix table is read every few minutes and says when: the same answer, kept.
    assert.equal(drawn.prefixesAsOf, String(prefixes.as_of_ms));
    assert.ok(prefixes.rows.length > 0);
    const misses = (await api(base, "/api/misses", range)).body;
    assert.equal(drawn.tables.misses, misses.length);
    const instances = (await api(base, "/api/instances", range)).body;
    assert.equal(drawn.tables.instances, instances.length);
    assert.equal(instances.length, 1);
    await page.screenshot({ path: join(ARTIFACTS, "2-dashboard.png"), fullPage: true });

    // More traffic: the headline follows without a reload.
    await page.evaluate(() => {
      window.__sameDocument = true;
    });
    const before = Number(drawn.headline.requests);
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${base}/anthropic/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": "sk-e2e", "x-cachet-team": "e2e" },
        body: JSON.stringify({
          model: "claude-sonnet-4-6",
          max_tokens: 16,
          messages: [{ role: "user", content: `A new question, number ${i}.` }],
        }),
      });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
    }
    await page.waitForFunction(
      (n) => Number(document.getElementById("h-requests").dataset.value) >= n,
      before + 5,
      { timeout: 20000 },
    );
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload");
    const teams = await page.evaluate(() =>
      JSON.parse(document.getElementById("chart-team").dataset.series).map((r) => r.key),
    );
    assert.ok(teams.includes("e2e"), `the new team appears: ${teams}`);
    await page.screenshot({ path: join(ARTIFACTS, "3-after-traffic.png"), fullPage: true });

    // The 7-day view groups by day.
    await page.click('#ranges button[data-range="7d"]');
    await page.waitForFunction(() => document.getElementById("board").dataset.step === "day");

    // The 30-day view of a month of history: one point a day, as /api/usage has them.
    assert.equal(await seedHistory(join(tmp, "cachet.db")), 78);
    await page.click('#ranges button[data-range="30d"]');
    await page.waitForFunction(() => {
      const rows = JSON.parse(document.getElementById("chart-spend").dataset.series || "[]");
      return rows.length >= 26;
    });
    const month = await page.evaluate(() => ({
      from: document.getElementById("board").dataset.from,
      to: document.getElementById("board").dataset.to,
      requests: document.getElementById("h-requests").dataset.value,
      series: JSON.parse(document.getElementById("chart-tokens").dataset.series),
      instances: document.querySelectorAll("#instances tbody tr").length,
      // The spend line's points (its first series: one circle per row, in row order).
      xs: [...document.querySelectorAll("#chart-spend circle")].map((c) => Number(c.getAttribute("cx"))),
    }));
    const byDay = await api(base, "/api/usage", { from: month.from, to: month.to, group_by: "day" });
    assert.deepEqual(month.series, byKey(byDay.body.rows));
    assert.equal(month.requests, String(byDay.body.totals.requests));
    assert.ok(month.series.length >= 26 && month.series.length <= 28, `${month.series.length} days`);
    // Points stand at their day, not their rank: the gap of three days is four days wide. The
    // first and last days may be cut by the range, so only the inner steps are compared.
    const days = month.series.map((r) => Date.parse(r.key + "T00:00Z") / 86400000);
    const xs = month.xs.slice(0, days.length);
    const perDay = [];
    for (let i = 1; i + 1 < days.length - 1; i++) perDay.push((xs[i + 1] - xs[i]) / (days[i + 1] - days[i]));
    assert.ok(days.some((d, i) => i > 0 && d - days[i - 1] === 4), `a four-day step: ${days}`);
    for (const w of perDay) assert.ok(Math.abs(w - perDay[0]) < 0.25, `uniform per day: ${perDay}`);
    assert.equal(month.instances, 2, "the proxy and the instance that wrote the history");
    await page.screenshot({ path: join(ARTIFACTS, "4-thirty-days.png"), fullPage: true });

    // A custom range (UTC, to the minute) is drawn as asked, and as /api/usage answers it.
    const minute = 60 * 1000;
    const customTo = Math.ceil((Date.now() + minute) / minute) * minute;
    const customFrom = customTo - 3 * 60 * minute;
    const local = (ms) => new Date(ms).toISOString().slice(0, 16);
    await page.fill("#from", local(customFrom));
    await page.fill("#to", local(customTo));
    await page.click('#ranges button[data-range="custom"]');
    await page.waitForFunction(
      (from) => document.getElementById("board").dataset.from === String(from),
      customFrom,
    );
    const custom = await page.evaluate(() => ({
      to: document.getElementById("board").dataset.to,
      step: document.getElementById("board").dataset.step,
      requests: document.getElementById("h-requests").dataset.value,
      series: JSON.parse(document.getElementById("chart-spend").dataset.series),
    }));
    assert.equal(custom.to, String(customTo));
    assert.equal(custom.step, "hour", "3 hours are drawn by the hour");
    const answered = await api(base, "/api/usage", {
      from: customFrom,
      to: customTo,
      group_by: "hour",
    });
    assert.equal(custom.requests, String(answered.body.totals.requests));
    assert.deepEqual(custom.series, byKey(answered.body.rows));
    assert.deepEqual(errors, [], "no script errors");
  } finally {
    await browser.close();
  }
});
