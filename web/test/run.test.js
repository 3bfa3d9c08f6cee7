// A run built from the stream's events holds what the record holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newRun, applyEvent, pathOf, tokenCount, memberKey } from '../src/run.js';
import { cliRecord, eventsOf, PRUNED_FLAGS } from './helpers.js';

test('steps and prune events rebuild the record\'s steps', () => {
  const record = cliRecord(...PRUNED_FLAGS);
  const run = newRun({ id: 0, request: {} });
  for (const [type, data] of eventsOf(record)) applyEvent(run, type, data, 0);
  assert.equal(run.steps.length, record.steps.length);
  for (const s of record.steps) {
    s.tokens.forEach((t, j) => {
      const m = run.steps[s.step].tokens[j];
      assert.equal(m.token_id, t.token_id);
      assert.equal(m.pruned, t.pruned, `${memberKey(s.step, j)} pruned`);
      assert.equal(m.pruned_at_step, t.pruned_at_step);
      assert.equal(m.prune_score, t.prune_score ?? null);
    });
  }
  assert.deepEqual(pathOf(run), record.steps.map((s) => s.tokens.map((t) => t.token_id)));
  assert.equal(tokenCount(run), record.metrics.total_slots - record.metrics.prompt_tokens);
  assert.equal(run.status, 'running');
  applyEvent(run, 'done', record, 1000);
  assert.equal(run.status, 'done');
  assert.equal(run.record, record);
});
