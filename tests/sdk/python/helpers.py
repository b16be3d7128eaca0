"""Shared helpers for the SDK suite.

tests/sdk/run.sh starts `cachet sim` and `cachet serve` (whose default upstreams point at the
simulator) and exports the SDKs' own environment variables, exactly as a user would:
OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GOOGLE_GEMINI_BASE_URL and fake API keys.
CACHET_SDK_TARGET is the proxy's root URL (the simulator's with `run.sh --direct`).

The simulator answers deterministically: the text is exactly
`cachet-sim reply from {model} to {n} prompt tokens.` where n is the prompt's token count, and the
output token count is the number of whitespace-separated words of that text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

OPENAI_MODEL = "gpt-4.1"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
GEMINI_MODEL = "gemini-2.5-flash"

# A prompt long enough that token counts are well above zero and differ between prompts.
QUESTION = "What does a context-caching proxy do? Answer in one sentence."
SYSTEM = "You are a terse assistant used by the cachet SDK suite."


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite through tests/sdk/run.sh", returncode=3)
    return value


TARGET = _require_env("CACHET_SDK_TARGET").rstrip("/")
THROUGH_PROXY = os.environ.get("CACHET_SDK_MODE", "proxy") == "proxy"

proxy_only = pytest.mark.skipif(not THROUGH_PROXY, reason="checks a header or behaviour of the proxy")


@dataclass(frozen=True)
class SimReply:
    text: str
    model: str
    prompt_tokens: int

    @property
    def words(self) -> int:
        return len(self.text.split())


def parse_reply(text: str | None, model: str) -> SimReply:
    """Asserts `text` is the simulator's reply for `model`; returns it with its prompt token count."""
    assert text is not None, "the SDK parsed no text"
    pattern = rf"cachet-sim reply from {re.escape(model)} to (\d+) prompt tokens\."
    m = re.fullmatch(pattern, text)
    assert m, f"unexpected reply text {text!r} (expected to match {pattern!r})"
    n = int(m.group(1))
    assert n > 0, f"prompt token count {n} in {text!r}"
    reply = SimReply(text=text, model=model, prompt_tokens=n)
    assert reply.words == 8, f"{text!r} has {reply.words} words"
    return reply


def header(headers, name: str) -> str | None:
    """Case-insensitive header lookup on httpx / requests / dict-like headers."""
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        value = None
    if value is None and hasattr(headers, "items"):
        for k, v in headers.items():
            if k.lower() == name.lower():
                return v
    return value


REQUEST_ID = re.compile(r"[0-9A-Za-z-]{8,}")


def assert_request_id(headers) -> str:
    rid = header(headers, "x-cachet-request-id")
    assert rid, f"no x-cachet-request-id header in {dict(headers) if headers else headers}"
    assert REQUEST_ID.fullmatch(rid), f"odd x-cachet-request-id {rid!r}"
    return rid
