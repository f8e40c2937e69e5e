// Drives berth's web console in Debian's headless chromium through playwright-core (which never
// downloads a browser). Usage: node console.js <endpoint> <outdir> <cluster> <service> <log text>
// Signs in with BERTH_ACCESS_KEY_ID / BERTH_SECRET_ACCESS_KEY (first with a wrong secret).
// Prints one JSON line: the page text of each view and the screenshot paths.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function browser() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  return { ctx, dir };
}

async function main() {
  const [endpoint, outdir, cluster, service, logText] = process.argv.slice(2);
  const { ctx, dir } = await browser();
  const out = { screenshots: [] };
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript((c) => localStorage.setItem('berth.cluster', c), cluster);
    const shot = async (name) => {
      const p = path.join(outdir, `console-${name}.png`);
      await page.screenshot({ path: p, fullPage: true });
      out.screenshots.push(p);
    };
    // Signed out: the sign-in form and nothing else; a wrong secret is refused by the server.
    await page.goto(`${endpoint}/#/`);
    await page.locator('#login').waitFor({ timeout: 20000 });
    out.login = await page.locator('main').innerText();
    await page.fill('#login-id', process.env.BERTH_ACCESS_KEY_ID);
    await page.fill('#login-secret', 'x'.repeat(40));
    await page.click('#login-submit');
    await page.locator('#login-error', { hasText: 'InvalidSignatureException' }).waitFor({ timeout: 20000 });
    out.login_refused = await page.locator('main').innerText();
    await page.fill('#login-id', process.env.BERTH_ACCESS_KEY_ID);
    await page.fill('#login-secret', process.env.BERTH_SECRET_ACCESS_KEY);
    await page.click('#login-submit');
    // Cluster view: the service and its running tasks.
    await page.locator('#services').getByText(service, { exact: true }).waitFor({ timeout: 20000 });
    await page.locator('#tasks .st-RUNNING').first().waitFor({ timeout: 20000 });
    await shot('cluster');
    out.cluster = await page.locator('main').innerText();
    // Service view: counts, deployments, events, charts (data or "no data").
    await page.locator('#services a', { hasText: service }).click();
    await page.locator('#svc-running').waitFor({ timeout: 20000 });
    await page.locator('#charts .chart').first().waitFor({ timeout: 20000 });
    await page.locator('#tasks .st-RUNNING').first().waitFor({ timeout: 20000 });
    await shot('service');
    out.service = await page.locator('main').innerText();
    // Task view: details and live logs.
    await page.locator('#tasks a').first().click();
    await page.locator('#task-last-status').waitFor({ timeout: 20000 });
    await page.locator('pre.log', { hasText: logText }).waitFor({ timeout: 30000 });
    const before = await page.locator('pre.log').first().innerText();
    // Live: more lines arrive without reloading.
    await page.waitForFunction((n) => document.querySelector('pre.log').textContent.length > n,
      before.length, { timeout: 20000 });
    await shot('task');
    out.task = await page.locator('main').innerText();
    // Usage and cost.
    await page.goto(`${endpoint}/#/usage`);
    await page.locator('#usage-by-service tbody tr').first().waitFor({ timeout: 20000 });
    await shot('usage');
    out.usage = await page.locator('main').innerText();
    out.errors = errors;
  } finally {
    await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
