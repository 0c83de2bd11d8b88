"""What a dispatcher does to its own process: open files, the open-request bound, priority.

Open requests are bounded by memory, not by a fixed count: each open request costs about
`REQUEST_BYTES` in the dispatcher (its task, the HTTP client's request and connection objects,
the pre-built body; measured by `benchmarks/load_generator.py --open`, see
docs/performance.md) plus one socket. So the bound is the smaller of what a share of the
available memory holds and what the open-file limit allows (raised to the hard limit first, and
the hard limit itself where the process may). A row that finds the bound reached is recorded as
`client_overload`, never dropped.

Priority: Ray starts every worker process, so every dispatcher, at niceness 15 (so that its own
daemons stay responsive), which puts the timer loop behind any ordinary process and level with
every other Ray worker, model replicas included. On a machine shared with the servers it tests,
its wake-ups then wait behind their work. `protect_process` sets the dispatcher's scheduling
priority: 'ray' leaves Ray's niceness, 'normal' puts it back to 0 (the driver's), 'high' is
niceness -10, 'realtime' is SCHED_RR, and 'auto' (the default) takes the first of realtime,
high, normal that the process is allowed (anything above the starting niceness needs
CAP_SYS_NICE or RLIMIT_NICE). It applies to every thread: Linux priorities are per thread, and
the threads share one GIL, so a low-priority thread holding it would stall a high-priority one.
`benchmarks/load_generator.py --scenario priorities` measures what each level buys.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterable

__all__ = [
    "PRIORITIES",
    "REQUEST_BYTES",
    "memory_available",
    "open_request_bound",
    "protect_process",
    "raise_open_files",
    "rss_bytes",
]

_log = logging.getLogger(__name__)

# Upper estimate of one open request's memory in a dispatcher (measured ~13 KiB; see module doc).
REQUEST_BYTES = 16 * 1024
_MEMORY_SHARE = 0.5  # of the memory available at start, split across the dispatchers
_FD_RESERVE = 256  # files kept for everything else (logs, parts, Ray's own sockets)
_NOFILE_WANTED = 1 << 20

PRIORITIES = ("auto", "ray", "normal", "high", "realtime")
_NICENESS = {"normal": 0, "high": -10}
_RT_PRIORITY = 10


def raise_open_files(wanted: int = _NOFILE_WANTED) -> int:
    """Raise this process's open-file limit as far as allowed; returns the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(wanted, hard), hard):
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
            break
        except (ValueError, OSError):  # the hard limit can only rise with CAP_SYS_RESOURCE
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def memory_available() -> int:
    """MemAvailable from /proc/meminfo in bytes (the total from sysconf where that is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def open_request_bound(dispatchers: int, explicit: int | None = None) -> tuple[int, str]:
    """(bound, what sets it) on this dispatcher's open requests; raises the open-file limit.

    Args:
        dispatchers: dispatchers sharing the machine's memory.
        explicit: a user's own bound for this dispatcher (None: memory and files decide).
    """
    files = raise_open_files() - _FD_RESERVE
    memory = int(_MEMORY_SHARE * memory_available() / max(dispatchers, 1) / REQUEST_BYTES)
    bounds = {
        "the open-file limit": files,
        f"memory ({REQUEST_BYTES // 1024} KiB per open request)": memory,
    }
    if explicit is not None:
        bounds["--max-in-flight"] = explicit
    why = min(bounds, key=lambda k: bounds[k])
    return max(bounds[why], 1), why


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _apply(priority: str, cpus: Iterable[int] | None) -> OSError | None:
    for tid in _threads():
        try:
            if priority in _NICENESS:
                os.setpriority(os.PRIO_PROCESS, tid, _NICENESS[priority])
            elif priority == "realtime":
                os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(_RT_PRIORITY))
            if cpus is not None:
                os.sched_setaffinity(tid, set(cpus))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as exc:
            return exc
    return None


def protect_process(
    priority: str = "auto", cpus: Iterable[int] | None = None
) -> tuple[str, str | None]:
    """Set every thread's scheduling priority and/or pin them to `cpus`.

    Args:
        priority: 'auto' (the first of realtime, high, normal allowed), 'ray' (leave it),
            'normal' (niceness 0), 'high' (niceness -10) or 'realtime' (SCHED_RR, priority 10;
            the kernel still keeps 5 % of each CPU for everything else).
        cpus: CPU numbers to run on; None leaves the affinity.

    Returns:
        (the priority now in force, a warning or None). Threads started later inherit it from
        the thread that starts them.
    """
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    tries = ("realtime", "high", "normal") if priority == "auto" else (priority,)
    problem = None
    for level in tries:
        problem = _apply(level, cpus)
        if problem is None:
            return level, None
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    msg = (
        f"could not set priority {priority!r} (cpus {cpus}): {problem}; running at niceness "
        f"{nice} (raising priority needs CAP_SYS_NICE)"
    )
    _log.warning(msg)
    return "ray", msg


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process, in bytes.

    The peak is the kernel's high-water mark for this process (`VmHWM`), not getrusage's
    `ru_maxrss`: Linux carries `ru_maxrss` over fork and exec, so a process started by a big
    one (a benchmark that built a million-row manifest, then ran `easel load`) would report
    its parent's peak as its own.
    """
    current = peak = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except OSError:  # not Linux: getrusage is the best there is (kB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        current = peak
    return current, max(peak, current)
