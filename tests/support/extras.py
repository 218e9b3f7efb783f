"""The core-only run: CI also runs the suite in a venv with the core install alone
(``SHELFLIFE_CORE_ONLY=1``); see tests/conftest.py for what it collects and skips."""

from __future__ import annotations

import os

import pytest

CORE_ONLY = os.environ.get("SHELFLIFE_CORE_ONLY") == "1"


def core_skip(what: str, extra: str) -> None:
    """In the core-only run, skip a test that needs ``what`` (from ``extra``)."""
    if CORE_ONLY:
        pytest.skip(f"core-only run: {what} needs the '{extra}' extra")
