// larder's web interface end to end: the real binary on 127.0.0.1, Debian's Chromium driven
// by playwright-core, axe-core run in the page. Each step saves a screenshot into
// target/e2e-screenshots/ (or $LARDER_SCREENSHOTS).
//
// Run: cd e2e && npm ci && LARDER_BIN=../target/debug/larder npm test

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const repo = path.resolve(import.meta.dirname, '..');
const binary = process.env.LARDER_BIN || path.join(repo, 'target/debug/larder');
const shots = process.env.LARDER_SCREENSHOTS || path.join(repo, 'target/e2e-screenshots');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const KiB = 1024;
let server;
let base;
let work;
let root;
let browser;
let shot = 0;
let accessLog;

// A minimal one-page PDF, so the shop has a document to sell.
function pdf(text) {
  const stream = `BT /F1 24 Tf 72 720 Td (${text}) Tj ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R ' +
      '/Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let out = '%PDF-1.4\n';
  const offsets = [];
  objects.forEach((body, i) => {
    offsets.push(out.length);
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const offset of offsets) out += `${String(offset).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return out;
}

function seed() {
  const write = (name, bytes) => {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), bytes);
  };
  write('docs/readme.txt', 'Welcome to larder.\n'.repeat(40));
  write('docs/notes-2026.md', '# Notes\n\n- browse\n- upload\n- buy\n');
  write('docs/<img src=x onerror=alert(1)>.txt', 'a name that tries to be markup\n');
  write('docs/archive/old.txt', 'old\n');
  write('shop/guide.pdf', pdf('The larder guide'));
  write('shop/recipes.txt', 'Bread: flour, water, salt, time.\n');
  write('vault/rare.txt', 'Very rare.\n');
  fs.mkdirSync(path.join(root, 'home/alice'), { recursive: true });
}

function config(hash) {
  return `
[[account]]
name = "alice"
password = "${hash}"
plan = "small"

[[account]]
name = "admin"
password = "${hash}"
admin = true

[[account]]
name = "bob"
password = "${hash}"

[plan.small]
storage = "1 MiB"
credits = 10

[[rule]]
path = "/"
read = ["*"]

[[rule]]
path = "/home/{account}"
read = ["{account}"]
write = ["{account}"]

[[rule]]
path = "/shop"
read = ["*"]
price = 4

[[rule]]
path = "/vault"
read = ["@authenticated"]
price = 50

[[rule]]
path = "/drop"
read = ["*"]
write = ["bob"]
`;
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'larder-e2e-'));
  root = path.join(work, 'root');
  seed();
  const hash = execFileSync(binary, ['hash-password'], { input: 'correct horse\n' })
    .toString()
    .trim();
  fs.writeFileSync(path.join(work, 'larder.toml'), config(hash));
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('LARDER_')),
  );
  accessLog = path.join(work, 'larder.log');
  server = spawn(binary, ['serve', root, '--port', '0', '--config', path.join(work, 'larder.toml')], {
    stdio: ['ignore', 'pipe', fs.openSync(accessLog, 'w')],
    env,
  });
  base = await new Promise((resolve, reject) => {
    let seen = '';
    server.stdout.on('data', (chunk) => {
      seen += chunk;
      const line = seen.split('\n')[0];
      if (seen.includes('\n')) resolve(line.trim().replace(/^listening on /, ''));
    });
    server.once('exit', (code) => reject(new Error(`larder exited with ${code}`)));
  });
  fs.rmSync(shots, { recursive: true, force: true });
  fs.mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGKILL');
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

async function screenshot(page, name) {
  shot += 1;
  const file = path.join(shots, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

// Runs axe-core in the page (through the DevTools protocol, which the page's CSP does not
// govern) and fails on any serious or critical finding.
async function accessible(page, what) {
  const found = await page.evaluate(async (source) => {
    if (!window.axe) (0, eval)(source);
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    if (result.passes.length < 10) throw new Error(`axe checked only ${result.passes.length} rules`);
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
    }));
  }, axeSource);
  for (const v of found) console.log(`# axe, ${what}: ${v.impact} ${v.id} (${v.help}) at ${v.nodes.join(', ')}`);
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${what}: axe found ${JSON.stringify(bad, null, 1)}`);
  return found;
}

// A page whose every dialog() (alert, confirm: what injected script would call) fails the test.
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on('dialog', async (dialog) => {
    errors.push(`unexpected ${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of (40[0-9]|41[0-9])/.test(message.text())) {
      errors.push(`console: ${message.text()}`);
    }
  });
  return { context, page, errors };
}

