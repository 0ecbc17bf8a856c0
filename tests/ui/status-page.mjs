// Drives qkeyd's status page in Debian's Chromium and prints what it saw as
// one JSON object; the Rust end-to-end test decides pass or fail.
//
//   PLAYWRIGHT_DIR=<dir with node_modules> node status-page.mjs <scenario> <base URL> <out dir> [source]
//
// scenario "healthy": screenshots (light, dark), keyboard navigation, the
//   pool's mode and each source's state as the page shows them.
// scenario "drift": waits for <source> to be distrusted, both as the daemon
//   says (/v1/health, polled every 100 ms from here) and as the page shows it,
//   and reports the two times; then a screenshot.
// Every request the page makes is recorded, and any that is not to the
// daemon's own origin is refused; console errors and page errors too.
import { createRequire } from "node:module";
import path from "node:path";

const [scenario, base, outDir, source] = process.argv.slice(2);
const require = createRequire(path.join(process.env.PLAYWRIGHT_DIR, "node_modules") + "/");
const { chromium } = require("playwright-core");

const origin = new URL(base).origin;
const result = { scenario, requests: [], refused: [], console_errors: [], page_errors: [] };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, colorScheme: "light" });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    result.refused.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("request", (r) => result.requests.push(r.url()));
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.page_errors.push(String(e)));

  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector("body[data-loaded='true']", { timeout: 15000 });

  if (scenario === "healthy") {
    // Let a few refreshes pass, so the chart has windows and polling is seen.
    await page.waitForTimeout(5000);
    result.mode = await page.getAttribute("#mode", "data-mode");
    result.sources = await page.$$eval("#source-rows tr", (rows) =>
      rows.map((r) => ({ name: r.dataset.source, state: r.dataset.state })));
    result.chart_lines = await page.$$eval("#chart polyline", (l) => l.map((x) => x.getAttribute("class")));
    result.limit_label = await page.textContent("#chart .limit-label");
    result.kms_text = await page.textContent("#kms-list");
    result.keys_text = await page.textContent("#key-rows");
    result.clients_text = await page.textContent("#module-clients");
    await page.screenshot({ path: path.join(outDir, "status-healthy.png"), fullPage: true });

    // Keyboard: the first Tab reaches the skip link; Enter moves focus to the
    // sources; Tab reaches each source's button; Enter charts that source.
    await page.keyboard.press("Tab");
    result.first_focus = await page.evaluate(() => document.activeElement.className);
    await page.keyboard.press("Enter");
    result.after_skip = await page.evaluate(() => document.activeElement.id);
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    result.focused_button = await page.evaluate(() => document.activeElement.textContent);
    result.focus_outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    await page.keyboard.press("Enter");
    result.charted = await page.inputValue("#chart-source");
    result.current_row = await page.getAttribute("#source-rows tr[aria-current='true']", "data-source");
    // "d" toggles dark mode; the button says so too.
    await page.keyboard.press("d");
    result.theme = await page.getAttribute("html", "data-theme");
    result.theme_pressed = await page.getAttribute("#theme", "aria-pressed");
    result.dark_background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.waitForTimeout(2500);
    await page.screenshot({ path: path.join(outDir, "status-healthy-dark.png"), fullPage: true });
  } else if (scenario === "drift") {
    const row = `#source-rows tr[data-source="${source}"]`;
    result.state_at_load = await page.getAttribute(row, "data-state");
    const started = Date.now();
    const daemonDecided = (async () => {
      for (;;) {
        const h = await (await fetch(base + "/v1/health")).json();
        const s = h.pool.sources.find((x) => x.name === source);
        if (s && s.state === "distrusted") return Date.now();
        if (Date.now() - started > 120000) return null;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const pageShowed = page
      .waitForSelector(`${row}[data-state="distrusted"]`, { timeout: 120000, polling: 100 })
      .then(() => Date.now(), () => null);
    const [d, p] = await Promise.all([daemonDecided, pageShowed]);
    result.daemon_decided_ms = d === null ? null : d - started;
    result.page_showed_ms = p === null ? null : p - started;
    result.trust_class = await page.getAttribute(`${row} td[data-field="trust"]`, "class");
    result.chart_desc = await page.textContent("#chart-desc");
    // At once: the drift goes on, and the health tests fail the source soon after.
    await page.screenshot({ path: path.join(outDir, "status-drifting.png"), fullPage: true });
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
