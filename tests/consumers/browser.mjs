// Open the browser example in Debian's headless chromium (puppeteer-core, no browser download)
// and print what the page computed, one state per URL, as a JSON list:
//   node browser.mjs [--screenshots DIR] URL...
// One browser serves every URL (a fresh page each). The page leaves its state in
// window.bertExport; we wait for status "done" or "error".
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = process.env.BERT_EXPORT_WEB_DIR || path.resolve(here, '../../examples/web');
const require = createRequire(path.join(webDir, 'package.json'));
const puppeteer = require('puppeteer-core');

let args = process.argv.slice(2);
let shots = null;
if (args[0] === '--screenshots') { shots = args[1]; args = args.slice(2); }

const profile = mkdtempSync(path.join(tmpdir(), 'bert-export-chromium-'));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`],
});
const states = [];
try {
  const version = await browser.version();
  for (const [i, url] of args.entries()) {
    const page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(url, { waitUntil: 'load', timeout: 60000 });
    await page.waitForFunction(() => ['done', 'error'].includes(window.bertExport?.status), { timeout: 120000 });
    const state = await page.evaluate(() => JSON.parse(JSON.stringify(window.bertExport)));
    if (shots) await page.screenshot({ path: path.join(shots, `page-${i}.png`), fullPage: true });
    Object.assign(state, { url, browser: version, console: logs });
    states.push(state);
    await page.close();
  }
  process.stdout.write(JSON.stringify(states));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
