// options.js: the TEMPO options the page offers, and the request bodies built from them.
//
// Every option is the CLI's (`build/tempo --help`), by its YAML name, with the CLI's type, default
// and range; test/options.test.js checks this table against the built binary, so a change in the
// C option table fails the tests until it is made here too. The page does not refuse values
// itself: it sends what the user typed and shows the server's 400 message next to the control
// that `error.param` names, so the rules live in one place (the C library).
//
// Values are kept as the form holds them: strings for numbers and text, booleans for flags,
// strings for choices. `enabled(values)` says when an option means something (a Bezier point
// without --dynamic-threshold does not); disabled controls stay visible but are not sent.

const on = (key) => (v) => v[key] === true;

export const GROUPS = [
  { id: 'prompt', title: 'Prompt' },
  { id: 'selection', title: 'Selection' },
  { id: 'pruning', title: 'Retroactive pruning' },
  { id: 'dynamic', title: 'Dynamic threshold' },
  { id: 'search', title: 'Search (MCTS)' },
  { id: 'compare', title: 'Comparison run' },
  { id: 'memory', title: 'Memory' },
  { id: 'server', title: 'Server' },
];

// type: 'text' | 'int' | 'float' | 'bool' | 'choice'. For numbers, min/max and maxOpen (a
// half-open range such as [0, 1)) mirror the CLI's range; `auto` marks options whose default is
// computed by the server (an empty field means "use it").
export const OPTIONS = [
  // prompt
  { key: 'prompt', group: 'prompt', type: 'text', label: 'Prompt', def: 'Once upon a time', multiline: true,
    help: 'prompt text' },
  { key: 'max_tokens', group: 'prompt', type: 'int', label: 'Max tokens (steps)', def: '100', min: 1,
    help: 'generation steps (a TEMPO step may hold several tokens)' },
  { key: 'min_steps', group: 'prompt', type: 'int', label: 'Min steps', def: '0', min: 0,
    help: 'ignore end-of-generation before this step' },
  { key: 'enable_thinking', group: 'prompt', type: 'bool', label: 'Thinking mode', def: false,
    help: 'wrap the prompt in the chat format with the deep-thinking system message' },
  { key: 'chat_template', group: 'prompt', type: 'text', label: 'Chat template', def: '', auto: "the model's",
    enabled: on('enable_thinking'), help: 'chat format for thinking mode (empty: the model\'s own)' },

  // selection
  { key: 'selection_threshold', group: 'selection', type: 'float', label: 'Selection threshold', def: '0.1',
    min: 0, max: 1, step: '0.01', help: 'keep every token with probability >= this' },
  { key: 'max_parallel_tokens', group: 'selection', type: 'int', label: 'Max parallel tokens', def: '',
    auto: 'auto', min: 1, help: 'most tokens per step (empty: computed from the memory limit)' },
  { key: 'allow_intraset_token_visibility', group: 'selection', type: 'choice', label: 'Siblings',
    def: 'false', choices: [['false', 'isolated (default)'], ['true', 'visible to each other']],
    help: 'whether the members of a set see each other when they are fed' },

  // retroactive pruning
  { key: 'use_retroactive_pruning', group: 'pruning', type: 'bool', label: 'Retroactive pruning', def: false,
    help: 'prune set members that later tokens ignore' },
  { key: 'no_relative_attention', group: 'pruning', type: 'choice', label: 'Rule', def: 'false',
    choices: [['false', 'relative (default)'], ['true', 'absolute']], enabled: on('use_retroactive_pruning'),
    help: 'relative: below a fraction of the set\'s mean attention; absolute: below a fixed attention' },
  { key: 'relative_threshold', group: 'pruning', type: 'float', label: 'Relative threshold', def: '0.5',
    min: 0, max: 1, step: '0.05',
    enabled: (v) => v.use_retroactive_pruning === true && v.no_relative_attention !== 'true',
    help: 'relative pruning rule: prune below this fraction of the set\'s mean attention' },
  { key: 'attention_threshold', group: 'pruning', type: 'float', label: 'Attention threshold', def: '0.01',
    min: 0, max: 1, step: '0.01',
    enabled: (v) => v.use_retroactive_pruning === true && v.no_relative_attention === 'true',
    help: 'absolute pruning rule: prune below this attention' },
  { key: 'no_multi_scale_attention', group: 'pruning', type: 'bool', label: 'Last 3 layers only', def: false,
    enabled: on('use_retroactive_pruning'),
    help: 'score pruning on the last 3 layers only (default: all layers, weighted)' },

  // dynamic threshold
  { key: 'dynamic_threshold', group: 'dynamic', type: 'bool', label: 'Dynamic threshold', def: false,
    help: 'move the threshold from selection_threshold to final_threshold over the run' },
  { key: 'final_threshold', group: 'dynamic', type: 'float', label: 'Final threshold', def: '1.0',
    min: 0, max: 1, step: '0.05', enabled: on('dynamic_threshold'),
    help: 'threshold at the last step' },
  { key: 'use_relu', group: 'dynamic', type: 'choice', label: 'Curve', def: 'false',
    choices: [['false', 'Bezier (default)'], ['true', 'ReLU']], enabled: on('dynamic_threshold'),
    help: 'the schedule\'s shape' },
  { key: 'bezier_p1', group: 'dynamic', type: 'float', label: 'Bezier p1', def: '0.2', min: 0, max: 1, step: '0.05',
    enabled: (v) => v.dynamic_threshold === true && v.use_relu !== 'true',
    help: 'first Bezier control point' },
  { key: 'bezier_p2', group: 'dynamic', type: 'float', label: 'Bezier p2', def: '0.8', min: 0, max: 1, step: '0.05',
    enabled: (v) => v.dynamic_threshold === true && v.use_relu !== 'true',
    help: 'second Bezier control point' },
  { key: 'relu_activation_point', group: 'dynamic', type: 'float', label: 'ReLU activation point', def: '0.5',
    min: 0, max: 1, maxOpen: true, step: '0.05',
    enabled: (v) => v.dynamic_threshold === true && v.use_relu === 'true',
    help: 'where the ReLU schedule starts rising, in [0, 1)' },

  // MCTS: at each step a search among the set's members commits the most visited one
  { key: 'use_mcts', group: 'search', type: 'bool', label: 'MCTS', def: false,
    help: 'search among each step\'s set (PUCT, rollouts scored by mean log-probability) and commit the most visited member' },
  { key: 'mcts_simulations', group: 'search', type: 'int', label: 'Simulations', def: '10', min: 1, max: 10000,
    enabled: on('use_mcts'), help: 'rollouts per step' },
  { key: 'mcts_c_puct', group: 'search', type: 'float', label: 'c (PUCT)', def: '1.0', min: 0, max: 100, step: '0.1',
    enabled: on('use_mcts'), help: 'exploration weight c of PUCT: Q + c * prior * sqrt(N) / (1 + n)' },
  { key: 'mcts_depth', group: 'search', type: 'int', label: 'Rollout depth', def: '5', min: 0, max: 1000,
    enabled: on('use_mcts'), help: 'rollout steps after the expanded node' },

  // the comparison run: greedy is TEMPO with one member per step; sampling is --default-mode,
  // the only mode where the sampling options and the seed mean anything.
  { key: 'compare', group: 'compare', type: 'choice', label: 'Compare with', def: 'none', pageOnly: true,
    choices: [['none', 'nothing'], ['greedy', 'greedy (max_parallel_tokens 1)'], ['sampling', 'sampling (default_mode)']],
    help: 'run the same prompt a second way and show its text beside the TEMPO text' },
  { key: 'temperature', group: 'compare', type: 'float', label: 'Temperature', def: '0', min: 0, max: 100, step: '0.1',
    sampling: true, rollout: true, help: 'sampling temperature (0 = greedy); with MCTS, of the rollouts' },
  { key: 'top_k', group: 'compare', type: 'int', label: 'Top-k', def: '0', min: 0, sampling: true,
    help: 'sample among the k most probable (0 = off)' },
  { key: 'top_p', group: 'compare', type: 'float', label: 'Top-p', def: '1.0', min: 0, max: 1, step: '0.05',
    sampling: true, help: 'nucleus sampling mass (1 = off)' },
  { key: 'repetition_penalty', group: 'compare', type: 'float', label: 'Repetition penalty', def: '1.0',
    min: 0, max: 100, step: '0.05', sampling: true, help: 'penalise tokens already present (1 = off)' },
  { key: 'seed', group: 'compare', type: 'int', label: 'Seed', def: '42', min: 0, sampling: true, rollout: true,
    help: 'random seed of the sampling run and of MCTS rollouts. TEMPO selection itself is deterministic and takes no seed' },

  // memory
  { key: 'max_cache_tokens', group: 'memory', type: 'int', label: 'Max cache tokens', def: '', auto: 'context',
    min: 1, help: 'most KV cache slots (empty: the model\'s context length)' },
  { key: 'memory_policy', group: 'memory', type: 'choice', label: 'At the memory limit', def: 'stop',
    choices: [['stop', 'stop'], ['adapt', 'adapt (narrow later steps)'], ['prune', 'prune (lowest-scoring members first)']],
    help: 'stop the run, shrink later steps\' width, or from 85% on prune the lowest-scoring members first' },
  { key: 'disable_kv_cache', group: 'memory', type: 'bool', label: 'Disable KV cache', def: false,
    help: 'recompute every slot at each step instead of caching' },

  // not an option of the run: the key of a server started with --api-key
  { key: 'api_key', group: 'server', type: 'text', label: 'API key', def: '', pageOnly: true, secret: true,
    help: 'only for a server started with --api-key; sent as Authorization: Bearer' },
];

