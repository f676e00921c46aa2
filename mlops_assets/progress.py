"""Progress reporting from inside asset steps to whoever runs them in-process (the CLI's progress bar).

Steps call :func:`step`; with no reporter installed (the daemon, the UI) it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_reporter: Callable[[str, str], None] | None = None


def install(reporter: Callable[[str, str], None] | None) -> None:
    global _reporter
    _reporter = reporter


def step(name: str, detail: str = "") -> None:
    if _reporter is not None:
        _reporter(name, detail)
