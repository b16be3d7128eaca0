"""The official `openai` Python SDK through cachet: chat completions, Responses, pass-through, errors."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion

from helpers import (
    OPENAI_MODEL as MODEL,
    QUESTION,
    SYSTEM,
    THROUGH_PROXY,
    assert_request_id,
    header,
    parse_reply,
    proxy_only,
)

MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
]


@pytest.fixture(scope="module")
def client() -> OpenAI:
    # Base URL and key come from OPENAI_BASE_URL / OPENAI_API_KEY, as for any user.
    return OpenAI(max_retries=0, timeout=30)


def usage_tuple(usage) -> tuple[int, int, int, int | None]:
    details = usage.prompt_tokens_details
    return (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        None if details is None else details.cached_tokens,
    )


@pytest.fixture(scope="module")
def chat(client: OpenAI) -> ChatCompletion:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_sdk_reads_base_url_from_environment(client: OpenAI, target: str) -> None:
    assert str(client.base_url).rstrip("/") == f"{target}/openai/v1"


def test_chat_non_stream(chat: ChatCompletion) -> None:
    assert chat.object == "chat.completion"
    assert len(chat.choices) == 1
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    reply = parse_reply(choice.message.content, MODEL)
    usage = chat.usage
    assert usage is not None
    assert usage.prompt_tokens == reply.prompt_tokens
    assert usage.completion_tokens == reply.words
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None, "prompt_tokens_details missing"
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_chat_prompt_tokens_grow_with_the_prompt(client: OpenAI, chat: ChatCompletion) -> None:
    longer = MESSAGES + [
        {"role": "assistant", "content": "A proxy."},
        {"role": "user", "content": "Say more about it, " + "please " * 200},
    ]
    resp = client.chat.completions.create(model=MODEL, messages=longer)
    n_short = parse_reply(chat.choices[0].message.content, MODEL).prompt_tokens
    n_long = parse_reply(resp.choices[0].message.content, MODEL).prompt_tokens
    assert n_long > n_short + 100
    assert resp.usage is not None and resp.usage.prompt_tokens == n_long


def test_chat_stream_without_stream_options_gets_no_usage_chunk(
    client: OpenAI, chat: ChatCompletion
) -> None:
    # The proxy asks the upstream for usage and must drop that extra chunk: the client sees a
    # stream exactly like one that never asked for usage.
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert chunks, "empty stream"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    empty = [c for c in chunks if c.choices == []]
    assert empty == [], f"client got a chunk with choices: [] it did not ask for: {empty}"
    with_usage = [c for c in chunks if c.usage is not None]
    assert with_usage == [], f"client got usage it did not ask for: {with_usage}"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == chat.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_with_include_usage(client: OpenAI, chat: ChatCompletion) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected one usage chunk, got {usage_chunks}"
    assert chunks[-1] is usage_chunks[0], "the usage chunk must be the last one"
    assert chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    assert chat.usage is not None
    assert usage_tuple(chunks[-1].usage) == usage_tuple(chat.usage)


def test_chat_stream_text_matches_non_stream_for_a_multi_turn_request(client: OpenAI) -> None:
    messages = MESSAGES + [
        {"role": "assistant", "content": "It keeps prompt prefixes cached."},
        {"role": "user", "content": [{"type": "text", "text": "And why does that matter?"}]},
    ]
    full = client.chat.completions.create(model=MODEL, messages=messages)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    reply = parse_reply(text, MODEL)
    assert full.usage is not None and chunks[-1].usage is not None
    assert full.usage.prompt_tokens == reply.prompt_tokens
    assert usage_tuple(chunks[-1].usage) == usage_tuple(full.usage)


def test_responses_non_stream(client: OpenAI) -> None:
    resp = client.responses.create(model=MODEL, instructions=SYSTEM, input=QUESTION)
    assert resp.object == "response"
    assert resp.status == "completed"
    reply = parse_reply(resp.output_text, MODEL)
    usage = resp.usage
    assert usage is not None
    assert usage.input_tokens == reply.prompt_tokens
    assert usage.output_tokens == reply.words
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details is not None
    assert usage.input_tokens_details.cached_tokens == 0


def test_responses_stream(client: OpenAI) -> None:
    full = client.responses.create(model=MODEL, instructions=SYSTEM, input=QUESTION)
    events = list(
        client.responses.create(model=MODEL, instructions=SYSTEM, input=QUESTION, stream=True)
    )
    types = [e.type for e in events]
    assert types[0] == "response.created", types
    assert types[-1] == "response.completed", types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == full.output_text
    parse_reply(text, MODEL)
    done = [e.text for e in events if e.type == "response.output_text.done"]
    assert done == [text]
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == text
    assert completed.usage is not None and full.usage is not None
    assert completed.usage.input_tokens == full.usage.input_tokens
    assert completed.usage.output_tokens == full.usage.output_tokens
    assert completed.usage.total_tokens == full.usage.total_tokens
    assert completed.usage.input_tokens_details.cached_tokens == 0


def test_responses_stream_helper(client: OpenAI) -> None:
    with client.responses.stream(model=MODEL, input=QUESTION) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    reply = parse_reply("".join(deltas), MODEL)
    assert final.output_text == reply.text
    assert final.usage is not None
    assert final.usage.input_tokens == reply.prompt_tokens
    assert final.usage.output_tokens == reply.words


def test_models_list_passes_through(client: OpenAI) -> None:
    page = client.models.list()
    models = list(page)
    assert models, "no models listed"
    assert all(m.object == "model" and m.id for m in models)


def test_embeddings_pass_through(client: OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["cachet", "proxy"]
    )
    assert raw.status_code == 200
    emb = raw.parse()
    assert [d.index for d in emb.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in emb.data)
    if THROUGH_PROXY:
        assert_request_id(raw.headers)
        # not a modelled route: the proxy plans nothing there
        assert header(raw.headers, "x-cachet-rewrites") is None, raw.headers
        assert header(raw.headers, "x-cachet-prefix") is None, raw.headers


@proxy_only
def test_raw_response_carries_request_id(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.status_code == 200
    rid = assert_request_id(raw.headers)
    completion = raw.parse()
    parse_reply(completion.choices[0].message.content, MODEL)
    # every response gets its own id
    again = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert assert_request_id(again.headers) != rid


@proxy_only
def test_stream_headers_name_the_usage_injection(client: OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as raw:
        assert_request_id(raw.headers)
        rewrites = (header(raw.headers, "x-cachet-rewrites") or "").split(",")
        assert "include_usage" in rewrites, raw.headers
        chunks = list(raw.parse())
    assert all(c.usage is None and c.choices for c in chunks)


@proxy_only
def test_models_list_raw_has_request_id(client: OpenAI) -> None:
    raw = client.models.with_raw_response.list()
    assert raw.status_code == 200
    assert_request_id(raw.headers)


def test_missing_model_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.post("/chat/completions", body={"messages": MESSAGES}, cast_to=ChatCompletion)
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and err.value.body.get("message"), err.value.body
    assert err.value.body.get("type") == "invalid_request_error", err.value.body
    if THROUGH_PROXY:
        assert_request_id(err.value.response.headers)


def test_missing_messages_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.post("/chat/completions", body={"model": MODEL}, cast_to=ChatCompletion)
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and err.value.body.get("message"), err.value.body
    if THROUGH_PROXY:
        # whether the proxy or the simulator rejected it, the response carries the request id
        assert_request_id(err.value.response.headers)


def test_invalid_messages_type_is_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.post(
            "/chat/completions",
            body={"model": MODEL, "messages": "not a list"},
            cast_to=ChatCompletion,
        )
    assert err.value.status_code == 400


@proxy_only
def test_malformed_json_is_the_proxy_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.post(
            "/chat/completions",
            content=b'{"model": "gpt-4.1", "messages": [',
            options={"headers": {"Content-Type": "application/json"}},
            cast_to=ChatCompletion,
        )
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and err.value.body.get("message"), err.value.body
    headers = err.value.response.headers
    assert header(headers, "x-cachet-error") == "bad_json", headers
    assert_request_id(headers)
