// The official `@anthropic-ai/sdk` Node SDK through cachet: messages, JSON and streams.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import {
  ANTHROPIC_MODEL as MODEL, QUESTION, SYSTEM, TARGET, THROUGH_PROXY, assertRequestId, collect, parseReply,
} from './helpers.mjs';

const params = { model: MODEL, max_tokens: 256, system: SYSTEM, messages: [{ role: 'user', content: QUESTION }] };
const usageOf = (u) => [u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens];

describe('anthropic node sdk', () => {
  // Base URL and key from ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY.
  const client = new Anthropic({ maxRetries: 0, timeout: 30_000 });
  let message;

  before(async () => {
    message = await client.messages.create(params);
  });

  test('reads its base URL from the environment', () => {
    assert.equal(client.baseURL.replace(/\/$/, ''), `${TARGET}/anthropic`);
  });

  test('messages.create, non-stream', () => {
    assert.equal(message.stop_reason, 'end_turn');
    const reply = parseReply(message.content[0].text, MODEL);
    assert.equal(message.usage.input_tokens, reply.promptTokens);
    assert.equal(message.usage.output_tokens, reply.words);
    assert.equal(message.usage.cache_read_input_tokens, 0);
    assert.equal(message.usage.cache_creation_input_tokens, 0);
  });

  test('messages.stream helper: same text and usage', async () => {
    const stream = client.messages.stream(params);
    let text = '';
    stream.on('text', (t) => { text += t; });
    const final = await stream.finalMessage();
    assert.equal(text, message.content[0].text);
    assert.equal(final.content[0].text, text);
    assert.deepEqual(usageOf(final.usage), usageOf(message.usage));
  });

  test('stream: true raw events', async () => {
    const events = await collect(await client.messages.create({ ...params, stream: true }));
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'message_start');
    assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    const text = events.filter((e) => e.type === 'content_block_delta').map((e) => e.delta.text).join('');
    assert.equal(text, message.content[0].text);
    assert.equal(events[0].message.usage.input_tokens, message.usage.input_tokens);
    assert.equal(events[0].message.usage.cache_read_input_tokens, 0);
    assert.equal(events.at(-2).usage.output_tokens, message.usage.output_tokens);
  });

  test('count_tokens equals the input usage', async () => {
    const counted = await client.messages.countTokens({ model: MODEL, system: SYSTEM, messages: params.messages });
    assert.equal(counted.input_tokens, message.usage.input_tokens);
  });

  test('raw response has x-cachet-request-id', { skip: !THROUGH_PROXY }, async () => {
    const { data, response } = await client.messages.create(params).withResponse();
    assertRequestId(response.headers);
    parseReply(data.content[0].text, MODEL);
  });
});
