"""Manifest row validation, vectorised: every check is a pyarrow/numpy mask over a whole batch.

Good rows (nearly all of a real manifest) never become Python objects here. Only rows that fail
a check are looked at one by one, to write the message that names the row's values and every
reason it cannot be sent. Each reason also has a short code (REJECT_CODES), so reports can
count rejections by kind without parsing text.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from config import EaselConfig

__all__ = ["JOB_ID_PATTERN", "REJECT_CODES", "ManifestRules", "check_table"]

# job_id names the image file in the run folder, so it must be a safe file name. (RE2 syntax,
# which pyarrow's regex kernels use; Python's `re` reads it the same way.)
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

REJECT_CODES = (
    "missing_job_id",
    "bad_job_id",
    "duplicate_job_id",
    "missing_arrival",
    "nonfinite_arrival",
    "negative_arrival",
    "missing_prompt",
    "missing_model",
    "unknown_model",
    "missing_niche",
    "unknown_niche",
    "width_out_of_range",
    "height_out_of_range",
    "steps_out_of_range",
    "negative_seed",
    "bad_reference_image",
    "both_reference_fields",
    "references_not_taken",
    "too_many_references",
    "reference_roles_mismatch",
    "unknown_tenant",
)


@dataclass(frozen=True)
class ManifestRules:
    """What a row is checked against, taken from the config once (small and picklable).

    Attributes:
        models: allowed model names, in config order; the bounds below are per model.
        res_min, res_max, res_multiple, steps_min, steps_max: per model, same order.
        niches: allowed niche names.
        tenants: allowed tenants; empty means any tenant is accepted.
        max_reference_bytes: the largest reference image the server takes (any model).
        ref_max_count, ref_max_bytes: per model, its `references` limits (0: takes none).
    """

    models: tuple[str, ...]
    res_min: tuple[int, ...]
    res_max: tuple[int, ...]
    res_multiple: tuple[int, ...]
    steps_min: tuple[int, ...]
    steps_max: tuple[int, ...]
    niches: tuple[str, ...]
    tenants: tuple[str, ...]
    max_reference_bytes: int
    ref_max_count: tuple[int, ...] = ()
    ref_max_bytes: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg: EaselConfig) -> ManifestRules:
        ms = cfg.models
        return cls(
            models=tuple(m.name for m in ms),
            res_min=tuple(m.resolution.min for m in ms),
            res_max=tuple(m.resolution.max for m in ms),
            res_multiple=tuple(m.resolution.multiple for m in ms),
            steps_min=tuple(m.steps.min for m in ms),
            steps_max=tuple(m.steps.max for m in ms),
            niches=tuple(n.name for n in cfg.niches),
            tenants=tuple(t.name for t in cfg.serve.tenants),
            max_reference_bytes=cfg.serve.max_body_bytes,
            ref_max_count=tuple(m.references.max_count if m.references else 0 for m in ms),
            ref_max_bytes=tuple(m.references.max_bytes if m.references else 0 for m in ms),
        )

    def reference_models(self) -> list[str]:
        """The models that take reference images, sorted."""
        return sorted(m for m, c in zip(self.models, self.ref_max_count, strict=True) if c)


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A bool numpy array from a pyarrow boolean mask; null counts as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ints(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity) of an integer column."""
    valid = _np(pc.is_valid(col))
    return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), np.int64), valid


