// api.js: the server's endpoints (docs/server.md), as the page uses them.
//
// Streams are POST requests (the request body carries the options), which EventSource cannot
// send, so they are read with fetch and parsed with eventsource-parser. Cancelling is the
// AbortController's job: closing the connection is how a client tells the server to stop.

import { createParser } from 'eventsource-parser';

// An error the server reported ({"error": {message, param, code}}) or one the page met.
export class ApiError extends Error {
  constructor(message, { status = 0, param = null, code = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

async function errorFromResponse(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: fall through to the status line
  }
  const e = body && body.error;
  if (e && e.message) return new ApiError(e.message, { status: res.status, param: e.param ?? null, code: e.code ?? null });
  return new ApiError(`the server answered ${res.status} ${res.statusText}`, { status: res.status });
}

// A server started with --api-key wants it on every request but /health and the page.
let apiKey = '';
export function setApiKey(key) {
  apiKey = key.trim();
}

async function postJson(path, body, signal) {
  const headers = { 'Content-Type': 'application/json' };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(`cannot reach the server: ${err.message}`);
  }
  if (!res.ok) throw await errorFromResponse(res);
  return res;
}

// POST path with body, and call onEvent(type, data) for every server-sent event until the stream
// ends. Resolves when it ends; rejects with ApiError (HTTP error before the stream started, or an
// `error` event) or with an AbortError when signal aborts.
export async function stream(path, body, onEvent, signal) {
  const res = await postJson(path, body, signal);
  let failure = null;
  const parser = createParser({
    onEvent(ev) {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        failure = new ApiError(`the server sent an event that is not JSON: ${ev.data.slice(0, 80)}`);
        return;
      }
      if (ev.event === 'error') {
        const e = data.error || {};
        failure = new ApiError(e.message || 'the generation failed', { param: e.param ?? null, code: e.code ?? null });
        return;
      }
      onEvent(ev.event || 'message', data);
    },
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.feed(value);
    if (failure) {
      reader.cancel().catch(() => {});
      break;
    }
  }
  if (failure) throw failure;
}

// POST /api/generate/stream: a TEMPO run, streamed.
export function generateStream(body, onEvent, signal) {
  return stream('api/generate/stream', body, onEvent, signal);
}

// POST /api/branch with stream: continue `request`'s run from token `tokenId` at `step`, replaying
// the sets of `path` (every step's token ids, pruned members included) before it.
export function branchStream(request, path, step, tokenId, onEvent, signal) {
  return stream('api/branch', { request, path, step, token_id: tokenId, stream: true }, onEvent, signal);
}

// POST /api/generate: the whole record at once (the comparison run).
export async function generate(body, signal) {
  const res = await postJson('api/generate', body, signal);
  return res.json();
}

// GET /health: {status, model, memory: {used_gb, limit_gb, ...}, sessions: {busy, free, ...}}.
export async function health(signal) {
  const res = await fetch('health', { signal, cache: 'no-store' });
  if (!res.ok) throw await errorFromResponse(res);
  return res.json();
}
