"""Reference photos in manifests: reading them from bytes or paths, and giving jobs their photos.

A manifest's `reference_images` column holds, per row, a list of encoded images (PNG/JPEG/WebP
bytes) or of paths to them (relative to the manifest's or log's folder, or absolute), so a
production log that names the customer's photos replays as it was. `reference_roles` (optional,
the same length) says what each photo is: `face`/`person`, `garment` or `other`.

`attach_references` gives the jobs of image-conditioned niches their photos: each job draws one
photo set (a subject's photos; for try-on, a person and a garment), and goes to a model that
takes that many references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from config import EaselConfig

__all__ = ["ReferencePool", "attach_references", "read_reference_items"]

# One photo set a job of a niche may carry: the images and their roles.
ReferencePool = Sequence[tuple[Sequence[bytes], Sequence[str]]]


def read_reference_items(value: Any, base: Path) -> list[bytes] | None:
    """One row's references as bytes; a path that cannot be read becomes b"" (the row is then
    rejected by the manifest reader, naming it). A lone item is a one-item list; None stays None.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str | bytes | bytearray) else list(value)
    out = []
    for item in items:
        if isinstance(item, bytes | bytearray):
            out.append(bytes(item))
            continue
        path = Path(str(item)).expanduser()
        try:
            out.append((path if path.is_absolute() else base / path).read_bytes())
        except OSError:
            out.append(b"")
    return out


def attach_references(
    table: pa.Table,
    cfg: EaselConfig,
    pools: Mapping[str, ReferencePool],
    rng: np.random.Generator,
) -> pa.Table:
    """`table` with photo sets on the rows of the niches in `pools` (niche -> its photo sets).

    A row of such a niche draws one set; if its model does not take that many references, the
    row moves to a model that does (drawn evenly among them, with that model's default size and
    steps): a conditioned job is never sent where it could only be refused. Rows that already
    carry references (replayed from a log) and rows of other niches are left as they are.
    """
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    refs = cols.get("reference_images") or [None] * n
    roles = cols.get("reference_roles") or [None] * n
    for i, niche in enumerate(cols["niche"]):
        pool = pools.get(niche)
        if not pool or refs[i]:  # a replayed row keeps the photos its log names
            continue
        images, kinds = pool[int(rng.integers(len(pool)))]
        model = cfg.model(cols["model"][i])
        if model.references is None or model.references.max_count < len(images):
            able = [m for m in cfg.models if m.references and m.references.max_count >= len(images)]
            if not able:
                raise ValueError(f"niche {niche!r}: no model takes {len(images)} reference images")
            model = able[int(rng.integers(len(able)))]
            cols["model"][i] = model.name
            cols["width"][i] = cols["height"][i] = model.resolution.default
            cols["steps"][i] = model.steps.default
        refs[i], roles[i] = list(images), list(kinds)
    cols["reference_images"], cols["reference_roles"] = refs, roles
    arrays = [pa.array(cols[f.name], type=f.type) for f in table.schema]
    return pa.Table.from_arrays(arrays, schema=table.schema)