def _unknown(name: str, value: str, allowed: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(value, allowed, n=1)
    maybe = f"did you mean {hint[0]!r}? " if hint else ""
    return f"unknown {name} {value!r} ({maybe}allowed: {sorted(allowed)})"


def check_table(
    table: pa.Table, rules: ManifestRules, duplicate: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, list[str], list[str]]]]:
    """Check every row of a conformed manifest table (MANIFEST_SCHEMA columns).

    Args:
        table: the rows, with MANIFEST_SCHEMA's columns and types.
        rules: what is allowed.
        duplicate: per row, whether its job_id repeats an earlier row's.

    Returns:
        (bad, details): `bad` is a bool array, True for rows that cannot be sent; `details`
        holds, for each bad row in order, (its index in `table`, its reasons as text, their
        codes), every failed check listed.
    """
    n = table.num_rows
    col = table.column
    checks: dict[str, np.ndarray] = {}

    job_id = col("job_id")
    no_id = _np(pc.or_kleene(pc.is_null(job_id), pc.equal(job_id, "")))
    checks["missing_job_id"] = no_id
    pattern_ok = _np(pc.match_substring_regex(job_id, JOB_ID_PATTERN))
    checks["bad_job_id"] = ~no_id & ~pattern_ok
    checks["duplicate_job_id"] = ~no_id & pattern_ok & np.asarray(duplicate, dtype=bool)

    arrival = col("arrival_s")
    no_arrival = _np(pc.is_null(arrival))
    finite = _np(pc.is_finite(arrival))
    checks["missing_arrival"] = no_arrival
    checks["nonfinite_arrival"] = ~no_arrival & ~finite
    checks["negative_arrival"] = finite & _np(pc.less(arrival, 0.0))

    prompt = col("prompt")
    checks["missing_prompt"] = _np(
        pc.or_kleene(pc.is_null(prompt), pc.equal(pc.utf8_trim_whitespace(prompt), ""))
    )

    model = col("model")
    checks["missing_model"] = _np(pc.is_null(model))
    idx = pc.index_in(model, value_set=pa.array(rules.models, pa.string()))
    known = _np(pc.is_valid(idx))
    checks["unknown_model"] = ~checks["missing_model"] & ~known
    niche = col("niche")
    checks["missing_niche"] = _np(pc.is_null(niche))
    checks["unknown_niche"] = ~checks["missing_niche"] & ~_np(
        pc.is_in(niche, value_set=pa.array(rules.niches, pa.string()))
    )

    # Per-row bounds: each row takes its model's (rows of an unknown model are not checked).
    m = np.asarray(pc.fill_null(idx, 0).to_numpy(zero_copy_only=False), np.int64)
    lo, hi = np.asarray(rules.res_min)[m], np.asarray(rules.res_max)[m]
    mult = np.asarray(rules.res_multiple)[m]
    for key in ("width", "height"):
        v, valid = _ints(col(key))
        checks[f"{key}_out_of_range"] = (
            known & valid & ((v < lo) | (v > hi) | (v % np.maximum(mult, 1) != 0))
        )
    steps, valid = _ints(col("steps"))
    checks["steps_out_of_range"] = (
        known
        & valid
        & ((steps < np.asarray(rules.steps_min)[m]) | (steps > np.asarray(rules.steps_max)[m]))
    )
    seed, valid = _ints(col("seed"))
    checks["negative_seed"] = valid & (seed < 0)
    _check_references(table, rules, m, known, checks)
    if rules.tenants:
        tenant = col("tenant")
        checks["unknown_tenant"] = _np(pc.is_valid(tenant)) & ~_np(
            pc.is_in(tenant, value_set=pa.array(rules.tenants, pa.string()))
        )
    else:
        checks["unknown_tenant"] = np.zeros(n, dtype=bool)

    bad = np.zeros(n, dtype=bool)
    for mask in checks.values():
        bad |= mask
    where = np.flatnonzero(bad)
    if not len(where):
        return bad, []
    rows = table.take(pa.array(where)).to_pylist()
    details = []
    for i, r in zip(where.tolist(), rows, strict=True):
        codes = [c for c in REJECT_CODES if checks[c][i]]
        details.append((i, [_reason(c, r, rules) for c in codes], codes))
    return bad, details


