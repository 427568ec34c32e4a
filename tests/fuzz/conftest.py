"""The fuzz suite's machinery: two profiles, a per-case watchdog, the accepted-error check and case counts.

Each surface is one test parametrised over ``profile``: ``quick`` runs in the default test run, ``long`` (marked
slow) in the README/CI run. Both are derandomised, so CI sees the same cases on every run. The number of cases
tried per surface is printed at the end of the session ("fuzz cases tried"; summed over the workers of an xdist
run by tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ofa.errors import OFAError

CASES: Counter[str] = Counter()
HANG_SECONDS = 60


@dataclass(frozen=True)
class Profile:
    name: str
    scale: float  # multiplies each surface's base number of examples


PROFILES = [pytest.param(Profile("quick", 1.0), id="quick"),
            pytest.param(Profile("long", 8.0), id="long", marks=pytest.mark.slow)]


@contextlib.contextmanager
def watchdog(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail a case that runs longer than ``seconds`` (a hang) instead of stalling the suite."""

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a fuzz case ran for more than {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_fuzz(surface: str, profile: Profile, examples: int, strategy: st.SearchStrategy[Any],
             body: Callable[[Any], None]) -> None:
    """Run ``body`` on ``examples * profile.scale`` cases drawn from ``strategy``, each under the watchdog."""

    @settings(max_examples=max(1, int(examples * profile.scale)), deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(strategy)
    def case(value: Any) -> None:
        CASES[surface] += 1
        with watchdog():
            body(value)

    case()


def expect_ofa_error(exc: BaseException, *names: str) -> None:
    """The property's error half: an :class:`OFAError` (never a bare error from torch/PIL/json) whose message
    names the input, i.e. contains one of ``names``."""
    assert isinstance(exc, OFAError), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    text = str(exc)
    assert any(n in text for n in names), f"{type(exc).__name__} does not name the input ({names}): {text}"


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> Profile:
    return request.param


@pytest.fixture(scope="session")
def fuzz() -> Any:
    """``run_fuzz`` and ``expect_ofa_error`` for the test modules (they cannot import this conftest)."""

    class Fuzz:
        run = staticmethod(run_fuzz)
        expect = staticmethod(expect_ofa_error)

    return Fuzz


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker_output = getattr(session.config, "workeroutput", None)  # set in a pytest-xdist worker only
    if worker_output is not None:
        worker_output["fuzz_cases"] = dict(CASES)  # the controller prints the sum (tests/conftest.py)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if CASES and not hasattr(terminalreporter.config, "workeroutput"):
        counts = ", ".join(f"{surface}={n}" for surface, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases tried: {counts} (total {sum(CASES.values())})")
