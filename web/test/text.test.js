// The page's texts are the engine's: bracket text = generated_text, clean text = clean_text, on
// real runs with pruned members, and with token ids.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bracketText, bracketSegments, cleanText, MEMBER_COLOURS } from '../src/text.js';
import { cliRecord, cliText, PRUNED_FLAGS } from './helpers.js';

const pruned = cliRecord(...PRUNED_FLAGS);

test('the run used for the text tests has pruned members', () => {
  assert.ok(pruned.steps.some((s) => s.tokens.some((t) => t.pruned)));
});

test('bracket text and clean text equal the engine\'s generated_text and clean_text', () => {
  assert.equal(bracketText(pruned.prompt, pruned.steps), pruned.generated_text);
  assert.equal(cleanText(pruned.prompt, pruned.steps), pruned.clean_text);
  const plain = cliRecord('--max-tokens', '20', '--selection-threshold', '0.1');
  assert.equal(bracketText(plain.prompt, plain.steps), plain.generated_text);
  assert.equal(cleanText(plain.prompt, plain.steps), plain.clean_text);
});

test('with token ids, the texts the terminal shows before and after pruning', () => {
  // The CLI streams every member as it is selected, then prints "[after pruning]" and the text
  // without the pruned members.
  const [streamedText, afterPruning] = cliText(...PRUNED_FLAGS, '--show-token-ids').split('\n\n[after pruning]\n');
  assert.equal(bracketText(pruned.prompt, pruned.steps, { showIds: true, showPruned: true }), streamedText);
  assert.equal(bracketText(pruned.prompt, pruned.steps, { showIds: true }), afterPruning.trimEnd());
});

test('members are coloured by their index in the set; pruned ones are shown only on request', () => {
  const segs = bracketSegments(pruned.prompt, pruned.steps);
  assert.equal(segs.some((s) => s.pruned), false);
  const all = bracketSegments(pruned.prompt, pruned.steps, { showPruned: true });
  const members = all.filter((s) => s.kind === 'member');
  assert.equal(members.length, pruned.steps.reduce((n, s) => n + s.tokens.length, 0));
  for (const m of members) {
    const set = pruned.steps[m.step].tokens;
    assert.equal(m.colour, set.length > 1 ? m.member % MEMBER_COLOURS.length : null);
    assert.equal(m.pruned, set[m.member].pruned);
  }
});
