// Shared helpers for the Node SDK tests. tests/sdk/run.sh starts cachet and exports the SDKs'
// own environment variables (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GOOGLE_GEMINI_BASE_URL and fake
// keys), so each SDK is configured exactly as a user would configure it.
import assert from 'node:assert/strict';

export const OPENAI_MODEL = 'gpt-4.1';
export const ANTHROPIC_MODEL = 'claude-sonnet-4-6';
export const GEMINI_MODEL = 'gemini-2.5-flash';
export const QUESTION = 'What does a context-caching proxy do? Answer in one sentence.';
export const SYSTEM = 'You are a terse assistant used by the cachet SDK suite.';

const target = process.env.CACHET_SDK_TARGET;
if (!target) {
  throw new Error('CACHET_SDK_TARGET is not set: run the suite through tests/sdk/run.sh');
}
export const TARGET = target.replace(/\/$/, '');
export const THROUGH_PROXY = (process.env.CACHET_SDK_MODE ?? 'proxy') === 'proxy';

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Asserts `text` is the simulator's reply for `model`: `cachet-sim reply from {model} to {n}
// prompt tokens.`; returns { text, promptTokens, words }.
export function parseReply(text, model) {
  assert.equal(typeof text, 'string', `the SDK parsed no text (${text})`);
  const re = new RegExp(`^cachet-sim reply from ${escape(model)} to (\\d+) prompt tokens\\.$`);
  const m = re.exec(text);
  assert.ok(m, `unexpected reply text ${JSON.stringify(text)} (expected ${re})`);
  const promptTokens = Number(m[1]);
  assert.ok(promptTokens > 0, `prompt token count ${promptTokens}`);
  const words = text.split(/\s+/).filter(Boolean).length;
  assert.equal(words, 8, `${JSON.stringify(text)} has ${words} words`);
  return { text, promptTokens, words };
}

export function assertRequestId(headers) {
  const id = headers.get('x-cachet-request-id');
  assert.ok(id && /^[0-9A-Za-z-]{8,}$/.test(id), `x-cachet-request-id is ${id}`);
  return id;
}

export async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}
