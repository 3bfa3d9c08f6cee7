// helpers.js: real records for the unit tests, from the tempo binary on stories260K.
//
// TEMPO_RELEASE_BIN (set by `make test`) or build/tempo is the binary; the model is the shared
// stories260K. Nothing here is mocked: the records are what the engine produced.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const MODEL = resolve(ROOT, '../shared/models/stories260K.gguf');

export function tempoBin() {
  const bin = resolve(ROOT, process.env.TEMPO_RELEASE_BIN || 'build/tempo');
  if (!existsSync(bin)) throw new Error(`${bin} not found: run make first (or set TEMPO_RELEASE_BIN)`);
  return bin;
}

// Run the CLI with these flags and return its --output-json record.
export function cliRecord(...flags) {
  const out = execFileSync(tempoBin(), ['--model', MODEL, '--threads', '1', '--output-json', ...flags], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return JSON.parse(out);
}

// Run the CLI for its terminal text (no colour): returns stdout.
export function cliText(...flags) {
  return execFileSync(tempoBin(), ['--model', MODEL, '--threads', '1', '--no-color', ...flags], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export function cliHelp() {
  return execFileSync(tempoBin(), ['--help'], { encoding: 'utf8' });
}

// A record with pruned members: threshold 0.05 over 14 steps prunes several (checked by callers).
export const PRUNED_FLAGS = ['--prompt', 'Once upon a time', '--max-tokens', '14', '--selection-threshold', '0.05',
  '--use-retroactive-pruning'];

// The events of docs/server.md for a record: start, then per step its `step` event, preceded by
// the prune events of the pass that fed the previous set (here: each member's latest score).
export function eventsOf(record) {
  const events = [['start', { id: 'gen-test', prompt: record.prompt, n_prompt_tokens: record.metrics.prompt_tokens,
    max_parallel_tokens: record.config.max_parallel_tokens, config: record.config }]];
  for (const s of record.steps) {
    for (const e of record.steps) {
      e.tokens.forEach((t, j) => {
        if (t.scored_at_step === s.step - 1)
          events.push(['prune', { at_step: t.scored_at_step, step: e.step, member: j, token_id: t.token_id, score: t.prune_score, pruned: t.pruned }]);
      });
    }
    events.push(['step', { step: s.step, position: s.position, tokens: s.tokens.map(({ token_id, text, probability }) => ({ token_id, text, probability })) }]);
  }
  return events;
}
