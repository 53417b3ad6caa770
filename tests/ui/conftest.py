"""Fixtures for the notebook UI tests: real jobs against the session's server, views built on them."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture
def room_name() -> str:
    return "ui-" + secrets.token_hex(4)