// The sampling options mean something in the sampling comparison; temperature and seed also
// in the TEMPO run's MCTS rollouts.
for (const o of OPTIONS) {
  if (o.sampling) o.enabled = (v) => v.compare === 'sampling' || (o.rollout === true && v.use_mcts === true);
}

export const OPTION_BY_KEY = Object.fromEntries(OPTIONS.map((o) => [o.key, o]));

// Options that go into the sampling comparison as well as the TEMPO run: everything that is not
// a TEMPO selection option (the server refuses those together with default_mode).
const SHARED_WITH_SAMPLING = ['prompt', 'max_tokens', 'min_steps', 'enable_thinking', 'chat_template',
  'max_cache_tokens', 'memory_policy', 'disable_kv_cache'];

export function defaultValues() {
  return Object.fromEntries(OPTIONS.map((o) => [o.key, o.def]));
}

export function isEnabled(o, values) {
  return o.enabled ? o.enabled(values) : true;
}

// The JSON value of one option: numbers as JSON numbers when they read as numbers, otherwise the
// text as typed, so that the server names the problem ("expected a number, got 'abc'").
function jsonValue(o, raw) {
  if (o.type === 'bool') return raw === true;
  if (o.type === 'choice') return raw === 'true' ? true : raw === 'false' ? false : raw;
  if (o.type === 'int' || o.type === 'float') {
    const s = String(raw).trim();
    const n = Number(s);
    return s !== '' && Number.isFinite(n) ? n : s;
  }
  return raw;
}

