"""Admin changes become whole documents; the store hands the newest to every process."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from serve_apps.gateway.document import DocumentStore, RoutingDocument, updated

KNOWN = {"m": ["a", "b", "c"], "other": ["a"]}
POLICIES = ["weighted", "least_outstanding", "cheapest_healthy"]
BASE = RoutingDocument(policy="least_outstanding")


def _up(doc: RoutingDocument = BASE, **body) -> RoutingDocument:
    return updated(doc, KNOWN, policies=POLICIES, **body)


def test_changes_stack_and_each_bumps_the_version():
    doc = _up(drain=["a", "b"], model="m")
    doc = _up(doc, weights={"c": 2.0})
    doc = _up(doc, undrain=["a"])
    assert doc.version == 3
    assert doc.drained == {"m": ["b"]}
    assert doc.weights == {"m": {"c": 2.0}}
    assert _up(doc, policy="weighted").policy == "weighted"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"policy": "round_robin"}, "unknown 'round_robin'"),
        ({"policy": "weighted", "model": "m"}, "policy applies to every model"),
        ({"weights": {"zz": 1.0}}, "['zz']"),
        ({"weights": {"a": -1.0}}, ">= 0"),
        ({"weights": {"a": float("nan")}}, ">= 0"),
        ({"drain": ["a"], "undrain": ["a"]}, "both drain and undrain"),
        ({"drain": ["b"], "model": "other"}, "do not serve model 'other'"),
    ],
)
def test_bad_changes_say_what_is_allowed(body, needle):
    with pytest.raises(ValueError) as info:
        _up(**body)
    assert needle in str(info.value)


def test_unknown_model_is_a_lookup_error():
    with pytest.raises(LookupError, match="unknown model"):
        _up(drain=["a"], model="nope")


def test_without_a_folder_the_store_shares_nothing():
    store = DocumentStore(None)
    assert store.newer(-1) is None
    assert store.change(BASE, lambda d: _up(d, drain=["a"])).version == 1


def _change_in_another_process(folder: str, provider: str) -> None:
    DocumentStore(folder).change(BASE, lambda d: _up(d, drain=[provider], model="m"))


def test_processes_see_each_others_changes_and_lose_none(tmp_path: Path):
    mine = DocumentStore(tmp_path)
    assert mine.newer(-1) is None
    # Two other processes change it from a stale base: neither change is lost.
    for provider in ("a", "b"):
        p = mp.get_context("fork").Process(
            target=_change_in_another_process, args=(str(tmp_path), provider)
        )
        p.start()
        p.join(30)
        assert p.exitcode == 0
    doc = mine.newer(0)
    assert doc is not None and doc.version == 2 and doc.drained == {"m": ["a", "b"]}
    assert mine.newer(doc.version) is None  # nothing newer than what it has
    doc = mine.change(BASE, lambda d: _up(d, undrain=["a"]))  # from a stale base, again
    assert doc.version == 3 and doc.drained == {"m": ["b"]}
