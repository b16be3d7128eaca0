// The official `openai` Node SDK through cachet: chat completions (JSON and streams) and Responses.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  OPENAI_MODEL as MODEL, QUESTION, SYSTEM, TARGET, THROUGH_PROXY, assertRequestId, collect, parseReply,
} from './helpers.mjs';

const messages = [
  { role: 'system', content: SYSTEM },
  { role: 'user', content: QUESTION },
];
const usageOf = (u) => [u.prompt_tokens, u.completion_tokens, u.total_tokens, u.prompt_tokens_details?.cached_tokens];

describe('openai node sdk', () => {
  // Base URL and key from OPENAI_BASE_URL / OPENAI_API_KEY.
  const client = new OpenAI({ maxRetries: 0, timeout: 30_000 });
  let chat;

  before(async () => {
    chat = await client.chat.completions.create({ model: MODEL, messages });
  });

  test('reads its base URL from the environment', () => {
    assert.equal(client.baseURL.replace(/\/$/, ''), `${TARGET}/openai/v1`);
  });

  test('chat completion, non-stream', () => {
    const reply = parseReply(chat.choices[0].message.content, MODEL);
    assert.equal(chat.choices[0].finish_reason, 'stop');
    assert.equal(chat.usage.prompt_tokens, reply.promptTokens);
    assert.equal(chat.usage.completion_tokens, reply.words);
    assert.equal(chat.usage.total_tokens, reply.promptTokens + reply.words);
    assert.equal(chat.usage.prompt_tokens_details.cached_tokens, 0);
  });

  test('chat stream without stream_options: no usage chunk reaches the client', async () => {
    const chunks = await collect(await client.chat.completions.create({ model: MODEL, messages, stream: true }));
    assert.ok(chunks.length > 0);
    assert.deepEqual(chunks.filter((c) => c.choices.length === 0), []);
    assert.deepEqual(chunks.filter((c) => c.usage != null), []);
    const text = chunks.map((c) => c.choices[0].delta.content ?? '').join('');
    assert.equal(text, chat.choices[0].message.content);
  });

  test('chat stream with include_usage: the last chunk carries the usage', async () => {
    const chunks = await collect(await client.chat.completions.create({
      model: MODEL, messages, stream: true, stream_options: { include_usage: true },
    }));
    const withUsage = chunks.filter((c) => c.usage != null);
    assert.equal(withUsage.length, 1);
    const last = chunks.at(-1);
    assert.equal(last, withUsage[0]);
    assert.deepEqual(last.choices, []);
    const text = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? '').join('');
    assert.equal(text, chat.choices[0].message.content);
    assert.deepEqual(usageOf(last.usage), usageOf(chat.usage));
  });

  test('chat completion raw response has x-cachet-request-id', { skip: !THROUGH_PROXY }, async () => {
    const { data, response } = await client.chat.completions.create({ model: MODEL, messages }).withResponse();
    assert.equal(response.status, 200);
    assertRequestId(response.headers);
    parseReply(data.choices[0].message.content, MODEL);
  });

  test('responses, non-stream and stream', async () => {
    const full = await client.responses.create({ model: MODEL, instructions: SYSTEM, input: QUESTION });
    const reply = parseReply(full.output_text, MODEL);
    assert.equal(full.usage.input_tokens, reply.promptTokens);
    assert.equal(full.usage.output_tokens, reply.words);
    assert.equal(full.usage.input_tokens_details.cached_tokens, 0);

    const events = await collect(await client.responses.create({
      model: MODEL, instructions: SYSTEM, input: QUESTION, stream: true,
    }));
    assert.equal(events[0].type, 'response.created');
    assert.equal(events.at(-1).type, 'response.completed');
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(text, full.output_text);
    const done = events.at(-1).response;
    assert.equal(done.usage.input_tokens, full.usage.input_tokens);
    assert.equal(done.usage.output_tokens, full.usage.output_tokens);
    assert.equal(done.usage.total_tokens, full.usage.total_tokens);
  });

  test('a request without a model is a BadRequestError', async () => {
    await assert.rejects(
      client.post('/chat/completions', { body: { messages } }),
      (err) => err instanceof OpenAI.BadRequestError && err.status === 400,
    );
  });
});
