// run.js: one generation as the page knows it, built from the server's events.
//
// A run starts empty, grows by `step` events (a set, as soon as it is selected), is marked by
// `prune` events (a later pass scored or pruned an earlier member), and is replaced by the full
// record of the `done` event (docs/server.md). The stream and the record describe the same steps;
// the record is the authority once it has arrived (it has the graph and the metrics).
//
// A branch is a run with a parent: it continues `parent` from member `member` of step `step`.
// Its steps 0..step-1 are the parent's, replayed; step `step` is the chosen member alone.

export function newRun({ id, request, parent = null }) {
  return {
    id,                 // the page's number for the run (0, 1, ...)
    request,            // the body that was sent (a branch's is the original run's request)
    parent,             // null, or { run, step, member, tokenId } for a branch
    status: 'running',  // running | done | stopped | error
    serverId: null,
    prompt: null,
    nPromptTokens: null,
    width: null,        // the effective max_parallel_tokens
    steps: [],          // { step, position, tokens: [member], chosen }
    scores: new Map(),  // "s{step}m{member}" -> [{ atStep, score, pruned }] in arrival order
    record: null,       // the done event's record
    error: null,
    startedAt: null,    // ms, performance.now() of the start event
    endedAt: null,
  };
}

export const memberKey = (step, member) => `s${step}m${member}`;

function member(t) {
  return {
    token_id: t.token_id,
    text: t.text,
    probability: t.probability,
    pruned: t.pruned === true,
    pruned_at_step: t.pruned_at_step ?? null,
    prune_score: t.prune_score ?? null,
    scored_at_step: t.scored_at_step ?? null,
  };
}

// Apply one server-sent event. `now` is a timestamp in ms (for steps/s).
export function applyEvent(run, type, data, now) {
  if (type === 'start') {
    run.serverId = data.id;
    run.prompt = data.prompt;
    run.nPromptTokens = data.n_prompt_tokens ?? null;
    run.width = data.max_parallel_tokens ?? null;
    run.startedAt = now;
  } else if (type === 'step') {
    run.steps[data.step] = {
      step: data.step,
      position: data.position,
      tokens: data.tokens.map(member),
      chosen: data.chosen === true,
    };
  } else if (type === 'prune') {
    const key = memberKey(data.step, data.member);
    if (!run.scores.has(key)) run.scores.set(key, []);
    run.scores.get(key).push({ atStep: data.at_step, score: data.score, pruned: data.pruned });
    const t = run.steps[data.step]?.tokens[data.member];
    if (t) {
      t.prune_score = data.score;
      t.scored_at_step = data.at_step;
      if (data.pruned) {
        t.pruned = true;
        t.pruned_at_step = data.at_step;
      }
    }
  } else if (type === 'done') {
    applyRecord(run, data);
    run.endedAt = now;
  }
}

// Take the full record (the done event, or POST /api/generate's answer).
export function applyRecord(run, record) {
  run.record = record;
  run.serverId = record.id ?? run.serverId;
  run.prompt = record.prompt;
  run.width = record.config?.max_parallel_tokens ?? run.width;
  run.nPromptTokens = record.metrics?.prompt_tokens ?? run.nPromptTokens;
  run.steps = record.steps.map((s) => ({
    step: s.step,
    position: s.position,
    tokens: s.tokens.map(member),
    chosen: s.chosen === true || s.tokens.some((t) => t.chosen === true),
  }));
  // A streamed run keeps every score it saw; a record alone has each member's latest score.
  for (const s of run.steps) {
    s.tokens.forEach((t, j) => {
      const key = memberKey(s.step, j);
      if (!run.scores.has(key) && t.scored_at_step !== null)
        run.scores.set(key, [{ atStep: t.scored_at_step, score: t.prune_score, pruned: t.pruned }]);
    });
  }
  run.status = 'done';
}

// Every step's token ids in selection order, pruned members included: the `path` of a branch.
export function pathOf(run) {
  return run.steps.map((s) => s.tokens.map((t) => t.token_id));
}

// Members counted over every step (what the model was fed, plus the last set).
export function tokenCount(run) {
  return run.steps.reduce((n, s) => n + (s ? s.tokens.length : 0), 0);
}

export function stepsPerSecond(run, now) {
  if (run.record?.metrics?.steps_per_second !== undefined) return run.record.metrics.steps_per_second;
  if (run.startedAt === null) return null;
  const seconds = ((run.endedAt ?? now) - run.startedAt) / 1000;
  return seconds > 0 ? run.steps.length / seconds : null;
}

export function stopReason(run) {
  if (run.record) return run.record.stop_reason;
  if (run.status === 'stopped') return 'stopped by you';
  if (run.status === 'error') return 'error';
  return null;
}
