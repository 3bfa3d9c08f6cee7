// main.js: the TEMPO explorer page. Builds the option form, runs generations (streamed), branches
// from a clicked member, and keeps the graph, the texts and the live numbers up to date.
//
// State: `runs` is the current tree: runs[0] is the TEMPO run that Generate started, every other
// entry a branch of an earlier run; `current` is the run the text, numbers and JSON export show.
// `comparison` is the greedy or sampling run of the same prompt, if one was asked for.

import './style.css';
import { OPTIONS, GROUPS, OPTION_BY_KEY, defaultValues, isEnabled, rangeText, tempoRequest, comparisonRequest } from './options.js';
import { ApiError, generateStream, branchStream, generate, health, setApiKey } from './api.js';
import { newRun, applyEvent, applyRecord, pathOf, tokenCount, stepsPerSecond, stopReason } from './run.js';
import { composeGraph, layoutGraph } from './graph.js';
import { createGraphView } from './graphview.js';
import { bracketSegments, cleanText, MEMBER_COLOURS } from './text.js';

const $ = (id) => document.getElementById(id);

let runs = [];
let current = null;
let comparison = null;
let active = null; // { controller, run } of the request in flight
let compareController = null;

// ---------------------------------------------------------------- the form --

const inputs = new Map(); // option key -> its input element

function buildForm() {
  const values = defaultValues();
  const root = $('fields');
  for (const group of GROUPS) {
    const fs = document.createElement('fieldset');
    fs.className = `group group-${group.id}`;
    const legend = document.createElement('legend');
    legend.textContent = group.title;
    fs.appendChild(legend);
    for (const o of OPTIONS.filter((x) => x.group === group.id)) fs.appendChild(field(o, values[o.key]));
    root.appendChild(fs);
  }
  updateEnabled();
}

function field(o, value) {
  const div = document.createElement('div');
  div.className = `field field-${o.type}`;
  div.dataset.key = o.key;
  const id = `opt-${o.key}`;
  let input;
  if (o.type === 'bool') {
    input = document.createElement('input');
    input.type = 'checkbox';
    input.checked = value;
  } else if (o.type === 'choice') {
    input = document.createElement('select');
    for (const [v, text] of o.choices) input.add(new Option(text, v, v === value, v === value));
  } else if (o.multiline) {
    input = document.createElement('textarea');
    input.rows = 3;
    input.value = value;
  } else {
    input = document.createElement('input');
    if (o.type === 'int' || o.type === 'float') {
      input.type = 'number';
      input.step = o.type === 'int' ? '1' : (o.step ?? 'any');
      if (o.min !== undefined) input.min = o.min;
      if (o.max !== undefined) input.max = o.max;
    } else {
      input.type = o.secret ? 'password' : 'text';
      input.autocomplete = 'off';
    }
    input.value = value;
    if (o.auto !== undefined) input.placeholder = o.auto;
  }
  input.id = id;
  input.name = o.key;
  input.setAttribute('aria-describedby', `hint-${o.key} err-${o.key}`);
  input.addEventListener('input', () => {
    clearFieldError(o.key);
    updateEnabled();
  });
  input.addEventListener('change', updateEnabled);
  inputs.set(o.key, input);

  const label = document.createElement('label');
  label.htmlFor = id;
  label.innerHTML = `<span>${o.label}</span>`;
  if (!o.pageOnly) label.insertAdjacentHTML('beforeend', ` <code>${o.key}</code>`);
  if (o.type === 'bool') {
    label.prepend(input);
    div.appendChild(label);
  } else {
    div.append(label, input);
  }
  const hint = document.createElement('small');
  hint.id = `hint-${o.key}`;
  hint.className = 'hint';
  const def = o.type === 'bool' ? (o.def ? 'on' : 'off') : o.auto !== undefined ? o.auto : o.type === 'choice' ? null : o.def;
  hint.textContent = [o.help, def !== null && def !== '' ? `default ${def}` : null, rangeText(o) ? `range ${rangeText(o)}` : null]
    .filter(Boolean)
    .join(' · ');
  const err = document.createElement('p');
  err.id = `err-${o.key}`;
  err.className = 'field-error';
  err.setAttribute('role', 'alert');
  err.hidden = true;
  div.append(hint, err);
  return div;
}

