"""The official `google-genai` Python SDK through cachet: generate (both API versions), stream,
count_tokens, and a cachedContents round trip."""

from __future__ import annotations

import os

import pytest
from google import genai
from google.genai import errors, types

from helpers import (
    GEMINI_MODEL as MODEL,
    QUESTION,
    SYSTEM,
    assert_request_id,
    parse_reply,
    proxy_only,
)

# Large enough for any model's minimum explicit-cache size.
DOCUMENT = "\n".join(
    f"Paragraph {i}: the quick brown fox jumps over the lazy dog while the proxy keeps the prefix."
    for i in range(400)
)


def make_client(api_version: str | None = None) -> genai.Client:
    """A client configured in code, with the base URL in http_options."""
    options = types.HttpOptions(
        base_url=f"{os.environ['CACHET_SDK_TARGET']}/gemini",
        api_version=api_version,
        timeout=30_000,
    )
    return genai.Client(api_key=os.environ["GEMINI_API_KEY"], http_options=options)


@pytest.fixture(scope="module")
def client() -> genai.Client:
    # Configured only by the environment: GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY.
    return genai.Client()


def usage_tuple(u: types.GenerateContentResponseUsageMetadata) -> tuple:
    return (u.prompt_token_count, u.candidates_token_count, u.total_token_count)


def assert_no_cache_use(u: types.GenerateContentResponseUsageMetadata) -> None:
    # The simulator sends cachedContentTokenCount: 0 (issue 2: cache fields present, zero for now);
    # the SDK parses it as 0, not None.
    assert u.cached_content_token_count == 0, u


@pytest.fixture(scope="module")
def generated(client: genai.Client) -> types.GenerateContentResponse:
    return client.models.generate_content(model=MODEL, contents=QUESTION)


def test_sdk_reads_base_url_from_environment(client: genai.Client, target: str) -> None:
    base = client._api_client._http_options.base_url
    assert base.rstrip("/") == f"{target}/gemini"


def test_generate_content(generated: types.GenerateContentResponse) -> None:
    reply = parse_reply(generated.text, MODEL)
    assert generated.candidates and generated.candidates[0].finish_reason == types.FinishReason.STOP
    u = generated.usage_metadata
    assert u is not None
    assert u.prompt_token_count == reply.prompt_tokens
    assert u.candidates_token_count == reply.words
    assert u.total_token_count == u.prompt_token_count + u.candidates_token_count
    assert_no_cache_use(u)


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_generate_content_api_versions(
    api_version: str, generated: types.GenerateContentResponse
) -> None:
    client = make_client(api_version)  # keep a reference: a dropped Client closes its connection
    resp = client.models.generate_content(model=MODEL, contents=QUESTION)
    assert resp.text == generated.text
    assert usage_tuple(resp.usage_metadata) == usage_tuple(generated.usage_metadata)


def test_generate_content_with_system_instruction(generated: types.GenerateContentResponse) -> None:
    client = make_client()
    resp = client.models.generate_content(
        model=MODEL,
        contents=QUESTION,
        config=types.GenerateContentConfig(system_instruction=SYSTEM),
    )
    reply = parse_reply(resp.text, MODEL)
    assert reply.prompt_tokens > generated.usage_metadata.prompt_token_count
    assert resp.usage_metadata.prompt_token_count == reply.prompt_tokens


@pytest.mark.parametrize("api_version", [None, "v1beta"])
def test_generate_content_stream(
    api_version: str | None, generated: types.GenerateContentResponse
) -> None:
    client = make_client(api_version)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=QUESTION))
    assert chunks
    text = "".join(c.text or "" for c in chunks)
    assert text == generated.text
    last = chunks[-1].usage_metadata
    assert last is not None, "the last chunk carries no usageMetadata"
    assert usage_tuple(last) == usage_tuple(generated.usage_metadata)
    assert_no_cache_use(last)
    finish = [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason]
    assert finish and finish[-1] == types.FinishReason.STOP


def test_count_tokens_equals_prompt_tokens(
    client: genai.Client, generated: types.GenerateContentResponse
) -> None:
    counted = client.models.count_tokens(model=MODEL, contents=QUESTION)
    assert counted.total_tokens == generated.usage_metadata.prompt_token_count


def test_count_tokens_multi_turn(client: genai.Client) -> None:
    contents = [
        types.UserContent(parts=[types.Part.from_text(text=DOCUMENT[:2000])]),
        types.ModelContent(parts=[types.Part.from_text(text="Read it.")]),
        types.UserContent(parts=[types.Part.from_text(text=QUESTION)]),
    ]
    counted = client.models.count_tokens(model=MODEL, contents=contents)
    resp = client.models.generate_content(model=MODEL, contents=contents)
    reply = parse_reply(resp.text, MODEL)
    assert counted.total_tokens == reply.prompt_tokens == resp.usage_metadata.prompt_token_count


@proxy_only
def test_response_carries_request_id(generated: types.GenerateContentResponse) -> None:
    assert generated.sdk_http_response is not None
    assert_request_id(generated.sdk_http_response.headers)


@pytest.mark.parametrize("api_version", [None, "v1beta"])
def test_cached_contents_round_trip(
    api_version: str | None, generated: types.GenerateContentResponse
) -> None:
    client = make_client(api_version)
    cache = client.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            display_name="cachet-sdk-suite",
            system_instruction=SYSTEM,
            contents=[types.UserContent(parts=[types.Part.from_text(text=DOCUMENT)])],
            ttl="300s",
        ),
    )
    try:
        assert cache.name and cache.name.startswith("cachedContents/"), cache
        assert cache.model and cache.model.endswith(MODEL), cache.model
        assert cache.display_name == "cachet-sdk-suite"
        assert cache.expire_time is not None
        assert cache.usage_metadata is not None and cache.usage_metadata.total_token_count, cache

        got = client.caches.get(name=cache.name)
        assert got.name == cache.name
        assert got.model == cache.model
        assert got.usage_metadata.total_token_count == cache.usage_metadata.total_token_count

        names = [c.name for c in client.caches.list()]
        assert cache.name in names, names

        resp = client.models.generate_content(
            model=MODEL,
            contents=QUESTION,
            config=types.GenerateContentConfig(cached_content=cache.name),
        )
        reply = parse_reply(resp.text, MODEL)
        u = resp.usage_metadata
        assert u.prompt_token_count == reply.prompt_tokens
        # the cached system instruction and document are part of the prompt
        assert reply.prompt_tokens >= (
            generated.usage_metadata.prompt_token_count + cache.usage_metadata.total_token_count
        ), (reply, cache.usage_metadata)
        assert u.candidates_token_count == reply.words
    finally:
        client.caches.delete(name=cache.name)

    with pytest.raises(errors.ClientError) as err:
        client.caches.get(name=cache.name)
    assert err.value.code == 404
    assert cache.name not in [c.name for c in client.caches.list()]


def test_unknown_cache_is_not_found(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as err:
        client.caches.get(name="cachedContents/does-not-exist-cachet")
    assert err.value.code == 404
    assert err.value.status == "NOT_FOUND"
