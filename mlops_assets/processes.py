"""Whether a process recorded earlier is still running on this machine (the liveness rule for runs whose process
was killed: see :mod:`mlops_assets.defs.run_liveness`)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

# A process that started this long after the moment it was recorded at is another one reusing the number; the
# margin covers clock granularity (/proc counts in clock ticks) and a record written just before the process began.
_START_MARGIN_SECONDS = 2.0


def process_alive(pid: int | None, recorded_at: float | None = None) -> bool:
    """Whether process ``pid`` runs on this machine and is the one seen at ``recorded_at`` (POSIX seconds).

    Gone means no such process, a zombie (killed, not yet reaped by its parent), or a process with that number
    that started after ``recorded_at`` (the number was reused). Where ``/proc`` is missing, existence is all that
    is checked."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started_at = stat
    if state in ("Z", "X"):
        return False
    return not (
        recorded_at is not None
        and started_at is not None
        and started_at > recorded_at + _START_MARGIN_SECONDS
    )


def _proc_stat(pid: int) -> tuple[str, float | None] | None:
    """State letter and start time (POSIX seconds) of ``pid`` from ``/proc``; None without ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Either no /proc on this system, or the process ended between the two looks.
        return None if not Path("/proc/self/stat").exists() else ("X", None)
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: fields are counted after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    state = fields[0]
    boot = _boot_time()
    if boot is None:
        return state, None
    return state, boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@cache
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None