function formValues() {
  const v = {};
  for (const [key, input] of inputs) v[key] = OPTION_BY_KEY[key].type === 'bool' ? input.checked : input.value;
  return v;
}

function updateEnabled() {
  const values = formValues();
  for (const o of OPTIONS) {
    const on = isEnabled(o, values);
    inputs.get(o.key).disabled = !on;
    inputs.get(o.key).closest('.field').classList.toggle('off', !on);
  }
}

function clearFieldError(key) {
  const err = $(`err-${key}`);
  if (!err) return;
  err.hidden = true;
  err.textContent = '';
  inputs.get(key).removeAttribute('aria-invalid');
}

function clearErrors() {
  for (const key of inputs.keys()) clearFieldError(key);
  $('form-error').hidden = true;
  $('form-error').textContent = '';
}

// Show the server's message next to the control it names (or under the buttons).
function showError(err) {
  const message = err.message || String(err);
  const param = err.status === 401 ? 'api_key' : err.param;
  if (param && inputs.has(param)) {
    const box = $(`err-${param}`);
    box.textContent = message;
    box.hidden = false;
    const input = inputs.get(param);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
  $('form-error').textContent = message;
  $('form-error').hidden = false;
}

// ------------------------------------------------------------------ running --

function setBusy(busy) {
  $('stop').disabled = !busy;
  document.body.classList.toggle('busy', busy);
}

async function startGenerate() {
  stopActive();
  clearErrors();
  const values = formValues();
  setApiKey(values.api_key);
  const body = tempoRequest(values);
  const run = newRun({ id: 0, request: body });
  // The old tree stays until the server has accepted the new request: a refused one (a bad
  // value) shows its message and leaves the last results in place.
  const accepted = () => {
    runs = [run];
    current = run;
    comparison = null;
    graphView.clear();
    graphView.setFollow(true);
    startComparison(values);
  };
  await follow(run, accepted, (onEvent, signal) => generateStream(body, onEvent, signal));
}

// Continue `runId` from member `member` of step `step`: a new branch, streamed.
async function startBranch(runId, step, member) {
  const from = runs[runId];
  if (!from?.steps[step]) return;
  stopActive();
  clearErrors();
  setApiKey(formValues().api_key);
  const tokenId = from.steps[step].tokens[member].token_id;
  const run = newRun({ id: runs.length, request: from.request, parent: { run: runId, step, member, tokenId } });
  const accepted = () => {
    runs.push(run);
    current = run;
    graphView.setFollow(true);
  };
  const path = pathOf(from).slice(0, step);
  await follow(run, accepted, (onEvent, signal) => branchStream(from.request, path, step, tokenId, onEvent, signal));
}

// Run one streamed request into `run`, redrawing as events arrive; accepted() runs when the
// server has started it (its `start` event).
async function follow(run, accepted, open) {
  const controller = new AbortController();
  active = { controller, run };
  setBusy(true);
  pollHealth();
  try {
    await open((type, data) => {
      if (type === 'start') accepted();
      applyEvent(run, type, data, performance.now());
      scheduleRender(type === 'done');
    }, controller.signal);
    if (run.status === 'running') {
      run.status = 'error';
      run.error = new ApiError('the stream ended without a result');
    }
  } catch (err) {
    if (err.name === 'AbortError') {
      run.status = 'stopped';
      run.endedAt = performance.now();
    } else {
      run.status = 'error';
      run.error = err;
      showError(err);
    }
  } finally {
    if (active?.controller === controller) {
      active = null;
      setBusy(false);
    }
    scheduleRender(true);
    pollHealth();
  }
}

async function startComparison(values) {
  const body = comparisonRequest(values);
  if (!body) return;
  compareController = new AbortController();
  const run = newRun({ id: -1, request: body });
  comparison = run;
  scheduleRender(false);
  try {
    applyRecord(run, await generate(body, compareController.signal));
  } catch (err) {
    if (err.name === 'AbortError') run.status = 'stopped';
    else {
      run.status = 'error';
      run.error = err;
      showError(err);
    }
  }
  scheduleRender(true);
}

// Stop: close the connections; the server cancels their sessions within one step.
function stopActive() {
  if (active) active.controller.abort();
  if (compareController) compareController.abort();
  compareController = null;
}

// ---------------------------------------------------------------- rendering --

let renderQueued = false;
let graphDirty = false;
let lastGraphAt = 0;

// Redraw on the next frame. The graph's layout is the costly part: while a run streams it is
// redone at most five times a second, and at once when `now` (a run ended).
function scheduleRender(now) {
  graphDirty = true;
  if (now) lastGraphAt = 0;
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderAll();
  });
}

