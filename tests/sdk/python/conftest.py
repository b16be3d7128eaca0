"""Fixtures shared by the SDK tests (helpers.py holds the plain functions)."""

import pytest

from helpers import TARGET


@pytest.fixture(scope="session")
def target() -> str:
    """The root URL the SDKs talk to: the proxy, or the simulator with `run.sh --direct`."""
    return TARGET
