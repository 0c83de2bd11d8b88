"""Quality-aware goodput's one floor rule, for every named metric, on hand-built tables (no Ray).

The tables use the dtypes `score_run` writes (nullable booleans and floats), so pd.NA is what a
"not applicable" looks like here, as in a real image_scores.parquet.
"""

from __future__ import annotations

import typing

import pandas as pd
import pytest

from config import QUALITY_METRICS, EaselConfig, QualityMetric, load_config, parse_config
from evaluation.goodput import METRICS, quality_goodput

HEAD, SHOP, TRYON = "corporate-headshots", "ecommerce-products", "try-on"
MODEL = "flux2-dev"
FLOORS = {
    HEAD: {"clip_text": 0.0, "identity": 0.9},
    SHOP: {"clip_ref": 0.5},
    TRYON: {"identity": 0.9, "garment": 0.3},
}


def _config() -> EaselConfig:
    data = load_config().model_dump(mode="json")
    for n in data["niches"]:
        n["quality_floor"] = FLOORS.get(n["name"], {})
    return parse_config(data)


# (niche, clip_text, clip_ref, face_found, identity_cos, garment_cos, expected outcome)
CASES = [
    (HEAD, 0.3, None, True, 0.95, None, "good"),
    (HEAD, 0.3, None, True, 0.80, None, "identity"),  # a face, not the customer's
    (HEAD, 0.3, None, False, None, None, "identity"),  # no face in the output: a failure
    (HEAD, 0.3, None, None, None, None, "good"),  # reference holds no face: not checked
    (HEAD, -0.2, None, False, None, None, "clip_text+identity"),  # misses both, counted once
    (HEAD, None, None, True, 0.95, None, "unscored"),  # clip_text applies to every image
    (SHOP, 0.1, None, None, None, None, "good"),  # no reference image: clip_ref not checked
    (SHOP, 0.1, 0.4, None, None, None, "clip_ref"),
    (TRYON, 0.1, None, True, 0.95, 0.5, "good"),
    (TRYON, 0.1, None, True, 0.95, 0.1, "garment"),
    (TRYON, 0.1, None, True, 0.95, None, "good"),  # garment photo unreadable: not checked
]


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    images = pd.DataFrame(
        {
            "job_id": [f"j{i}" for i in range(len(CASES))],
            "ok": pd.array([True] * len(CASES), dtype="boolean"),
            "clip_text": pd.array([c[1] for c in CASES], dtype="Float64"),
            "clip_ref": pd.array([c[2] for c in CASES], dtype="Float64"),
            "face_found": pd.array([c[3] for c in CASES], dtype="boolean"),
            "identity_cos": pd.array([c[4] for c in CASES], dtype="Float64"),
            "garment_cos": pd.array([c[5] for c in CASES], dtype="Float64"),
        }
    )
    requests = pd.DataFrame(
        {
            "job_id": images["job_id"],
            "model": MODEL,
            "niche": [c[0] for c in CASES],
            "ok": True,
            "latency_ms": 1.0,
            "error_class": None,
        }
    )
    return requests, images


def _rows(requests: pd.DataFrame, images: pd.DataFrame) -> dict[tuple[str, str], dict]:
    return {
        (r["model"], r["niche"]): r for r in quality_goodput(requests, images, _config())["rows"]
    }


def test_config_metrics_and_the_goodput_table_name_the_same_metrics() -> None:
    assert set(QUALITY_METRICS) == set(typing.get_args(QualityMetric)) == set(METRICS)


def test_the_package_export_is_the_function_once_its_module_is_loaded() -> None:
    # A submodule named like the function would replace it on the package once imported.
    import evaluation
    import evaluation.goodput

    assert evaluation.quality_goodput is quality_goodput and callable(evaluation.quality_goodput)


@pytest.mark.parametrize("niche", [HEAD, SHOP, TRYON])
def test_each_metric_is_checked_where_it_applies(niche: str) -> None:
    requests, images = _tables()
    rows = _rows(requests, images)
    mine = [c for c in CASES if c[0] == niche]
    r = rows[(MODEL, niche)]
    expected_misses: dict[str, int] = {}
    for c in mine:
        if c[6] not in ("good", "unscored"):
            for m in c[6].split("+"):
                expected_misses[m] = expected_misses.get(m, 0) + 1
    assert r["n"] == len(mine) and r["floor"] == FLOORS[niche]
    assert r["good"] == sum(c[6] == "good" for c in mine)
    assert r["unscored"] == sum(c[6] == "unscored" for c in mine)
    assert r["below_floor"] == sum(c[6] not in ("good", "unscored") for c in mine)
    assert r["below_floor_by_metric"] == expected_misses
    assert r["failed"] + r["late"] + r["below_floor"] + r["unscored"] + r["good"] == r["n"]


def test_a_run_scored_before_conditioned_columns_existed_is_not_judged_on_them() -> None:
    # image_scores.parquet without face_found/identity_cos/garment_cos: those floors do not apply
    requests, images = _tables()
    old = images.drop(columns=["face_found", "identity_cos", "garment_cos"])
    rows = _rows(requests, old)
    assert rows[(MODEL, TRYON)]["good"] == 3
    assert "identity" not in rows[(MODEL, HEAD)]["below_floor_by_metric"]


def test_failed_late_and_unscored_images_come_before_the_floors() -> None:
    requests, images = _tables()
    requests.loc[0, "ok"] = False
    requests.loc[1, "latency_ms"] = 1e9
    images.loc[2, "ok"] = False  # its image did not decode: quality unknown
    rows = _rows(requests, images)
    r = rows[(MODEL, HEAD)]
    assert (r["failed"], r["late"]) == (1, 1)
    assert r["unscored"] == 2 and r["below_floor_by_metric"] == {"clip_text": 1, "identity": 1}
    assert rows[(MODEL, "all")]["n"] == len(CASES)
