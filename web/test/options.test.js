// The page's option table is the CLI's: names, types, defaults and ranges; and the bodies the
// page sends hold what the form shows and nothing the server would refuse in that mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OPTIONS, defaultValues, tempoRequest, comparisonRequest, rangeText } from '../src/options.js';
import { cliHelp, cliRecord } from './helpers.js';

// "--selection-threshold X   keep every ... (default: 0.1) [[0, 1]]" -> { key, arg, def, range }
function helpOptions() {
  const out = new Map();
  for (const line of cliHelp().split('\n')) {
    const m = /^ {2}--([a-z0-9-]+)(?: (N|X|TEXT))?\s+(.*)$/.exec(line);
    if (!m) continue;
    const def = /\(default: ([^)]*)\)/.exec(m[3]);
    const range = /\[(\[.*[\])]|>= [^\]]+|[a-z0-9_, ]+)\]$/.exec(m[3]);
    out.set(m[1].replace(/-/g, '_'), { arg: m[2] ?? null, def: def ? def[1] : null, range: range ? range[1] : null });
  }
  return out;
}

test('every page option exists in the CLI with the same type, default and range', () => {
  const help = helpOptions();
  const config = cliRecord('--max-tokens', '1').config; // every option's effective default
  for (const o of OPTIONS.filter((x) => !x.pageOnly)) {
    const h = help.get(o.key);
    assert.ok(h, `${o.key} is not an option of build/tempo --help`);
    const arg = { int: 'N', float: 'X', text: 'TEXT', bool: null }[o.type];
    if (o.type === 'choice') {
      // A choice is either a flag pair shown as two values, or an enum of the CLI.
      if (o.choices.every(([v]) => v === 'true' || v === 'false')) assert.equal(h.arg, null, `${o.key} is a flag`);
      else assert.deepEqual(h.range, o.choices.map(([v]) => v).join(', '), `${o.key} choices`);
    } else {
      assert.equal(h.arg, arg, `${o.key}: type`);
    }
    if (o.type === 'int' || o.type === 'float') assert.equal(h.range, rangeText(o), `${o.key}: range`);
    // Defaults: the page's, against the value the CLI runs with when the option is not given.
    if (o.auto !== undefined || o.key === 'max_tokens') continue;
    const expected = config[o.key];
    if (o.type === 'bool') assert.equal(o.def, expected, `${o.key}: default`);
    else if (o.type === 'choice') assert.equal(String(o.def), String(expected), `${o.key}: default`);
    else if (o.type === 'text') assert.equal(o.def, expected ?? '', `${o.key}: default`);
    else assert.equal(Number(o.def), expected, `${o.key}: default`);
  }
  assert.equal(OPTIONS.find((o) => o.key === 'max_tokens').def, help.get('max_tokens').def);
});

test('every TEMPO option of the CLI has a control', () => {
  // The CLI's options that the page leaves out, and why: the model's own (fixed when the server
  // loads it), output formatting of the terminal (the page has its own views), logging.
  const notPerRequest = ['model', 'threads', 'kv_cache_type', 'max_memory_gb', 'kv_offload', 'device', 'gpu_layers', 'output_json', 'output_dir',
    'no_color', 'show_token_ids', 'debug_mode', 'config', 'help', 'version',
    'isolate', // the "Siblings" choice: isolated is allow_intraset_token_visibility false
    'default_mode']; // the comparison run sets it
  const page = new Set(OPTIONS.map((o) => o.key));
  for (const key of helpOptions().keys()) {
    if (notPerRequest.includes(key)) continue;
    assert.ok(page.has(key), `the page has no control for --${key.replace(/_/g, '-')}`);
  }
});

test('the default TEMPO request holds the defaults of the enabled options only', () => {
  assert.deepEqual(tempoRequest(defaultValues()), {
    prompt: 'Once upon a time',
    max_tokens: 100,
    min_steps: 0,
    enable_thinking: false,
    selection_threshold: 0.1,
    allow_intraset_token_visibility: false,
    use_retroactive_pruning: false,
    dynamic_threshold: false,
    use_mcts: false,
    memory_policy: 'stop',
    disable_kv_cache: false,
  });
});

test('sub-options are sent with their switch, and numbers as JSON numbers', () => {
  const v = { ...defaultValues(), use_retroactive_pruning: true, no_relative_attention: 'true', attention_threshold: '0.02',
    dynamic_threshold: true, use_relu: 'true', relu_activation_point: '0.25', max_parallel_tokens: '3' };
  const body = tempoRequest(v);
  assert.equal(body.attention_threshold, 0.02);
  assert.equal(body.no_relative_attention, true);
  assert.equal('relative_threshold' in body, false);
  assert.equal(body.use_relu, true);
  assert.equal(body.relu_activation_point, 0.25);
  assert.equal('bezier_p1' in body, false);
  assert.equal(body.max_parallel_tokens, 3);
  assert.equal('seed' in body, false, 'TEMPO runs take no seed');
});

test('a value that is not a number goes to the server as typed, so its message names it', () => {
  assert.equal(tempoRequest({ ...defaultValues(), selection_threshold: 'abc' }).selection_threshold, 'abc');
  assert.equal(tempoRequest({ ...defaultValues(), selection_threshold: '2' }).selection_threshold, 2);
});

test('comparison runs: greedy is one member per step, sampling is default_mode with the seed', () => {
  assert.equal(comparisonRequest(defaultValues()), null);
  const greedy = comparisonRequest({ ...defaultValues(), compare: 'greedy' });
  assert.equal(greedy.max_parallel_tokens, 1);
  assert.equal('seed' in greedy, false);
  const sampling = comparisonRequest({ ...defaultValues(), compare: 'sampling', temperature: '0.8', seed: '7' });
  assert.deepEqual(sampling, {
    default_mode: true, prompt: 'Once upon a time', max_tokens: 100, min_steps: 0, enable_thinking: false,
    temperature: 0.8, top_k: 0, top_p: 1, repetition_penalty: 1, seed: 7, memory_policy: 'stop', disable_kv_cache: false,
  });
});
