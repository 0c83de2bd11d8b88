"""What a dispatcher reads of its own process: its memory."""

from __future__ import annotations

import subprocess
import sys

from load_tests.process import rss_bytes

_BIG_PARENT = """
import subprocess, sys
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page: 300 MiB resident
child = "from load_tests.process import rss_bytes; print(rss_bytes()[1])"
run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
print(run.stdout)
"""


def test_peak_is_this_process_own_not_its_parents() -> None:
    # getrusage's ru_maxrss survives fork and exec: a child of a 300 MiB process reports 300 MiB.
    out = subprocess.run(
        [sys.executable, "-c", _BIG_PARENT], capture_output=True, text=True, check=True
    )
    child_peak = int(out.stdout.split()[0])
    assert child_peak < 150 * 2**20, child_peak


def test_peak_covers_what_was_resident() -> None:
    before_now, before_peak = rss_bytes()
    block = bytearray(64 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    now, peak = rss_bytes()
    del block
    assert now >= before_now + 60 * 2**20
    assert peak >= now >= 0 and peak >= before_peak
