// The graph has the run's true structure, composes branches into one tree, and is laid out left
// to right with each set in selection order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newRun, applyEvent, applyRecord } from '../src/run.js';
import { runGraph, composeGraph, layoutGraph } from '../src/graph.js';
import { cliRecord, eventsOf, PRUNED_FLAGS } from './helpers.js';

const record = cliRecord(...PRUNED_FLAGS);
const measure = (text, kind) => text.length * (kind === 'prob' ? 7 : 8);

function streamed(rec, id = 0, parent = null) {
  const run = newRun({ id, request: {}, parent });
  for (const [type, data] of eventsOf(rec)) applyEvent(run, type, data, 0);
  return run;
}

test('one token node per member, selected from its step\'s distribution, feeding the next', () => {
  const g = runGraph(streamed(record));
  const tokens = g.nodes.filter((n) => n.kind === 'token');
  assert.equal(tokens.length, record.steps.reduce((n, s) => n + s.tokens.length, 0));
  const edges = (kind) => g.edges.filter((e) => e.kind === kind);
  assert.equal(edges('select').length, tokens.length);
  for (const s of record.steps) {
    const feeds = edges('feed').filter((e) => e.target === `d${s.step + 1}`);
    if (s.step === record.steps.length - 1) {
      assert.equal(feeds.length, 0, 'the last set is not fed');
      continue;
    }
    assert.equal(feeds.length, s.tokens.length);
    assert.ok(Math.abs(feeds.reduce((a, e) => a + e.weight, 0) - 1) < 1e-6, 'mixture shares sum to 1');
    for (const e of feeds) assert.ok(e.source.startsWith(`s${s.step}m`));
  }
  // No edge joins two members: every edge goes through a distribution (or is a prune edge).
  for (const e of g.edges) assert.ok(e.kind === 'prune' || e.source.startsWith('d') || e.target.startsWith('d'));
  const pruned = tokens.filter((n) => n.pruned);
  assert.ok(pruned.length > 0);
  assert.equal(edges('prune').length, pruned.length);
  for (const n of pruned) assert.ok(edges('prune').some((e) => e.source === n.id && e.target === `d${n.pruned_at_step + 1}`));
});

test('a branch hangs off the member it continues; its replayed steps are its parent\'s nodes', () => {
  const parent = streamed(record);
  // The branch's record: another real run, used for its shape (steps after the branch point).
  const other = cliRecord('--max-tokens', '8', '--selection-threshold', '0.05');
  const branch = newRun({ id: 1, request: {}, parent: { run: 0, step: 2, member: 1, tokenId: 0 } });
  applyRecord(branch, other);
  const g = composeGraph([parent, branch]);
  const own = g.nodes.filter((n) => n.run === 1);
  assert.ok(own.every((n) => n.kind === 'dist' ? n.step >= 3 : n.step >= 3), 'only steps after the branch point are new');
  assert.equal(own.filter((n) => n.kind === 'token').length, other.steps.slice(3).reduce((n, s) => n + s.tokens.length, 0));
  assert.ok(g.edges.some((e) => e.source === 'r0:s2m1' && e.target === 'r1:d3' && e.kind === 'feed'), 'fork edge');
  assert.equal(new Set(g.nodes.map((n) => n.id)).size, g.nodes.length);
  for (const e of g.edges) {
    assert.ok(g.nodes.some((n) => n.id === e.source), `edge source ${e.source}`);
    assert.ok(g.nodes.some((n) => n.id === e.target), `edge target ${e.target}`);
  }
});

test('layout: columns left to right by step, each set top to bottom in selection order', () => {
  const run = streamed(record);
  const l = layoutGraph(composeGraph([run]), measure);
  const tokens = l.nodes.filter((n) => n.kind === 'token');
  const byStep = new Map();
  for (const n of tokens) byStep.set(n.step, [...(byStep.get(n.step) ?? []), n]);
  let lastX = -Infinity;
  for (const [, members] of [...byStep].sort((a, b) => a[0] - b[0])) {
    const x = members[0].x;
    assert.ok(members.every((n) => n.x === x), 'a set is one column');
    assert.ok(x > lastX, 'steps go left to right');
    lastX = x;
    const ys = [...members].sort((a, b) => a.member - b.member).map((n) => n.y);
    assert.deepEqual(ys, [...ys].sort((a, b) => a - b), 'selection order top to bottom');
  }
  for (const n of l.nodes) {
    assert.ok(n.x - n.width / 2 >= 0 && n.x + n.width / 2 <= l.width, `${n.id} inside the width`);
    assert.ok(n.y - n.height / 2 >= 0 && n.y + n.height / 2 <= l.height, `${n.id} inside the height`);
  }
  assert.equal(l.edges.length, composeGraph([run]).edges.length);
  for (const e of l.edges) assert.match(e.d, /^M[\d.]+,[\d.]+/);
});

test('after every event of a stream, the graph drawn so far is whole (every edge has both ends)', () => {
  const run = newRun({ id: 0, request: {} });
  for (const [type, data] of eventsOf(record)) {
    applyEvent(run, type, data, 0);
    const g = composeGraph([run]);
    const ids = new Set(g.nodes.map((n) => n.id));
    for (const e of g.edges) assert.ok(ids.has(e.source) && ids.has(e.target), `${type} event: edge ${e.id}`);
    const l = layoutGraph(g, measure);
    assert.ok(l.nodes.every((n) => Number.isFinite(n.x) && Number.isFinite(n.y)));
  }
});