def _check_references(
    table: pa.Table,
    rules: ManifestRules,
    m: np.ndarray,
    known: np.ndarray,
    checks: dict[str, np.ndarray],
) -> None:
    """The reference checks the server would apply, as masks: count, fields, bytes, roles.

    A row of a known model is held to that model's `references` limits; a row of an unknown
    model (already rejected) only to the server's body cap.
    """
    n = table.num_rows
    one = table.column("reference_image")
    many = table.column("reference_images")
    has_one = _np(pc.is_valid(one))
    n_many, _ = _ints(pc.list_value_length(many))
    count = np.where(has_one, 1, n_many)
    max_count = np.asarray(rules.ref_max_count or (0,) * len(rules.models), np.int64)[m]
    max_bytes = np.asarray(rules.ref_max_bytes or (0,) * len(rules.models), np.int64)[m]
    cap = np.where(known & (max_bytes > 0), max_bytes, rules.max_reference_bytes)
    checks["both_reference_fields"] = has_one & (n_many > 0)
    checks["references_not_taken"] = known & (count > 0) & (max_count == 0)
    checks["too_many_references"] = known & (max_count > 0) & (count > max_count)
    one_len, _ = _ints(pc.binary_length(one))
    bad = has_one & ((one_len < 1) | (one_len > cap))
    flat = pc.list_flatten(many)
    if len(flat):
        parent = np.asarray(pc.list_parent_indices(many).to_numpy(zero_copy_only=False), np.int64)
        lengths, valid = _ints(pc.binary_length(flat))
        item_bad = ~valid | (lengths < 1) | (lengths > cap[parent])
        np.logical_or.at(bad, parent[item_bad], True)
    checks["bad_reference_image"] = bad
    n_roles, _ = _ints(pc.list_value_length(table.column("reference_roles")))
    checks["reference_roles_mismatch"] = (n_roles > 0) & (n_roles != count)
    assert all(len(v) == n for v in checks.values())


def _reference_count(r: dict) -> int:
    return 1 if r["reference_image"] is not None else len(r["reference_images"] or [])


def _reason(code: str, r: dict, rules: ManifestRules) -> str:
    """The message for one failed check of row `r` (its values are in the text)."""
    if code == "missing_job_id":
        return "missing job_id"
    if code == "bad_job_id":
        return (
            f"job_id {r['job_id'][:40]!r} is not 1-128 of letters, digits, '_', '.', '-' "
            "(it names the image file)"
        )
    if code == "duplicate_job_id":
        return f"duplicate job_id {r['job_id']!r} (an earlier row has it)"
    if code == "missing_arrival":
        return "missing arrival_s"
    if code == "nonfinite_arrival":
        return f"arrival_s is {r['arrival_s']} (must be finite)"
    if code == "negative_arrival":
        return f"arrival_s {r['arrival_s']} is negative"
    if code in ("missing_prompt", "missing_model", "missing_niche"):
        return code.replace("_", " ")
    if code == "unknown_model":
        return _unknown("model", r["model"], rules.models)
    if code == "unknown_niche":
        return _unknown("niche", r["niche"], rules.niches)
    k = rules.models.index(r["model"]) if r["model"] in rules.models else -1
    if code in ("width_out_of_range", "height_out_of_range"):
        key = code.split("_")[0]
        return (
            f"{key} {r[key]} out of range for {r['model']} "
            f"({rules.res_min[k]}..{rules.res_max[k]}, multiple of {rules.res_multiple[k]})"
        )
    if code == "steps_out_of_range":
        return (
            f"steps {r['steps']} out of range for {r['model']} "
            f"({rules.steps_min[k]}..{rules.steps_max[k]})"
        )
    if code == "negative_seed":
        return f"seed {r['seed']} is negative"
    if code == "bad_reference_image":
        one = r["reference_image"]
        refs = [one] if one is not None else r["reference_images"]
        cap = rules.max_reference_bytes
        if k >= 0 and rules.ref_max_bytes and rules.ref_max_bytes[k]:
            cap = rules.ref_max_bytes[k]
        sizes = [len(x or b"") for x in refs]
        return (
            f"reference image sizes {sizes} bytes (each must be 1..{cap}, an unreadable path "
            "reads as 0)"
        )
    if code == "both_reference_fields":
        return "reference_image and reference_images are both set (send one)"
    if code == "references_not_taken":
        return (
            f"model {r['model']} takes no reference images "
            f"(models that do: {rules.reference_models()})"
        )
    if code == "too_many_references":
        return (
            f"{_reference_count(r)} reference images, {r['model']} takes at most "
            f"{rules.ref_max_count[k]}"
        )
    if code == "reference_roles_mismatch":
        return (
            f"reference_roles has {len(r['reference_roles'])} entries for "
            f"{_reference_count(r)} references"
        )
    return _unknown("tenant", r["tenant"], rules.tenants)