async function signIn(page, password = 'correct horse') {
  await page.click('#sign-in-button');
  await page.fill('#sign-in-name', 'alice');
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in-submit');
}

function row(page, name) {
  return page.locator(`#listing tbody tr[data-name="${name}"]`);
}

test('browsing and downloading work without JavaScript', async () => {
  const { context, page, errors } = await newPage({ javaScriptEnabled: false });
  const answer = await page.goto(`${base}/`);
  assert.equal(answer.status(), 200);
  const csp = answer.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.click('text=docs/');
  await page.waitForURL(`${base}/docs/`);
  assert.equal(await page.locator('nav[aria-label="Breadcrumb"] a[aria-current="page"]').innerText(), 'docs');
  // The name that looks like markup is text, and no element came of it.
  const trap = row(page, '<img src=x onerror=alert(1)>.txt');
  assert.equal(await trap.locator('td.name a').innerText(), '<img src=x onerror=alert(1)>.txt');
  assert.equal(await page.locator('#listing img').count(), 0);
  // Sorting by a header link, then downloading by the name's link.
  await page.click('th[data-sort="size"] button');
  await page.waitForURL(/sort=size&order=asc/);
  const names = await page.locator('#listing tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.name));
  assert.deepEqual(names, ['archive', '<img src=x onerror=alert(1)>.txt', 'notes-2026.md', 'readme.txt']);
  assert.equal(await page.locator('th[data-sort="size"]').getAttribute('aria-sort'), 'ascending');
  await screenshot(page, 'no-javascript-listing');
  const download = await page.goto(`${base}/docs/readme.txt`);
  assert.equal(download.status(), 200);
  assert.match(await download.text(), /^Welcome to larder\./);
  assert.deepEqual(errors, []);
  await context.close();
});

test('signed in: upload, preview, buy, quota, account, delete, sign out', async (t) => {
  const { context, page, errors } = await newPage();
  await page.goto(`${base}/docs/`);
  await accessible(page, 'listing, signed out');
  await screenshot(page, 'listing-signed-out');

  await t.test('filtering as you type, sorting in place', async () => {
    await page.fill('#filter', 'read');
    assert.equal(await page.locator('#listing tbody tr:not([hidden])').count(), 1);
    assert.equal(await page.locator('#filter-count').innerText(), '1 of 4 shown');
    await page.fill('#filter', '');
    await page.click('th[data-sort="modified"] button');
    assert.equal(await page.locator('th[data-sort="modified"]').getAttribute('aria-sort'), 'ascending');
    assert.match(page.url(), /sort=modified&order=asc/);
  });

  await t.test('sign in: a wrong password is told, the right one gives a token', async () => {
    await signIn(page, 'wrong');
    await page.waitForSelector('#sign-in-error:has-text("do not match")');
    await accessible(page, 'sign-in dialog');
    await screenshot(page, 'sign-in-refused');
    await page.fill('#sign-in-password', 'correct horse');
    await Promise.all([page.waitForEvent('load'), page.click('#sign-in-submit')]);
    assert.equal(await page.locator('#signed-in-as').innerText(), 'Signed in as alice');
    const cookies = await context.cookies();
    const cookie = cookies.find((c) => c.name === 'larder-token');
    assert.ok(cookie && cookie.value.startsWith('lt_'), 'the page keeps a token');
    assert.equal(cookie.sameSite, 'Strict');
    assert.ok(cookie.expires * 1000 < Date.now() + 8.5 * 3600 * 1000, 'the token is short-lived');
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
    assert.doesNotMatch(stored + cookies.map((c) => c.value).join(), /correct horse/);
  });

  await page.goto(`${base}/home/alice/`);

  await t.test('upload through the file input, with a progress bar, then listed', async () => {
    await page.setInputFiles('#picker', {
      name: 'hello.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('Hello from the browser.\n'.repeat(10)),
    });
    await page.waitForSelector('#uploads li.done:has-text("hello.txt")');
    await row(page, 'hello.txt').waitFor();
    assert.equal(await row(page, 'hello.txt').locator('td.type').innerText(), 'text/plain');

    // A larger upload over a slowed link, to see the bar move.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 96 * KiB,
    });
    await page.setInputFiles('#picker', {
      name: 'photos.zip',
      mimeType: 'application/zip',
      buffer: Buffer.alloc(400 * KiB, 7),
    });
    const bar = page.locator('#uploads li:has-text("photos.zip") progress');
    await page.waitForFunction(() => {
      const p = [...document.querySelectorAll('#uploads li')].find((li) => li.textContent.includes('photos.zip'));
      const bar = p && p.querySelector('progress');
      return bar && bar.value > 0 && bar.value < bar.max;
    });
    assert.ok((await bar.getAttribute('aria-label')).includes('photos.zip'));
    await screenshot(page, 'upload-in-progress');
    await page.waitForSelector('#uploads li.done:has-text("photos.zip")', { timeout: 30000 });
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
    });
    await row(page, 'photos.zip').waitFor();
    await screenshot(page, 'uploaded');
    const listed = await fetch(`${base}/home/alice/hello.txt`, {
      headers: { Authorization: `Bearer ${(await context.cookies()).find((c) => c.name === 'larder-token').value}` },
    });
    assert.equal(listed.status, 200);
    assert.equal(await listed.text(), 'Hello from the browser.\n'.repeat(10));
  });

  await t.test('files dropped on the page are uploaded', async () => {
    const files = await page.evaluateHandle(() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(['dropped\n'], 'dropped.txt', { type: 'text/plain' }));
      return transfer;
    });
    await page.dispatchEvent('body', 'dragenter', { dataTransfer: files });
    assert.equal(await page.locator('#drop').isVisible(), true, 'the drop zone shows');
    await page.dispatchEvent('body', 'drop', { dataTransfer: files });
    await page.waitForSelector('#uploads li.done:has-text("dropped.txt")');
    await row(page, 'dropped.txt').waitFor();
    assert.equal(await page.locator('#drop').isVisible(), false);
  });

  await t.test('uploading over an existing name asks first (412), then replaces', async () => {
    await page.setInputFiles('#picker', {
      name: 'hello.txt', mimeType: 'text/plain', buffer: Buffer.from('Hello again.\n'),
    });
    await page.waitForSelector('#ask[open]:has-text("Replace hello.txt?")');
    await page.click('#ask-yes');
    await page.waitForSelector('#uploads li.done:has-text("replacing")');
  });

  await t.test('preview a text file and an image', async () => {
    await row(page, 'hello.txt').getByRole('button', { name: 'Preview hello.txt' }).click();
    await page.waitForSelector('#preview[open] pre');
    assert.equal(await page.locator('#preview pre').textContent(), 'Hello again.\n');
    await accessible(page, 'preview dialog');
    await screenshot(page, 'preview-text');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#preview', { state: 'hidden' });

    const picture = await page.screenshot({ clip: { x: 0, y: 0, width: 480, height: 240 } });
    await page.setInputFiles('#picker', { name: 'view.png', mimeType: 'image/png', buffer: picture });
    await page.waitForSelector('#uploads li.done:has-text("view.png")');
    await row(page, 'view.png').getByRole('button', { name: 'Preview view.png' }).click();
    await page.waitForFunction(() => {
      const img = document.querySelector('#preview[open] img');
      return img && img.complete && img.naturalWidth === 480;
    });
    await screenshot(page, 'preview-image');
    await page.keyboard.press('Escape');
  });

  await t.test('buy a priced file; a price beyond the balance is explained', async () => {
    await page.goto(`${base}/shop/`);
    const guide = row(page, 'guide.pdf');
    assert.equal(await guide.locator('td.price').innerText(), '4 credits');
    await guide.getByRole('button', { name: 'Buy guide.pdf for 4 credits' }).click();
    await page.waitForSelector('#ask[open]');
    assert.match(await page.locator('#ask-text').innerText(), /costs 4 credits\. Your balance is 10 credits; it will be 6 credits after/);
    await screenshot(page, 'buy-confirm');
    await page.click('#ask-yes');
    await page.waitForSelector('#status:has-text("Bought guide.pdf for 4 credits; your balance is 6 credits.")');
    assert.equal(await guide.locator('td.price').innerText(), 'Bought');
    await screenshot(page, 'shop-listing');
    // The preview's iframe itself fetches the PDF (with the page's cookie) and gets it.
    const pdfLoaded = page.waitForResponse((r) => r.url() === `${base}/shop/guide.pdf`);
    await guide.getByRole('button', { name: 'Preview guide.pdf' }).click();
    const frame = page.locator('#preview[open] iframe');
    await frame.waitFor();
    assert.equal(await frame.getAttribute('src'), '/shop/guide.pdf');
    const pdfAnswer = await pdfLoaded;
    assert.equal(pdfAnswer.status(), 200, 'the page reads what it bought');
    assert.equal(pdfAnswer.headers()['content-type'], 'application/pdf');
    await screenshot(page, 'bought-preview-pdf');
    await page.keyboard.press('Escape');

    await page.goto(`${base}/vault/`);
    await row(page, 'rare.txt').locator('td.name a').click();
    await page.waitForSelector('#ask[open]');
    assert.equal(await page.locator('#ask-title').innerText(), 'Not enough credits for rare.txt');
    assert.match(await page.locator('#ask-text').innerText(), /costs 50 credits, and your balance is 6 credits/);
    assert.equal(page.url(), `${base}/vault/`, 'the raw 402 is not shown');
    await screenshot(page, 'insufficient-credits');
    await page.keyboard.press('Escape');
  });

  await t.test('a quota that is hit is explained, and nothing is stored', async () => {
    await page.goto(`${base}/home/alice/`);
    await page.setInputFiles('#picker', {
      name: 'too-big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(900 * KiB, 1),
    });
    const failed = page.locator('#uploads li.failed:has-text("too-big.bin")');
    await failed.waitFor();
    assert.match(await failed.innerText(), /Not enough storage for too-big\.bin: it needs 900\.0 KiB .* of your 1\.0 MiB \(plan small\) is left\. Nothing was stored\./);
    // The browser saw larder's own 402 (not a connection cut off before the answer).
    assert.equal(await failed.getAttribute('data-answer'), '402');
    await screenshot(page, 'quota-exceeded');
    assert.equal(await row(page, 'too-big.bin').count(), 0);
    const head = await page.request.head(`${base}/home/alice/too-big.bin`);
    assert.equal(head.status(), 404);
  });

  await t.test('the account panel: plan, balance, storage; tokens made and revoked', async () => {
    await page.click('#account-button');
    await page.waitForSelector('#account[open]');
    assert.equal(await page.locator('#account-plan').innerText(), 'small');
    assert.equal(await page.locator('#account-balance').innerText(), '6 credits');
    assert.match(await page.locator('#account-storage').innerText(), /of 1\.0 MiB used/);
    // Used: photos.zip (400 KiB) and the small files beside it, of a 1 MiB plan.
    const [used, quota] = await page.locator('#account-meter').evaluate((m) => [m.value, m.max]);
    assert.equal(quota, 1024 * KiB);
    assert.ok(used > 400 * KiB && used < 450 * KiB, `the bar shows ${used} bytes used`);
    await accessible(page, 'account panel');
    await screenshot(page, 'account-panel');
    const before = await page.locator('#token-rows tr').count();
    await page.fill('#token-scope', '/home/alice');
    await page.check('#token-read-only');
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-secret:not([hidden])');
    const secret = await page.inputValue('#token-secret-value');
    assert.match(secret, /^lt_/);
    assert.equal(await page.locator('#token-rows tr').count(), before + 1);
    const withIt = await fetch(`${base}/home/alice/hello.txt`, { headers: { Authorization: `Bearer ${secret}` } });
    assert.equal(withIt.status, 200);
    await screenshot(page, 'token-created');
    await page.getByRole('button', { name: /^Revoke the token for \/home\/alice/ }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#token-rows tr').length === n, before);
    const revoked = await fetch(`${base}/home/alice/hello.txt`, { headers: { Authorization: `Bearer ${secret}` } });
    assert.equal(revoked.status, 401);
    await page.click('#account [data-close]');
  });

  await t.test('rename with the button, move by dragging onto a folder (MOVE)', async () => {
    const token = (await context.cookies()).find((c) => c.name === 'larder-token').value;
    const put = (path, body) => fetch(`${base}/home/alice/${path}`, {
      method: 'PUT', headers: { Authorization: `Bearer ${token}` }, body,
    });
    assert.equal((await put('draft.txt', 'first draft')).status, 201);
    assert.equal((await put('box/', '')).status, 201);
    await page.reload();
    await row(page, 'draft.txt').getByRole('button', { name: 'Rename draft.txt' }).click();
    await page.fill('#ask-input', 'Entwurf März.txt');
    await page.click('#ask-yes');
    await page.waitForSelector('#status:has-text("Renamed draft.txt to Entwurf März.txt.")');
    await row(page, 'Entwurf März.txt').waitFor();
    const renamed = await fetch(`${base}/home/alice/Entwurf%20M%C3%A4rz.txt`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(await renamed.text(), 'first draft');
    assert.equal((await page.request.head(`${base}/home/alice/draft.txt`)).status(), 404);
    await row(page, 'Entwurf März.txt').dragTo(row(page, 'box'));
    await page.waitForSelector('#status:has-text("Moved Entwurf März.txt to /home/alice/box/Entwurf März.txt.")');
    const moved = await fetch(`${base}/home/alice/box/Entwurf%20M%C3%A4rz.txt`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(await moved.text(), 'first draft');
    assert.equal(await row(page, 'Entwurf März.txt').count(), 0);
  });

  await t.test('new folder, and delete with confirmation', async () => {
    await page.click('#new-folder-button');
    await page.fill('#ask-input', 'drafts');
    await page.click('#ask-yes');
    await row(page, 'drafts').waitFor();
    // A folder that is not empty is confirmed twice (409, then Depth: infinity).
    const token = (await context.cookies()).find((c) => c.name === 'larder-token').value;
    const inside = await fetch(`${base}/home/alice/drafts/plan.txt`, {
      method: 'PUT', headers: { Authorization: `Bearer ${token}` }, body: 'plan',
    });
    assert.equal(inside.status, 201);
    await row(page, 'drafts').getByRole('button', { name: 'Delete drafts' }).click();
    await page.click('#ask-yes');
    await page.waitForSelector('#ask[open]:has-text("drafts/ is not empty")');
    await page.click('#ask-yes');
    await page.waitForSelector('#status:has-text("Deleted drafts.")');
    assert.equal((await page.request.head(`${base}/home/alice/drafts/plan.txt`)).status(), 404);
    await row(page, 'hello.txt').getByRole('button', { name: 'Delete hello.txt' }).click();
    await page.waitForSelector('#ask[open]:has-text("Delete hello.txt?")');
    await screenshot(page, 'delete-confirm');
    await page.click('#ask-yes');
    await page.waitForSelector('#status:has-text("Deleted hello.txt.")');
    assert.equal(await row(page, 'hello.txt').count(), 0);
    const gone = await page.request.head(`${base}/home/alice/hello.txt`);
    assert.equal(gone.status(), 404);
  });

  await t.test('keyboard: the skip link comes first, dialogs close with Escape', async () => {
    await page.reload();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to the listing');
    await page.focus('#account-button');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#account[open]');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#account', { state: 'hidden' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'account-button');
    await accessible(page, 'listing, signed in');
  });

  await t.test('a phone-width screen shows everything without scrolling sideways', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/docs/`);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390, `the page is ${wide}px wide`);
    await screenshot(page, 'phone');
    await page.setViewportSize({ width: 1100, height: 720 });
  });

  await t.test('a token revoked elsewhere is forgotten at the next page', async () => {
    const other = await browser.newContext();
    const made = await fetch(`${base}/.larder/tokens`, {
      method: 'POST',
      headers: {
        Authorization: `Basic ${Buffer.from('alice:correct horse').toString('base64')}`,
        'Content-Type': 'application/json',
      },
      body: '{"expires_in": "1h"}',
    });
    const { id, token } = await made.json();
    const url = new URL(base);
    await other.addCookies([{ name: 'larder-token', value: token, domain: url.hostname, path: '/', sameSite: 'Strict' }]);
    const tab = await other.newPage();
    await tab.goto(`${base}/docs/`);
    assert.equal(await tab.locator('#signed-in-as').innerText(), 'Signed in as alice');
    const gone = await fetch(`${base}/.larder/tokens/${id}`, {
      method: 'DELETE', headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(gone.status, 204);
    await tab.reload();
    await tab.waitForSelector('#sign-in-button:not([hidden])');
    assert.equal((await other.cookies()).find((c) => c.name === 'larder-token'), undefined);
    await other.close();
  });

  await t.test('sign out revokes the token', async () => {
    const token = (await context.cookies()).find((c) => c.name === 'larder-token').value;
    await Promise.all([page.waitForEvent('load'), page.click('#sign-out-button')]);
    await page.waitForSelector('#sign-in-button:not([hidden])');
    assert.equal((await context.cookies()).find((c) => c.name === 'larder-token'), undefined);
    const after = await fetch(`${base}/.larder/account`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(after.status, 401);
  });

  assert.deepEqual(errors, []);
  await context.close();
});

// What an uploaded page would do with alice's session if it ran as larder: read the page's
// token from the cookie, ask who she is, and mint a token for its author. Each request is
// marked, so the access log tells whether any reached larder and as whom.
function payload(mark) {
  return `
    const token = (document.cookie.match(/larder-token=([^;]+)/) || [])[1] || '';
    const auth = { Authorization: 'Bearer ' + token };
    fetch('/.larder/account?from=${mark}', { headers: auth, credentials: 'include' });
    fetch('/.larder/tokens?from=${mark}', {
      method: 'POST', credentials: 'include',
      headers: { ...auth, 'Content-Type': 'application/json' }, body: '{}',
    });`;
}

test('pages bob uploads run nothing as larder when alice opens them', async () => {
  const bob = 'Basic ' + Buffer.from('bob:correct horse').toString('base64');
  const alice = 'Basic ' + Buffer.from('alice:correct horse').toString('base64');
  const put = (name, type, body) => fetch(`${base}/drop/${name}`, {
    method: 'PUT', body, headers: { Authorization: bob, ...(type ? { 'Content-Type': type } : {}) },
  });
  const html = (mark) => `<!doctype html><title>hi</title><script>${payload(mark)}</script>`;
  // Lists of types are refused outright: nothing is stored to open.
  for (const type of ['text/plain,text/html', 'application/octet-stream,text/html']) {
    assert.equal((await put('listed.html', type, html('listed'))).status, 415, type);
  }
  const pages = [
    ['page.html', 'text/html', html('html')],
    ['style.xsl', 'text/xsl', `<?xml version="1.0"?><xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><xsl:template match="/"><html><body><script>${payload('xsl')}</script></body></html></xsl:template></xsl:stylesheet>`],
    ['picture.svg', 'image/svg+xml', `<svg xmlns="http://www.w3.org/2000/svg"><script>${payload('svg')}</script></svg>`],
    ['page.xhtml', 'application/xhtml+xml', `<html xmlns="http://www.w3.org/1999/xhtml"><body><script>${payload('xhtml').replace(/&/g, '&amp;').replace(/</g, '&lt;')}</script></body></html>`],
    ['notes.txt', null, html('txt')],
    ['data.bin', 'application/octet-stream', html('bin')],
    ['upper.html', 'TEXT/HTML; Charset=UTF-8', html('upper')],
  ];
  for (const [name, type, body] of pages) {
    assert.equal((await put(name, type, body)).status, 201, name);
  }
  const tokens = async () =>
    (await (await fetch(`${base}/.larder/tokens`, { headers: { Authorization: alice } })).json()).tokens.length;

  const { context, page } = await newPage();
  await page.goto(`${base}/drop/`);
  await signIn(page);
  await page.waitForSelector('#signed-in-as');
  const before = await tokens();
  // The control: the same script, run in larder's own page, does reach larder as alice.
  await page.evaluate(payload('control'));
  await page.waitForLoadState('networkidle');
  for (const [name] of pages) {
    await page.goto(`${base}/drop/`);
    // A browser shows a page, or saves what it cannot show (application/octet-stream).
    const opened = Promise.race([
      page.waitForEvent('load').then(() => 'shown'),
      page.waitForEvent('download').then(() => 'saved'),
    ]);
    await row(page, name).locator('td.name a').click();
    if ((await opened) === 'shown') {
      await page.waitForLoadState('networkidle');
      await screenshot(page, `hostile-${name}`);
    }
  }
  await context.close();
  const lines = fs.readFileSync(accessLog, 'utf8').split('\n');
  const reached = (mark) => lines.filter((l) => l.includes(`from=${mark}`) && l.includes('account=alice'));
  assert.equal(reached('control').length, 2, 'the payload works where it may run');
  for (const mark of ['html', 'xsl', 'svg', 'xhtml', 'txt', 'bin', 'upper']) {
    assert.deepEqual(reached(mark), [], `${mark}: reached larder with alice's credentials`);
  }
  // The control's own POST minted one token; none came from the pages.
  assert.equal(await tokens(), before + 1, 'no token minted by an uploaded page');
});

