// openai_client.mjs BASE_URL: the official `openai` npm client against `tempo serve`.
// Run by tests/test_server.c (server_openai_node_client) on stories260K; exits non-zero with the
// failed check. Never reaches the network: BASE_URL is the loopback server.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.argv[2];
if (!baseURL) { console.error('usage: node openai_client.mjs http://127.0.0.1:PORT/v1'); process.exit(2); }
const client = new OpenAI({ baseURL, apiKey: 'test-key', maxRetries: 0, timeout: 60000 });
let checks = 0;
const ok = () => { checks++; };

// models
const models = await client.models.list();
assert.equal(models.data[0].id, 'stories260K.gguf'); ok();
const model = models.data[0].id;

// completions, not streamed: greedy at temperature 0, finish_reason length, usage
const prompt = 'Once upon a time';
const c = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
assert.equal(c.object, 'text_completion');
assert.ok(c.choices[0].text.length > 0);
assert.equal(c.choices[0].finish_reason, 'length');
assert.equal(c.usage.completion_tokens, 12);
assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + 12); ok();

// the same, streamed: the chunks add up to the same text
let streamed = '', finish = null, usage = null, timings = null;
const cs = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stream: true,
                                             stream_options: { include_usage: true } });
for await (const chunk of cs) {
  if (chunk.usage) usage = chunk.usage;
  if (chunk.timings) timings = chunk.timings; // llama.cpp's extra field, on the finishing chunk
  for (const ch of chunk.choices) { streamed += ch.text; if (ch.finish_reason) finish = ch.finish_reason; }
}
assert.equal(streamed, c.choices[0].text);
assert.equal(finish, 'length');
assert.equal(usage.completion_tokens, 12);
assert.equal(timings.predicted_n, 12);
assert.equal(timings.prompt_n, usage.prompt_tokens);
assert.ok(timings.prompt_ms >= 0 && timings.predicted_ms >= 0 && timings.predicted_per_second >= 0); ok();

// stop strings: the text ends before the first one, which is not included
const word = c.choices[0].text.split(' ').filter(w => w.length > 2)[1];
assert.ok(word, 'a word to stop at');
const st = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stop: [' ' + word] });
assert.equal(st.choices[0].text, c.choices[0].text.slice(0, c.choices[0].text.indexOf(' ' + word)));
assert.equal(st.choices[0].finish_reason, 'stop'); ok();
let sst = '';
for await (const chunk of await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stop: ' ' + word, stream: true }))
  for (const ch of chunk.choices) sst += ch.text;
assert.equal(sst, st.choices[0].text); ok();

// seeded sampling repeats
const s1 = await client.completions.create({ model, prompt, max_tokens: 10, temperature: 0.9, top_p: 0.95, seed: 7 });
const s2 = await client.completions.create({ model, prompt, max_tokens: 10, temperature: 0.9, top_p: 0.95, seed: 7 });
assert.equal(s1.choices[0].text, s2.choices[0].text); ok();

// chat, not streamed and streamed, with logprobs
const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me about a cat.' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 3 });
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices[0].message.role, 'assistant');
assert.ok(typeof chat.choices[0].message.content === 'string');
assert.equal(chat.choices[0].logprobs.content.length, chat.usage.completion_tokens);
for (const t of chat.choices[0].logprobs.content) {
  assert.ok(t.logprob <= 0);
  assert.equal(t.top_logprobs.length, 3);
  assert.ok(t.top_logprobs[0].logprob >= t.logprob - 1e-6); // greedy: the token is the most probable
} ok();
let chatText = '', role = null;
for await (const chunk of await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, stream: true })) {
  const d = chunk.choices[0]?.delta ?? {};
  if (d.role) role = d.role;
  if (d.content) chatText += d.content;
}
assert.equal(role, 'assistant');
assert.equal(chatText, chat.choices[0].message.content); ok();

// TEMPO fields as extra body fields: the `tempo` extra carries the sets, content the clean text
const t = await client.completions.create({ model, prompt, max_tokens: 8, selection_threshold: 0.05 });
const tempo = t.choices[0].tempo;
assert.equal(tempo.steps.length, t.usage.completion_tokens);
assert.ok(tempo.steps.some(s => s.tokens.length > 1), 'a step with several members');
assert.equal(t.choices[0].text, tempo.steps.map(s => s.tokens.find(m => !m.pruned).text).join('')); ok();
let tsteps = 0;
for await (const chunk of await client.completions.create({ model, prompt, max_tokens: 8, selection_threshold: 0.05, stream: true }))
  tsteps += chunk.choices[0]?.tempo?.steps?.length ?? 0;
assert.equal(tsteps, 8); ok();

// errors are OpenAI errors naming the field
await assert.rejects(client.completions.create({ model, prompt, max_tokens: 4, selection_threshold: 3 }),
                     e => e.status === 400 && e.param === 'selection_threshold'); ok();
await assert.rejects(client.completions.create({ model, prompt, n: 2 }), e => e.status === 400 && e.param === 'n'); ok();

console.log(`openai client: ${checks} checks passed`);
