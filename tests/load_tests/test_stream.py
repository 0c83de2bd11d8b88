"""The load stream's Ray Data settings: the paced scheduling loop, set only while building."""

from __future__ import annotations

import pytest
from ray.data import DataContext

from load_tests import stream
from load_tests.stream import PacedSchedulingLoop, _data_context


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
