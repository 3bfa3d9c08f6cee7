// explorer.test.mjs: the TEMPO explorer in a real browser (Debian's chromium, headless, driven by
// playwright-core) against a real `tempo serve --port 0` on stories260K. Nothing is downloaded
// and nothing is mocked: every number on the page comes from the model.
//
//   node --test e2e/          (from web/; `make test` runs it through tests/test_web.c)
//
// TEMPO_BIN: the tempo binary (default build/tempo); CHROMIUM: the browser (default
// /usr/bin/chromium). Screenshots of the graph and text views go to build/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { stream } from '../src/api.js';
import { newRun, applyEvent } from '../src/run.js';
import { runGraph } from '../src/graph.js';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = resolve(WEB, '..');
const MODEL = resolve(ROOT, '../shared/models/stories260K.gguf');
const BIN = resolve(ROOT, process.env.TEMPO_BIN || 'build/tempo');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = resolve(ROOT, 'build/screenshots');
// Chromium's own background traffic is refused by a closed network; these flags keep it quiet.
// playwright-core adds --headless and a fresh temporary --user-data-dir for every launch.
const CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--no-first-run', '--disable-sync', '--disable-quic'];

let server; // the tempo serve process
let base; // http://127.0.0.1:PORT/
let browser;
const problems = []; // console errors and page errors, from every page of the run
let expectBadRequest = false; // true while a test provokes a 400 on purpose

// ------------------------------------------------------------------ set-up --

