// The official `@google/genai` Node SDK through cachet: generateContent and its stream.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { GoogleGenAI } from '@google/genai';
import {
  GEMINI_MODEL as MODEL, QUESTION, SYSTEM, TARGET, THROUGH_PROXY, assertRequestId, parseReply,
} from './helpers.mjs';

const usageOf = (u) => [u.promptTokenCount, u.candidatesTokenCount, u.totalTokenCount];

describe('google genai node sdk', () => {
  // Base URL from GOOGLE_GEMINI_BASE_URL; the key as a user would pass it.
  const ai = new GoogleGenAI({ apiKey: process.env.GEMINI_API_KEY });
  let generated;

  before(async () => {
    generated = await ai.models.generateContent({ model: MODEL, contents: QUESTION });
  });

  test('generateContent', () => {
    const reply = parseReply(generated.text, MODEL);
    const u = generated.usageMetadata;
    assert.equal(u.promptTokenCount, reply.promptTokens);
    assert.equal(u.candidatesTokenCount, reply.words);
    assert.equal(u.totalTokenCount, reply.promptTokens + reply.words);
    assert.equal(u.cachedContentTokenCount, 0);
  });

  test('generateContent with apiVersion v1beta and an explicit baseUrl', async () => {
    const beta = new GoogleGenAI({
      apiKey: process.env.GEMINI_API_KEY,
      httpOptions: { baseUrl: `${TARGET}/gemini`, apiVersion: 'v1beta' },
    });
    const resp = await beta.models.generateContent({ model: MODEL, contents: QUESTION });
    assert.equal(resp.text, generated.text);
    assert.deepEqual(usageOf(resp.usageMetadata), usageOf(generated.usageMetadata));
  });

  test('generateContent with a system instruction', async () => {
    const resp = await ai.models.generateContent({ model: MODEL, contents: QUESTION, config: { systemInstruction: SYSTEM } });
    const reply = parseReply(resp.text, MODEL);
    assert.ok(reply.promptTokens > generated.usageMetadata.promptTokenCount);
  });

  test('generateContentStream: same text and usage', async () => {
    let text = '';
    let last;
    for await (const chunk of await ai.models.generateContentStream({ model: MODEL, contents: QUESTION })) {
      text += chunk.text ?? '';
      last = chunk;
    }
    assert.equal(text, generated.text);
    assert.ok(last?.usageMetadata, 'the last chunk carries no usageMetadata');
    assert.deepEqual(usageOf(last.usageMetadata), usageOf(generated.usageMetadata));
  });

  test('countTokens equals the prompt tokens', async () => {
    const counted = await ai.models.countTokens({ model: MODEL, contents: QUESTION });
    assert.equal(counted.totalTokens, generated.usageMetadata.promptTokenCount);
  });

  test('response has x-cachet-request-id', { skip: !THROUGH_PROXY }, () => {
    const headers = generated.sdkHttpResponse?.headers ?? {};
    assertRequestId(new Headers(headers));
  });
});
