// Console first paint, measured in Debian's headless chromium (playwright-core from
// tests/console/node_modules). Usage: node bench/console.js <url> <runs> <expected rows>
// Prints JSON: per run, ms from navigation start until the task list shows its first page, and
// until the next page is shown after clicking "Next".
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require(path.join(__dirname, '..', 'tests', 'console', 'node_modules', 'playwright-core'));

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

(async () => {
  const [url, runs, rows] = [process.argv[2], Number(process.argv[3] || 5), Number(process.argv[4] || 50)];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-bench-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  const out = { first_paint_ms: [], next_page_ms: [], dom_nodes: [] };
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.addInitScript((c) => localStorage.setItem('berth.cluster', c), process.env.BENCH_CLUSTER || 'default');
    // Signed in already (the server's key from BERTH_ACCESS_KEY_ID / BERTH_SECRET_ACCESS_KEY).
    await page.addInitScript(([id, secret]) => sessionStorage.setItem('berth.credentials', JSON.stringify({ id, secret })),
      [process.env.BERTH_ACCESS_KEY_ID, process.env.BERTH_SECRET_ACCESS_KEY]);
    for (let i = 0; i < runs; i += 1) {
      await page.goto('about:blank');
      await page.goto(url);
      await page.waitForFunction((n) => document.querySelectorAll('#tasks tbody tr').length >= n, rows, { timeout: 60000, polling: 'raf' });
      out.first_paint_ms.push(await page.evaluate(() => performance.now()));
      out.dom_nodes.push(await page.evaluate(() => document.getElementsByTagName('*').length));
      if (await page.locator('#next').isDisabled()) continue; // one page only
      const first = await page.locator('#tasks tbody tr a').first().innerText();
      const t0 = Date.now();
      await page.locator('#next').click();
      await page.waitForFunction((f) => {
        const a = document.querySelector('#tasks tbody tr a');
        return a && a.textContent !== f;
      }, first, { timeout: 60000, polling: 'raf' });
      out.next_page_ms.push(Date.now() - t0);
    }
  } finally {
    await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