let graphTimer = null;

function renderAll() {
  const wait = lastGraphAt + 200 - performance.now();
  if (graphDirty && wait <= 0) {
    graphDirty = false;
    lastGraphAt = performance.now();
    renderGraph();
  } else if (graphDirty && graphTimer === null) {
    graphTimer = setTimeout(() => {
      graphTimer = null;
      scheduleRender(false);
    }, wait);
  }
  renderText();
  renderStats();
  renderRuns();
}

const measureCtx = document.createElement('canvas').getContext('2d');
const FONTS = {
  token: "13px 'DejaVu Sans Mono', ui-monospace, monospace",
  prob: "11px 'DejaVu Sans Mono', ui-monospace, monospace",
  prompt: "13px 'DejaVu Sans Mono', ui-monospace, monospace",
};
function measure(text, kind) {
  measureCtx.font = FONTS[kind];
  return Math.ceil(measureCtx.measureText(text).width);
}

function renderGraph() {
  const shown = runs.filter((r) => r.steps.length > 0 || r.prompt !== null);
  const has = shown.length > 0;
  for (const id of ['export-svg', 'export-png']) $(id).disabled = !has;
  $('export-json').disabled = !current || current.steps.length === 0;
  if (!has) return;
  graphView.render(layoutGraph(composeGraph(shown), measure));
}

function runLabel(id) {
  return id === 0 ? 'run' : `branch ${id}`;
}

function renderSegments(pre, segments) {
  pre.replaceChildren();
  for (const s of segments) {
    const span = document.createElement('span');
    span.textContent = s.text;
    if (s.kind === 'prompt') span.className = 'prompt-text';
    else if (s.kind === 'mark') span.className = 'mark';
    else {
      const classes = [];
      if (s.colour !== null) classes.push(`t-${MEMBER_COLOURS[s.colour]}`);
      if (s.pruned) classes.push('t-pruned');
      span.className = classes.join(' ');
      span.title = `step ${s.step}, member ${s.member}, token ${s.tokenId}${s.pruned ? ', pruned' : ''}`;
    }
    pre.appendChild(span);
  }
}

function renderText() {
  const opts = { showPruned: $('show-pruned').checked, showIds: $('show-ids').checked };
  const run = current;
  renderSegments($('bracket'), run ? bracketSegments(run.prompt ?? '', run.steps, opts) : []);
  $('clean').textContent = run ? cleanText(run.prompt ?? '', run.steps) : '';
  const col = $('compare-col');
  col.hidden = !comparison;
  if (comparison) {
    const greedy = comparison.request.default_mode !== true;
    const r = comparison.request;
    $('compare-title').textContent = greedy
      ? 'Greedy (max_parallel_tokens 1)'
      : `Sampling (temperature ${r.temperature ?? 'default'}, seed ${r.seed ?? 'default'})`;
    $('compare').textContent =
      comparison.status === 'running' ? 'running…' : comparison.error ? comparison.error.message : cleanText(comparison.prompt ?? '', comparison.steps);
  }
}

