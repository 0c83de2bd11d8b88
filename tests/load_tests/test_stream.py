"""The load stream's Ray Data settings: the paced scheduling loop, set only while building."""

from __future__ import annotations

import pytest
from ray.data import DataContext

from load_tests import stream
from load_tests.stream import PacedSchedulingLoop, _data_context, rebind_session_logs


class _Executor:
    """What the callback reads of a StreamingExecutor: whether its consumers wait."""

    def __init__(self, idling: bool) -> None:
        self.idling = idling

    def _consumer_idling(self) -> bool:
        return self.idling


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(stream.time, "sleep", slept.append)
    return slept


def test_the_loop_pauses_while_its_output_waits_for_the_dispatchers(pauses) -> None:
    PacedSchedulingLoop().on_execution_step(_Executor(idling=False))
    assert pauses == [stream._IDLE_STEP_S]


def test_a_waiting_dispatcher_is_never_kept_waiting(pauses) -> None:
    PacedSchedulingLoop().on_execution_step(_Executor(idling=True))
    assert pauses == []


def test_an_executor_without_the_signal_runs_unpaused(pauses) -> None:
    PacedSchedulingLoop().on_execution_step(object())
    assert pauses == []


def test_datasets_built_for_the_load_carry_the_callback_and_nothing_else_does() -> None:
    ctx = DataContext.get_current()
    before = list(ctx.custom_execution_callback_classes)
    with _data_context(bytes_per_row=200.0):
        assert PacedSchedulingLoop in ctx.custom_execution_callback_classes
        # A dataset takes a deep copy of the context when it is built: the copy keeps it.
        assert PacedSchedulingLoop in ctx.copy().custom_execution_callback_classes
    assert ctx.custom_execution_callback_classes == before


def test_ray_datas_log_file_follows_the_current_session(tmp_path) -> None:
    import logging

    from ray.data._internal.logging import SessionFileHandler

    session = {"logs": str(tmp_path / "old")}
    h = SessionFileHandler("ray-data.log", get_log_directory=lambda: session["logs"])
    logger = logging.getLogger("ray.data")
    logger.addHandler(h)
    try:
        h.emit(logging.makeLogRecord({"msg": "first session"}))
        session["logs"] = str(tmp_path / "new")
        rebind_session_logs(str(tmp_path / "old"))  # the current one: left alone
        assert h._path.startswith(str(tmp_path / "old"))
        rebind_session_logs(session["logs"])  # a later session: the handler lets go of the old
        h.emit(logging.makeLogRecord({"msg": "second session"}))
        assert (tmp_path / "new" / "ray-data.log").read_text().strip() == "second session"
    finally:
        logger.removeHandler(h)
        h.close()
