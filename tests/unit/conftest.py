"""The unit tier starts no process: a test that tries belongs in tests/e2e/."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


@pytest.fixture(autouse=True, scope="module")
def no_processes() -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"a unit test started a process ({args[0]!r}): move it to tests/e2e/")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", refuse)
        yield