function renderStats() {
  const run = current;
  const now = performance.now();
  $('st-status').textContent = run ? `${runLabel(run.id)}: ${run.status}` : 'idle';
  $('st-steps').textContent = run ? String(run.steps.filter(Boolean).length) : '–';
  $('st-tokens').textContent = run ? String(tokenCount(run)) : '–';
  const rate = run ? stepsPerSecond(run, now) : null;
  $('st-rate').textContent = rate === null ? '–' : rate >= 100 ? rate.toFixed(0) : rate.toFixed(1);
  $('st-width').textContent = run?.width ?? '–';
  $('st-stop').textContent = (run && stopReason(run)) ?? '–';
}

function renderRuns() {
  const list = $('runs');
  list.replaceChildren();
  for (const run of runs) {
    const li = document.createElement('li');
    li.className = 'run-item';
    li.dataset.run = run.id;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'run-select';
    if (run === current) button.setAttribute('aria-current', 'true');
    let what = run.id === 0 ? 'Run' : `Branch ${run.id}`;
    if (run.parent) {
      const t = runs[run.parent.run].steps[run.parent.step]?.tokens[run.parent.member];
      what += `: ${runLabel(run.parent.run)}, step ${run.parent.step} → ${JSON.stringify(t?.text ?? '')}`;
    }
    button.textContent = `${what} · ${run.steps.length} steps · ${stopReason(run) ?? run.status}`;
    button.addEventListener('click', () => {
      current = run;
      scheduleRender(false);
    });
    const text = document.createElement('p');
    text.className = 'run-text';
    text.textContent = cleanText(run.prompt ?? '', run.steps);
    li.append(button, text);
    list.appendChild(li);
  }
}

// ------------------------------------------------------------------- health --

let healthTimer = null;
async function pollHealth() {
  clearTimeout(healthTimer);
  try {
    const h = await health();
    $('model').textContent = h.model ?? '';
    const m = h.memory ?? {};
    if (m.limit_gb) {
      $('st-meter').value = Math.min(1, m.used_gb / m.limit_gb);
      $('st-mem').textContent = `${fmtGb(m.used_gb)} of ${fmtGb(m.limit_gb)}`;
    }
    const s = h.sessions ?? {};
    $('st-sessions').textContent = `${s.busy ?? 0} busy, ${s.free ?? 0} free${s.queued ? `, ${s.queued} queued` : ''}`;
  } catch {
    $('st-sessions').textContent = 'server unreachable';
  }
  healthTimer = setTimeout(pollHealth, active ? 500 : 3000);
}

function fmtGb(gb) {
  return gb >= 1 ? `${gb.toFixed(2)} GB` : `${(gb * 1024).toFixed(1)} MB`;
}

// ------------------------------------------------------------------- export --

function download(name, blob) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function exportName(ext) {
  const id = current?.serverId ?? 'tempo';
  return `${id}${current && current.id > 0 ? `-branch${current.id}` : ''}.${ext}`;
}

// ------------------------------------------------------------------- wiring --

const graphView = createGraphView($('graph'), { onBranch: startBranch, runLabel });

buildForm();
$('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  startGenerate();
});
document.addEventListener('keydown', (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter') {
    ev.preventDefault();
    startGenerate();
  }
});
$('stop').addEventListener('click', stopActive);
$('zoom-in').addEventListener('click', () => graphView.zoomBy(1.25));
$('zoom-out').addEventListener('click', () => graphView.zoomBy(0.8));
$('zoom-fit').addEventListener('click', () => graphView.fit());
$('show-pruned').addEventListener('change', () => scheduleRender(false));
$('show-ids').addEventListener('change', () => scheduleRender(false));
$('export-json').addEventListener('click', () => {
  if (!current) return;
  const doc = current.record ?? { prompt: current.prompt, steps: current.steps, stop_reason: stopReason(current) };
  download(exportName('json'), new Blob([JSON.stringify(doc, null, 2)], { type: 'application/json' }));
});
$('export-svg').addEventListener('click', () => {
  const text = graphView.svgText();
  if (text) download(exportName('svg'), new Blob([text], { type: 'image/svg+xml' }));
});
$('export-png').addEventListener('click', async () => {
  const blob = await graphView.pngBlob();
  if (blob) download(exportName('png'), blob);
});
pollHealth();
