"""Local Ray clusters' plumbing: sessions, pids, the state file (no Ray started here).

`RayHead` itself (a whole Ray cluster with private ports and token) is started by the isolated
mode's tests, tests/serve_apps/local/test_isolated.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

from cluster.local import (
    RayHead,
    free_port,
    pid_alive,
    read_state,
    session_pids,
    write_state,
)
from tests._util import wait_for


def test_a_session_lists_its_processes_and_dies_with_them():
    # A parent in a session of its own with one child, like `ray start --block` and its daemons.
    child = "[sys.executable, '-c', 'import time; time.sleep(60)']"
    code = f"import subprocess, sys, time; subprocess.Popen({child}); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        wait_for(lambda: len(session_pids(proc.pid)) == 2, timeout=30)
        assert proc.pid in session_pids(proc.pid) and os.getpid() not in session_pids(proc.pid)
    finally:
        for pid in session_pids(proc.pid):
            os.kill(pid, 9)
        proc.wait(timeout=30)
    wait_for(lambda: session_pids(proc.pid) == [], timeout=30)
    assert not pid_alive(proc.pid) and not pid_alive(None)


def test_state_file_round_trips_atomically(tmp_path):
    path = tmp_path / "state.json"
    assert read_state(path) is None
    write_state(path, {"gateway": {"url": "http://127.0.0.1:1"}, "pids": [1, 2]})
    assert read_state(path) == {"gateway": {"url": "http://127.0.0.1:1"}, "pids": [1, 2]}
    assert not list(tmp_path.glob("*.tmp"))
    path.write_text("{half")
    assert read_state(path) is None


def test_each_head_gets_its_own_ports_folder_and_token():
    a, b = RayHead("a"), RayHead("b")
    try:
        assert a.port != b.port and a.metrics_port != b.metrics_port
        assert a.temp_dir != b.temp_dir and len(a.temp_dir) < 40  # unix socket paths stay short
        assert a.token != b.token
        env = a.env()
        assert env["RAY_AUTH_TOKEN"] == a.token and env["RAY_ADDRESS"] == a.address
        assert env["RAY_AUTH_MODE"] == "token"
        assert a.pids() == []  # not started
        assert 0 < free_port() < 65_536
    finally:
        a.stop()
        b.stop()
    assert not os.path.exists(a.temp_dir)
