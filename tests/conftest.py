from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

# Gateways the tests start (in process or as processes, which inherit this) keep no usage
# ledger in the working tree unless a test asks for one.
os.environ.setdefault("USAGE_DB", "off")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Trio's strict exception groups wrap a test's single failure; report the failure itself."""
    try:
        return (yield)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from None