function startServer() {
  for (const [what, path, fix] of [
    ['tempo binary', BIN, 'run make first'],
    ['model', MODEL, 'the tests read ../shared/models/stories260K.gguf'],
    ['chromium', CHROMIUM, 'install it with: apt-get install chromium (or set CHROMIUM)'],
  ]) {
    if (!existsSync(path)) throw new Error(`${what} not found at ${path}: ${fix}`);
  }
  return new Promise((resolvePort, reject) => {
    const p = spawn(BIN, ['serve', '--model', MODEL, '--port', '0', '--threads', '1', '--parallel', '2'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => reject(new Error(`tempo serve exited (${code}) before listening:\n${stderr}`)));
    createInterface({ input: p.stdout }).on('line', (l) => {
      const m = /listening on (http:\/\/\S+)/.exec(l);
      if (m) resolvePort({ p, url: `${m[1]}/` });
    });
  });
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const s = await startServer();
  server = s.p;
  base = s.url;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

async function openPage(width, height) {
  const page = await browser.newPage({ viewport: { width, height } });
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // The browser logs every 4xx answer; the one the error test asks for is expected.
    if (expectBadRequest && /status of 400 \(Bad Request\)/.test(m.text())) return;
    problems.push(`console error at ${width}px: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error at ${width}px: ${e.message}`));
  await page.goto(base);
  await page.waitForSelector('#opt-prompt');
  return page;
}

// ----------------------------------------------------------------- helpers --

async function api(path, body) {
  const res = await fetch(new URL(path, base), body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

async function setOptions(page, opts) {
  for (const [key, value] of Object.entries(opts)) {
    const sel = `#opt-${key}`;
    const tag = await page.$eval(sel, (e) => `${e.tagName}:${e.type}`);
    if (tag === 'INPUT:checkbox') await page.setChecked(sel, value);
    else if (tag.startsWith('SELECT')) await page.selectOption(sel, String(value));
    else await page.fill(sel, String(value));
  }
}

// Wait until the current run (or branch) has ended.
async function waitDone(page, label = 'run') {
  await page.waitForFunction((l) => /: (done|stopped|error)$/.test(document.querySelector('#st-status').textContent)
    && document.querySelector('#st-status').textContent.startsWith(l), label, { timeout: 60000 });
  assert.match(await page.textContent('#st-status'), /: done$/);
}

// Scroll the section holding `heading` to the top of its scrolling area (for a screenshot).
async function showSection(page, heading) {
  await page.locator(heading).evaluate((e) => e.closest('section').scrollIntoView({ block: 'start' }));
}

async function download(page, button) {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  return { name: dl.suggestedFilename(), bytes: readFileSync(await dl.path()) };
}

// Member nodes per step of run `run`, as drawn.
async function drawnCounts(page, run) {
  const steps = await page.$$eval(`.node.token[data-run="${run}"]`, (els) => els.map((e) => Number(e.dataset.step)));
  const counts = [];
  for (const s of steps) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

// Accessibility rules of WCAG 2 A/AA (contrast, labels, keyboard names), checked by axe-core.
async function checkAccessibility(page, where) {
  await page.addScriptTag({ path: resolve(WEB, 'node_modules/axe-core/axe.min.js') });
  const result = await page.evaluate(() => window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] }));
  const found = result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')})`);
  assert.deepEqual(found, [], `accessibility problems at ${where}`);
}

// ------------------------------------------------------------------- tests --

const RUN = { prompt: 'Once upon a time', max_tokens: 10, selection_threshold: 0.05, use_retroactive_pruning: true };
let page; // the 1280x800 page, shared by the tests that follow one another
let record; // its run's JSON record, as exported by the page

test('the page loads with its option form and no console errors', async () => {
  page = await openPage(1280, 800);
  assert.equal(await page.title(), 'TEMPO explorer');
  assert.equal(await page.inputValue('#opt-selection_threshold'), '0.1');
  assert.match(await page.textContent('#hint-selection_threshold'), /default 0\.1 · range \[0, 1\]/);
  await page.waitForFunction(() => /free/.test(document.querySelector('#st-sessions').textContent));
  // The seed means something only in the sampling comparison run (TEMPO selection takes none).
  assert.equal(await page.isDisabled('#opt-seed'), true);
  await page.selectOption('#opt-compare', 'sampling');
  assert.equal(await page.isDisabled('#opt-seed'), false);
  await page.selectOption('#opt-compare', 'none');
  assert.deepEqual(problems, []);
});

test('a generation (Ctrl+Enter) draws exactly the members the record holds, pruned ones marked', async () => {
  await setOptions(page, { ...RUN, compare: 'greedy' });
  await page.focus('#opt-prompt');
  await page.keyboard.press('Control+Enter');
  await waitDone(page);
  const json = await download(page, '#export-json');
  assert.match(json.name, /^gen-.*\.json$/);
  record = JSON.parse(json.bytes.toString('utf8'));
  assert.equal(record.steps.length, RUN.max_tokens);
  assert.equal(record.config.selection_threshold, RUN.selection_threshold);

  // The same request sent directly gives the same sets: the page sent what its form shows.
  const direct = await api('api/generate', RUN);
  assert.equal(direct.status, 200);
  assert.deepEqual(record.steps.map((s) => s.tokens.map((t) => t.token_id)), direct.json.steps.map((s) => s.tokens.map((t) => t.token_id)));

  assert.deepEqual(await drawnCounts(page, 0), record.steps.map((s) => s.tokens.length));
  const pruned = record.steps.flatMap((s) => s.tokens.map((t, j) => ({ ...t, step: s.step, member: j }))).filter((t) => t.pruned);
  assert.ok(pruned.length > 0, 'this run prunes members');
  const marked = await page.$$eval('.node.token.pruned', (els) => els.map((e) => `${e.dataset.step}/${e.dataset.member}@${e.dataset.prunedAt}`));
  assert.deepEqual(marked.sort(), pruned.map((t) => `${t.step}/${t.member}@${t.pruned_at_step}`).sort());
  // A pruned member's label carries the step that pruned it.
  const label = await page.textContent(`.node.token[data-step="${pruned[0].step}"][data-member="${pruned[0].member}"] .prob`);
  assert.ok(label.endsWith(`\u2715${pruned[0].pruned_at_step}`), label);

  // Texts: the engine's bracket and clean text; the greedy run is the server's greedy run.
  assert.equal(await page.textContent('#bracket'), record.generated_text);
  assert.equal(await page.textContent('#clean'), record.clean_text);
  const greedy = await api('api/generate', { ...RUN, max_parallel_tokens: 1 });
  await page.waitForFunction(() => !/running/.test(document.querySelector('#compare').textContent));
  assert.equal(await page.textContent('#compare'), greedy.json.clean_text);
  assert.equal(await page.textContent('#st-stop'), 'max_tokens');
  assert.equal(await page.textContent('#st-steps'), String(RUN.max_tokens));

  // Hovering a member shows its id, probability and pruning score.
  const p = pruned[pruned.length - 1];
  await page.hover(`.node.token[data-step="${p.step}"][data-member="${p.member}"]`);
  const tip = await page.textContent('#graph-tooltip');
  assert.ok(tip.includes(`id ${p.token_id}`) && tip.includes(p.probability.toFixed(6)), tip);
  assert.ok(tip.includes(`pruned by the pass at step ${p.pruned_at_step}`), tip);
  assert.ok(tip.includes(`score at step ${p.scored_at_step}`) && tip.includes(p.prune_score.toFixed(5)), tip);
  await page.mouse.move(0, 0);

  // Zoom and pan: the buttons and the keys change the view's transform.
  const view = () => page.getAttribute('#graph .viewport', 'transform');
  const scale = async () => Number(/scale\(([\d.]+)/.exec(await view())[1]);
  const before = await scale();
  await page.click('#zoom-in');
  assert.ok(await scale() > before * 1.2, 'zoom in');
  await page.focus('#graph svg');
  const t0 = await view();
  await page.keyboard.press('ArrowLeft');
  assert.notEqual(await view(), t0, 'arrow keys pan');
  await page.click('#zoom-fit');

  await page.screenshot({ path: resolve(SHOTS, 'graph-1280.png') });
  await showSection(page, '#text-title');
  await page.screenshot({ path: resolve(SHOTS, 'text-1280.png') });
  await showSection(page, '#graph-title');
  await checkAccessibility(page, '1280 px after a run');
});

test('the graph exports as SVG and PNG', async () => {
  const svg = await download(page, '#export-svg');
  const text = svg.bytes.toString('utf8');
  assert.match(text, /^<svg[^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal((text.match(/class="node token/g) ?? []).length, record.steps.reduce((n, s) => n + s.tokens.length, 0));
  const png = await download(page, '#export-png');
  assert.deepEqual([...png.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(png.bytes.length > 2000);
  writeFileSync(resolve(SHOTS, 'export.png'), png.bytes);
});

test('clicking a member continues from it: a second branch whose first token is that member', async () => {
  // A member that is not its set's first, drawn inside the visible graph, near the middle of the
  // run (so that the branch has steps of its own).
  const target = await page.evaluate(() => {
    const box = document.querySelector('#graph').getBoundingClientRect();
    let best = null;
    for (const e of document.querySelectorAll('.node.token[data-run="0"]:not(.pruned)')) {
      const r = e.getBoundingClientRect();
      const t = { step: Number(e.dataset.step), member: Number(e.dataset.member), tokenId: Number(e.dataset.tokenId) };
      if (t.member > 0 && r.left > box.left && r.right < box.right && r.top > box.top && r.bottom < box.bottom
          && (!best || Math.abs(t.step - 4) < Math.abs(best.step - 4))) best = t;
    }
    return best;
  });
  assert.ok(target, 'a visible second member to click');
  await page.click(`.node.token[data-run="0"][data-step="${target.step}"][data-member="${target.member}"]`);
  await waitDone(page, 'branch 1');
  const branch = JSON.parse((await download(page, '#export-json')).bytes.toString('utf8'));
  assert.deepEqual(branch.steps[target.step].tokens.map((t) => t.token_id), [target.tokenId]);
  for (let k = 0; k < target.step; k++)
    assert.deepEqual(branch.steps[k].tokens.map((t) => t.token_id), record.steps[k].tokens.map((t) => t.token_id), `replayed step ${k}`);
  // Drawn beside the old run: the branch's own steps hang off the clicked member, and the
  // original run is still there.
  const counts = await drawnCounts(page, 1);
  assert.equal(counts.slice(0, target.step + 1).filter(Boolean).length, 0, 'replayed steps are the parent\'s nodes');
  assert.deepEqual(counts.slice(target.step + 1), branch.steps.slice(target.step + 1).map((s) => s.tokens.length));
  assert.deepEqual(await drawnCounts(page, 0), record.steps.map((s) => s.tokens.length));
  assert.equal(await page.locator('#runs .run-item').count(), 2);
  assert.equal(await page.textContent('#clean'), branch.clean_text);
  await page.evaluate(() => document.querySelector('main').scrollTo(0, 0));
  await page.screenshot({ path: resolve(SHOTS, 'branch-1280.png') });
});

test('an out-of-range threshold shows the server\'s message next to the control', async () => {
  const direct = await api('api/generate/stream', { ...RUN, selection_threshold: 2 });
  assert.equal(direct.status, 400);
  assert.equal(direct.json.error.param, 'selection_threshold');
  await setOptions(page, { selection_threshold: '2' });
  expectBadRequest = true;
  await page.click('#generate');
  const err = page.locator('#err-selection_threshold');
  await err.waitFor({ state: 'visible' });
  expectBadRequest = false;
  assert.equal(await err.textContent(), direct.json.error.message);
  assert.equal(await page.getAttribute('#opt-selection_threshold', 'aria-invalid'), 'true');
  // The refused request left the last results in place.
  assert.equal(await page.locator('#runs .run-item').count(), 2);
  await setOptions(page, { selection_threshold: '0.1' });
  assert.equal(await err.isVisible(), false);
});

test('steps stream in as the server makes them, and Stop frees the session on the server', async () => {
  // A slow run: no KV cache, so each step recomputes every earlier slot.
  await setOptions(page, { max_tokens: 500, min_steps: 500, selection_threshold: 0.1, use_retroactive_pruning: false,
    max_parallel_tokens: 1, disable_kv_cache: true, compare: 'none' });
  await page.click('#generate');
  // Checked in one go inside the page: members drawn while the run is still running.
  await page.waitForFunction(() => document.querySelector('#st-status').textContent === 'run: running'
    && document.querySelectorAll('.node.token').length >= 3);
  assert.ok((await api('health')).json.sessions.busy >= 1, 'the run holds a session');
  await page.click('#stop');
  await page.waitForFunction(() => /stopped$/.test(document.querySelector('#st-status').textContent));
  const t0 = Date.now();
  let h;
  do {
    h = (await api('health')).json;
    if (h.sessions.busy === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() - t0 < 5000);
  assert.equal(h.sessions.busy, 0, 'the server freed the session');
  assert.equal(h.sessions.free, h.sessions.parallel);
  assert.ok(Number(await page.textContent('#st-steps')) < 500, 'stopped before the end');
  assert.match(await page.textContent('#st-mem'), /of 36\.00 GB/);
});

test('phone width (390 px): no sideways scrolling, readable, keyboard reaches the members', async () => {
  const phone = await openPage(390, 844);
  await setOptions(phone, { max_tokens: 6, selection_threshold: 0.05 });
  await phone.click('#generate');
  await waitDone(phone);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(overflow, 0, 'the page is no wider than the screen');
  const node = phone.locator('.node.token[data-step="1"][data-member="1"]');
  await node.focus();
  assert.equal(await phone.isVisible('#graph-tooltip'), true, 'focus shows the tooltip');
  await node.blur();
  await showSection(phone, '#graph-title');
  await phone.screenshot({ path: resolve(SHOTS, 'graph-390.png') });
  await showSection(phone, '#text-title');
  await phone.screenshot({ path: resolve(SHOTS, 'text-390.png') });
  await checkAccessibility(phone, '390 px after a run');
  await phone.close();
});

test('the graph the page builds from streamed events is the server\'s graph of the record', async () => {
  // While a run streams the page draws the graph from its steps and prune events (graph.js);
  // when the record arrives it draws the server's. Both must be the same structure.
  const run = newRun({ id: 0, request: RUN });
  let record = null;
  await stream(new URL('api/generate/stream', base).href, { ...RUN, max_tokens: 14 }, (type, data) => {
    if (type === 'done') record = data;
    else applyEvent(run, type, data, 0);
  });
  assert.ok(record && record.steps.some((st) => st.tokens.some((t) => t.pruned)), 'a run with pruning');
  const mine = runGraph(run);
  const key = (e) => `${e.source}>${e.target}:${e.kind}`;
  assert.deepEqual(mine.nodes.map((n) => n.id).sort(), record.graph.nodes.map((n) => n.id).sort());
  assert.deepEqual(mine.edges.map(key).sort(), record.graph.edges.map(key).sort());
  const weights = new Map(record.graph.edges.map((e) => [key(e), e.weight]));
  for (const e of mine.edges) assert.ok(Math.abs(e.weight - weights.get(key(e))) < 1e-6, `weight of ${key(e)}`);
});

test('no console errors on any page', () => {
  assert.deepEqual(problems, []);
});
