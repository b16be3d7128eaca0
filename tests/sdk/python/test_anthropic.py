"""The official `anthropic` Python SDK through cachet: messages (JSON, stream helper, raw events),
count_tokens, errors."""

from __future__ import annotations

import anthropic
import pytest
from anthropic import Anthropic
from anthropic.types import Message

from helpers import (
    ANTHROPIC_MODEL as MODEL,
    QUESTION,
    SYSTEM,
    THROUGH_PROXY,
    assert_request_id,
    header,
    parse_reply,
    proxy_only,
)

MESSAGES = [{"role": "user", "content": QUESTION}]
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def client() -> Anthropic:
    # Base URL and key come from ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY, as for any user.
    return Anthropic(max_retries=0, timeout=30)


def usage_tuple(usage) -> tuple:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    )


@pytest.fixture(scope="module")
def message(client: Anthropic) -> Message:
    return client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES
    )


def test_sdk_reads_base_url_from_environment(client: Anthropic, target: str) -> None:
    assert str(client.base_url).rstrip("/") == f"{target}/anthropic"


def test_messages_non_stream(message: Message) -> None:
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    reply = parse_reply(message.content[0].text, MODEL)
    usage = message.usage
    assert usage.input_tokens == reply.prompt_tokens
    assert usage.output_tokens == reply.words
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation_input_tokens == 0


def test_messages_stream_helper(client: Anthropic, message: Message) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert usage_tuple(final.usage) == usage_tuple(message.usage)


def test_messages_stream_raw_events(client: Anthropic, message: Message) -> None:
    events = list(
        client.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES, stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start", types
    assert types[1] == "content_block_start", types
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"], types
    assert set(types[2:-3]) == {"content_block_delta"}, types
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "text_delta" for d in deltas)
    text = "".join(d.text for d in deltas)
    assert text == message.content[0].text

    start_usage = events[0].message.usage
    assert start_usage.input_tokens == message.usage.input_tokens
    assert start_usage.cache_read_input_tokens == 0
    assert start_usage.cache_creation_input_tokens == 0
    delta_event = events[-2]
    assert delta_event.delta.stop_reason == "end_turn"
    # message_delta's usage is cumulative: its output_tokens is the final count
    assert delta_event.usage.output_tokens == message.usage.output_tokens


def test_count_tokens_equals_input_usage(client: Anthropic, message: Message) -> None:
    counted = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == message.usage.input_tokens


def test_count_tokens_multi_turn(client: Anthropic) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Here is a document. " * 50}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": QUESTION},
    ]
    counted = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=messages)
    created = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=messages
    )
    reply = parse_reply(created.content[0].text, MODEL)
    assert counted.input_tokens == created.usage.input_tokens == reply.prompt_tokens
    assert counted.input_tokens > 50


@proxy_only
def test_raw_response_carries_request_id(client: Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=MAX_TOKENS, messages=MESSAGES
    )
    assert raw.status_code == 200
    assert_request_id(raw.headers)
    parse_reply(raw.parse().content[0].text, MODEL)


@proxy_only
def test_stream_response_carries_request_id(client: Anthropic, message: Message) -> None:
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=MAX_TOKENS, system=SYSTEM, messages=MESSAGES, stream=True
    ) as raw:
        assert raw.status_code == 200
        assert_request_id(raw.headers)
        assert (header(raw.headers, "content-type") or "").startswith("text/event-stream")
        events = list(raw.parse())
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == message.content[0].text


def test_models_list_passes_through(client: Anthropic) -> None:
    models = list(client.models.list())
    assert models and all(m.type == "model" and m.id for m in models)


@proxy_only
def test_malformed_json_is_a_bad_request_in_anthropic_shape(client: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post(
            "/v1/messages",
            content=b'{"model": "claude-sonnet-4-6", "messages": [',
            options={"headers": {"Content-Type": "application/json"}},
            cast_to=Message,
        )
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"].get("type") and body["error"].get("message"), body
    assert header(err.value.response.headers, "x-cachet-error") == "bad_json"
    assert_request_id(err.value.response.headers)


def test_missing_max_tokens_is_bad_request(client: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post("/v1/messages", body={"model": MODEL, "messages": MESSAGES}, cast_to=Message)
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "invalid_request_error", body
    if THROUGH_PROXY:
        assert_request_id(err.value.response.headers)


def test_missing_messages_is_bad_request(client: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as err:
        client.post(
            "/v1/messages", body={"model": MODEL, "max_tokens": MAX_TOKENS}, cast_to=Message
        )
    assert err.value.status_code == 400
    if THROUGH_PROXY:
        assert_request_id(err.value.response.headers)