// Is the field empty, meaning "the server's default" (only for options with a computed default)?
function leftEmpty(o, raw) {
  return o.auto !== undefined && String(raw).trim() === '';
}

// The body of POST /api/generate/stream for the TEMPO run.
export function tempoRequest(values) {
  const body = {};
  for (const o of OPTIONS) {
    if (o.pageOnly || !isEnabled(o, values)) continue;
    if (o.sampling && !(o.rollout && values.use_mcts === true)) continue;
    if (leftEmpty(o, values[o.key])) continue;
    body[o.key] = jsonValue(o, values[o.key]);
  }
  return body;
}

// The body of the comparison run, or null when none is asked for. Greedy decoding is TEMPO with
// one member per step (design invariant 1); sampling is --default-mode with the sampling options.
export function comparisonRequest(values) {
  if (values.compare === 'greedy') return { ...tempoRequest(values), max_parallel_tokens: 1 };
  if (values.compare !== 'sampling') return null;
  const body = { default_mode: true };
  for (const o of OPTIONS) {
    if (!(o.sampling || SHARED_WITH_SAMPLING.includes(o.key))) continue;
    if (!isEnabled(o, values) || leftEmpty(o, values[o.key])) continue;
    body[o.key] = jsonValue(o, values[o.key]);
  }
  return body;
}

// The range as `build/tempo --help` prints it: "[0, 1]", "[0, 1)", ">= 1", or "" for none.
export function rangeText(o) {
  if (o.min === undefined) return '';
  if (o.max === undefined) return `>= ${o.min}`;
  return `[${o.min}, ${o.max}${o.maxOpen ? ')' : ']'}`;
}
