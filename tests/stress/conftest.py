"""The stress suite writes its figures to benchmarks/results/stress-<mode>.json."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._common import MODE, write_results


@pytest.fixture(scope="session", autouse=True)
def stress_results() -> Iterator[None]:
    yield
    write_results()


def pytest_report_header() -> str:
    return f"unified_exec stress mode: {MODE} (UE_STRESS=long for the long mode)"
